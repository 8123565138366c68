"""Sweep bookkeeping: each multirun job leaves a one-line record; a Hydra callback reports them at the end.

Hydra's launchers keep going when a job fails and then exit 0. A researcher needs the opposite signal: the sweep
goes on, but the command says which runs failed and exits non-zero. Jobs may run in other processes (joblib,
SLURM), so the record travels through the job's own folder under ``hydra.sweep.dir``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

RECORD = "result.json"


def write_job_record(job_dir: str | Path, record: dict) -> None:
    path = Path(job_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / RECORD).write_text(json.dumps(record, indent=1))


def read_job_records(sweep_dir: str | Path) -> list[dict]:
    records = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RECORD}"), key=lambda p: (len(p.parent.name), p.parent.name)):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append({"job": path.parent.name, "state": "failed", "error": f"unreadable record {path}"})
    return records


class SweepReport(Callback):
    """Clears stale records when a multirun starts; at its end prints every job's outcome and exits 1 on failures."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        for path in Path(str(config.hydra.sweep.dir)).glob(f"*/{RECORD}"):
            path.unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        records = read_job_records(str(config.hydra.sweep.dir))
        failed = [r for r in records if r.get("state") == "failed"]
        counts = {s: sum(r.get("state") == s for r in records) for s in ("done", "skipped", "failed")}
        print(f"\nsweep finished: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
        for r in failed:
            print(f"  FAILED {r.get('run_dir') or r.get('overrides')}: {r.get('error')}")
        if failed:
            raise SystemExit(1)
