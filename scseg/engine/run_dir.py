"""Run-folder state: an exclusive lock, status.json and the resume decision.

A sweep relaunched after a crash must resume unfinished runs, skip finished ones, and never mix two configs
in one folder or let two processes train into the same folder. The folder name carries the hash of the
result-relevant config (:mod:`scseg.run_identity`); ``status.json`` records the state and that hash; ``.lock`` is
held while training.

Layout of a run folder: ``.lock``, ``status.json`` and ``checkpoints/`` (``last.pt``, ``last.prev.pt``,
``best.pt``; see :class:`scseg.engine.checkpoint.CheckpointManager`). Other files belong to the trainer.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from scseg.atomic import atomic_write_text
from scseg.config.check import RESUME_MODES
from scseg.engine.checkpoint import CheckpointManager

STATES = ("running", "done", "failed")
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"
CHECKPOINT_SUBDIR = "checkpoints"


class RunStateError(RuntimeError):
    """The run folder's state does not allow the requested start (nothing to resume, unverifiable checkpoint)."""


class RunLockedError(RunStateError):
    """Another process holds the run folder's lock."""


class ConfigMismatchError(RunStateError):
    """The run folder belongs to a different config hash."""


def checkpoint_dir(folder: str | os.PathLike) -> Path:
    """Where a run folder keeps its checkpoints."""
    return Path(folder) / CHECKPOINT_SUBDIR


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
    return atomic_write_text(Path(folder) / STATUS_FILE, text + "\n")


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
    "STATES",
    "ConfigMismatchError",
    "RunLock",
    "RunLockedError",
    "RunStateError",
    "checkpoint_dir",
    "read_status",
    "resolve_resume",
    "write_status",
]
