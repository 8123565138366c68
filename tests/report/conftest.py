"""Synthetic sweep folders for the report tests: run folders written by hand, as the trainer would."""

from __future__ import annotations

import csv
import json
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ARCHS = ("unet", "sdnet")
VARIANTS = (("none", None), ("cse", None), ("sse", None), ("scse", "add"))
SEEDS = (0, 1)
STRUCTURES = {1: "alpha", 2: "beta", 3: "gamma"}


def run_name(arch: str, se: str, aggregation: str | None, seed: int) -> str:
    middle = f"{se}-{aggregation}" if aggregation else se
    return f"{arch}-{middle}-seed{seed}-{zlib.crc32(f'{arch}{middle}{seed}'.encode()):08x}"


def write_run(
    root: Path,
    arch: str,
    se: str,
    aggregation: str | None,
    seed: int,
    fg: dict[str, float],
    per_case: dict[tuple[str, int], float],
    state: str = "done",
) -> Path:
    """A finished run folder: status.json, summary.json and per_case.csv (background rows included)."""
    folder = root / run_name(arch, se, aggregation, seed)
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": state, "config_hash": "abc"}))
    values = [v for v in fg.values() if not math.isnan(v)]
    summary = {
        "split": "test",
        "subjects": sorted(fg),
        "per_class": {},
        "fg_dice_per_subject": fg,
        "fg_mean": float(np.mean(values)),
        "fg_std": float(np.std(values)),
        "averaging": "per subject",
        "arch": arch,
        "se": se,
        "aggregation": aggregation,
        "seed": seed,
        "config_hash": "abc",
        "n_params": 1000,
        "checkpoint": "best.pt",
        "scseg_version": "0.1.0",
        "git_commit": "deadbeef",
        "torch_version": "2.x",
        "device": "cpu",
        "threads": 1,
        "wall_time_s": 1.0,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with (folder / "per_case.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "class_id", "class_name", "tp", "fp", "fn", "n_ref", "n_pred", "dice"])
        for subject in sorted(fg):
            writer.writerow([subject, 0, "background", 100, 1, 1, 101, 101, 0.99])
            for class_id, name in STRUCTURES.items():
                dice = per_case[subject, class_id]
                writer.writerow([subject, class_id, name, 1, 1, 1, 2, 2, "" if math.isnan(dice) else dice])
    return folder


@pytest.fixture
def make_sweep(tmp_path: Path) -> Callable[..., tuple[Path, dict]]:
    """Build ``archs x variants x seeds`` runs with random Dice; returns (folder, {(arch, se, agg, seed):
    (fg_dice_per_subject, per_case)}) so tests can recompute every number by hand."""

    def build(n_subjects: int = 8, archs=ARCHS, variants=VARIANTS, seeds=SEEDS, skip=(), nan_case=True):
        rng = np.random.default_rng(1234)
        root = tmp_path / "experiment"
        root.mkdir(exist_ok=True)
        subjects = [f"sub{i:02d}" for i in range(n_subjects)]
        truth = {}
        for arch in archs:
            for k, (se, aggregation) in enumerate(variants):
                for seed in seeds:
                    if (arch, se, aggregation, seed) in skip:
                        continue
                    fg = {s: float(rng.uniform(0.5, 0.9) + 0.01 * k) for s in subjects}
                    per_case = {(s, c): float(rng.uniform(0.3, 0.95)) for s in subjects for c in STRUCTURES}
                    if nan_case:
                        per_case[subjects[0], 3] = math.nan
                    write_run(root, arch, se, aggregation, seed, fg, per_case)
                    truth[arch, se, aggregation, seed] = (fg, per_case)
        return root, truth

    return build


@pytest.fixture
def run_folder_name() -> Callable[[str, str, str | None, int], str]:
    """The folder name the synthetic sweep gives a run (tests must not import conftest)."""
    return run_name
