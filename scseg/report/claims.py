"""The paper's claims about SE blocks, each decided by a rule fixed here from paired tests over test subjects.

Why a module of its own: a results page states a verdict per claim, and that verdict must follow a rule written
down once (and printed on the page), not a judgement made while looking at the numbers. Every test is a
two-sided paired Wilcoxon signed-rank test over test subjects on seed-averaged values (``stats``); the p-values
of one claim's tests are Holm-adjusted together (:func:`scseg.report.stats.holm`); a test counts as significant
when its Holm p is below alpha, in the direction of the sign of its mean paired difference.

A claim whose tests need a cell (architecture x variant) the sweep does not have is ``not tested`` and names
what is missing; a claim none of whose tests has a p-value (scipy missing, too few subjects) is inconclusive
and says why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from scseg.report.runs import Run, Sweep, Variant, make_variant
from scseg.report.stats import MIN_PAIRS, PairedComparison, holm, paired_comparison, seed_average
from scseg.report.tables import ComparisonTables, arch_label

ALPHA = 0.05
PAPER_ARCHS: tuple[str, ...] = ("unet", "sdnet", "fcdensenet")  # the paper's three architectures
SE_VARIANTS_TESTED: tuple[str, ...] = ("cse", "sse", "scse")  # each compared with `none`
SMALL_FRACTION = 0.25  # C4: this share of the foreground structures (rounded up) counts as small

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"

Cells = Mapping[tuple[str, str], Mapping[str, float]]  # (arch, se) -> {subject: seed-averaged value}


@dataclass(frozen=True)
class PairedTest:
    """One paired test of a claim, ``a - b`` per subject; the paper expects the sign ``expected`` (+1 or -1).

    ``result`` is None when a cell it needs is missing (``missing`` names them); ``holm_p`` is set by
    :func:`adjust` over the claim's family.
    """

    label: str
    result: PairedComparison | None
    expected: int = 1
    holm_p: float | None = None
    missing: tuple[str, ...] = ()
    arch: str = ""
    variant: str = ""

    def direction(self, alpha: float = ALPHA) -> int:
        """+1 significant in the paper's direction, -1 significant against it, 0 neither (or no p-value)."""
        if self.result is None or self.holm_p is None or not self.holm_p < alpha:
            return 0
        mean = self.result.mean_diff
        if math.isnan(mean) or mean == 0:
            return 0
        return 1 if (mean > 0) == (self.expected > 0) else -1

    def verdict(self, alpha: float = ALPHA) -> str:
        """``reproduced`` / ``contradicted`` / ``inconclusive``, or why there is no verdict to give."""
        if self.result is None:
            return f"{NOT_TESTED} (missing: {', '.join(self.missing)})"
        if self.holm_p is None:
            return f"{INCONCLUSIVE} (no p-value: {self.result.note})"
        return {1: REPRODUCED, -1: CONTRADICTED, 0: INCONCLUSIVE}[self.direction(alpha)]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, its decision rule in words, its Holm-adjusted tests and the verdict they give."""

    key: str
    statement: str
    rule: str
    tests: tuple[PairedTest, ...]
    verdict: str
    p_value: float | None  # the Holm p that decides the verdict (None: not tested, or no p-value)
    note: str = ""  # what is missing, or why there is no p-value
    details: tuple[str, ...] = ()

    @property
    def verdict_text(self) -> str:
        return f"{self.verdict} ({self.note})" if self.note else self.verdict


@dataclass(frozen=True)
class SmallStructure:
    """A foreground structure C4 counts as small, with its mean reference volume in voxels."""

    class_id: int
    name: str
    mean_n_ref: float


@dataclass(frozen=True)
class ClaimsReport:
    """The variant-vs-none family (one test per architecture and SE variant) and the claims decided from it."""

    alpha: float
    archs: tuple[str, ...]
    variant_tests: tuple[PairedTest, ...]
    claims: tuple[Claim, ...]
    small: tuple[SmallStructure, ...]
    n_structures: int


# ------------------------------------------------------------------------------------------------ decisions


def adjust(tests: Sequence[PairedTest]) -> tuple[PairedTest, ...]:
    """The tests with their Holm p over this family (those without a p-value stay without one)."""
    adjusted = holm([t.result.p_value if t.result is not None else None for t in tests])
    return tuple(replace(t, holm_p=p) for t, p in zip(tests, adjusted))


def _missing_note(tests: Sequence[PairedTest]) -> str | None:
    missing = list(dict.fromkeys(m for t in tests for m in t.missing))
    return f"missing: {', '.join(missing)}" if missing else None


def _no_p_note(tests: Sequence[PairedTest]) -> str:
    reasons = sorted({t.result.note for t in tests if t.result is not None and t.holm_p is None})
    return "; ".join(reasons)


def decide(tests: Sequence[PairedTest], alpha: float = ALPHA, need: str = "all") -> tuple[str, float | None, str]:
    """(verdict, deciding Holm p, note) of Holm-adjusted ``tests``.

    ``need="all"``: reproduced when every test is significant in the paper's direction (p: the largest Holm p),
    contradicted when any is significant against it (p: the smallest such Holm p), else inconclusive (p: the
    largest Holm p). ``need="any"``: reproduced when at least one is significant in the paper's direction (p: the
    smallest such Holm p), contradicted when all are significant against it (p: the largest Holm p), else
    inconclusive (p: the smallest Holm p).
    """
    if need not in ("all", "any"):
        raise ValueError(f"need must be 'all' or 'any', got {need!r}")
    missing = _missing_note(tests)
    if missing or not tests:
        return NOT_TESTED, None, missing or "missing: no tests"
    with_p = [t for t in tests if t.holm_p is not None]
    if not with_p:
        return INCONCLUSIVE, None, f"no p-value: {_no_p_note(tests)}"
    holm_ps = [t.holm_p for t in with_p if t.holm_p is not None]
    favour = [t.holm_p for t in with_p if t.direction(alpha) == 1 and t.holm_p is not None]
    against = [t.holm_p for t in with_p if t.direction(alpha) == -1 and t.holm_p is not None]
    without = len(tests) - len(with_p)
    note = f"{without} of {len(tests)} tests without p-value: {_no_p_note(tests)}" if without else ""
    if need == "all":
        if len(favour) == len(tests):
            return REPRODUCED, max(favour), note
        if against:
            return CONTRADICTED, min(against), note
        return INCONCLUSIVE, max(holm_ps), note
    if favour:
        return REPRODUCED, min(favour), note
    if len(against) == len(tests):
        return CONTRADICTED, max(against), note
    return INCONCLUSIVE, min(holm_ps), note


def make_claim(
    key: str,
    statement: str,
    rule: str,
    tests: Sequence[PairedTest],
    alpha: float = ALPHA,
    need: str = "all",
    details: Sequence[str] = (),
) -> Claim:
    """Holm-adjust ``tests`` as one family and decide the claim by :func:`decide`."""
    adjusted = adjust(tests)
    verdict, p, note = decide(adjusted, alpha, need)
    return Claim(key, statement, rule, adjusted, verdict, p, note, tuple(details))


# -------------------------------------------------------------------------------------------------- inputs


def _label(se: str) -> str:
    return Variant(se).label()


def cell_name(arch: str, se: str) -> str:
    """``U-Net/cSE``: how a missing cell is named on the page."""
    return f"{arch_label(arch)}/{_label(se)}"


def no_runs(arch: str) -> str:
    """An architecture the sweep has no cell of: named once rather than cell by cell."""
    return f"{arch_label(arch)} (no runs)"


def _missing(
    cells: Cells, needed: Iterable[tuple[str, str]], absent: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The needed cells ``cells`` lacks; an architecture without any cell is named once, as a whole (as ``absent``
    says, else "(no runs)")."""
    present = {a for a, _ in cells}
    absent = absent or {}
    return tuple(
        dict.fromkeys(
            cell_name(a, s) if a in present else absent.get(a, no_runs(a)) for a, s in needed if (a, s) not in cells
        )
    )


