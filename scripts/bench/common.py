"""Shared by every benchmark section: the protocols (interleaved rounds, bracketing), machine facts, tables."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scseg.machine import cpu_model

SECTIONS = (
    "se_blocks",
    "training",
    "compile",
    "precision",
    "pipeline",
    "startup",
    "evaluation",
    "evaluation_runs",
    "gpu",
    "gpu_profile",
)
REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
# MALC at its CPU preset (experiment=paper_malc_cpu: 2 mm, 96 x 96 canvas, width=cpu); where a checkout predates it,
# the paper experiment at 2 mm with the small networks.
MALC_CPU_PRESET = ("experiment=paper_malc_cpu",)
MALC_FALLBACK = (
    "experiment=paper_malc",
    "width=small",
    "trainer=cpu",
    "data.loader.num_workers=0",
    "data.preprocess.target_spacing=[2.0,2.0,2.0]",
)
MALC_NUM_CLASSES = 28


def malc_overrides(extra: Sequence[str] = ()) -> list[str]:
    """The MALC CPU-preset overrides (the fallback where the preset does not exist yet) plus ``extra``."""
    preset = (CONFIG_DIR / "experiment" / "paper_malc_cpu.yaml").is_file()
    return [*(MALC_CPU_PRESET if preset else MALC_FALLBACK), *extra]


# ---------------------------------------------------------------------------------------------- measuring
def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, inner: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of every variant, ``repeats`` rounds; each round runs every variant ``inner`` times.

    The order alternates from round to round (forward, backward) so that no variant always follows the same one.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()
            started = time.perf_counter()
            for _ in range(inner):
                variants[name]()
            times[name].append((time.perf_counter() - started) / inner)
    return times


def bracketed(
    variants: dict[str, Callable[[], Any]], base: str, repeats: int, warmup: int = 1
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every other variant run between two runs of ``base`` (base, a, base, b, base, ...; the order of the others
    alternates from round to round): ``(seconds per call, per-run ratios to the mean of the two neighbouring base
    runs)``. For overheads of a few percent: on a shared 2-core machine step times drift by 10-20 % within seconds,
    and a ratio to a base run several steps away carried that drift (FC-DenseNet scSE read +4.8 to +12.6 % between
    idle runs of ``interleaved``); next to its neighbours a linear drift cancels.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    others = [name for name in variants if name != base]
    times: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in others}

    def timed(name: str) -> float:
        gc.collect()
        started = time.perf_counter()
        variants[name]()
        seconds = time.perf_counter() - started
        times[name].append(seconds)
        return seconds

    before = timed(base)
    for round_ in range(repeats):
        for name in others if round_ % 2 == 0 else reversed(others):
            seconds = timed(name)
            after = timed(base)
            ratios[name].append(seconds / ((before + after) / 2))
            before = after
    return times, ratios


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def paired_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of ``time[name] / time[base]`` measured in the same round."""
    return median(a / b for a, b in zip(times[name], times[base]))


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def status_kib(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``RssAnon``, ``VmHWM``), in KiB; None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class PeakSampler:
    """Samples ``RssAnon`` every few milliseconds in a thread: the peak inside a training step is what counts,
    and memory-mapped (file-backed) pages are left out, unlike RSS (``VmHWM``)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_kib = status_kib("RssAnon") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib("RssAnon") or 0)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, status_kib("RssAnon") or 0)


def git_commit() -> str | None:
    """HEAD (short, "(modified)" when tracked files differ); outside a checkout (a copy sent to a GPU machine) the
    commit the sender named in ``SCSEG_GIT_COMMIT``, else None."""
    if not (REPO / ".git").exists():
        return os.environ.get("SCSEG_GIT_COMMIT") or None
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=REPO, capture_output=True, text=True)
        return (out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")) or None
    except OSError:
        return None


CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU flags that decide float speed here (AVX2, AVX-512, AVX512-BF16, AMX); empty where unknown."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in CPU_FEATURES if f in flags]


def machine_info(threads: int, allocator: str) -> dict[str, Any]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": cores,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "allocator": allocator,
        "gpu": gpu,
        "git": git_commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Table:
    """Rows of one markdown table; ``columns`` is a list of (key, header, format spec)."""

    title: str
    columns: list[tuple[str, str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| " + " | ".join(h for _, h, _ in self.columns) + " |"
        rule = "|" + "|".join("---" if spec == "s" else "---:" for _, _, spec in self.columns) + "|"
        lines = [f"**{self.title}**", "", head, rule]
        for row in self.rows:
            cells = []
            for key, _, spec in self.columns:
                value = row.get(key)
                cells.append("-" if value is None else format(value, spec) if spec != "s" else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [k for k, _, _ in self.columns], "rows": self.rows}


@dataclass
class Section:
    name: str
    title: str
    sizes: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0
    load: tuple[float | None, float | None] = (None, None)

    def target(self, name: str, value: float, bound: float, higher_is_better: bool) -> None:
        met = value >= bound if higher_is_better else value <= bound
        self.targets.append({"name": name, "value": value, "target": bound, "higher": higher_is_better, "met": met})

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "sizes": self.sizes,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "load_before_after": list(self.load),
            "tables": [t.as_json() for t in self.tables],
            "notes": self.notes,
            "targets": self.targets,
            "raw": self.raw,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------- SE blocks
