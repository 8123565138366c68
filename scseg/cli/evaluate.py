"""``scseg-evaluate RUN_DIR [--split test]``: evaluate a finished run's best checkpoint on whole volumes.

Reads the run's resolved config (``.hydra/config.yaml``), rebuilds the data module and the model, loads
``checkpoints/best.pt`` (``weights_only``, never executing code) and writes ``per_case[_<split>].csv`` and
``summary[_<split>].json`` into the run folder (the test split keeps the training run's file names). The summary
comes from the same builder as after training (:func:`scseg.engine.summary.build_summary`), with the config
hashes training recorded carried over, so ``scseg-compare`` files the run exactly as before.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from scseg.atomic import DiskFullError
from scseg.data.errors import DataError
from scseg.data.types import SPLITS
from scseg.engine.allocator import tune_allocator
from scseg.engine.inference import Predictor, counts_to_rows
from scseg.engine.loading import eval_resample_of, load_run
from scseg.engine.run import write_per_case
from scseg.engine.summary import build_summary, recorded_hashes, write_summary
from scseg.models import count_parameters
from scseg.models.capacity import capacity_of
from scseg.models.se import se_kernel_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a run's best checkpoint on whole volumes.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    tune_allocator()  # keep large buffers in the process; SCSEG_TUNE_MALLOC=0 turns it off

    started = time.perf_counter()
    try:
        cfg, dm, model, state = load_run(args.run_dir, args.checkpoint)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    model.to(device)
    try:
        dm.prepare()  # may write cache entries: a full disk or a bad image file ends in one line
    except (DiskFullError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batch_size = int(cfg.trainer.eval_batch_size)
    predictor = Predictor(model, dm, batch_size, device, resample=eval_resample_of(cfg))
    counts = predictor.evaluate(dm.subjects(args.split))
    rows = counts_to_rows(counts, dm.class_names)
    best_metric = state.get("best_metric")
    summary = build_summary(
        cfg,
        rows,
        dm.class_names,
        args.split,
        n_params=count_parameters(model),
        checkpoint=args.run_dir / "checkpoints" / f"{args.checkpoint}.pt",
        epoch=int(state["epoch"]),
        best_epoch=(state.get("extra") or {}).get("best_epoch"),
        best_val_dice=None if best_metric is None else float(best_metric),
        device=device,
        wall_time_s=time.perf_counter() - started,
        se_kernels=se_kernel_path(model),
        capacity=capacity_of(model),
        **recorded_hashes(args.run_dir),
    )
    suffix = "" if args.split == "test" else f"_{args.split}"
    try:
        write_per_case(args.run_dir / f"per_case{suffix}.csv", rows)
        write_summary(args.run_dir / f"summary{suffix}.json", summary)
    except DiskFullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.run_dir.name} [{args.split}, {len(counts)} subjects] foreground Dice "
        f"{summary['fg_mean']:.4f} +- {summary['fg_std'] or 0:.4f}"
    )
    for name, stats in summary["per_class"].items():
        print(f"  {name:<28} {stats['mean']:.4f}" if stats["mean"] is not None else f"  {name:<28} n/a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