def paired_test(
    label: str,
    cells: Cells,
    a: tuple[str, str],
    b: tuple[str, str],
    expected: int = 1,
    min_pairs: int = MIN_PAIRS,
    ddof: int = 1,
    absent: Mapping[str, str] | None = None,
    **where: str,
) -> PairedTest:
    """The test ``cells[a] - cells[b]`` (two-sided), or a not-tested one naming the missing cells."""
    missing = _missing(cells, (a, b), absent)
    if missing:
        return PairedTest(label, None, expected, missing=missing, **where)
    result = paired_comparison(cells[a], cells[b], min_pairs=min_pairs, alternative="two-sided", ddof=ddof)
    return PairedTest(label, result, expected, **where)


def plain_cells(tables: ComparisonTables, archs: Sequence[str] = PAPER_ARCHS) -> dict[tuple[str, str], dict]:
    """Seed-averaged per-subject fg Dice of the paper's cells, keyed (arch, se); scSE is its default aggregation."""
    out = {}
    for arch in archs:
        for se in ("none", *SE_VARIANTS_TESTED):
            values = tables.subject_means.get((arch, make_variant(se, None, tables.default_aggregation)))
            if values is not None:
                out[arch, se] = values
    return out


def small_structures(
    runs: Iterable[Run], background_ids: Sequence[int] = (0,), fraction: float = SMALL_FRACTION
) -> tuple[list[SmallStructure], int]:
    """The ``fraction`` (rounded up) of foreground structures with the smallest mean reference volume, and how many
    foreground structures had one. Each subject's n_ref is averaged over the runs first (it is the same reference
    in every run), then over subjects; ties go to the lower class id."""
    volumes: dict[tuple[int, str], dict[str, list[float]]] = {}
    for run in runs:
        for row in run.per_case or ():
            if row.class_id in background_ids or math.isnan(row.n_ref):
                continue
            volumes.setdefault((row.class_id, row.class_name), {}).setdefault(row.subject, []).append(row.n_ref)
    means = {key: float(np.mean([np.mean(v) for v in by_subject.values()])) for key, by_subject in volumes.items()}
    ranked = sorted(means.items(), key=lambda kv: (kv[1], kv[0][0]))
    k = math.ceil(fraction * len(ranked)) if ranked else 0
    return [SmallStructure(cid, name, vol) for (cid, name), vol in ranked[:k]], len(ranked)


