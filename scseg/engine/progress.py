"""Where a long sweep stands, read from what its jobs leave on disk: how many runs are done, which are training
(and at which epoch), which died, and about how long the rest will take.

Why: the studies are hours of two-core sweeps carried across sessions; a researcher coming back wants one look,
not a tail of interleaved logs. Everything is read, nothing locked or written, so it is safe beside a running sweep:

- each run folder's ``status.json`` (state; ``epoch`` / ``epochs`` once the trainer has finished an epoch; pid and
  host of the process) and ``summary.json`` (``wall_time_s`` of a finished run);
- the newest sweep record under ``<experiment>/.multirun/`` (``jobs.json``, one ``result.json`` per started job;
  scseg/engine/sweep.py).

A run whose status says ``running`` but whose process is gone from this host is ``interrupted`` (rerun the sweep to
resume it); on another host it stays ``running`` (its process cannot be seen from here). The estimate divides the
work left (waiting jobs at the median wall time of finished runs, plus what running ones have left of it) by the
number of jobs running now.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scseg.engine.sweep import JOBS_FILE, RECORD

SWEEPS_DIR = ".multirun"
# written by scseg/engine/run_dir.py (not imported: it pulls in torch, and scseg-study must not; a test keeps the
# two names equal)
STATUS_FILE = "status.json"


@dataclass(frozen=True)
class RunProgress:
    """One run folder: its state (running, done, failed, interrupted), epoch reached, and time."""

    name: str
    state: str
    epoch: int | None = None
    epochs: int | None = None
    elapsed_s: float | None = None  # since the status was first written as running (running runs only)
    wall_s: float | None = None  # training's wall time (finished runs)


@dataclass
class SweepProgress:
    """The newest sweep of an experiment folder: its jobs by state and the estimate of the time left."""

    name: str
    jobs: int
    counts: dict[str, int] = field(default_factory=dict)  # done, skipped, failed, running, waiting
    eta_s: float | None = None


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def _age_s(stamp: object, now: datetime.datetime) -> float | None:
    try:
        return (now - datetime.datetime.fromisoformat(str(stamp))).total_seconds()
    except ValueError:
        return None


def run_progress(folder: Path, now: datetime.datetime | None = None) -> RunProgress | None:
    """A run folder's progress, or None when it has no status yet (not a run folder, or not started)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    path = folder / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable: the run cannot be resumed as it is
        return RunProgress(folder.name, "failed")
    if not isinstance(status, dict) or "state" not in status:
        return RunProgress(folder.name, "failed")
    state = status["state"]
    if state == "running" and status.get("host") == socket.gethostname() and not _alive(status.get("pid")):
        state = "interrupted"
    wall = None
    if state == "done":
        try:
            wall = float(json.loads((folder / "summary.json").read_text()).get("wall_time_s"))
        except (OSError, ValueError, TypeError):
            wall = None
    started = status.get("started_at", status.get("updated_at"))
    return RunProgress(
        folder.name,
        state,
        epoch=status.get("epoch"),
        epochs=status.get("epochs"),
        elapsed_s=_age_s(started, now) if state == "running" else None,
        wall_s=wall,
    )


def experiment_progress(experiment: Path, now: datetime.datetime | None = None) -> list[RunProgress]:
    """Every run folder of an experiment folder that has a status, by name."""
    if not experiment.is_dir():
        raise ValueError(f"{experiment}: no such experiment folder")
    runs = (run_progress(p, now) for p in sorted(experiment.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [r for r in runs if r is not None]


def newest_sweep(experiment: Path) -> Path | None:
    """The newest sweep record folder (their names start with the launch time, so they sort by it)."""
    sweeps = [p for p in (experiment / SWEEPS_DIR).glob("*") if (p / JOBS_FILE).is_file()]
    return max(sweeps, key=lambda p: p.name) if sweeps else None


def sweep_progress(sweep: Path, runs: Sequence[RunProgress]) -> SweepProgress:
    """The jobs of one sweep by state, and the time left at the median wall time of the finished runs."""
    try:
        jobs = json.loads((sweep / JOBS_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{sweep / JOBS_FILE}: not a readable sweep job list ({err})") from err
    if not isinstance(jobs, dict):
        raise ValueError(f"{sweep / JOBS_FILE}: expected a JSON object of job number -> overrides")
    by_name = {r.name: r for r in runs}
    counts = dict.fromkeys(("done", "skipped", "failed", "running", "waiting"), 0)
    running: list[RunProgress] = []
    for number in jobs:
        try:
            record = json.loads((sweep / str(number) / RECORD).read_text())
        except (OSError, ValueError):
            counts["waiting"] += 1
            continue
        state = record.get("state")
        if state in ("done", "skipped", "failed"):
            counts[state] += 1
        elif state == "running_elsewhere":
            counts["skipped"] += 1
        else:  # "started": training now, unless its run folder says the process died
            run = by_name.get(Path(str(record.get("run_dir", ""))).name)
            if run is not None and run.state in ("failed", "interrupted"):
                counts["failed"] += 1
            else:
                counts["running"] += 1
                if run is not None:
                    running.append(run)
    walls = [r.wall_s for r in runs if r.wall_s]
    eta = None
    if walls and (counts["running"] or counts["waiting"]):
        median = statistics.median(walls)
        left = counts["waiting"] * median + sum(max(median - (r.elapsed_s or 0.0), 0.0) for r in running)
        left += (counts["running"] - len(running)) * median  # running jobs whose folder says nothing yet
        eta = left / max(counts["running"], 1)
    return SweepProgress(sweep.name, len(jobs), counts, eta)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def render_progress(experiment: Path, now: datetime.datetime | None = None) -> str:
    """The text ``scseg-study status`` prints."""
    runs = experiment_progress(experiment, now)
    states = ("done", "running", "interrupted", "failed")
    counts = {s: sum(r.state == s for r in runs) for s in states}
    lines = [f"{experiment}: {len(runs)} run folders: " + ", ".join(f"{counts[s]} {s}" for s in states)]
    walls = [r.wall_s for r in runs if r.wall_s]
    if walls:
        lines.append(f"  finished runs took {_duration(statistics.median(walls))} each (median of {len(walls)})")
    for r in runs:
        if r.state == "running":
            epoch = f"epoch {r.epoch}/{r.epochs}, " if r.epoch is not None else ""
            elapsed = f"{_duration(r.elapsed_s)} in" if r.elapsed_s is not None else "time unknown"
            lines.append(f"  running      {r.name} ({epoch}{elapsed})")
        elif r.state in ("interrupted", "failed"):
            why = "process gone; rerun the sweep to resume" if r.state == "interrupted" else "see its status.json"
            lines.append(f"  {r.state:<12} {r.name} ({why})")
    sweep = newest_sweep(experiment)
    if sweep is not None:
        progress = sweep_progress(sweep, runs)
        told = ", ".join(f"{n} {s}" for s, n in progress.counts.items())
        lines.append(f"newest sweep {progress.name}: {progress.jobs} jobs: {told}")
        if progress.eta_s is not None and progress.counts["running"]:
            lines.append(
                f"  about {_duration(progress.eta_s)} left at {progress.counts['running']} job(s) at a time "
                "(the median wall time of finished runs)"
            )
        elif progress.eta_s is not None:  # jobs wait but none runs: the sweep's process is gone
            lines.append(
                f"  no job is running: the sweep stopped; rerun its command to continue (about "
                f"{_duration(progress.eta_s)} of work left at one job at a time)"
            )
    return "\n".join(lines)


__all__ = ["RunProgress", "SweepProgress", "experiment_progress", "render_progress", "run_progress", "sweep_progress"]
