"""The effect estimator of the results pages (scseg/report/effects.py) on synthetic per-case data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from scseg.report.effects import align, compare, magnitude_verdict, runs_to_decide, variance_components

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
    assert effect.runs_to_decide is None or effect.runs_to_decide > SEEDS


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
    assert runs_to_decide(c, subjects, effect=0.02, margin=0.01, z_total=3.0) is not None


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
