"""Section pipeline: slices/s the training DataLoader delivers next to the U-Net step rate."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO, Section, Table, interleaved, malc_overrides, median
from bench.training import compose, demo_config, training_step


def section_pipeline(args: argparse.Namespace) -> Section:
    import torch

    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.spec import RunSpec

    section = Section("pipeline", "Input pipeline: DataLoader slices/s with augmentation, next to the step rate")
    load_batches, step_batches = (3, 2) if args.quick else (30, 4)
    table = Table(
        "Training DataLoader (main process unless workers > 0) against a U-Net training step on its batches",
        [
            ("data", "data", "s"),
            ("slice", "slice H x W", "s"),
            ("workers", "workers", "d"),
            ("loader", "loader slices/s", ".1f"),
            ("step", "U-Net step slices/s", ".1f"),
            ("ratio", "loader / step", ".1f"),
        ],
    )
    configs: list[tuple[str, Any]] = []
    with tempfile.TemporaryDirectory() as runs_dir:
        configs.append(("phantom (experiment=demo)", demo_config(args, runs_dir, load_batches)))
        malc = malc_root()
        if malc is not None and not args.quick:
            overrides = malc_overrides(args.malc_override)
            configs.append((f"MALC ({' '.join(overrides)})", compose(overrides)))
        elif malc is None:
            section.notes.append("MALC row skipped: ../shared/data/malc2012 not found")
        for label, cfg in configs:
            dm = build_datamodule(RunSpec.from_config(cfg))
            dm.prepare()
            dataset = dm.train_dataset()
            batch = dm.batch_size
            fetched = [b for _, b in zip(range(step_batches), dm.train_loader(dataset, epoch=1))]
            torch.manual_seed(0)
            model = build_model(RunSpec.from_config(cfg), dm.num_classes, dm.in_channels)
            step = training_step(cfg, model, dm.num_classes)

            def load(dm: Any = dm, dataset: Any = dataset) -> None:
                _drain(dm.train_loader(dataset, epoch=0, iters_per_epoch=load_batches), load_batches)

            def steps(fetched: list[dict] = fetched, step: Callable = step) -> None:
                for b in fetched:
                    step(b["image"], b["label"])

            times = interleaved({"loader": load, "step": steps}, args.repeats, warmup=1)
            loader_rates = [load_batches * batch / t for t in times["loader"]]
            step_rates = [step_batches * batch / t for t in times["step"]]
            ratio = median(a / b for a, b in zip(loader_rates, step_rates))
            section.raw[label] = {"loader_slices_per_s": loader_rates, "step_slices_per_s": step_rates}
            table.rows.append(
                {
                    "data": label,
                    "slice": " x ".join(str(v) for v in fetched[0]["image"].shape[-2:]),
                    "workers": int(cfg.data.loader.num_workers),
                    "loader": median(loader_rates),
                    "step": median(step_rates),
                    "ratio": ratio,
                }
            )
            section.target(f"DataLoader / U-Net step rate, {label}", ratio, 5.0, True)
    section.sizes = (
        f"per round {load_batches} batches loaded (a fresh epoch iterator) and {step_batches} training steps, the "
        "experiment's own model, batch size and augmentation"
    )
    section.tables.append(table)
    return section


def _drain(loader: Any, batches: int) -> int:
    seen = 0
    for _, batch in zip(range(batches), loader):
        seen += batch["label"].shape[0]
    return seen


# ---------------------------------------------------------------------------------------------- start-up
def malc_root() -> Path | None:
    root = Path(os.environ.get("SCSEG_MALC_ROOT", REPO.parent / "shared" / "data" / "malc2012"))
    return root if (root / "split.json").is_file() else None
