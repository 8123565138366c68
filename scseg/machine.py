"""The machine a result came from, named without importing torch (benchmarks read it before they start torch).

Why it matters: the same training gives different floats, and runs at different speeds, on another CPU, so every
summary and benchmark names the CPU next to its figures.
"""

from __future__ import annotations

import platform


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere the platform's processor string, else "unknown")."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


__all__ = ["cpu_model"]
