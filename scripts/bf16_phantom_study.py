"""bf16 autocast against fp32 on the phantom, analysed like a study: `python scripts/bf16_phantom_study.py [--seeds 5]`.

Where the CPU has no AMX (the development machine), bf16 autocast on the CPU runs an emulated path: slower, but
numerically the same rounding as on AMX hardware. This is the correctness check that can run anywhere: the learning
test's run (U-Net, 16 filters, 8 epochs x 50 steps; phantom subjects of 32^3, 7 training, 8 test) trained in fp32
and in bf16 for each seed, and bf16 - fp32 compared by the study analysis (intervals over runs and test
subjects, equivalence margin 1 Dice point). The MALC quality check (3 seeds at the CPU preset) needs a CPU where
bf16 is fast; docs/cpu-speed.md records both.

Prints the per-run Dice, the effect with its interval and the verdict; writes nothing outside a temporary folder
unless --runs-dir is given.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from scseg.config import compose_train_config
from scseg.engine.precision import cpu_has_amx
from scseg.engine.run import run_training
from scseg.report.effects import compare, format_points

LEARNING_RUN = [
    "data=phantom",
    "data.layout.n_subjects=16",
    "data.layout.n_test=8",
    "data.layout.size=[32,32,32]",
    "data.val_subjects=1",
    "data.augment.enabled=false",
    "data.slices.min_foreground=0.01",
    "data.loader.batch_size=8",
    "width=small",
    "model=unet",
    "model.filters=16",
    "model.depth=3",
    "optimizer.lr=3e-3",
    "scheduler=cosine",
    "trainer.max_epochs=8",
    "trainer.iters_per_epoch=50",
    "trainer.val_every=8",
    "trainer.num_threads=1",
    "logger.image_slices=0",
    "experiment_name=bf16_phantom",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        scores: dict[str, list[dict[str, float]]] = {"bf16": [], "fp32": []}
        for seed in range(args.seeds):
            for precision, amp in (("fp32", "false"), ("bf16", "true")):
                cfg = compose_train_config(
                    [*LEARNING_RUN, f"seed={seed}", f"trainer.amp={amp}", f"paths.runs_dir={runs_dir}"]
                )
                result = run_training(cfg)
                assert result.summary["precision"] == precision, result.summary["precision"]
                scores[precision].append(result.summary["fg_dice_per_subject"])
                print(f"seed {seed} {precision}: fg Dice {result.summary['fg_mean']:.4f}", flush=True)
    subjects = sorted(scores["fp32"][0])
    bf16 = np.array([[run[s] for s in subjects] for run in scores["bf16"]])
    fp32 = np.array([[run[s] for s in subjects] for run in scores["fp32"]])
    effect = compare(bf16, fp32, names=("bf16", "fp32"), margin=0.01, n_boot=10_000, seed=0)
    print(
        f"CPU AMX: {'yes' if cpu_has_amx() else 'no (emulated bf16 path)'}; {args.seeds} seeds x {len(subjects)} test "
        f"subjects; bf16 - fp32 = {format_points(effect.estimate)} points, {100 * effect.level:.0f} % interval "
        f"[{format_points(effect.ci_low)}, {format_points(effect.ci_high)}]; verdict: {effect.verdict} "
        f"(margin +-1 point)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
