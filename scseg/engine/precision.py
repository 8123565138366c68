"""Which precision a run trains in: bf16 autocast where the hardware makes it fast, fp32 elsewhere.

Why: on CPUs with matrix units (Intel AMX) bf16 autocast trains U-Net 3-4x faster. Without them it runs on the
vector units, and whether that pays depends on the CPU: 0.09-0.7x on an Intel Xeon limited to AVX512-BF16 or less,
1.7-1.9x on the AMD development machine (Zen 4 class, AVX512-BF16). The flags cannot tell those apart, so
``trainer.amp: auto`` turns it on only where it is known to pay: CUDA devices, and CPUs whose flags list
``amx_bf16``. ``true`` forces it (a CPU without AMX gets a warning that says so and how to measure), ``false``
keeps fp32. Loss, Dice and evaluation arithmetic stay fp32 (the trainer casts logits back). The resolved precision
enters the run's config hash, so bf16 and fp32 runs of one config never share a folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

AMP_SETTINGS = (True, False, "auto")


@functools.cache
def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU lists Intel AMX for bf16 (``amx_bf16``); False where /proc/cpuinfo is absent."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and " amx_bf16" in f" {line.split(':', 1)[-1]}" for line in text.splitlines())


def resolve_amp(setting: object, device_type: str) -> bool:
    """``trainer.amp`` for a device type (``cpu`` / ``cuda`` / ...): ``auto`` is on for CUDA and for AMX CPUs."""
    if setting not in AMP_SETTINGS:
        raise ValueError(f"trainer.amp is {setting!r}; valid values: true, false, auto")
    if setting == "auto":
        return device_type == "cuda" or (device_type == "cpu" and cpu_has_amx())
    return bool(setting)


def precision_label(enabled: bool, dtype: str) -> str:
    """``bf16`` / ``fp16`` autocast, else ``fp32`` (for logs and summary.json)."""
    return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype) if enabled else "fp32"


__all__ = ["AMP_SETTINGS", "cpu_has_amx", "precision_label", "resolve_amp"]
