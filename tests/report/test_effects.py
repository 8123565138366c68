"""The effect estimator of the results pages (scseg/report/effects.py) on synthetic per-case data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from scseg.report.effects import (
    VarianceComponents,
    align,
    compare,
    magnitude_verdict,
    predicted_df,
    predicted_se,
    runs_to_decide,
    variance_components,
)

SEEDS, SUBJECTS = 5, 15


def _study(effect: float, *, run_sd=0.004, subject_sd=0.03, noise_sd=0.004, seed=0):
    """Two variants' runs x subjects Dice: a shared subject difficulty, each run its own offset, and noise."""
    rng = np.random.default_rng(seed)
    subject = 0.82 + rng.normal(0, subject_sd, SUBJECTS)

    def variant(shift):
        runs = rng.normal(0, run_sd, (SEEDS, 1))
        return subject[None, :] + runs + rng.normal(0, noise_sd, (SEEDS, SUBJECTS)) + shift

    return variant(effect), variant(0.0)


def test_one_shifted_seed_is_not_an_effect():
    """No true effect, one seed of the variant +0.01 on every subject: a subject-level test calls this significant;
    an interval over runs must not."""
    for seed in range(5):
        a, b = _study(0.0, seed=seed)
        a[2] += 0.01
        effect = compare(a, b, family_size=9)
        assert effect.verdict != "better", effect


def test_a_true_three_point_effect_with_five_seeds_is_better():
    for seed in range(5):
        a, b = _study(0.03, seed=seed)
        effect = compare(a, b, family_size=9)
        assert effect.verdict == "better", effect
        assert effect.ci_low > 0 and 0.015 < effect.estimate < 0.045


def test_a_true_zero_with_a_tight_spread_is_equivalent():
    a, b = _study(0.0, run_sd=0.001, noise_sd=0.002, seed=1)
    effect = compare(a, b, family_size=9)
    assert effect.verdict == "equivalent", effect
    assert -0.01 < effect.ci_low < effect.ci_high < 0.01


def test_inconclusive_says_what_would_decide():
    a, b = _study(0.006, run_sd=0.01, seed=3)
    effect = compare(a, b, family_size=9)
    assert effect.verdict == "inconclusive", effect
    assert effect.mde > abs(effect.estimate)
    assert effect.runs_to_decide is None or effect.runs_to_decide > SEEDS  # the runs it has did not decide


def test_runs_to_decide_uses_the_t_quantile_of_the_projected_design():
    """With few runs the t quantile is far above z: a run-dominated difference needs more runs than z suggests."""
    c = VarianceComponents(run=0.005**2, subject=0.0, residual=0.0)
    needed = runs_to_decide(c, 15, effect=0.006, margin=0.01, level=0.95)
    by_z = next(r for r in range(2, 100) if predicted_se(c, r, 15) * (1.96 + 0.8416) <= 0.006)
    assert predicted_df(c, needed, 15) == pytest.approx(needed - 1)  # run variance only: df = runs - 1
    assert needed > by_z
    sparse = runs_to_decide(c, 15, effect=0.006, margin=0.01, level=0.95, sparse=True)  # df = min(R, J) - 1
    assert sparse >= needed


def test_one_run_is_never_a_verdict():
    a, b = _study(0.05, seed=0)
    effect = compare(a[:1], b[:1])
    assert effect.verdict == "too few runs" and "training variance" in effect.note


@pytest.mark.parametrize(("gain", "expected"), [(0.065, "reproduced"), (0.005, "contradicted")])
def test_the_magnitude_rule_on_both_sides_of_four_percent(gain, expected):
    """+4 to 9 % relative Dice: an interval inside the band reproduces, one wholly below 4 % contradicts."""
    rng = np.random.default_rng(0)
    b = 0.8 + rng.normal(0, 0.02, (SEEDS, SUBJECTS))
    a = b * (1 + gain) + rng.normal(0, 0.001, (SEEDS, SUBJECTS))
    assert magnitude_verdict(compare(a, b)) == expected


