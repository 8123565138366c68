"""Checkpoint I/O: crash-safe writes, a self-describing state, safe loading, RNG capture and rotation.

A run must survive being killed at any moment: every file is written to a temporary file in the same folder,
flushed, fsynced and then moved into place with ``os.replace``, so the previous version stays loadable until
the new one is complete. Checkpoints hold only what ``torch.load(weights_only=True)`` accepts (tensors and
plain Python containers/scalars), and are always loaded that way: loading never executes pickled code.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

import scseg
from scseg.atomic import atomic_write
from scseg.atomic import fsync_dir as _fsync_dir
from scseg.engine import faults

FORMAT_VERSION = 1
PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel wrappers


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, incomplete, or belongs to another architecture / class count."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


# Numbers the checkpoint files this process writes, for the test-only fault hook (scseg.engine.faults).
_CHECKPOINT_WRITES = itertools.count(1)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Save ``state`` atomically: a crash while writing leaves the previous file at ``path`` loadable."""
    number = next(_CHECKPOINT_WRITES)

    def write(file: IO[bytes]) -> None:
        torch.save(state, file)
        faults.maybe_fail("checkpoint_write", number, partial=file)

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot load checkpoint {path}: the file is corrupt, truncated, or holds objects that "
            f"torch.load(weights_only=True) refuses ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}; expected a dict")
    return state


def _plain(value: Any, where: str) -> Any:
    """Convert numpy scalars/arrays and 0-d tensors to plain Python; refuse anything weights_only would."""
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float but pickles as numpy
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.item() if value.ndim == 0 else value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} must be a str or int to store in a checkpoint")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"{where}: cannot store a {type(value).__name__} in a checkpoint; use plain lists, dicts, numbers or strings"
    )


