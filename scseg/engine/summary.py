"""``summary.json``: ONE builder for training and re-evaluation, so both write the same keys.

``scseg-compare`` files a run under its (architecture, SE variant, aggregation, reduction, positions, seed) from
this file; a re-evaluation that dropped ``aggregation`` once moved a scSE-max run silently into the scSE (add)
column. :func:`build_summary` is the only place that assembles the payload; ``scseg.engine.run`` (after
training) and ``scseg.cli.evaluate`` (``scseg-evaluate RUN_DIR``) both call it, the latter with what only training
knew (the config hashes) carried over by :func:`recorded_hashes`.

The summary also carries a ``comparison_hash`` (:func:`scseg.run_identity.comparison_hash`): the config hash
without the keys an SE comparison may vary (the ``se`` group, ``model.se_reduction``, the seed and the experiment
name). Runs of one architecture whose comparison hashes differ were not trained alike, so the report flags the
cell.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import scseg
from scseg.atomic import atomic_write_text
from scseg.engine import run_dir as rd
from scseg.engine.precision import cpu_has_amx
from scseg.engine.spec import RunSpec
from scseg.machine import cpu_model
from scseg.metrics import summarize
from scseg.paths import REPO_ROOT

SUMMARY_FILE = "summary.json"


def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    """An installed package's version (None when absent): the analysis libraries behind a summary's numbers."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_dirty() -> bool | None:
    """True when tracked files differ from HEAD (the commit alone does not say what ran), None outside git."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_metadata(device: torch.device, wall_time_s: float) -> dict:
    """Provenance of an evaluation: versions, commit, device, CPU, threads and wall time."""
    return {
        "scseg_version": scseg.__version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "numpy_version": np.__version__,
        "scipy_version": _version("scipy"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "wall_time_s": round(wall_time_s, 2),
    }


def json_safe(obj: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def build_summary(
    spec: RunSpec,
    rows: Sequence[Mapping],
    class_names: Sequence[str],
    split: str,
    *,
    n_params: int,
    checkpoint: str | Path | None,
    epoch: int | None,
    best_epoch: int | None,
    best_val_dice: float | None,
    config_hash: str | None,
    comparison_hash: str | None,
    device: torch.device,
    wall_time_s: float,
    se_kernels: str | None = None,
    capacity: Mapping | None = None,
    precision: str | None = None,
) -> dict:
    """The ``summary.json`` payload: Dice statistics of ``rows`` plus the run's identity and provenance.

    Identity keys (what the report files the run under): arch, se, aggregation (scSE only, else None),
    se_reduction (modules with a reduction: cSE and scSE), se_positions (any SE), seed, experiment; then config_hash,
    comparison_hash, n_params, the evaluated checkpoint and its epoch, best_epoch / best_val_dice of training,
    ``capacity_match`` (the capacity control's record, :func:`scseg.models.capacity.capacity_of`), ``se_kernels``,
    what computed the SE gates (:func:`scseg.models.se.se_kernel_path`), and :func:`run_metadata`.
    """
    m, data = spec.model, spec.data
    se = m.se
    cross_validated = data.get("folds") is not None or bool(data.get("splits_file"))
    summary = summarize(rows, list(class_names), split)
    summary.update(
        arch=m.arch,
        se=se,
        aggregation=m.aggregation_used,
        se_reduction=m.reduction_used,
        se_positions=list(m.positions) if se != "none" else None,
        se_gate_scale=m.gate_scale if se != "none" else None,
        seed=spec.seed,
        fold=int(data.get("fold", 0)) if cross_validated else None,
        folds=data.get("folds"),
        experiment=spec.experiment,
        config_hash=config_hash,
        comparison_hash=comparison_hash,
        n_params=int(n_params),
        checkpoint=str(checkpoint) if checkpoint else None,
        epoch=None if epoch is None else int(epoch),
        best_epoch=None if best_epoch is None or best_epoch < 0 else int(best_epoch),
        best_val_dice=best_val_dice,
        se_kernels=se_kernels,
        capacity_match=dict(capacity) if capacity else None,
        precision=precision,
        cpu_amx=cpu_has_amx(),
        **run_metadata(device, wall_time_s),
    )
    return summary


def write_summary(path: str | Path, summary: Mapping) -> None:
    """Write a summary atomically as indented JSON (NaN and infinities become null)."""
    atomic_write_text(Path(path), json.dumps(json_safe(dict(summary)), indent=2))


def training_summary(run_dir: str | Path) -> dict | None:
    """The ``summary.json`` training wrote in ``run_dir`` (None when absent or unreadable): read once by a
    re-evaluation, which keeps its commit and hashes."""
    try:
        previous = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


TRAINING_PROVENANCE = ("git_commit", "git_dirty", "wall_time_s", "device", "cpu_model", "cpu_count", "threads")
"""Keys that describe how a run's weights were made: a re-evaluation keeps training's and adds its own as
``evaluated_<key>`` (a page's wall times and machine are training's, not the re-evaluation's minute)."""


def keep_training_provenance(summary: dict, previous: dict | None) -> dict:
    """A re-evaluation's summary with training's commit, machine and wall time (:data:`TRAINING_PROVENANCE`: what
    produced the weights, and what a study page groups runs by), its own as ``evaluated_<key>``. Unchanged when
    training's summary (``previous``, from :func:`training_summary`) is missing or has no commit."""
    if previous is None or "git_commit" not in previous:
        return summary
    out = dict(summary)
    for key in TRAINING_PROVENANCE:
        if key in previous:
            out[f"evaluated_{key}"] = summary.get(key)
            out[key] = previous[key]
    return out


def recorded_hashes(run_dir: str | Path, previous: dict | None) -> dict[str, str | None]:
    """``{"config_hash", "comparison_hash"}`` recorded when the run trained, for a re-evaluation to carry over.

    Re-evaluation reads the resolved ``.hydra/config.yaml``, whose hash differs from the one training computed
    from the unresolved config, so both are taken from what training wrote: ``status.json`` for the config hash,
    training's summary (``previous``) for either; None where neither has it (the report then compares ``.hydra``
    configs).
    """
    folder = Path(run_dir)
    found: dict[str, str | None] = {"config_hash": None, "comparison_hash": None}
    if previous is not None:
        for key in found:
            if isinstance(previous.get(key), str):
                found[key] = previous[key]
    try:
        status = rd.read_status(folder)
    except rd.RunStateError:
        status = None
    if status is not None and isinstance(status.get("config_hash"), str):
        found["config_hash"] = status["config_hash"]
    return found


__all__ = [
    "SUMMARY_FILE",
    "build_summary",
    "cpu_model",
    "git_commit",
    "json_safe",
    "TRAINING_PROVENANCE",
    "keep_training_provenance",
    "recorded_hashes",
    "training_summary",
    "run_metadata",
    "write_summary",
]
