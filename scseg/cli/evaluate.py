"""``scseg-evaluate RUN_DIR [--split test]``: evaluate a finished run's best checkpoint on whole volumes
(``scseg-evaluate RUN_DIR RUN_DIR ... --out DIR [--weights W W ...]``: their ensemble, or the fusion of runs sliced
along different axes; see ``scseg.engine.inference.combine``).

Reads the run's resolved config (``.hydra/config.yaml``), rebuilds the data module and the model, loads
``checkpoints/best.pt`` (``weights_only``, never executing code) and writes ``per_case[_<split>].csv`` and
``summary[_<split>].json`` into the run folder (the test split keeps the training run's file names). The summary
comes from the same builder as after training (:func:`scseg.engine.summary.build_summary`), with the config
hashes training recorded carried over, so ``scseg-compare`` files the run exactly as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from scseg.atomic import DiskFullError
from scseg.data.errors import DataError
from scseg.data.types import SPLITS
from scseg.engine.allocator import tune_allocator
from scseg.engine.reevaluate import evaluate_ensemble, reevaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a run's best checkpoint on whole volumes.")
    parser.add_argument("run_dir", type=Path, nargs="+", help="a run folder, or several: their ensemble (needs --out)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where per_case.csv / summary.json go (default for one run: its folder)"
    )
    parser.add_argument(
        "--tta",
        default=None,
        choices=("none", "mirror", "mirror_lr"),
        help="test-time mirroring, overriding the run's eval.tta",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", default=None, help="one weight per run for an ensemble or fusion"
    )
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    tune_allocator()  # keep large buffers in the process; SCSEG_TUNE_MALLOC=0 turns it off
    if len(args.run_dir) > 1 and args.out is None:
        print("error: an ensemble of runs needs --out DIR for its per_case.csv and summary.json", file=sys.stderr)
        return 2
    try:
        if len(args.run_dir) > 1:
            result = evaluate_ensemble(
                args.run_dir, args.out, args.split, args.checkpoint, args.device, weights=args.weights
            )
        else:
            result = reevaluate(args.run_dir[0], args.split, args.checkpoint, args.device, tta=args.tta, out=args.out)
    except (OSError, ValueError, RuntimeError, DataError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = result.summary
    print(
        f"{', '.join(r.name for r in args.run_dir)} [{args.split}, {result.subjects} subjects] foreground Dice "
        f"{summary['fg_mean']:.4f} +- {summary['fg_std'] or 0:.4f}"
    )
    for name, stats in summary["per_class"].items():
        print(f"  {name:<28} {stats['mean']:.4f}" if stats["mean"] is not None else f"  {name:<28} n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
