"""Run-folder identity: a config hash, the run name, an exclusive lock, status.json and the resume decision.

A sweep relaunched after a crash must resume unfinished runs, skip finished ones, and never mix two configs
in one folder or let two processes train into the same folder. The folder name carries the hash of the
result-relevant config; ``status.json`` records the state and that hash; ``.lock`` is held while training.

Layout of a run folder: ``.lock``, ``status.json`` and ``checkpoints/`` (``last.pt``, ``last.prev.pt``,
``best.pt``; see :class:`scseg.engine.checkpoint.CheckpointManager`). Other files belong to the trainer.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from scseg.engine.checkpoint import CheckpointManager, atomic_write

# Keys left out of the config hash: they change where and how verbosely a run is written, or how fast data is
# loaded, never the trained weights or the numbers (data order depends on seed/epoch/index, not on workers).
DEFAULT_HASH_EXCLUDE: tuple[str, ...] = (
    "paths",  # machine-specific folders (data root, output root)
    "hydra",  # Hydra's own runtime settings
    "resume",  # whether to resume, not what is trained
    "logger",  # TensorBoard / console logging
    "data.loader.num_workers",
    "data.loader.pin_memory",
    "data.loader.persistent_workers",
    "data.loader.prefetch_factor",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.tune_malloc",  # the C allocator's thresholds: speed, never results
    "trainer.checkpoint_every_n_steps",  # how often a run saves, not what it trains (resume is bit-identical)
    "trainer.checkpoint_every_minutes",
)
# Keys added after run folders existed: at these values they leave the hash (and so every run folder's name)
# unchanged, so adding a knob never renames the runs of configs that do not use it.
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.slices.fallback_axis": "axial",
    "data.slices.anisotropy_threshold": 1.5,
    "data.val_fraction": None,
    # SE placement (issue 13): the paper's encoder + decoder blocks, as every earlier run. The identity
    # (scseg.engine.run.identity) also folds se.in_bottleneck into it and replaces se.reduction by the effective one
    # (model.se_reduction when null), so equal networks share a folder and the new model.se_reduction key never
    # renames a run.
    "se.positions": ["encoder", "decoder"],
    "model.se_reduction": None,
    # Loss options against background flooding (issue 11); the defaults are the loss every earlier run used.
    "loss.boundary_mode": "multiplicative",
    "loss.min_class_weight_ratio": 0.0,
}
RESUME_MODES = ("auto", "never", "must")
STATES = ("running", "done", "failed")
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
CHECKPOINT_SUBDIR = "checkpoints"
_NAME_PART = re.compile(r"^[A-Za-z0-9_.]+$")
_RUN_NAME = re.compile(
    r"^(?P<arch>[A-Za-z0-9_.]+)-(?P<se>[A-Za-z0-9_.]+)(?:-(?P<aggregation>[A-Za-z0-9_.]+))?"
    r"-seed(?P<seed>\d+)-(?P<hash8>[0-9a-f]{8})$"
)
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
_RESOLVER_CALL = re.compile(r"\$\{[\w.\-]*:")


class RunStateError(RuntimeError):
    """The run folder's state does not allow the requested start (nothing to resume, unverifiable checkpoint)."""


class RunLockedError(RunStateError):
    """Another process holds the run folder's lock."""


class ConfigMismatchError(RunStateError):
    """The run folder belongs to a different config hash."""


def checkpoint_dir(folder: str | os.PathLike) -> Path:
    """Where a run folder keeps its checkpoints."""
    return Path(folder) / CHECKPOINT_SUBDIR


def _excluded(path: str, exclude: tuple[str, ...]) -> bool:
    return any(path == key or path.startswith(key + ".") for key in exclude)


