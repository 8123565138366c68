"""How a run's predictions return to the file grid, compared on one split: `python scripts/compare_restore.py RUN_DIR
[--split val]`.

Why: `trainer.eval_resample` (linear: interpolate class probabilities, then arg-max on the file's grid; nearest:
arg-max on the training grid, labels copied) is a preset choice; the presets' headers quote what it gives on the
validation subjects (never the test subjects) of a trained network. Prints the mean foreground Dice of each mode.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scseg.engine.inference import Predictor, counts_to_rows
from scseg.engine.loading import load_run
from scseg.metrics import summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    spec, dm, model, _ = load_run(args.run_dir, "best")
    dm.prepare()
    subjects = dm.subjects(args.split)
    for mode in ("linear", "nearest"):
        with torch.no_grad():
            counts = Predictor(model, dm, spec.trainer.eval_batch_size, resample=mode).evaluate(subjects)
        summary = summarize(counts_to_rows(counts, dm.class_names), dm.class_names, args.split)
        print(
            f"{args.run_dir.name} [{args.split}, {len(subjects)} subjects] restore={mode}: "
            f"foreground Dice {summary['fg_mean']:.4f}"
        )


if __name__ == "__main__":
    main()
