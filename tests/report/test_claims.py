"""Holm's step-down adjustment, the claims' verdict rules and the reconstructed sweep command, on hand-made inputs."""

from __future__ import annotations

import json
import math

import pytest

from scseg.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTED,
    REPRODUCED,
    PairedTest,
    claim_sse_beats_cse,
    decide,
    make_claim,
)
from scseg.report.provenance import (
    duration,
    elapsed,
    sort_values,
    split_override,
    sweep_command,
    values_text,
    wall_times,
)
from scseg.report.runs import Run, Variant
from scseg.report.stats import PairedComparison, holm

# ------------------------------------------------------------------------------------------------------ Holm


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> raised to 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_skips_missing_and_keeps_ties_monotone():
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    adjusted = holm([None, 0.02, 0.01, None])  # m = 2: the tests without a p-value are not counted
    assert adjusted[0] is None and adjusted[3] is None
    assert adjusted[1:3] == pytest.approx([0.02, 0.02])
    assert holm([0.01, 0.01, 0.01]) == pytest.approx([0.03, 0.03, 0.03])
    assert holm([]) == []


# ---------------------------------------------------------------------------------------------- verdict rules


def _test(p: float | None, mean: float = 0.01, note: str = "", expected: int = 1) -> PairedTest:
    return PairedTest("t", PairedComparison(mean, 0.001, 8, p, note), expected, holm_p=p)  # make_claim re-adjusts


def _claim(tests, need="all"):
    return make_claim("C1", "claim", "rule", tests, alpha=0.05, need=need)


def test_c1_rule_reproduced_only_when_every_comparison_is():
    claim = _claim([_test(0.001) for _ in range(9)])
    assert claim.verdict == REPRODUCED
    assert claim.p_value == pytest.approx(0.009)  # the largest Holm p: 9 ties of 0.001 -> 0.009
    assert all(t.verdict() == REPRODUCED for t in claim.tests)


def test_c1_rule_contradicted_by_one_significant_opposite_comparison():
    tests = [_test(0.001) for _ in range(8)] + [_test(0.0001, mean=-0.02)]
    claim = _claim(tests)
    assert claim.verdict == CONTRADICTED
    assert claim.p_value == pytest.approx(0.0009)  # the contradicting test's Holm p (9 x 0.0001)
    assert claim.tests[-1].verdict() == CONTRADICTED


def test_c1_rule_inconclusive_when_one_comparison_is_not_significant():
    claim = _claim([_test(0.001) for _ in range(8)] + [_test(0.2)])
    assert claim.verdict == INCONCLUSIVE
    assert claim.p_value == pytest.approx(0.2)  # the largest Holm p
    assert claim.tests[-1].verdict() == INCONCLUSIVE
    # significant before Holm, not after: 9 x 0.01 = 0.09
    assert _claim([_test(0.01) for _ in range(9)]).verdict == INCONCLUSIVE


def test_no_p_value_and_missing_cells_are_said():
    claim = _claim([_test(None, note="scipy not installed") for _ in range(3)])
    assert (claim.verdict, claim.p_value) == (INCONCLUSIVE, None)
    assert claim.verdict_text == "inconclusive (no p-value: scipy not installed)"
    assert claim.tests[0].verdict() == "inconclusive (no p-value: scipy not installed)"
    partial = _claim([_test(0.001), _test(None, note="undefined: all differences are zero")])
    assert partial.verdict == INCONCLUSIVE and "1 of 2 tests without p-value" in partial.note
    missing = _claim([_test(0.001), PairedTest("t", None, missing=("SD-Net/cSE", "SD-Net/none"))])
    assert missing.verdict == NOT_TESTED and missing.p_value is None
    assert missing.verdict_text == "not tested (missing: SD-Net/cSE, SD-Net/none)"


def test_any_rule_of_c4():
    hurt = [_test(0.01, mean=-0.03, expected=-1), _test(0.4, mean=0.01, expected=-1), _test(0.5, expected=-1)]
    claim = _claim(hurt, need="any")
    assert claim.verdict == REPRODUCED and claim.p_value == pytest.approx(0.03)
    helps = [_test(0.001, mean=0.02, expected=-1) for _ in range(3)]
    claim = _claim(helps, need="any")
    assert claim.verdict == CONTRADICTED and claim.p_value == pytest.approx(0.003)
    mixed = [_test(0.001, mean=0.02, expected=-1), _test(0.3, mean=-0.01, expected=-1)]
    claim = _claim(mixed, need="any")
    assert claim.verdict == INCONCLUSIVE and claim.p_value == pytest.approx(0.002)  # the smallest Holm p
    with pytest.raises(ValueError, match="need"):
        decide(mixed, need="most")


# ------------------------------------------------------------------------------------------------------ C2

SUBJECTS = [f"s{i}" for i in range(8)]


def _cells(delta: dict[str, list[float]]) -> dict[tuple[str, str], dict[str, float]]:
    """cSE at 0.7 + a subject offset, sSE = cSE + the given per-subject differences."""
    cells = {}
    for arch, diffs in delta.items():
        cse = {s: 0.7 + 0.01 * i for i, s in enumerate(SUBJECTS)}
        cells[arch, "cse"] = cse
        cells[arch, "sse"] = {s: cse[s] + d for s, d in zip(SUBJECTS, diffs)}
    return cells


UP = [0.011, 0.012, 0.013, 0.014, 0.015, 0.016, 0.017, 0.018]  # all positive: exact p = 2/2^8
MIXED_SIGNS = [0.011, -0.012, 0.013, -0.014, 0.015, -0.016, 0.017, -0.0185]
ARCHS = ("unet", "sdnet", "fcdensenet")


