"""How often do the study intervals cover a true zero effect? `python scripts/interval_coverage.py [--sims 400]`

Simulates paired Dice differences ``D[r, j] = run_r + subject_j + noise`` with no effect, in the designs the studies
use (MALC: 3 or 5 runs crossed with 15 test subjects; CHAOS: 5 folds, each testing 4 of 20 subjects), with variance
components of the size the pages measure (in Dice: 0.005 is half a point), and counts how often each 95 % interval
contains 0: the pigeonhole bootstrap alone, the t interval alone (scseg.report.effects.mean_se_df), and their union,
which is what the study pages report. Prints one line per design; takes about a minute.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.stats import t as student_t

from scseg.report.effects import bootstrap_means, mean_se_df

# (design, runs, subjects, sd run, sd subject, sd residual, heavy-tailed subjects)
DESIGNS = (
    ("crossed", 5, 15, 0.005, 0.004, 0.005, False),
    ("crossed", 3, 15, 0.005, 0.004, 0.005, False),
    ("crossed", 3, 15, 0.0, 0.004, 0.005, False),
    ("crossed", 5, 15, 0.0, 0.0, 0.005, False),
    ("crossed", 5, 15, 0.003, 0.006, 0.004, True),
    ("cv", 5, 20, 0.005, 0.01, 0.005, False),
    ("cv", 5, 20, 0.0, 0.01, 0.005, False),
    ("cv", 5, 20, 0.01, 0.002, 0.005, False),
)


def simulate(design: str, runs: int, subjects: int, sd: tuple[float, float, float], heavy: bool, rng) -> np.ndarray:
    """One matrix of differences with zero true effect (NaN where a cross-validation fold did not test a subject)."""
    sd_run, sd_subject, sd_residual = sd
    run = rng.normal(0, sd_run, runs)
    subject = rng.standard_t(3, subjects) * sd_subject / math.sqrt(3) if heavy else rng.normal(0, sd_subject, subjects)
    d = run[:, None] + subject[None, :] + rng.normal(0, sd_residual, (runs, subjects))
    if design == "cv":
        d[np.arange(subjects)[None, :] % runs != np.arange(runs)[:, None]] = np.nan
    return d


def t_interval(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    estimate = float(np.nanmean(d))
    se, df = mean_se_df(d)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return estimate - half, estimate + half


def coverage(design: tuple, sims: int, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Fractions of simulations whose bootstrap, t and union intervals contain 0."""
    kind, runs, subjects, sd_run, sd_subject, sd_residual, heavy = design
    rng = np.random.default_rng(seed)
    hits = np.zeros(3)
    for k in range(sims):
        d = simulate(kind, runs, subjects, (sd_run, sd_subject, sd_residual), heavy, rng)
        b_low, b_high = np.quantile(bootstrap_means(d, n_boot, k), [0.025, 0.975])
        t_low, t_high = t_interval(d)
        hits += [b_low <= 0 <= b_high, t_low <= 0 <= t_high, min(b_low, t_low) <= 0 <= max(b_high, t_high)]
    return tuple(float(h) / sims for h in hits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("design, runs x subjects, sd run/subject/residual (points): bootstrap / t / union coverage of 95 % intervals")
    for i, design in enumerate(DESIGNS):
        kind, runs, subjects, *sds, heavy = design
        b, t, u = coverage(design, args.sims, args.n_boot, args.seed + i)
        sd_text = "/".join(f"{100 * x:g}" for x in sds)
        tail = ", heavy-tailed subjects" if heavy else ""
        print(f"{kind}, {runs} x {subjects}, sd {sd_text}{tail}: {b:.3f} / {t:.3f} / {u:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
