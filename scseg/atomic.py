"""The one crash-safe file writer: temporary file in the same folder, fsync, ``os.replace``, fsync of the folder.

Every file a run, a sweep, the cache or ``scseg-evaluate`` leaves behind (checkpoints, ``status.json``,
``summary.json``, ``per_case.csv``, sweep records, cache arrays) goes through :func:`atomic_write`, so a crash,
a kill or a full disk at any byte leaves either the previous version or the new one, never half a file, and
no temporary file. A full disk (ENOSPC, EDQUOT) becomes a :class:`DiskFullError` that names the file, so the
command line can say it in one line instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing ``path``; the previous version of ``path`` is intact."""

    def __init__(self, path: str | os.PathLike, code: int = errno.ENOSPC, hint: str = "") -> None:
        self.path = Path(path)
        self.hint = hint
        reason = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device (the disk is full)"
        message = (
            f"cannot write {self.path}: {reason}; the previous version of {self.path.name} (if any) is intact and "
            f"the partial file was removed; free space{hint} and rerun"
        )
        super().__init__(code, message, str(self.path))

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self):  # picklable across processes (joblib), with the same message
        return (type(self), (self.path, self.errno, self.hint))


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is an OSError for a full disk or an exceeded quota."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename durable (best effort: some file systems refuse to open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is a global set-and-get)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_temp(path: Path) -> IO[bytes]:
    """A new temporary file beside ``path`` (tests replace this to simulate a full disk)."""
    return tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file via ``write(binary_file)`` into a same-folder temporary file, fsync, then ``os.replace``.

    On any error the temporary file is removed and the previous ``path`` (if any) is untouched; a full disk
    raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _open_temp(path)
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(path, error.errno) from error
        raise
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, 0o666 & ~_umask())  # temporary files are created 0600; give the usual mode
        os.replace(tmp.name, path)
    except BaseException as error:
        Path(tmp.name).unlink(missing_ok=True)
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(path, error.errno) from error
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "atomic_write", "atomic_write_text", "fsync_dir", "is_disk_full"]
