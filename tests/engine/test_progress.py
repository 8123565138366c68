"""scseg-study status: a sweep's progress read from status.json, summary.json and the sweep's job records."""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

from scseg.cli.study import main
from scseg.engine import run_dir as rd
from scseg.engine.progress import (
    STATUS_FILE,
    experiment_progress,
    newest_sweep,
    render_progress,
    sweep_progress,
)

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc)


def _dead_pid() -> int:
    pid = 2**22 - 7  # above the usual pid range; checked, not assumed
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def _run(root: Path, name: str, state: str, *, wall: float | None = None, minutes_ago: float = 0, **status) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    stamp = (NOW - datetime.timedelta(minutes=minutes_ago)).isoformat(timespec="seconds")
    payload = {"state": state, "config_hash": "h" * 64, "updated_at": stamp, "pid": os.getpid()}
    payload["host"] = socket.gethostname()
    payload.update(status)
    (folder / rd.STATUS_FILE).write_text(json.dumps(payload))
    if wall is not None:
        (folder / "summary.json").write_text(json.dumps({"wall_time_s": wall}))
    return folder


def _sweep(root: Path, name: str, records: dict[int, dict | None]) -> Path:
    sweep = root / ".multirun" / name
    sweep.mkdir(parents=True)
    (sweep / "jobs.json").write_text(json.dumps({str(n): f"seed={n}" for n in records}))
    for number, record in records.items():
        if record is not None:
            (sweep / str(number)).mkdir()
            (sweep / str(number) / "result.json").write_text(json.dumps({"job": number, **record}))
    return sweep


def test_a_sweep_half_way_counts_its_jobs_and_estimates_the_rest(tmp_path):
    exp = tmp_path / "zoo_malc_cpu"
    _run(exp, "a-done", "done", wall=600.0)
    _run(exp, "b-done", "done", wall=1200.0)  # median of the finished: 900 s
    _run(
        exp,
        "c-train",
        "running",
        minutes_ago=5,
        epoch=3,
        epochs=16,
        started_at=(NOW - datetime.timedelta(minutes=5)).isoformat(),
    )
    _run(exp, "d-dead", "running", minutes_ago=30, **{"pid": _dead_pid()})
    _run(exp, "e-other-host", "running", minutes_ago=2, host="another-node", pid=1)
    (exp / "f-not-started").mkdir()  # no status: not listed
    runs = {r.name: r for r in experiment_progress(exp, NOW)}
    assert set(runs) == {"a-done", "b-done", "c-train", "d-dead", "e-other-host"}
    assert runs["c-train"].state == "running" and (runs["c-train"].epoch, runs["c-train"].epochs) == (3, 16)
    assert abs(runs["c-train"].elapsed_s - 300) < 1
    assert runs["d-dead"].state == "interrupted"  # this host, process gone
    assert runs["e-other-host"].state == "running"  # cannot be seen from here
    _sweep(exp, "2026-12-03_10-00-00-1", {0: {"state": "done", "run_dir": str(exp / "a-done")}})
    sweep = _sweep(
        exp,
        "2026-12-04_11-00-00-2",
        {
            0: {"state": "done", "run_dir": str(exp / "b-done")},
            1: {"state": "skipped", "run_dir": str(exp / "a-done")},
            2: {"state": "started", "run_dir": str(exp / "c-train")},
            3: {"state": "started", "run_dir": str(exp / "d-dead")},
            4: None,
            5: None,
        },
    )
    assert newest_sweep(exp) == sweep
    progress = sweep_progress(sweep, list(runs.values()))
    assert progress.jobs == 6
    assert progress.counts == {"done": 1, "skipped": 1, "failed": 1, "running": 1, "waiting": 2}
    # left: 2 waiting x 900 s + the running one's 900 - 300 s, at the one job running now
    assert abs(progress.eta_s - (2 * 900 + 600)) < 1
    text = render_progress(exp, NOW)
    assert "5 run folders: 2 done, 2 running, 1 interrupted, 0 failed" in text
    assert "c-train (epoch 3/16, 5 min in)" in text and "d-dead (process gone; rerun the sweep to resume)" in text
    assert "6 jobs: 1 done, 1 skipped, 1 failed, 1 running, 2 waiting" in text and "about 40 min left" in text


def test_cli_names_a_missing_folder(tmp_path, capsys):
    assert main(["status", str(tmp_path / "gone")]) == 2
    assert "gone: no such experiment folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["status", str(tmp_path / "empty")]) == 0
    assert "0 run folders" in capsys.readouterr().out


def test_reads_the_status_file_the_runs_write():
    assert STATUS_FILE == rd.STATUS_FILE


def test_a_sweep_whose_jobs_wait_with_none_running_is_said_to_have_stopped(tmp_path):
    exp = tmp_path / "exp"
    _run(exp, "a-done", "done", wall=600.0)
    _sweep(exp, "2026-12-04_11-00-00-2", {0: {"state": "done", "run_dir": str(exp / "a-done")}, 1: None, 2: None})
    text = render_progress(exp, NOW)
    assert "3 jobs: 1 done, 0 skipped, 0 failed, 0 running, 2 waiting" in text
    assert "no job is running: the sweep stopped" in text and "about 20 min of work left" in text


def test_a_corrupt_job_list_is_named(tmp_path, capsys):
    exp = tmp_path / "exp"
    _run(exp, "a-done", "done", wall=600.0)
    sweep = _sweep(exp, "2026-12-04_11-00-00-2", {0: None})
    (sweep / "jobs.json").write_text("{not json")
    assert main(["status", str(exp)]) == 2
    assert "jobs.json: not a readable sweep job list" in capsys.readouterr().err
