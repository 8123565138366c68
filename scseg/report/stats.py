"""The numbers behind the comparison: seed averaging, mean +- std over subjects, paired tests.

Order matters and is fixed here so every table agrees: each subject's value is first averaged over
seeds, then summarised over subjects; differences between variants are paired per subject on those
seed-averaged values.  scipy is an optional extra (``pip install -e .[report]``): it is imported only
when a p-value is asked for, and without it the p-value comes back empty with the reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_PAIRS = 6


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation over subjects; ``n`` counts the subjects with a defined value."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class PairedComparison:
    """A variant minus the baseline over subjects present in both; ``p_value`` None means ``note`` says why."""

    mean_diff: float
    std_diff: float
    n_pairs: int
    p_value: float | None
    note: str


def seed_average(per_seed: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-subject mean over seeds, ignoring NaN; a subject missing from a seed uses the seeds that have it.

    Subjects whose every value is NaN stay NaN (they are skipped later, and counted as such).
    """
    values: dict[str, list[float]] = {}
    for mapping in per_seed:
        for subject, value in mapping.items():
            values.setdefault(subject, []).append(float(value))
    out = {}
    for subject, vals in values.items():
        finite = [v for v in vals if not math.isnan(v)]
        out[subject] = float(np.mean(finite)) if finite else math.nan
    return out


def summarise(values: Iterable[float], ddof: int = 1) -> Summary:
    """Mean and std of the finite values (std with ``ddof``; NaN when fewer than ddof + 1 values)."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(arr, ddof=ddof)) if arr.size > ddof else math.nan
    return Summary(float(np.mean(arr)), std, int(arr.size))


def paired_values(
    variant: Mapping[str, float], baseline: Mapping[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Subjects with a finite value in both mappings (sorted), and the two aligned value vectors."""
    subjects = sorted(
        s for s in set(variant) & set(baseline) if not (math.isnan(variant[s]) or math.isnan(baseline[s]))
    )
    return (
        subjects,
        np.asarray([variant[s] for s in subjects], dtype=float),
        np.asarray([baseline[s] for s in subjects], dtype=float),
    )


def wilcoxon_p(
    x: np.ndarray, y: np.ndarray, min_pairs: int = MIN_PAIRS, alternative: str = "two-sided"
) -> tuple[float | None, str]:
    """Paired Wilcoxon signed-rank p-value of x vs y, or (None, why) when there is none to give."""
    if len(x) < min_pairs:
        return None, f"n too small ({len(x)} < {min_pairs} pairs)"
    try:  # here on purpose: scipy is the optional `report` extra; without it the tables are still written
        from scipy import stats
    except ImportError:
        return None, "scipy not installed (pip install -e .[report])"
    if np.all(x == y):
        return None, "undefined: all differences are zero"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.wilcoxon(x, y, alternative=alternative)
    except ValueError as err:
        return None, f"undefined: {err}"
    p = float(result.pvalue)
    if math.isnan(p):
        return None, "undefined (scipy returned NaN)"
    return p, ""


def paired_comparison(
    variant: Mapping[str, float],
    baseline: Mapping[str, float],
    min_pairs: int = MIN_PAIRS,
    alternative: str = "two-sided",
    ddof: int = 1,
) -> PairedComparison:
    """Mean (and std) of the per-subject differences variant - baseline, with the Wilcoxon p-value."""
    _, x, y = paired_values(variant, baseline)
    if len(x) == 0:
        return PairedComparison(math.nan, math.nan, 0, None, "no paired subjects")
    diff = summarise((x - y).tolist(), ddof=ddof)
    p, note = wilcoxon_p(x, y, min_pairs=min_pairs, alternative=alternative)
    return PairedComparison(diff.mean, diff.std, diff.n, p, note)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in input order, for one family of tests.

    Why Holm: a claim decided by several tests must not count on the luckiest of them; Holm controls the
    family-wise error like Bonferroni but rejects more. With the m given p-values sorted ascending,
    p_(i) becomes max over j <= i of min(1, (m - j + 1) p_(j)). ``None`` (a test without a p-value) stays
    ``None`` and is not counted in m.
    """
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(ranked)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[i] = running
    return adjusted
