"""scseg-study reproduce: which networks two CSVs both trained, and whether their per-case Dice are bit-identical."""

from __future__ import annotations

import dataclasses as dc
from pathlib import Path

from scseg.cli.study import main
from scseg.report.reproduce import pair_runs, render_pairs
from scseg.report.tidy import read_csv, write_csv

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "study" / "per_case.csv"


def _two_runs():
    rows = read_csv(FIXTURE)
    none = [r for r in rows if r.arch == "unet" and r.variant == "none" and r.seed == 0]
    scse = [r for r in rows if r.arch == "unet" and r.variant == "scse" and r.seed == 0]
    assert none and scse and len({r.run for r in none}) == len({r.run for r in scse}) == 1
    return none, scse


def test_same_networks_pair_across_labels_and_commits_and_a_moved_case_is_seen():
    none, scse = _two_runs()
    # B: the same two networks trained at another commit, under another run name and variant label; one case of
    # scSE moved by 0.002
    again_none = [dc.replace(r, run="b-none", commit="f" * 40) for r in none]
    again_scse = [dc.replace(r, run="b-scse", commit="f" * 40, variant="smp_scse") for r in scse]
    again_scse[0] = dc.replace(again_scse[0], dice=again_scse[0].dice + 0.002)
    # and a network A never trained (another seed): not paired
    other_seed = [dc.replace(r, run="b-seed9", seed=9) for r in none]
    pairs = {p.run_b: p for p in pair_runs(none + scse, again_none + again_scse + other_seed)}
    assert set(pairs) == {"b-none", "b-scse"}
    assert pairs["b-none"].bit_identical and pairs["b-none"].cases == len(none)
    moved = pairs["b-scse"]
    assert not moved.bit_identical and moved.identical == moved.cases - 1
    assert abs(moved.max_abs_diff - 0.002) < 1e-9 and moved.mean_diff > 0
    text = render_pairs(list(pairs.values()))
    assert "1 of 2 networks bit-identical" in text


def test_other_se_settings_or_precision_are_other_networks():
    none, scse = _two_runs()
    bf16 = [dc.replace(r, run="b-bf16", precision="bf16") for r in none]
    wider = [dc.replace(r, run="b-wide", n_params=r.n_params + 1) for r in none]
    max_agg = [dc.replace(r, run="b-max", aggregation="max") for r in scse]
    assert pair_runs(none + scse, bf16 + wider + max_agg) == []
    assert render_pairs([]).startswith("No network was trained in both CSVs")


def test_cli_prints_the_table_and_names_a_missing_file(tmp_path, capsys):
    none, _ = _two_runs()
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(none, a)
    write_csv([dc.replace(r, run="b-none") for r in none], b)
    assert main(["reproduce", "--csv", str(a), "--against", str(b)]) == 0
    assert "1 of 1 networks bit-identical" in capsys.readouterr().out
    assert main(["reproduce", "--csv", str(a), "--against", str(tmp_path / "gone.csv")]) == 2
    assert "gone.csv: no such file" in capsys.readouterr().err
