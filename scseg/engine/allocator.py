"""Keep large CPU buffers inside the process instead of handing them back to the kernel after every step.

Why: glibc serves blocks above its mmap threshold (128 KiB, rising with use to at most 32 MiB) with ``mmap`` and
returns freed heap top beyond its trim threshold to the kernel. A training step frees and re-allocates the same
hundreds of MiB of activations every iteration, so each step page-faults (and zero-fills) them again: as much
kernel time as compute. Raising both thresholds with ``mallopt`` makes glibc reuse that memory.

:func:`tune_allocator` is called at the start of every entry point. ``mallopt`` acts on later allocations of
this process (forked DataLoader workers inherit it); the ``MALLOC_*`` variables it also sets reach processes
started from it (spawned workers, torchrun ranks, joblib/loky workers) before their first allocation.
Off switch: ``SCSEG_TUNE_MALLOC=0`` in the environment (acts everywhere, before any config is read) or
``trainer.tune_malloc=false``. Not glibc (macOS, musl, Windows) or another allocator preloaded: nothing happens.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

ENV_SWITCH = "SCSEG_TUNE_MALLOC"
_OFF_VALUES = ("0", "false", "no", "off")
# Blocks up to 1 GiB come from the heap and are reused; larger ones (a whole-volume buffer, say) are still mmapped:
# their page faults are small next to the work done on 1 GiB, and keeping them would pin that memory. glibc's own
# dynamic threshold stops at 32 MiB, and at 32 MiB a 256 x 256 U-Net step still faults ~2 GiB (as untuned).
MMAP_THRESHOLD = 1 << 30
# Free memory at the top of the heap is kept up to this much. 1 GiB already left no page faults per step for a
# U-Net twice as wide (2.2 GiB peak); 128 MiB still faulted ~300 MiB per step.
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# (mallopt parameter, environment alias, GLIBC_TUNABLES name, value)
_SETTINGS = (
    (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold", MMAP_THRESHOLD),
    (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", TRIM_THRESHOLD),
)
# Older glibc (its 2021 sources; 2.36 accepts) refuses mmap thresholds above 32 MiB, HEAP_MAX_SIZE / 2: there,
# turning mmap off for malloc is the way to keep large blocks on the heap.
_FALLBACK = (_M_MMAP_MAX, "MALLOC_MMAP_MAX_", "glibc.malloc.mmap_max", 0)
_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc", "hoard")

_tuned = False  # mallopt has been applied in this process
_env_set: list[str] = []  # the MALLOC_* variables this process set itself (so a later "off" can take them back)
_MALLINFO_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO_FIELDS]


class _MallInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in _MALLINFO_FIELDS]


def switch_enabled() -> bool:
    """False when the environment switch ``SCSEG_TUNE_MALLOC`` says off (0/false/no/off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF_VALUES


def glibc() -> tuple[Any, str]:
    """(the C library handle, "") on glibc without a preloaded allocator, else (None, why not)."""
    if not sys.platform.startswith("linux"):
        return None, f"not Linux ({sys.platform})"
    preload = os.environ.get("LD_PRELOAD", "").lower()
    for name in _PRELOADED_ALLOCATORS:
        if name in preload:
            return None, f"{name} preloaded (LD_PRELOAD)"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has mallopt as a no-op)
        libc.mallopt  # noqa: B018
    except (OSError, TypeError, AttributeError):
        return None, "the C library is not glibc"
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc, ""


def _user_value(setting: tuple[int, str, str, int]) -> str | None:
    """The user's own value of one setting (environment alias or GLIBC_TUNABLES), None when absent or ours."""
    _, env_name, tunable, ours = setting
    value = os.environ.get(env_name)
    if value is not None and value.strip() != str(ours):
        return f"{env_name}={value}"
    if tunable in os.environ.get("GLIBC_TUNABLES", ""):
        return f"GLIBC_TUNABLES {tunable}"
    return None


def tune_allocator(enabled: bool | None = None) -> str:
    """Raise glibc's mmap and trim thresholds in this process and its future children; return what was done.

    ``enabled``: the config switch (``trainer.tune_malloc``); None means on. ``SCSEG_TUNE_MALLOC=0`` wins over it.
    Returns ``"glibc-tuned"`` (with any kept user setting or cap in parentheses), ``"disabled"`` or
    ``"unsupported: <why>"``. Idempotent; never raises. Thresholds the user set through ``MALLOC_*`` or
    ``GLIBC_TUNABLES`` are left alone.
    """
    global _tuned
    if (enabled is not None and not enabled) or not switch_enabled():
        for name in _env_set:  # children started from now on run glibc's defaults
            os.environ.pop(name, None)
        _env_set.clear()
        # glibc cannot restore its dynamic threshold once mallopt has set one, so this process stays as it is.
        return "disabled (this process was tuned earlier and stays so)" if _tuned else "disabled"
    libc, why = glibc()
    if libc is None:
        return f"unsupported: {why}"
    try:
        notes = _tune(libc)
    except Exception as exc:  # a speed setting must never stop a run
        return f"unsupported: {type(exc).__name__}: {exc}"
    _tuned = True
    return "glibc-tuned" + (f" ({'; '.join(notes)})" if notes else "")


def _tune(libc: Any) -> list[str]:
    """Apply the settings the user has not set; notes on what was kept or refused."""
    notes = []
    for setting in _SETTINGS:
        kept = _user_value(setting)
        if kept is not None:
            notes.append(f"kept {kept}")
        elif not _apply(libc, setting):
            if setting[0] != _M_MMAP_THRESHOLD or _user_value(_FALLBACK) is not None or not _apply(libc, _FALLBACK):
                notes.append(f"mallopt refused {setting[1].strip('_')}")
                continue
            notes.append("this glibc caps the mmap threshold at 32 MiB: mmap turned off instead")
    return notes


def _apply(libc: Any, setting: tuple[int, str, str, int]) -> bool:
    """mallopt one setting and export its environment alias for child processes; False if glibc refused it."""
    param, env_name, _, value = setting
    if libc.mallopt(param, value) != 1:
        return False
    if os.environ.get(env_name) != str(value):
        os.environ[env_name] = str(value)
        if env_name not in _env_set:
            _env_set.append(env_name)
    return True


def mmap_count() -> int | None:
    """glibc's count of blocks currently served by mmap (``mallinfo2().hblks``); None where unavailable."""
    libc, _ = glibc()
    if libc is None:
        return None
    for name, struct in (("mallinfo2", _MallInfo2), ("mallinfo", _MallInfo)):
        func = getattr(libc, name, None)
        if func is not None:
            func.restype = struct
            func.argtypes = []
            return int(func().hblks)
    return None


def large_blocks_mmapped(size: int = 64 << 20) -> bool | None:
    """Whether a fresh ``size``-byte malloc is served by mmap (True: untuned); None where it cannot be told.

    glibc has no getter for its thresholds, so this is the check: allocate, count mmapped blocks, free.
    """
    libc, _ = glibc()
    before = mmap_count()
    if libc is None or before is None:
        return None
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free.restype = None
    block = libc.malloc(size)
    if not block:
        return None
    try:
        during = mmap_count()
    finally:
        libc.free(block)
    return during is not None and during > before


__all__ = ["ENV_SWITCH", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "large_blocks_mmapped", "mmap_count", "tune_allocator"]