def _canonical(cfg: Any, root: DictConfig | None, path: str, exclude: tuple[str, ...]) -> Any:
    """Plain, resolved copy of ``cfg`` without excluded keys (interpolations handled as in :func:`config_hash`)."""
    if isinstance(cfg, Mapping):
        out = {}
        for key, value in cfg.items():
            child = f"{path}.{key}" if path else str(key)
            if _excluded(child, exclude):
                continue
            plain = _canonical(value, root, child, exclude)
            if child in HASH_NEUTRAL_DEFAULTS and plain == HASH_NEUTRAL_DEFAULTS[child]:
                continue
            out[str(key)] = plain
        return out
    if isinstance(cfg, (list, tuple)):
        return [_canonical(value, root, f"{path}.{i}", exclude) for i, value in enumerate(cfg)]
    if isinstance(cfg, str) and root is not None and cfg == "???":
        raise ValueError(f"config_hash: {path!r} is missing (???); set it before hashing the config")
    if isinstance(cfg, str) and root is not None and "${" in cfg:
        targets = _INTERPOLATION.findall(cfg)
        keep_text = _RESOLVER_CALL.search(cfg) is not None or any(
            t.startswith(".") or _excluded(t, exclude) for t in targets
        )
        if keep_text:
            return cfg
        value = OmegaConf.select(root, path, throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        return _canonical(value, None, path, exclude)
    if cfg is None or isinstance(cfg, (bool, int, float, str)):
        return cfg
    raise TypeError(f"config_hash: value of {path!r} has type {type(cfg).__name__}; expected plain config values")


def config_hash(cfg: Mapping | DictConfig, exclude: tuple[str, ...] = DEFAULT_HASH_EXCLUDE) -> str:
    """sha256 (64 hex chars) of the resolved config as canonical JSON (sorted keys), without ``exclude``.

    ``exclude`` holds dotted keys; a key excludes its whole subtree; absent keys are ignored. The defaults
    (:data:`DEFAULT_HASH_EXCLUDE`) only change where or how verbosely a run writes, or loader speed.
    Interpolations are resolved, except those that refer to an excluded key or call a resolver
    (``${paths.data}/malc``, ``${oc.env:X}``, ``${hydra:...}``) or are relative: they enter as their text, so
    that the hash does not depend on the machine. A ``???`` (missing) value raises an error.
    """
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
        plain = _canonical(raw, cfg, "", tuple(exclude))
    elif isinstance(cfg, Mapping):
        plain = _canonical(cfg, None, "", tuple(exclude))
    else:
        raise TypeError(f"config_hash expects a mapping or DictConfig; got {type(cfg).__name__}")
    try:
        text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"config_hash: config holds a non-finite float ({error})") from error
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def short_hash(full_hash: str, length: int = 8) -> str:
    """The first ``length`` hex characters of a :func:`config_hash`, as used in run names."""
    if not re.fullmatch(r"[0-9a-f]+", full_hash or "") or len(full_hash) < length:
        raise ValueError(f"expected a hex digest of at least {length} characters; got {full_hash!r}")
    return full_hash[:length]


def run_name(arch: str, se: str, aggregation: str | None, seed: int, hash8: str) -> str:
    """``<arch>-<se>[-<aggregation>]-seed<k>-<hash8>``; the aggregation appears only for ``se == "scse"``."""
    for label, part in (("arch", arch), ("se", se)):
        if not _NAME_PART.match(str(part)):
            raise ValueError(f"run_name: {label} {part!r} must match [A-Za-z0-9_.]+ (no '-', '/' or spaces)")
    parts = [arch, se]
    if se == "scse":
        if aggregation is None or not _NAME_PART.match(str(aggregation)):
            raise ValueError(f"run_name: se 'scse' needs an aggregation matching [A-Za-z0-9_.]+; got {aggregation!r}")
        parts.append(aggregation)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"run_name: seed must be a non-negative int; got {seed!r}")
    if not re.fullmatch(r"[0-9a-f]{8}", str(hash8)):
        raise ValueError(f"run_name: hash8 must be 8 lowercase hex characters; got {hash8!r}")
    return "-".join([*parts, f"seed{seed}", hash8])


def parse_run_name(name: str) -> dict:
    """Inverse of :func:`run_name`: ``{arch, se, aggregation, seed, hash8}`` (aggregation None unless scSE)."""
    match = _RUN_NAME.match(name)
    if not match or (match["se"] == "scse") != (match["aggregation"] is not None):
        raise ValueError(f"{name!r} is not a run name of the form <arch>-<se>[-<aggregation>]-seed<k>-<hash8>")
    return {**match.groupdict(), "seed": int(match["seed"])}


