"""The report's numbers and run identity: seed averaging, paired tests, run-name parsing, missing cells."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from scseg.report.runs import Problem, Run, Variant, make_variant, missing_cells, parse_run_name
from scseg.report.stats import paired_comparison, seed_average, summarise, wilcoxon_p
from scseg.report.tables import order_variants, parse_variant_order


def test_seed_average_ignores_nan_and_uses_seeds_that_have_the_subject():
    averaged = seed_average([{"a": 0.5, "b": math.nan, "c": math.nan}, {"a": 0.7, "b": 0.4, "c": math.nan}, {"d": 0.9}])
    assert averaged["a"] == pytest.approx(0.6)
    assert averaged["b"] == pytest.approx(0.4)
    assert math.isnan(averaged["c"])
    assert averaged["d"] == pytest.approx(0.9)


def test_summarise_skips_nan_and_honours_ddof():
    values = [0.2, 0.4, math.nan, 0.9]
    s0, s1 = summarise(values, ddof=0), summarise(values)
    assert (s0.n, s0.mean) == (3, pytest.approx(0.5))
    assert s0.std == pytest.approx(np.std([0.2, 0.4, 0.9]))
    assert s1.std == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert summarise([math.nan]).n == 0 and math.isnan(summarise([]).mean)
    assert math.isnan(summarise([0.3]).std) and summarise([0.3], ddof=0).std == 0.0


def test_paired_comparison_pairs_by_subject_and_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    subjects = [f"s{i}" for i in range(9)]
    base = {s: float(rng.uniform(0.5, 0.8)) for s in subjects}
    variant = {s: base[s] + float(rng.normal(0.03, 0.02)) for s in reversed(subjects)}  # order must not matter
    variant["extra"] = 0.99  # unpaired: ignored
    base["s0"] = math.nan  # undefined: not a pair
    result = paired_comparison(variant, base)
    paired = subjects[1:]
    x = np.array([variant[s] for s in paired])
    y = np.array([base[s] for s in paired])
    assert result.n_pairs == 8
    assert result.mean_diff == pytest.approx(np.mean(x - y))
    assert result.p_value == pytest.approx(scipy_stats.wilcoxon(x, y).pvalue, rel=1e-12)
    assert result.note == ""


def test_wilcoxon_needs_min_pairs():
    x, y = np.linspace(0.5, 0.9, 5), np.linspace(0.4, 0.8, 5)
    p, note = wilcoxon_p(x, y)
    assert p is None and note.startswith("n too small")
    p, note = wilcoxon_p(x, y, min_pairs=5)
    pytest.importorskip("scipy")
    assert p is not None and 0.0 < p <= 1.0


def test_wilcoxon_all_zero_differences_is_undefined_not_a_crash():
    pytest.importorskip("scipy")
    x = np.full(7, 0.8)
    p, note = wilcoxon_p(x, x.copy())
    assert p is None and "zero" in note


def test_wilcoxon_without_scipy_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    p, note = wilcoxon_p(np.linspace(0, 1, 8), np.linspace(0.1, 0.9, 8))
    assert p is None and "scipy not installed" in note


def test_no_paired_subjects():
    result = paired_comparison({"a": 0.5}, {"b": 0.5})
    assert result.n_pairs == 0 and result.p_value is None and math.isnan(result.mean_diff)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unet-scse-add-seed0-1a2b3c4d", ("unet", Variant("scse", "add"), 0)),
        ("fcdensenet103-scse-max-seed12-deadbeef", ("fcdensenet103", Variant("scse", "max"), 12)),
        ("sdnet-cse-seed3-00ff00ff", ("sdnet", Variant("cse", None), 3)),
        ("unet-scse-seed1-00ff00ff", ("unet", Variant("scse", "add"), 1)),  # scSE without aggregation: default
        ("unet-cse-max-seed1-00ff00ff", None),  # aggregation only for scSE
        ("unet-bogus-seed1-00ff00ff", None),
        ("figures", None),
    ],
)
def test_parse_run_name(name, expected):
    assert parse_run_name(name) == expected


def test_variant_labels_and_normalisation():
    assert make_variant("cSE", "max") == Variant("cse", None)
    assert make_variant("scse", None, default_aggregation="max") == Variant("scse", "max")
    assert Variant("scse", "max").label() == "scSE (max)"
    assert Variant("scse", "max").label(default_aggregation="max") == "scSE"
    assert Variant("sse").label() == "sSE" and Variant("scse", "add").key == "scse-add"


def test_variant_order_keeps_unnamed_variants_and_rejects_unknown():
    found = [Variant("scse", "max"), Variant("none"), Variant("scse", "add"), Variant("cse")]
    ordered = order_variants(found, ["none", "scse"], "add")
    assert ordered == [Variant("none"), Variant("scse", "add"), Variant("scse", "max"), Variant("cse")]
    with pytest.raises(ValueError, match="--variant-order"):
        parse_variant_order("none,cse-max")
    with pytest.raises(ValueError, match="empty"):
        parse_variant_order(" , ")


def test_missing_cells_cover_the_arch_variant_seed_grid(tmp_path):
    def run(arch, se, seed):
        return Run(tmp_path, arch, Variant(se), seed, {}, None, {})

    runs = [run("unet", "none", 0), run("unet", "none", 1), run("unet", "cse", 0), run("sdnet", "none", 0)]
    failed = [Problem("sdnet-sse-seed1-x", "failed: boom", "sdnet", Variant("sse"), 1, "failed")]
    missing = {(p.arch, p.variant.key, p.seed) for p in missing_cells(runs, failed)}
    assert missing == {("unet", "cse", 1), ("sdnet", "none", 1), ("sdnet", "sse", 0)}