@pytest.mark.parametrize(
    ("deltas", "verdict", "p"),
    [
        ({"unet": UP, "sdnet": UP, "fcdensenet": UP}, REPRODUCED, 3 * 2 / 2**8),
        ({"unet": UP, "sdnet": [-d for d in UP], "fcdensenet": MIXED_SIGNS}, CONTRADICTED, 3 * 2 / 2**8),
        ({"unet": UP, "sdnet": UP, "fcdensenet": MIXED_SIGNS}, INCONCLUSIVE, None),
    ],
)
def test_c2_verdicts(deltas, verdict, p):
    pytest.importorskip("scipy")
    claim = claim_sse_beats_cse(_cells(deltas), ARCHS, alpha=0.05, min_pairs=6, ddof=1)
    assert claim.verdict == verdict
    assert [t.label for t in claim.tests] == ["U-Net: sSE − cSE", "SD-Net: sSE − cSE", "FC-DenseNet: sSE − cSE"]
    if p is not None:
        assert claim.p_value == pytest.approx(p)
    else:  # the largest Holm p: the mixed-sign architecture's
        assert claim.p_value == pytest.approx(max(t.holm_p for t in claim.tests))
        assert claim.tests[2].verdict() == INCONCLUSIVE


def test_c2_not_tested_when_an_architecture_is_missing():
    claim = claim_sse_beats_cse(_cells({"unet": UP}), ARCHS, alpha=0.05, min_pairs=6, ddof=1)
    assert claim.verdict == NOT_TESTED
    assert claim.note == "missing: SD-Net (no runs), FC-DenseNet (no runs)"
    cells = _cells({"unet": UP, "sdnet": UP, "fcdensenet": UP})
    del cells["sdnet", "sse"]
    claim = claim_sse_beats_cse(cells, ARCHS, alpha=0.05, min_pairs=6, ddof=1)
    assert claim.verdict_text == "not tested (missing: SD-Net/sSE)"


def test_direction_follows_the_mean_difference():
    assert _test(0.001, mean=0.0).direction() == 0
    assert _test(0.001, mean=math.nan).direction() == 0
    assert _test(0.001, mean=-0.1, expected=-1).direction() == 1


# ----------------------------------------------------------------------------------------------- provenance


def _run(tmp_path, name: str, overrides: list[str] | None) -> Run:
    folder = tmp_path / name
    (folder / ".hydra").mkdir(parents=True)
    if overrides is not None:
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return Run(folder, "unet", Variant("none"), 0, {}, None, {})


def test_sweep_command_joins_varying_keys_and_leaves_out_machine_folders(tmp_path):
    runs = [
        _run(tmp_path, f"r{seed}-{se}", ["experiment=x", f"se={se}", f"seed={seed}", f"paths.runs_dir=/m{seed}"])
        for seed in (10, 2, 0)
        for se in ("sse", "cse")
    ]
    runs.append(_run(tmp_path, "r-old", None))
    command = sweep_command(runs)
    assert command.command == "scseg-train -m experiment=x se=cse,sse seed=0,2,10"
    assert command.notes == ("1 of 7 runs have no .hydra/overrides.yaml",)


def test_sweep_command_quotes_lists_and_notes_partial_keys_and_holes(tmp_path):
    runs = [
        _run(tmp_path, "a", ["model=unet", "se.positions=[encoder,decoder]", "+trainer.x=1"]),
        _run(tmp_path, "b", ["model=sdnet", "se.positions=[encoder]"]),
    ]
    command = sweep_command(runs)
    assert command.command == "scseg-train -m model=sdnet,unet 'se.positions=[encoder,decoder],[encoder]'"
    assert command.notes[0] == "left out: `+trainer.x=1`, set in only 1 of 2 runs"
    assert command.notes[1].startswith("the runs hold 2 of the 4 combinations")


def test_small_helpers():
    assert split_override("~foo") == ("~foo", None) and split_override("a=b=c") == ("a", "b=c")
    assert sort_values({"10", "9", "1.5"}) == ["1.5", "9", "10"] and sort_values({"b", "a1"}) == ["a1", "b"]
    assert values_text([("x", 3)]) == "x" and values_text([("a", 1), ("b", 2)]) == "a (1 runs), b (2 runs) (MIXED)"
    assert duration(3725.4) == "1:02:05" and duration(59.6) == "0:01:00"


def _timed_run(tmp_path, name: str, end: str | None, wall: float | None, state: str = "done") -> Run:
    run = _run(tmp_path, name, None)
    if end is not None:
        (run.path / "status.json").write_text(json.dumps({"state": state, "updated_at": end}))
    return Run(run.path, "unet", Variant("none"), 0, {}, None, {} if wall is None else {"wall_time_s": wall})


def test_elapsed_spans_first_start_to_last_end_so_parallel_jobs_overlap(tmp_path):
    runs = [  # two jobs side by side (10:00-10:10, 10:01-10:11), then one alone (10:10-10:20)
        _timed_run(tmp_path, "a", "2026-11-29T10:10:00+00:00", 600.0),
        _timed_run(tmp_path, "b", "2026-11-29T10:11:00+00:00", 600.0),
        _timed_run(tmp_path, "c", "2026-11-29T10:20:00+00:00", 600.0),
        _timed_run(tmp_path, "no-status", None, 600.0),  # not counted
        _timed_run(tmp_path, "no-wall", "2026-11-29T12:00:00+00:00", None),  # not counted
        _timed_run(tmp_path, "failed", "2026-11-29T13:00:00+00:00", 60.0, state="failed"),  # not counted
    ]
    assert elapsed(runs) == (1200.0, 3)
    assert wall_times(runs[:3]).total == 1800.0  # the sum of wall times: what elapsed corrects for parallel jobs
    assert elapsed(runs[:1]) is None
