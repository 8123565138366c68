"""Sweep bookkeeping: each multirun job leaves a one-line record; a Hydra callback reports them at the end.

Hydra's launchers keep going when a job fails and then exit 0. A researcher needs the opposite signal: the sweep
goes on, but the command says which runs failed and exits non-zero. Jobs may run in other processes (joblib,
SLURM), so the record travels through the job's own folder under ``hydra.sweep.dir`` (one folder per sweep
invocation, see configs/hydra/default.yaml, so concurrent sweeps never touch each other's records).

A job writes ``state: started`` first and replaces it with its outcome at the end, so a job whose process was
killed (SIGKILL, out of memory) shows as ``started`` and is reported failed; a job that never got to start
(the launcher gave up after a worker died) is found missing against the sweep's job list. A run whose folder
lock is held by another process is ``running_elsewhere``, unless another job of this same sweep trains that
run folder (a duplicate config, e.g. an aggregation swept over cSE): then it is ``skipped``.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scseg.atomic import atomic_write_text

RECORD = "result.json"
JOBS_FILE = "jobs.json"
OUTCOMES = ("done", "skipped", "failed", "running_elsewhere")
KILLED = (
    "the job's process died before it finished (killed by a signal such as SIGKILL, e.g. out of memory); "
    "rerun the sweep to resume it"
)
NEVER_RAN = "never ran: the sweep stopped early (a job's process died); rerun the sweep to run it"


def write_job_record(job_dir: str | Path, record: dict) -> None:
    """Write (or replace) a job's record atomically: a reader sees the old record or the new one."""
    atomic_write_text(Path(job_dir) / RECORD, json.dumps(record, indent=1))


def read_job_records(sweep_dir: str | Path) -> list[dict]:
    """Every job record of a sweep folder, by job number; an unreadable record reads as a failed job."""
    records = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RECORD}"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append({"job": path.parent.name, "state": "failed", "error": f"unreadable record {path}"})
    return records


def expected_jobs(config: DictConfig) -> list[str] | None:
    """The overrides of every job the sweep launches, by job number; None where they cannot be known here.

    Mirrors Hydra's basic sweeper (``hydra.sweeper.params`` then the command line, expanded in the same order);
    other sweepers (Optuna, ...) decide their jobs on the fly, so only the jobs' own records count for them.
    """
    sweeper = config.hydra.get("sweeper")
    if sweeper is None or not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    params = sweeper.get("params")
    arguments = [f"{key}={value}" for key, value in (params or {}).items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # e.g. glob() choices, which need the config loader: fall back to the records alone
        return None
    return [" ".join(job) for batch in batches for job in batch]


def outcomes(records: list[dict], expected: list[str] | None = None) -> list[dict]:
    """Final outcome of every job: a record still ``started`` means the process died (failed), a job number in
    ``expected`` without a record never ran (failed), and ``running_elsewhere`` on a run folder another job of
    this sweep trained or skipped is a duplicate (skipped)."""
    final = []
    seen = set()
    for record in records:
        record = dict(record)
        seen.add(str(record.get("job")))
        if record.get("state") not in OUTCOMES:
            record.update(state="failed", error=KILLED)
        final.append(record)
    for number, overrides in enumerate(expected or []):
        if str(number) not in seen:
            final.append({"job": number, "overrides": overrides, "state": "failed", "error": NEVER_RAN})
    owned = {r.get("run_dir") for r in final if r.get("run_dir") and r["state"] != "running_elsewhere"}
    for record in final:
        if record["state"] == "running_elsewhere" and record.get("run_dir") in owned:
            record.update(state="skipped", note="another job of this sweep has the same run folder")
    return final


def report(sweep_dir: str | Path, expected: list[str] | None = None, header: str = "sweep finished") -> int:
    """Print the counts and every failed / running-elsewhere run; the exit code the sweep should end with."""
    final = outcomes(read_job_records(sweep_dir), expected)
    counts = {s: sum(r["state"] == s for r in final) for s in OUTCOMES}
    print(
        f"\n{header}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, "
        f"{counts['running_elsewhere']} running elsewhere (records in {sweep_dir})"
    )
    for r in final:
        if r["state"] == "failed":
            print(f"  FAILED {r.get('run_dir') or r.get('overrides')}: {r.get('error')}")
    elsewhere = sorted({r.get("run_dir") or r.get("overrides") for r in final if r["state"] == "running_elsewhere"})
    for name in elsewhere:
        print(f"  RUNNING ELSEWHERE {name}")
    if elsewhere:
        print(
            f"{len(elsewhere)} run(s) were being trained by another process (another sweep or run) and were left "
            "to it; rerun this sweep after that process finishes: finished runs are skipped, unfinished ones resume"
        )
    return 1 if counts["failed"] or elsewhere else 0


class SweepReport(Callback):
    """At the end of a multirun prints every job's outcome and exits 1 on failures or runs held elsewhere.

    If the launcher itself gives up (joblib raises ``TerminatedWorkerError`` when a worker is SIGKILLed, and
    Hydra then exits 1 without calling ``on_multirun_end``), the same report is printed at interpreter exit.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._expected: list[str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        # The default sweep dir is new for every invocation; a fixed one (hydra.sweep.dir=...) may hold the
        # records of an earlier sweep, which must not be reported as this one's.
        for path in self._sweep_dir.glob(f"*/{RECORD}"):
            path.unlink(missing_ok=True)
        self._expected = expected_jobs(config)
        if self._expected is not None:
            atomic_write_text(self._sweep_dir / JOBS_FILE, json.dumps(dict(enumerate(self._expected)), indent=1))
        atexit.register(self._report_after_abort)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._report_after_abort)
        code = report(str(config.hydra.sweep.dir), self._expected)
        if code:
            raise SystemExit(code)

    def _report_after_abort(self) -> None:
        """The launcher raised (see the error above); the process already exits non-zero."""
        if self._sweep_dir is not None:
            header = "sweep stopped early (the launcher gave up: see the error above)"
            report(self._sweep_dir, self._expected, header=header)