def structure_group_means(runs: Iterable[Run], class_ids: Iterable[int]) -> dict[str, float] | None:
    """Each subject's mean Dice over ``class_ids`` (NaN ignored) per run, then averaged over seeds; None when no
    run of the cell has per_case rows."""
    wanted = set(class_ids)
    per_seed = []
    for run in runs:
        if run.per_case is None:
            continue
        by_subject: dict[str, list[float]] = {}
        for row in run.per_case:
            if row.class_id in wanted:
                by_subject.setdefault(row.subject, []).append(row.dice)
        per_seed.append(
            {
                s: float(np.mean([v for v in vals if not math.isnan(v)]))
                if any(not math.isnan(v) for v in vals)
                else math.nan
                for s, vals in by_subject.items()
            }
        )
    return seed_average(per_seed) if per_seed else None


def gains(cells: Cells, arch: str, variant: str = "scse") -> dict[str, float] | None:
    """Per subject ``variant - none`` of one architecture (subjects with both values), None when a cell is missing."""
    if (arch, variant) not in cells or (arch, "none") not in cells:
        return None
    a, b = cells[arch, variant], cells[arch, "none"]
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b)) if not (math.isnan(a[s]) or math.isnan(b[s]))}


# -------------------------------------------------------------------------------------------------- claims

RULE_ALL = (
    "reproduced if every test is significant in the paper's direction; contradicted if any is significant "
    "against it; otherwise inconclusive. Deciding p: the largest Holm p if reproduced, the smallest Holm p among "
    "the contradicting tests if contradicted, else the largest Holm p."
)


def claim_every_variant_improves(tests: Sequence[PairedTest], alpha: float) -> Claim:
    """C1 from the variant-vs-none family (already the tests of every architecture x SE variant)."""
    n = len(tests)
    rule = (
        f"the {n} variant-vs-none comparisons above (Holm over the {n}). Reproduced if all {n} are reproduced; "
        "contradicted if any is contradicted; otherwise inconclusive. Deciding p: the largest Holm p of the "
        f"{n} if reproduced, the smallest Holm p among the contradicted ones if contradicted, else the largest Holm p."
    )
    return make_claim("C1", "Every SE variant improves every architecture.", rule, tests, alpha)


