"""The study sweep scripts (scripts/paper_studies.sh, scripts/zoo_study.sh) launch the grids the docs describe, in
their stated order, with a stub in place of scseg-train (SCSEG_TRAIN): nothing trains."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _launches(tmp_path: Path, script: str, *steps: str) -> tuple[int, list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.txt"
    stub = tmp_path / "train"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    stub.chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / script), str(tmp_path / "runs"), *steps],
        env={**os.environ, "SCSEG_TRAIN": str(stub)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_zoo_runs_new_evidence_first_and_the_paper_presets_last(tmp_path, monkeypatch):
    code, calls = _launches(tmp_path, "zoo_study.sh")
    assert code == 0 and len(calls) == 5
    assert all(c.startswith("-m experiment=zoo_malc_cpu ") and "seed=0,1,2" in c for c in calls)
    assert "se=none,smp_scse,nnunet_cse" in calls[0]
    assert "se=cbam,eca,coord,project_excite,attention_gate" in calls[1]
    assert "model.capacity_match=scse" in calls[2] and "model=quicknat se=none,scse" in calls[3]
    assert "se=authors_scse,monai_cse" in calls[4]
    # every module of the experiment's header is launched once
    launched = {m for c in calls for part in c.split() if part.startswith("se=") for m in part[3:].split(",")}
    assert launched == {
        "none",
        "smp_scse",
        "nnunet_cse",
        "cbam",
        "eca",
        "coord",
        "project_excite",
        "attention_gate",
        "scse",
        "authors_scse",
        "monai_cse",
    }
    monkeypatch.setenv("ZOO_SEEDS", "range(3,11)")
    code, calls = _launches(tmp_path / "more", "zoo_study.sh", "paper-presets")
    monkeypatch.delenv("ZOO_SEEDS")
    assert code == 0 and len(calls) == 1 and "seed=range(3,11)" in calls[0] and "seed=0,1,2" not in calls[0]
    code, calls = _launches(tmp_path / "one", "zoo_study.sh", "quicknat")
    assert code == 0 and calls == [c for c in calls if "model=quicknat" in c] and len(calls) == 1
    code, _ = _launches(tmp_path / "bad", "zoo_study.sh", "nonsense")
    assert code == 2
