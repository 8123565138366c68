"""scripts/benchmark.py's evaluation_runs section on a finished phantom run (it needs the engine's tiny configs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def test_evaluation_runs_section_times_every_mirroring_mode_on_a_finished_run(tiny_config, tmp_path):
    """A finished phantom run: one row per eval.tta mode plus the boundary metrics, each with its ratio; without a
    run the section says it was skipped."""
    from scseg.engine.run import run_training

    run_dir = run_training(tiny_config("unet")).run_dir
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads=1", "--sections=evaluation_runs", f"--out={out}"]
    result = subprocess.run(
        [*command, f"--eval-run={run_dir}", "--eval-subjects=2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["evaluation_runs"]
    rows = section["tables"][0]["rows"]
    assert [r["what"] for r in rows] == [
        "prediction, eval.tta=none",
        "prediction, eval.tta=mirror",
        "prediction, eval.tta=mirror_lr",
        "surface_metrics",
    ]
    assert all(r["ms"] > 0 for r in rows) and rows[0]["ratio"] is None and all(r["ratio"] > 0 for r in rows[1:])
    assert len(section["raw"][str(run_dir)]["surface_metrics"]) == 2

    skipped = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "no --eval-run" in json.loads(out.read_text())["sections"]["evaluation_runs"]["skipped"]


def test_evaluation_runs_section_names_a_folder_that_is_not_a_run(tmp_path):
    """One line naming the option and the folder, no traceback."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads=1", "--sections=evaluation_runs", f"--out={out}"]
    result = subprocess.run([*command, f"--eval-run={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"--eval-run {tmp_path}: ")
    assert "not an scseg run folder" in result.stderr
