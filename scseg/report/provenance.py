"""Where a sweep's numbers come from: the command that ran it, the machine, the wall time and the commit.

Read back from the run folders (``.hydra/overrides.yaml``, ``summary.json``, ``status.json``), never typed by
hand, so that a results page says how to rerun exactly what it reports and on what. ``paths.*`` overrides are
left out of the command: they name folders of the machine that ran it and never change results. Keys a run does
not record (older runs have no ``cpu_model``) read ``unknown``; several distinct values are flagged ``MIXED``.
"""

from __future__ import annotations

import json
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from scseg.report.runs import Run

PROGRAM = "scseg-train -m"
LEFT_OUT_GROUPS: tuple[str, ...] = ("paths",)  # machine folders: the command must run on another machine too
MACHINE_KEYS: tuple[str, ...] = ("cpu_model", "cpu_count", "threads", "device", "torch_version", "python_version")
UNKNOWN = "unknown"
MIXED = "MIXED"


@dataclass(frozen=True)
class SweepCommand:
    """The reconstructed ``scseg-train -m`` line (None when no run recorded its overrides) and its caveats."""

    command: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class WallTimes:
    """Wall time per run in seconds, over the runs that recorded one."""

    median: float
    max: float
    max_run: str
    total: float
    n: int
    n_unknown: int


def read_overrides(folder: Path) -> list[str] | None:
    """A run's ``.hydra/overrides.yaml`` as strings, or None when absent or not a list."""
    try:
        data = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if data is None:
        return []
    return [str(item) for item in data] if isinstance(data, list) else None


def split_override(text: str) -> tuple[str, str | None]:
    """(key, value) of ``key=value`` (the key keeps Hydra's ``+``/``++`` prefix); a deletion ``~key`` has no value."""
    key, sep, value = text.partition("=")
    return (key, value) if sep else (text, None)


def _left_out(key: str) -> bool:
    name = key.lstrip("+~")
    return any(name == group or name.startswith(group + ".") for group in LEFT_OUT_GROUPS)


def sort_values(values: set[str]) -> list[str]:
    """Numbers numerically (``seed=0,1,2,10``), anything else alphabetically."""
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


def sweep_command(runs: Sequence[Run], program: str = PROGRAM) -> SweepCommand:
    """The multirun command that trains these runs: keys equal in every run as ``key=value``, keys that vary as
    ``key=v1,v2,...``, in the order they were given (the first run by folder name that has them).

    Notes say where the line is not exact: runs without overrides.yaml, keys only some runs set (left out), and
    runs that are not the full grid of the varying values (the command would train more than was reported).
    """
    recorded: list[tuple[str, list[str]]] = []
    for run in sorted(runs, key=lambda r: r.path.name):
        overrides = read_overrides(run.path)
        if overrides is not None:
            recorded.append((run.path.name, [o for o in overrides if not _left_out(split_override(o)[0])]))
    notes = []
    if len(recorded) < len(runs):
        notes.append(f"{len(runs) - len(recorded)} of {len(runs)} runs have no .hydra/overrides.yaml")
    if not recorded:
        return SweepCommand(None, tuple(notes))
    order: list[str] = []
    values: dict[str, set[str]] = {}
    settings: list[dict[str, str]] = []
    for _, overrides in recorded:
        mapping: dict[str, str] = {}
        for text in overrides:
            key, value = split_override(text)
            if key not in order:
                order.append(key)
            mapping[key] = "" if value is None else value
        settings.append(mapping)
        for key, value in mapping.items():
            values.setdefault(key, set()).add(value)
    everywhere = [k for k in order if all(k in s for s in settings)]
    partial = [k for k in order if k not in everywhere]
    tokens = []
    for key in everywhere:
        text = ",".join(sort_values(values[key]))
        tokens.append(shlex.quote(f"{key}={text}" if text else key))
    for key in partial:
        n = sum(key in s for s in settings)
        shown = ", ".join(f"`{key}={v}`" if v else f"`{key}`" for v in sort_values(values[key]))
        notes.append(f"left out: {shown}, set in only {n} of {len(settings)} runs")
    varying = [k for k in everywhere if len(values[k]) > 1]
    grid = 1
    for key in varying:
        grid *= len(values[key])
    combos = {tuple(s[k] for k in varying) for s in settings}
    if len(combos) < grid:
        notes.append(
            f"the runs hold {len(combos)} of the {grid} combinations of the varying values: the command trains "
            "more runs than this page reports"
        )
    return SweepCommand(" ".join([program, *tokens]), tuple(notes))


def value_counts(runs: Sequence[Run], key: str) -> list[tuple[str, int]]:
    """Distinct values of a summary.json key over the runs (``unknown`` where absent), with how many runs have each."""
    counts: dict[str, int] = {}
    for run in runs:
        value = run.summary.get(key)
        text = UNKNOWN if value is None or value == "" else str(value)
        counts[text] = counts.get(text, 0) + 1
    return sorted(counts.items())


def values_text(counts: Sequence[tuple[str, int]]) -> str:
    """``value`` when all runs agree, else ``a (n runs), b (m runs) (MIXED)``."""
    if len(counts) == 1:
        return counts[0][0]
    return ", ".join(f"{v} ({n} runs)" for v, n in counts) + f" ({MIXED})"


def wall_times(runs: Sequence[Run]) -> WallTimes | None:
    """Median, max (and its run), total of ``wall_time_s``; None when no run recorded it."""
    timed = []
    for run in runs:
        value = run.summary.get("wall_time_s")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            timed.append((float(value), run.path.name))
    if not timed:
        return None
    longest = max(timed, key=lambda t: (t[0], t[1]))
    seconds = [t for t, _ in timed]
    return WallTimes(
        statistics.median(seconds), longest[0], longest[1], sum(seconds), len(timed), len(runs) - len(timed)
    )


def elapsed(runs: Sequence[Run]) -> tuple[float, int] | None:
    """(seconds from the first run's start to the last run's end, runs counted), or None with fewer than two.

    A run's end is when its ``status.json`` last said ``done`` (``updated_at``), its start that minus its
    ``wall_time_s``. Jobs that ran in parallel overlap, so this is the sweep's real duration where the sum of the
    wall times is not. A resumed run's ``wall_time_s`` counts only its last process, so its start is a lower bound
    on how late it began; gaps between sessions count as elapsed.
    """
    spans = []
    for run in runs:
        wall = run.summary.get("wall_time_s")
        try:
            status = json.loads((run.path / "status.json").read_text(encoding="utf-8"))
            end = datetime.fromisoformat(status["updated_at"]).timestamp()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if status.get("state") == "done" and isinstance(wall, (int, float)) and not isinstance(wall, bool):
            spans.append((end - float(wall), end))
    if len(spans) < 2:
        return None
    return max(end for _, end in spans) - min(start for start, _ in spans), len(spans)


def duration(seconds: float) -> str:
    """``h:mm:ss``, rounded to the second: one format for every wall time on the page."""
    total = int(round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


__all__ = [
    "MACHINE_KEYS",
    "SweepCommand",
    "WallTimes",
    "duration",
    "elapsed",
    "read_overrides",
    "split_override",
    "sweep_command",
    "value_counts",
    "values_text",
    "wall_times",
]