class RunLock:
    """Exclusive, non-blocking ``fcntl.flock`` on ``<folder>/.lock`` while a process trains in the folder.

    Use as a context manager. A second holder (another process, or another ``open()`` of the file in this
    process: flock locks belong to an open file description) gets :class:`RunLockedError`. The lock file
    keeps the holder's pid and host for the error message; it is never deleted (deleting races with lockers).
    The OS drops the lock when the process dies, so a crash never leaves a stale lock.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RunLockedError(f"run folder {self.folder} is already locked by this RunLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise RunLockedError(
                f"run folder {self.folder} is locked by another process ({holder}); "
                "wait for it to finish or pick another run folder"
            ) from error
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def write_status(
    folder: str | os.PathLike, state: str, config_hash: str, traceback: str | None = None, **extra: Any
) -> Path:
    """Write ``<folder>/status.json`` atomically: state, config_hash, traceback, time, pid, host and ``extra``."""
    if state not in STATES:
        raise ValueError(f"write_status: state must be one of {', '.join(STATES)}; got {state!r}")
    payload: dict[str, Any] = {
        "state": state,
        "config_hash": config_hash,
        "traceback": traceback,
        "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    clashes = sorted(set(extra) & set(payload))
    if clashes:
        raise ValueError(f"write_status: extra keys {clashes} would overwrite reserved status keys")
    payload.update(extra)
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"write_status: status for {folder} is not plain JSON ({error})") from error
    return atomic_write(Path(folder) / STATUS_FILE, lambda f: f.write(text.encode() + b"\n"))


def read_status(folder: str | os.PathLike) -> dict | None:
    """The parsed ``status.json`` of a run folder, or None when there is none; a corrupt file raises."""
    path = Path(folder) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunStateError(f"cannot read {path}: {error}; expected the JSON written by write_status") from error
    if not isinstance(status, dict) or "state" not in status or "config_hash" not in status:
        raise RunStateError(f"{path} lacks 'state' / 'config_hash'; expected the JSON written by write_status")
    return status


def resolve_resume(folder: str | os.PathLike, config_hash: str, resume: str = "auto") -> str:
    """Decide how a run starts in ``folder``: ``"fresh"``, ``"resume"`` or ``"skip"``. Call it holding the RunLock.

    With ``status`` = ``status.json`` and ``ckpt`` = ``checkpoints/last.pt`` or ``last.prev.pt`` exists:

    ========================  ======================================  ===================================
    resume                    folder state                            result
    ========================  ======================================  ===================================
    any                       status hash != config_hash              ConfigMismatchError (both hashes)
    never                     anything else                           fresh (old checkpoints overwritten)
    auto, must                status done                             skip
    auto, must                status running/failed, ckpt             resume
    auto, must                no status, ckpt                         RunStateError (hash unverifiable)
    auto                      no ckpt                                 fresh
    must                      no ckpt                                 RunStateError (nothing to resume)
    ========================  ======================================  ===================================
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}; got {resume!r}")
    folder = Path(folder)
    status = read_status(folder)
    if status is not None and status["config_hash"] != config_hash:
        raise ConfigMismatchError(
            f"run folder {folder} belongs to config hash {status['config_hash']}, but this config hashes to "
            f"{config_hash}; use another run folder or delete this one"
        )
    if resume == "never":
        return "fresh"
    if status is not None and status["state"] == "done":
        return "skip"
    has_checkpoint = CheckpointManager(checkpoint_dir(folder)).has_resumable()
    if has_checkpoint:
        if status is None:
            raise RunStateError(
                f"run folder {folder} has checkpoints but no {STATUS_FILE}, so their config hash cannot be "
                "verified; delete the folder or start with resume=never"
            )
        return "resume"
    if resume == "must":
        raise RunStateError(f"resume=must, but run folder {folder} has no checkpoint to resume from")
    return "fresh"


__all__ = [
    "CHECKPOINT_SUBDIR",
    "DEFAULT_HASH_EXCLUDE",
    "RESUME_MODES",
    "STATES",
    "ConfigMismatchError",
    "RunLock",
    "RunLockedError",
    "RunStateError",
    "checkpoint_dir",
    "config_hash",
    "parse_run_name",
    "read_status",
    "resolve_resume",
    "run_name",
    "short_hash",
    "write_status",
]
