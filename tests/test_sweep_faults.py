"""Sweeps under faults: two sweeps at once over one runs folder, a run held by another process, a job SIGKILLed
(under joblib, and under submitit, launcher=slurm's code path, with its local executor).

Every run is trained exactly once and ends loadable; whatever a sweep could not finish is named in its report
(FAILED / RUNNING ELSEWHERE), the sweep exits non-zero, and a rerun completes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scseg.engine import run_dir as rd
from scseg.engine.checkpoint import load_checkpoint
from scseg.engine.sweep import KILLED, NEVER_RAN, RECORD, outcomes
from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER


def _common(tmp_path: Path, experiment: str) -> list[str]:
    return [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"experiment_name={experiment}",
    ]


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SCSEG_FAULT"}
    return {**env, "OMP_NUM_THREADS": "1", "SCSEG_CACHE": str(tmp_path / "cache"), **extra}


def _sweep(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scseg.train", "-m", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_folders(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if not p.name.startswith("."))


def _records(experiment: Path) -> dict[str, list[dict]]:
    """Records of every sweep invocation, by its folder under .multirun."""
    return {
        sweep.name: [json.loads(p.read_text()) for p in sorted(sweep.glob(f"*/{RECORD}"))]
        for sweep in sorted((experiment / ".multirun").iterdir())
    }


def _assert_done_and_loadable(folder: Path, epochs: int | None = None) -> None:
    assert rd.read_status(folder)["state"] == "done", folder
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(folder / "checkpoints" / name)
        if epochs is not None and name == "last.pt":
            assert state["epoch"] == epochs, folder
    assert (folder / "summary.json").is_file() and (folder / "per_case.csv").is_file()


def test_outcomes_of_killed_missing_duplicate_and_elsewhere_jobs():
    records = [
        {"job": 0, "state": "done", "run_dir": "/r/a"},
        {"job": 1, "state": "running_elsewhere", "run_dir": "/r/a"},  # duplicate of job 0 in this sweep
        {"job": 2, "state": "running_elsewhere", "run_dir": "/r/b"},  # held by another sweep
        {"job": 3, "state": "started", "run_dir": "/r/c"},  # its process was killed
    ]
    final = {r["job"]: r for r in outcomes(records, ["x=0", "x=1", "x=2", "x=3", "x=4"])}
    assert {k: r["state"] for k, r in final.items()} == {
        0: "done",
        1: "skipped",
        2: "running_elsewhere",
        3: "failed",
        4: "failed",
    }
    assert final[3]["error"] == KILLED and final[4]["error"] == NEVER_RAN and final[4]["overrides"] == "x=4"


def test_run_held_by_another_process_is_reported_and_a_rerun_trains_it(tmp_path):
    """About 15 s: a one-job sweep finds its run folder locked (as by another sweep), then reruns after."""
    from scseg.config import compose_train_config
    from scseg.engine.run import run_folder

    args = [*_common(tmp_path, "held"), "trainer.max_epochs=1"]
    folder = run_folder(compose_train_config(args))
    with rd.RunLock(folder):
        held = _finish(_sweep([*args, "se=none"], tmp_path))
    assert held.returncode == 1, held.stdout[-2000:] + held.stderr[-2000:]
    assert "0 done, 0 skipped, 0 failed, 1 running elsewhere" in held.stdout
    assert (
        f"RUNNING ELSEWHERE {folder}" in held.stdout and "rerun this sweep after that process finishes" in held.stdout
    )
    assert rd.read_status(folder) is None  # nothing was written into the other process's run

    again = _finish(_sweep([*args, "se=none"], tmp_path))
    assert again.returncode == 0 and "1 done, 0 skipped, 0 failed, 0 running elsewhere" in again.stdout
    _assert_done_and_loadable(folder)
    assert len(_records(tmp_path / "runs" / "held")) == 2  # each invocation kept its own records


@pytest.mark.slow
def test_two_joblib_sweeps_at_once_over_the_same_runs_train_each_run_once(tmp_path):
    """About 40-60 s on 2 cores: two 2-job joblib sweeps over the same grid and runs folder, started together."""
    args = [*_common(tmp_path, "twice"), "launcher=joblib", "trainer.max_epochs=1", "se=none,sse"]
    results = [_finish(p) for p in [_sweep(args, tmp_path), _sweep(args, tmp_path)]]
    experiment = tmp_path / "runs" / "twice"

    folders = _run_folders(experiment)
    assert len(folders) == 2
    for folder in folders:
        _assert_done_and_loadable(folder, epochs=1)
    records = _records(experiment)
    assert len(records) == 2 and all(len(r) == 2 for r in records.values()), records  # both sweeps' records
    every = [r for sweep in records.values() for r in sweep]
    for folder in folders:  # trained exactly once: one 'done' job over both sweeps, the other skipped or left
        states = sorted(r["state"] for r in every if r["run_dir"] == str(folder))
        assert states in (["done", "skipped"], ["done", "running_elsewhere"]), (folder, states)
    out = "".join(r.stdout for r in results)
    assert sum(line.startswith("done: ") for line in out.splitlines()) == 2
    for result in results:
        assert "FAILED" not in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
        if result.returncode != 0:  # it found a run held by the other sweep and says what to do
            assert result.returncode == 1 and "RUNNING ELSEWHERE" in result.stdout
            assert "rerun this sweep after that process finishes" in result.stdout

    rerun = _finish(_sweep(args, tmp_path))
    assert rerun.returncode == 0 and "0 done, 2 skipped, 0 failed, 0 running elsewhere" in rerun.stdout


@pytest.mark.slow
def test_sigkilled_joblib_job_is_reported_failed_and_a_rerun_resumes_it(tmp_path):
    """About 25 s on 2 cores: a 2-job joblib sweep whose 2-epoch job SIGKILLs itself after step 3 (mid epoch 2,
    its epoch-1 checkpoint written; SCSEG_FAULT, see scseg.engine.faults), then a rerun without the fault."""
    args = [*_common(tmp_path, "killed"), "launcher=joblib", "se=none", "trainer.max_epochs=1,2"]
    first = _finish(_sweep(args, tmp_path, SCSEG_FAULT="after_step:3"))  # 2 steps per epoch: only epochs=2 gets there
    experiment = tmp_path / "runs" / "killed"
    (records,) = _records(experiment).values()
    (killed,) = [r for r in records if "trainer.max_epochs=2" in r["overrides"]]
    assert first.returncode != 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert killed["state"] == "started"  # its process never replaced the 'started' record
    assert f"FAILED {killed['run_dir']}: {KILLED}" in first.stdout and "sweep stopped early" in first.stdout
    folder = Path(killed["run_dir"])
    assert rd.read_status(folder)["state"] == "running" and load_checkpoint(folder / "checkpoints" / "last.pt")

    rerun = _finish(_sweep(args, tmp_path))
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "0 failed, 0 running elsewhere" in rerun.stdout
    assert f"resuming {folder} from last.pt after epoch 1" in rerun.stdout
    for run in _run_folders(experiment):
        _assert_done_and_loadable(run)
    _assert_done_and_loadable(folder, epochs=2)


@pytest.mark.slow
def test_submitit_sweep_reports_a_killed_job_and_a_rerun_resumes_it(tmp_path):
    """About 60-90 s on 2 cores: launcher=slurm's code path (hydra-submitit-launcher, pickled jobs in their own
    processes) through submitit's local executor (launcher=submitit_local). A two-job sweep, U-Net without SE for
    one epoch and with sSE for two, whose sSE job SIGKILLs itself after step 3 (SCSEG_FAULT, mid epoch 2); the
    sweep names it failed, the rerun of the same command skips the finished run and resumes the killed one, and
    scseg-compare collects both runs. The two jobs differ in two settings at once, which a grid cannot express, so a
    test-only config group (on hydra.searchpath) bundles them; the killed job is the last one because the launcher
    collects results in job order and stops at the first failed job."""
    extra = tmp_path / "extra_configs" / "cluster_job"
    extra.mkdir(parents=True)
    (extra / "short.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 1\n")
    (extra / "long.yaml").write_text("# @package _global_\nse:\n  name: sse\ntrainer:\n  max_epochs: 2\n")
    args = [
        *(a for a in _common(tmp_path, "cluster") if not a.startswith("trainer.max_epochs=")),  # the group sets it
        "launcher=submitit_local",
        f"hydra.searchpath=[file://{extra.parent}]",
        "+cluster_job=short,long",
    ]
    experiment = tmp_path / "runs" / "cluster"

    first = _finish(_sweep(args, tmp_path, SCSEG_FAULT="after_step:3"))  # 2 steps per epoch: only 'long' gets there
    assert first.returncode != 0, first.stdout[-2000:] + first.stderr[-2000:]
    (records,) = _records(experiment).values()
    (done,) = [r for r in records if "cluster_job=short" in r["overrides"]]
    (killed,) = [r for r in records if "cluster_job=long" in r["overrides"]]
    assert done["state"] == "done" and killed["state"] == "started"  # the killed job never replaced 'started'
    assert f"FAILED {killed['run_dir']}: {KILLED}" in first.stdout and "sweep stopped early" in first.stdout
    folder = Path(killed["run_dir"])
    assert folder.name.startswith("unet-sse-seed0-")
    assert rd.read_status(folder)["state"] == "running" and load_checkpoint(folder / "checkpoints" / "last.pt")
    logs = experiment / ".submitit"
    assert len(list(logs.glob("*/*_submitted.pkl"))) == 2  # both jobs went through submitit's pickles

    rerun = _finish(_sweep(args, tmp_path))
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "sweep finished: 1 done, 1 skipped, 0 failed, 0 running elsewhere" in rerun.stdout
    job_output = "".join(p.read_text() for p in logs.glob("*/*_log.out"))  # jobs print into submitit's logs
    assert f"resuming {folder} from last.pt after epoch 1" in job_output
    assert f"skipping {done['run_dir']}: already done" in job_output
    _assert_done_and_loadable(Path(done["run_dir"]), epochs=1)
    _assert_done_and_loadable(folder, epochs=2)

    report = tmp_path / "report"
    compare = subprocess.run(
        [sys.executable, "-m", "scseg.cli.compare", str(experiment), "--no-figures", "--out", str(report)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    table = (report / "comparison.md").read_text()
    assert "| U-Net | " in table and "| none | sSE |" in table  # both runs, one cell each
    assert "None: every expected run finished and was used." in table
