"""Check that every finished run of an experiment really learned (used by `make demo`).

A run passes when its mean foreground Dice over test subjects is at least ``--min-dice`` (0.5) and at least
``--min-ratio`` (3) times the Dice of a random predictor drawing labels with each subject's class frequencies
(computed from the run's own per_case.csv). Prints one line per run; exits 1 if any run fails or is missing.

    python scripts/check_learning.py runs/demo
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from scseg.metrics import random_predictor_dice


def random_fg_dice(per_case: Path) -> float:
    """Mean over subjects of the random predictor's mean foreground Dice."""
    n_ref: dict[str, dict[int, int]] = defaultdict(dict)
    with per_case.open() as fh:
        for row in csv.DictReader(fh):
            n_ref[row["subject"]][int(row["class_id"])] = int(row["n_ref"])
    per_subject = []
    for counts in n_ref.values():
        k = max(counts) + 1
        dice = random_predictor_dice(np.array([counts.get(c, 0) for c in range(k)]))
        per_subject.append(np.nanmean(dice[1:]))
    return float(np.mean(per_subject))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir", type=Path)
    parser.add_argument("--min-dice", type=float, default=0.5)
    parser.add_argument("--min-ratio", type=float, default=3.0)
    args = parser.parse_args(argv)
    runs = sorted(p for p in args.experiment_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not runs:
        print(f"no runs in {args.experiment_dir}", file=sys.stderr)
        return 1
    ok = True
    for run in runs:
        summary_path, per_case = run / "summary.json", run / "per_case.csv"
        if not summary_path.is_file() or not per_case.is_file():
            print(f"MISSING  {run.name}: no summary.json / per_case.csv")
            ok = False
            continue
        fg = json.loads(summary_path.read_text())["fg_mean"] or 0.0
        chance = random_fg_dice(per_case)
        passed = fg >= args.min_dice and fg >= args.min_ratio * chance
        ok &= passed
        print(
            f"{'ok  ' if passed else 'FAIL'}  {run.name:<40} fg Dice {fg:.3f}  random {chance:.3f}  "
            f"ratio {fg / chance if chance else float('inf'):.1f}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
