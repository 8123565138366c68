"""A tiny multirun as a subprocess: a folder per run, failures recorded, reruns skip, compare fills the cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER

BIN = Path(sys.executable).parent


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "scseg-train"), "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_tiny_sweep_compare_failure_and_resume(tmp_path):
    runs = tmp_path / "runs"
    common = [
        *TINY_DATA,
        *TINY_TRAINER,
        "model.filters=4",
        "model.depth=2",
        f"paths.runs_dir={runs}",
        "experiment_name=sweep",
    ]
    assert TINY_MODELS["unet"][1:] == ["model.filters=4", "model.depth=2"]
    sweep = [*common, "model=unet,sdnet", "se=none,scse"]
    first = _train(sweep, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "4 done, 0 skipped, 0 failed" in first.stdout
    folders = sorted(p.name for p in (runs / "sweep").iterdir() if not p.name.startswith("."))
    assert len(folders) == 4 and {f.split("-seed")[0] for f in folders} == {
        "unet-none",
        "unet-scse-add",
        "sdnet-none",
        "sdnet-scse-add",
    }

    # A deliberately failing job (cSE with channels // reduction < 1) is recorded and the sweep exits non-zero.
    failing = _train([*common, "model=unet", "se=cse", "se.reduction=100"], tmp_path)
    assert failing.returncode != 0
    assert "1 failed" in failing.stdout and "FAILED" in failing.stdout
    failed = [p for p in (runs / "sweep").iterdir() if p.name.startswith("unet-cse")]
    status = json.loads((failed[0] / "status.json").read_text())
    assert status["state"] == "failed" and "channels // reduction" in status["traceback"]

    # Rerunning the same sweep skips the finished runs (nothing retrained).
    mtimes = {f: (runs / "sweep" / f / "checkpoints" / "last.pt").stat().st_mtime_ns for f in folders}
    again = _train(sweep, tmp_path)
    assert again.returncode == 0 and "0 done, 4 skipped, 0 failed" in again.stdout
    assert mtimes == {f: (runs / "sweep" / f / "checkpoints" / "last.pt").stat().st_mtime_ns for f in folders}

    # The report has the 4 filled cells and lists the failed run.
    report = subprocess.run(
        [str(BIN / "scseg-compare"), str(runs / "sweep"), "--no-figures"], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    md = (runs / "sweep" / "comparison.md").read_text()
    assert "unet-cse" in md and "failed" in md.lower()
    import csv

    with (runs / "sweep" / "comparison.csv").open() as fh:
        overall = [r for r in csv.DictReader(fh) if r["table"] == "overall" and r["mean"] not in ("", "nan")]
    assert {(r["arch"], r["variant"]) for r in overall} == {
        ("unet", "none"),
        ("unet", "scse-add"),
        ("sdnet", "none"),
        ("sdnet", "scse-add"),
    }


def test_aggregation_sweep_over_non_scse_variants_trains_each_once(tmp_path):
    runs = tmp_path / "runs"
    args = [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        f"paths.runs_dir={runs}",
        "experiment_name=agg",
        "trainer.max_epochs=1",
        "se=none,sse",
        "se.aggregation=add,max",
    ]
    proc = _train(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 done, 2 skipped, 0 failed" in proc.stdout
    assert len([p for p in (runs / "agg").iterdir() if not p.name.startswith(".")]) == 2