def claim_sse_beats_cse(
    cells: Cells,
    archs: Sequence[str],
    alpha: float,
    min_pairs: int,
    ddof: int,
    absent: Mapping[str, str] | None = None,
) -> Claim:
    """C2: spatial beats channel excitation, in every architecture."""
    tests = [
        paired_test(f"{arch_label(a)}: sSE − cSE", cells, (a, "sse"), (a, "cse"), 1, min_pairs, ddof, absent, arch=a)
        for a in archs
    ]
    rule = f"per architecture, sSE − cSE; Holm over the {len(tests)} architectures; " + RULE_ALL
    return make_claim("C2", "sSE beats cSE.", rule, tests, alpha)


def claim_scse_best(
    cells: Cells,
    archs: Sequence[str],
    alpha: float,
    min_pairs: int,
    ddof: int,
    absent: Mapping[str, str] | None = None,
) -> Claim:
    """C3: the combination beats both of its parts, in every architecture."""
    tests = [
        paired_test(
            f"{arch_label(a)}: scSE − {_label(o)}", cells, (a, "scse"), (a, o), 1, min_pairs, ddof, absent, arch=a
        )
        for a in archs
        for o in ("cse", "sse")
    ]
    rule = f"per architecture, scSE − cSE and scSE − sSE; Holm over the {len(tests)} tests; " + RULE_ALL
    return make_claim("C3", "scSE is the best variant.", rule, tests, alpha)


def claim_cse_hurts_small(
    sweep: Sweep,
    tables: ComparisonTables,
    archs: Sequence[str],
    alpha: float,
    min_pairs: int,
    ddof: int,
    background_ids: Sequence[int],
    fraction: float = SMALL_FRACTION,
    absent: Mapping[str, str] | None = None,
) -> tuple[Claim, list[SmallStructure], int]:
    """C4; also returns the small structures and the number of foreground structures ranked."""
    none = make_variant("none", None, tables.default_aggregation)
    cse = make_variant("cse", None, tables.default_aggregation)
    none_runs = [r for r in sweep.runs if r.row in archs and r.variant == none]
    small, n_structures = small_structures(none_runs, background_ids, fraction)
    ids = [s.class_id for s in small]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    lacking: dict[str, list[str]] = {}  # per architecture: what its test cannot do without
    for arch in archs:
        if not any(r.row == arch for r in sweep.runs):
            lacking[arch] = [(absent or {}).get(arch, no_runs(arch))]
            continue
        for se, variant in (("none", none), ("cse", cse)):
            runs = [r for r in sweep.runs if r.row == arch and r.variant == variant]
            values = structure_group_means(runs, ids) if runs else None
            if values is not None:
                cells[arch, se] = values
            else:
                lacking.setdefault(arch, []).append(
                    f"per_case.csv of {cell_name(arch, se)}" if runs else cell_name(arch, se)
                )
    tests = []
    for a in archs:
        label = f"{arch_label(a)}: cSE − none, small structures"
        missing = lacking.get(a) or ([] if small else ["n_ref in the `none` runs' per_case.csv"])
        if missing:
            tests.append(PairedTest(label, None, -1, missing=tuple(missing), arch=a))
        else:
            tests.append(paired_test(label, cells, (a, "cse"), (a, "none"), -1, min_pairs, ddof, arch=a))
    quarter = f"{fraction:.0%}" if fraction != SMALL_FRACTION else "quarter"
    rule = (
        f"small structures are the {quarter} (rounded up) of the foreground structures with the smallest mean "
        "reference volume (n_ref in per_case.csv, averaged over the test subjects of the `none` runs); per "
        "architecture, each subject's mean Dice over them (seed-averaged), cSE − none; Holm over the "
        f"{len(tests)} architectures. Reproduced if at least one architecture is significantly negative (cSE "
        f"hurts); contradicted if all {len(tests)} are significantly positive; otherwise inconclusive. Deciding p: "
        "the smallest Holm p among the significantly negative if reproduced, the largest Holm p if contradicted, "
        "else the smallest Holm p."
    )
    details = []
    if small:
        listed = ", ".join(f"{s.name} ({s.mean_n_ref:,.0f} voxels)" for s in small)
        details.append(f"Small structures ({len(small)} of {n_structures}, smallest first): {listed}.")
    claim = make_claim("C4", "cSE can hurt small structures.", rule, tests, alpha, need="any", details=details)
    return claim, small, n_structures