def test_variance_components_recover_the_truth():
    rng = np.random.default_rng(0)
    runs, subjects = 40, 60
    d = rng.normal(0, 0.02, (runs, 1)) + rng.normal(0, 0.03, (1, subjects)) + rng.normal(0, 0.01, (runs, subjects))
    c = variance_components(d)
    assert c.run == pytest.approx(0.02**2, rel=0.5)
    assert c.subject == pytest.approx(0.03**2, rel=0.5)
    assert c.residual == pytest.approx(0.01**2, rel=0.2)
    needed = runs_to_decide(c, subjects, effect=0.02, margin=0.01, level=0.95)
    assert needed is not None and needed > 2
    assert runs_to_decide(c, subjects, effect=0.02, margin=0.01, level=0.95, more_than=needed + 5) == needed + 6


def test_cross_validation_pairs_fold_networks():
    """Each subject tested by one fold network: a sparse matrix, paired by (seed, fold)."""
    rng = np.random.default_rng(0)
    a, b = {}, {}
    for fold in range(5):
        for k in range(4):
            subject = f"s{fold * 4 + k}"
            base = 0.8 + rng.normal(0, 0.03)
            b[(f"seed0-fold{fold}", subject)] = base
            a[(f"seed0-fold{fold}", subject)] = base + 0.05 + rng.normal(0, 0.002)
    ma, mb, runs, subjects = align(a, b)
    assert ma.shape == (5, 20) and np.isnan(ma).sum() == 5 * 20 - 20
    effect = compare(ma, mb)
    assert effect.verdict == "better" and effect.n_runs == 5 and effect.n_subjects == 20


def test_intervals_keep_their_level_with_three_runs():
    """With 3 runs whose networks differ (the design of a 3-seed cell), the bootstrap alone covers a true zero far
    less often than 95 %; the reported interval (the union with the t interval) keeps its level. A fixed seed, so
    the figures are the same on every run of the test; scripts/interval_coverage.py prints the full table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "interval_coverage.py"
    spec = importlib.util.spec_from_file_location("interval_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bootstrap, t, union = module.coverage(("crossed", 3, 15, 0.005, 0.004, 0.005, False), 300, 400, seed=1)
    assert bootstrap < 0.92 and union >= 0.93 and t >= 0.93, (bootstrap, t, union)
    _, t_cv, union_cv = module.coverage(("cv", 5, 20, 0.01, 0.002, 0.005, False), 300, 400, seed=2)
    assert union_cv >= 0.93 and t_cv >= 0.93, (t_cv, union_cv)


def test_mean_se_df_on_a_balanced_cross_validation_is_the_spread_of_fold_means():
    """Each subject tested by one fold's network: the standard error is that of the fold means (df = folds - 1),
    never below the one that ignores the folds (a floor for when few fold means happen to agree)."""
    from scseg.report.effects import mean_se_df

    def cv(values: np.ndarray) -> np.ndarray:
        d = np.full((4, 8), np.nan)
        for j in range(8):
            d[j % 4, j] = values[j]
        return d

    folds_differ = cv(np.array([0.0, 0.02, 0.04, 0.06, 0.001, 0.021, 0.041, 0.061]))
    se, df = mean_se_df(folds_differ)
    fold_means = np.array([np.nanmean(row) for row in folds_differ])
    assert df == 3 and se == pytest.approx(np.std(fold_means, ddof=1) / 2)
    folds_agree = cv(np.array([0.0, 0.01, 0.02, 0.03, 0.03, 0.02, 0.01, 0.0]))  # every fold mean 0.015
    se, _ = mean_se_df(folds_agree)
    values = folds_agree[~np.isnan(folds_agree)]
    assert se == pytest.approx(np.sqrt(8 / 7 * np.sum((values - values.mean()) ** 2) / 64)) and se > 0
