"""`make study DATA=<nnU-Net folder>`: the 3 x 4 grid with the quick-start settings, then the report and the study
page (intervals over runs and subjects)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.data.oblique import write_oblique_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = "trainer.max_epochs=1 trainer.iters_per_epoch=2 data.augment.enabled=false logger.image_slices=0"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_study_runs_the_grid_and_writes_the_report(tmp_path):
    """Budget: about 2 minutes on 2 cores (12 runs of 2 steps each on 5 small volumes, two at a time)."""
    if not (REPO / ".venv" / "bin" / "scseg-train").exists():
        pytest.skip("make study uses the project's .venv (make install)")
    data = write_oblique_dataset(tmp_path / "Dataset001_Oblique")
    runs = tmp_path / "runs"
    done = subprocess.run(
        ["make", "study", f"DATA={data}", f"RUNS={runs}", f"STUDY_ARGS={TINY}"],
        cwd=REPO,
        env={**os.environ, "SCSEG_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folders = [p for p in (runs / "study").iterdir() if p.is_dir() and not p.name.startswith(".")]
    names = {p.name.split("-seed")[0] for p in folders}
    assert len(folders) == 12 and all((p / "summary.json").is_file() for p in folders), sorted(names)
    assert {n.split("-")[0] for n in names} == {"unet", "sdnet", "fcdensenet"}
    assert any((runs / "study").rglob("*.md")), "no report written"
    # the study page: one seed is one run per cell, so no verdict is claimed (training variance is not seen)
    page = (runs / "study_study.md").read_text(encoding="utf-8")
    assert (runs / "study_study" / "per_case.csv.gz").is_file()
    assert "| U-Net | cSE |" in page and "too few runs" in page and "| better |" not in page