def capture_rng_state() -> dict:
    """Python, numpy (legacy global) and torch CPU/CUDA RNG states as plain lists/ints and uint8 tensors."""
    version, internal, gauss_next = random.getstate()
    # The legacy global state is what third-party code (augmentation libraries) draws from: capture it.
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # noqa: NPY002
    state = {
        "python": {"version": int(version), "internal": [int(x) for x in internal], "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "key": [int(x) for x in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state`; accepts the RNG dict or a whole checkpoint (its ``"rng"`` entry).

    CUDA states are restored for the devices present; a different device count gives a warning.
    """
    rng = state["rng"] if "rng" in state else state
    missing = [key for key in ("python", "numpy", "torch") if key not in rng]
    if missing:
        raise CheckpointError(f"RNG state lacks {missing}; expected the dict made by capture_rng_state")
    py = rng["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npy = rng["numpy"]
    np.random.set_state(  # noqa: NPY002 (restores the global state captured above)
        (
            npy["bit_generator"],
            np.asarray(npy["key"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(rng["torch"].cpu())
    cuda_states = list(rng.get("cuda", []))
    if cuda_states and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if count != len(cuda_states):
            warnings.warn(
                f"checkpoint holds CUDA RNG states for {len(cuda_states)} devices, this machine has {count}; "
                "restoring the overlap",
                stacklevel=2,
            )
        for device, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)


def strip_prefixes(state_dict: Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Remove leading ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes, in any nesting order."""
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        stripped = key
        while stripped.startswith(PREFIXES):
            stripped = stripped[len(next(p for p in PREFIXES if stripped.startswith(p))) :]
        if stripped in out:
            raise CheckpointError(f"state dict keys {key!r} and another key both become {stripped!r} without prefixes")
        out[stripped] = value
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside torch.compile / DDP wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def build_checkpoint_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    scaler: Any | None,
    epoch: int,
    step: int,
    best_metric: float | None,
    history: Mapping | list,
    config_yaml: str,
    arch: str,
    num_classes: int,
    extra: Mapping | None = None,
) -> dict:
    """Everything needed to resume or evaluate a run, in types ``torch.load(weights_only=True)`` accepts.

    The model state dict is stored without wrapper prefixes; ``history``, ``best_metric`` and ``extra`` are
    converted to plain Python (numpy scalars become floats; other objects raise a TypeError naming the entry).
    """
    if not isinstance(config_yaml, str):
        raise TypeError(f"config_yaml must be the resolved config as a YAML string; got {type(config_yaml).__name__}")
    return {
        "format_version": FORMAT_VERSION,
        "scseg_version": scseg.__version__,
        "arch": str(arch),
        "num_classes": int(num_classes),
        "epoch": int(epoch),
        "step": int(step),
        "best_metric": _plain(best_metric, "best_metric"),
        "history": _plain(history, "history"),
        "config_yaml": config_yaml,
        "model": strip_prefixes(model.state_dict()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng_state(),
        "extra": _plain(dict(extra or {}), "extra"),
    }


def load_model_weights(model: nn.Module, state: Mapping, expected_arch: str, expected_num_classes: int) -> None:
    """Load ``state["model"]`` strictly, after checking the stored arch and class count match the expected ones.

    A mismatch raises a CheckpointError naming both (before torch's own, less readable key-mismatch error).
    Works for plain, compiled and DDP-wrapped models and checkpoints.
    """
    missing = [key for key in ("arch", "num_classes", "model") if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint state lacks {missing}; expected a dict made by build_checkpoint_state")
    stored_arch, stored_classes = state["arch"], int(state["num_classes"])
    if stored_arch != expected_arch or stored_classes != int(expected_num_classes):
        raise CheckpointError(
            f"checkpoint was trained as arch {stored_arch!r} with {stored_classes} classes; "
            f"expected arch {expected_arch!r} with {int(expected_num_classes)} classes"
        )
    _unwrap(model).load_state_dict(strip_prefixes(state["model"]), strict=True)


class CheckpointManager:
    """The checkpoints of one run folder: ``last.pt``, ``best.pt`` and one spare, ``last.prev.pt``.

    ``save(state, is_best)`` writes the new ``last.pt`` atomically; the previous ``last.pt`` becomes
    ``last.prev.pt`` through a hard link (a copy where links are unsupported) and ``os.replace``, so at every
    instant ``last.pt`` is a complete checkpoint. ``best.pt`` is linked from the new ``last.pt`` when
    ``is_best``. ``load_latest`` falls back to ``last.prev.pt`` when ``last.pt`` is unreadable.
    """

    LAST = "last.pt"
    PREV = "last.prev.pt"
    BEST = "best.pt"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    @property
    def last_path(self) -> Path:
        return self.folder / self.LAST

    @property
    def prev_path(self) -> Path:
        return self.folder / self.PREV

    @property
    def best_path(self) -> Path:
        return self.folder / self.BEST

    def has_resumable(self) -> bool:
        """Whether a ``last.pt`` or its spare exists."""
        return self.last_path.is_file() or self.prev_path.is_file()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files a killed writer left (``.last.pt.*.tmp`` and the like); returns them.

        Call it only while holding the run folder's lock: a live writer's temporary file looks the same.
        """
        names = (self.LAST, self.PREV, self.BEST)
        stale = [p for p in self.folder.glob(".*.tmp") if p.name[1:].startswith(tuple(f"{n}." for n in names))]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def _place_copy(self, source: Path, target: Path) -> None:
        """Make ``target`` a copy of ``source`` atomically (hard link, else file copy, then ``os.replace``)."""
        tmp = self.folder / f".{target.name}.link.tmp"
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def save(self, state: dict, is_best: bool = False) -> Path:
        """Write ``state`` as ``last.pt`` (rotating the previous one to ``last.prev.pt``) and, if best, ``best.pt``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.last_path.is_file():
            self._place_copy(self.last_path, self.prev_path)
        save_checkpoint(self.last_path, state)
        if is_best:
            self._place_copy(self.last_path, self.best_path)
        _fsync_dir(self.folder)
        return self.last_path

    def save_last(self, state: dict) -> Path:
        """Write ``last.pt`` (rotating the previous one to ``last.prev.pt``)."""
        return self.save(state, is_best=False)

    def save_best(self, state: dict) -> Path:
        """Write ``best.pt`` atomically (``save(state, is_best=True)`` instead links it from ``last.pt``)."""
        return save_checkpoint(self.best_path, state)

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
        """``(path, state)`` of ``last.pt``, or of ``last.prev.pt`` if ``last.pt`` is unreadable; None if none exists.

        Both present and unreadable: a CheckpointError naming both.
        """
        candidates = [p for p in (self.last_path, self.prev_path) if p.is_file()]
        if not candidates:
            return None
        errors = []
        for i, path in enumerate(candidates):
            try:
                return path, load_checkpoint(path, map_location)
            except CheckpointError as error:
                errors.append(str(error))
                if i + 1 < len(candidates):
                    warnings.warn(f"{error}; falling back to {candidates[i + 1]}", stacklevel=2)
        raise CheckpointError(f"no loadable checkpoint in {self.folder}: " + "; ".join(errors))


__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "build_checkpoint_state",
    "capture_rng_state",
    "load_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "save_checkpoint",
    "strip_prefixes",
]
