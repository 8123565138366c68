"""scseg-study page --effects-csv: every effect of the page, unrounded, one row each."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from scseg.report.effects_table import COLUMNS, effects_csv_text
from scseg.report.study import StudySettings, analyse
from scseg.report.tidy import read_csv

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "study" / "per_case.csv"


def test_one_row_per_effect_with_the_page_identity_and_unrounded_numbers():
    analysis = analyse(read_csv(FIXTURE), StudySettings(n_boot=300))
    rows = list(csv.DictReader(io.StringIO(effects_csv_text(analysis))))
    assert tuple(rows[0]) == COLUMNS
    expected = (
        len(analysis.vs_none)
        + len(analysis.others_vs_none)
        + sum(len(effects) for _, effects in analysis.families)
        + len(analysis.between)
        + len(analysis.controls)
        + len(analysis.small_vs_large)
        + len(analysis.per_structure)
        + len(analysis.boundary)
    )
    assert len(rows) == expected and expected > 0
    arch, first = analysis.vs_none[0]
    row = rows[0]
    assert (row["table"], row["arch"], row["a"], row["b"], row["unit"]) == ("vs_none", arch, first.a, "none", "dice")
    assert abs(float(row["estimate"]) - first.estimate) < 1e-6 and abs(float(row["ci_low"]) - first.ci_low) < 1e-6
    assert row["verdict"] == first.verdict
    per_structure = [r for r in rows if r["table"] == "per_structure"]
    assert per_structure and all(r["structure"] for r in per_structure)
    controls = [r for r in rows if r["table"] == "controls"]
    assert controls and all(r["controls"] for r in controls)
    for r in rows:  # runs to decide only where the page gives one: undecided, with a spread between runs
        if r["runs_to_decide"]:
            assert r["verdict"] in ("inconclusive", "too few runs") and int(r["n_runs"]) >= 2
            assert r["runs_to_decide"] == ">100" or int(r["runs_to_decide"]) > int(r["n_runs"])
    assert effects_csv_text(analysis) == effects_csv_text(analysis)  # same analysis, same bytes