def claim_unet_gains_most(
    cells: Cells,
    archs: Sequence[str],
    alpha: float,
    min_pairs: int,
    ddof: int,
    absent: Mapping[str, str] | None = None,
) -> Claim:
    """C5: the first architecture (U-Net) gains more from scSE than each other one; gains are paired per subject."""
    first, others = archs[0], list(archs[1:])
    gain_cells: dict[tuple[str, str], dict[str, float]] = {}
    missing: dict[str, tuple[str, ...]] = {}
    for arch in archs:
        gain = gains(cells, arch)
        if gain is None:
            missing[arch] = _missing(cells, ((arch, "none"), (arch, "scse")), absent)
        else:
            gain_cells[arch, "gain"] = gain
    tests = []
    for other in others:
        label = f"scSE gain: {arch_label(first)} − {arch_label(other)}"
        lacking = missing.get(first, ()) + missing.get(other, ())
        if lacking:
            tests.append(PairedTest(label, None, 1, missing=lacking, arch=other))
        else:
            tests.append(
                paired_test(label, gain_cells, (first, "gain"), (other, "gain"), 1, min_pairs, ddof, arch=other)
            )
    rule = (
        f"per subject gain g = scSE − none (seed-averaged) per architecture; {arch_label(first)}'s gain minus "
        f"each other architecture's; Holm over the {len(tests)} tests; " + RULE_ALL
    )
    return make_claim("C5", f"{arch_label(first)} gains most from scSE.", rule, tests, alpha)


def split_rows(sweep: Sweep, archs: Sequence[str]) -> dict[str, str]:
    """How to name a paper architecture whose runs all sit in rows split by an extra swept setting (cSE reduction,
    SE positions): it has runs, but no cell of the paper's table."""
    out = {}
    for arch in archs:
        if any(r.arch == arch for r in sweep.runs) and not any(r.row == arch for r in sweep.runs):
            out[arch] = f"{arch_label(arch)} (runs only in rows split by {', '.join(sweep.extra_dimensions)})"
    return out


def evaluate_claims(
    sweep: Sweep,
    tables: ComparisonTables,
    alpha: float = ALPHA,
    archs: Sequence[str] = PAPER_ARCHS,
    background_ids: Sequence[int] = (0,),
) -> ClaimsReport:
    """Every test and claim of the results page, from the tables' seed-averaged per-subject values."""
    cells = plain_cells(tables, archs)
    absent = split_rows(sweep, archs)
    min_pairs, ddof = tables.min_pairs, tables.ddof
    variant_tests = adjust(
        [
            paired_test(
                f"{arch_label(a)}: {_label(se)} − none",
                cells,
                (a, se),
                (a, "none"),
                1,
                min_pairs,
                ddof,
                absent,
                arch=a,
                variant=se,
            )
            for a in archs
            for se in SE_VARIANTS_TESTED
        ]
    )
    c4, small, n_structures = claim_cse_hurts_small(
        sweep, tables, archs, alpha, min_pairs, ddof, background_ids, absent=absent
    )
    claims = (
        claim_every_variant_improves(variant_tests, alpha),
        claim_sse_beats_cse(cells, archs, alpha, min_pairs, ddof, absent),
        claim_scse_best(cells, archs, alpha, min_pairs, ddof, absent),
        c4,
        claim_unet_gains_most(cells, archs, alpha, min_pairs, ddof, absent),
    )
    return ClaimsReport(alpha, tuple(archs), variant_tests, claims, tuple(small), n_structures)


__all__ = [
    "ALPHA",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "NOT_TESTED",
    "PAPER_ARCHS",
    "REPRODUCED",
    "Claim",
    "ClaimsReport",
    "SmallStructure",
    "PairedTest",
    "adjust",
    "decide",
    "evaluate_claims",
    "make_claim",
    "small_structures",
]
