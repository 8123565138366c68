"""The analysis of one study from its tidy per-case CSV: cells, effects, controls, the paper's claims.

Reads only :class:`scseg.report.tidy.CaseRow` rows, so a committed CSV regenerates its page anywhere. What a
number means:

- a run's subject score is the mean Dice over the subject's foreground structures (undefined ones left out);
- a cell (architecture x variant) reports the mean over its runs of their mean subject score, and the spread
  between runs (std over runs, ddof 1);
- every comparison is :func:`scseg.report.effects.compare` on runs x subjects matrices paired by seed and fold;
  one family per table, Bonferroni over it;
- boundary metrics (HD95 in mm, NSD), where the runs computed them: each SE variant against ``none`` by the same
  estimator on the subject's mean over structures, HD95 as ``none - variant`` (a reduction is positive, so
  ``better`` means better for every metric), with their own equivalence margins. They never decide a claim (the
  paper's claims are about Dice).

Under-trained cells: an architecture whose ``none`` has a mean best validation Dice more than
``under_trained_margin`` below the task's best ``none`` is shown, marked, and left out of the claims (its SE
effects would describe optimisation speed in a starved network). Validation Dice, never test Dice, decides it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from scseg.report.effects import ALPHA, DEFAULT_MARGIN, Effect, align, compare, magnitude_verdict
from scseg.report.tidy import CaseRow

PAPER_VARIANTS: tuple[str, ...] = ("cse", "sse", "scse")
# Comparisons between variants (a - b) that the paper's claims and the controls need, when both cells exist.
VARIANT_PAIRS: tuple[tuple[str, str], ...] = (("sse", "cse"), ("scse", "cse"), ("scse", "sse"))
CONTROL_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("scse", "none-wide-scse", "scSE against a network without SE of the same parameter count"),
    ("cse", "none-wide-cse", "cSE against a network without SE of the same parameter count"),
    ("none-wide-scse", "none", "the backbone widened to scSE's parameter count against the plain one: capacity alone"),
    ("scse-max", "scse", "scSE by element-wise max (gates in (0, 1)) against by addition (gates sum to (0, 2))"),
    ("scse-max", "none", "scSE by max (the authors' code, the TMI paper's best) against no SE"),
    ("scse-max", "cse", "concurrency without the gate-range confound: scSE max has cSE's gate range"),
    ("scse-max", "sse", "concurrency without the gate-range confound: scSE max has sSE's gate range"),
    ("cse-g2", "cse", "cSE with its gate doubled (starts near identity, like scSE add) against cSE"),
    ("sse-g2", "sse", "sSE with its gate doubled against sSE"),
    ("scse", "cse-g2", "scSE add against cSE of the same gate range"),
    ("scse", "sse-g2", "scSE add against sSE of the same gate range"),
    ("none-bf16", "none", "bf16 autocast against fp32: the same network, seeds and data in another precision"),
)
ARCH_ORDER: tuple[str, ...] = ("unet", "sdnet", "fcdensenet", "quicknat")
VARIANT_ORDER: tuple[str, ...] = (
    "none",
    *PAPER_VARIANTS,
    "scse-max",
    "none-wide-scse",
    "none-wide-cse",
    "cse-g2",
    "sse-g2",
    "none-bf16",
)
ARCH_NAMES: dict[str, str] = {"unet": "U-Net", "sdnet": "SD-Net", "fcdensenet": "FC-DenseNet", "quicknat": "QuickNAT"}


@dataclass(frozen=True)
class ComparisonFamily:
    """A table of its own: each of ``cells`` minus ``reference`` when one is named, else every pair of ``cells``
    (a - b in the given order), on every architecture that has both cells; Bonferroni over the table. Cells without
    runs are skipped. ``key`` names the table in the effects CSV."""

    key: str
    title: str
    cells: tuple[str, ...]
    reference: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping) -> ComparisonFamily:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        missing = sorted({"key", "title", "cells"} - set(data))
        if unknown or missing:
            raise ValueError(
                f"report setting families: {'unknown ' + ', '.join(unknown) if unknown else ''}"
                f"{'; ' if unknown and missing else ''}{'missing ' + ', '.join(missing) if missing else ''} "
                f"(each family has key, title, cells and optionally reference)"
            )
        return cls(**{**data, "cells": tuple(data["cells"])})

    def pairs(self) -> list[tuple[str, str]]:
        if self.reference is not None:
            return [(c, self.reference) for c in self.cells if c != self.reference]
        return [(x, y) for i, x in enumerate(self.cells) for y in self.cells[i + 1 :]]


@dataclass(frozen=True)
class StudySettings:
    """The analysis knobs (``configs/report/<task>.yaml``)."""

    alpha: float = ALPHA
    equivalence_margin: float = DEFAULT_MARGIN
    under_trained_margin: float = 0.03
    small_structures: tuple[str, ...] = ()
    small_structures_reason: str = ""
    magnitude_arch: str = "unet"
    magnitude_band: tuple[float, float] = (0.04, 0.09)
    n_boot: int = 10_000
    hd95_margin_mm: float = 1.0  # HD95 effects inside +-1 mm are equivalent (about one voxel at the CPU presets' 2 mm)
    nsd_margin: float = 0.01  # NSD effects inside +-1 point are equivalent (as for Dice)
    # Markdown lines for a "See also" section: measurements of the same task made outside the study's runs (another
    # evaluation protocol, another page), each naming where its command is. Not analysed, only linked.
    see_also: tuple[str, ...] = ()
    # A Markdown paragraph printed under the claims table: what the verdicts are about when a page's architectures or
    # protocol are not the paper's (the zoo decides the claims on QuickNAT, the authors' follow-up, not on the
    # paper's three networks). Not analysed; empty: nothing printed.
    claims_scope: str = ""
    # each variant or module vs none on every structure, one Bonferroni family per architecture x variant (the
    # structures); secondary, decides no claim. Off for a quick re-analysis of a large CSV.
    per_structure: bool = True
    # more comparisons beside those against none, each its own table and Bonferroni family (see ComparisonFamily):
    # the zoo's library presets against each other, its attention modules against the paper's scSE
    families: tuple[ComparisonFamily, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping) -> StudySettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown report setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        values = dict(data)
        for key in ("small_structures", "magnitude_band", "see_also"):
            if key in values:
                values[key] = tuple(values[key])
        if not isinstance(values.get("claims_scope", ""), str):
            raise ValueError(f"report setting claims_scope must be one Markdown string, got {values['claims_scope']!r}")
        if "families" in values:
            values["families"] = tuple(ComparisonFamily.from_mapping(f) for f in values["families"])
        return cls(**values)


@dataclass(frozen=True)
class Cell:
    arch: str
    variant: str
    runs: tuple[str, ...]
    mean: float
    spread: float
    val_dice: float
    n_params: int
    subjects: int


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    verdict: str
    deciding: tuple[str, ...]
    rule: str
    effects: tuple[Effect, ...] = ()
    detail: str = ""


@dataclass
class StudyAnalysis:
    settings: StudySettings
    cells: dict[tuple[str, str], Cell]
    archs: list[str]
    variants: list[str]
    under_trained: dict[str, str]
    vs_none: list[tuple[str, Effect]] = field(default_factory=list)
    # every other module or preset (CBAM, ECA, smp_scse, ...) vs none: its own family, never in the paper's claims
    others_vs_none: list[tuple[str, Effect]] = field(default_factory=list)
    between: list[tuple[str, Effect]] = field(default_factory=list)
    # (family, [(arch, effect)]) for each of settings.families, in their order
    families: list[tuple[ComparisonFamily, list[tuple[str, Effect]]]] = field(default_factory=list)
    # family key -> the cells it names that no run of this study has
    family_absent: dict[str, tuple[str, ...]] = field(default_factory=dict)
    controls: list[tuple[str, Effect, str]] = field(default_factory=list)
    small_vs_large: list[tuple[str, Effect]] = field(default_factory=list)
    volume_slopes: dict[str, float] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    # (metric, arch, effect): each SE variant vs none on a boundary metric (see BOUNDARY_METRICS)
    boundary: list[tuple[str, str, Effect]] = field(default_factory=list)
    # (arch, structure, effect): each paper variant vs none on one structure (see _per_structure)
    per_structure: list[tuple[str, str, Effect]] = field(default_factory=list)
    # structure -> mean reference volume of `none`'s cases (voxels of the file's grid), smallest first
    structure_volumes: dict[str, float] = field(default_factory=dict)
    # runs that should have been trained alike and were not (see unlike_runs)
    unlike: list[str] = field(default_factory=list)


def _short(hashes: Iterable[str]) -> str:
    return ", ".join(sorted(h[:8] for h in hashes))


def unlike_runs(rows: Sequence[CaseRow]) -> list[str]:
    """Where runs that a page pairs or pools differ in more than SE settings and seed (their comparison hash).

    Within a cell, every run of one fold must share a hash (the seed is not in it); across a cell and ``none`` of
    the same architecture and fold, too, unless the cell differs by design (another precision, a capacity-matched
    backbone). A mismatch means another budget, data or optimiser slipped into the experiment folder: the pairing
    would then measure that, not the module.
    """
    hashes: dict[tuple[str, str, int | None], set[str]] = defaultdict(set)
    kind: dict[tuple[str, str], tuple[str, str]] = {}
    for r in rows:
        if r.comparison_hash:
            hashes[(r.arch, r.variant, r.fold)].add(r.comparison_hash)
            kind[(r.arch, r.variant)] = (r.precision, r.capacity_match)
    found = []
    for (arch, variant, fold), values in sorted(hashes.items(), key=lambda kv: str(kv[0])):
        where = f"{arch_name(arch)} {variant}" + ("" if fold is None else f", fold {fold}")
        if len(values) > 1:
            found.append(f"{where}: its runs have {len(values)} comparison hashes ({_short(values)})")
        base = hashes.get((arch, "none", fold))
        if variant == "none" or not base or kind[(arch, variant)] != kind.get((arch, "none")):
            continue
        if values != base:
            found.append(f"{where}: comparison hash {_short(values)} differs from none's ({_short(base)})")
    return found


def arch_name(arch: str) -> str:
    """An architecture's name as the pages print it (``unet`` -> U-Net)."""
    return ARCH_NAMES.get(arch, arch)


def _order(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    values = set(values)
    return [v for v in preferred if v in values] + sorted(values - set(preferred))


# Boundary metrics compared like Dice: (CaseRow field, True when lower is better).
BOUNDARY_METRICS: dict[str, bool] = {"hd95": True, "nsd": False}


def subject_scores(
    rows: Iterable[CaseRow], structures: set[str] | None = None, metric: str = "dice"
) -> dict[tuple, float]:
    """``{(arch, variant, run_key, subject): mean of metric over the (chosen) structures}``; undefined values (NaN)
    left out. ``metric`` is a per-structure field of :class:`CaseRow`: ``dice``, ``hd95`` or ``nsd``."""
    sums: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        if structures is not None and row.structure not in structures:
            continue
        value = getattr(row, metric)
        if not math.isnan(value):
            sums[(row.arch, row.variant, row.run_key, row.subject)].append(value)
    return {key: float(np.mean(values)) for key, values in sums.items()}


def _cell_map(scores: Mapping[tuple, float], arch: str, variant: str) -> dict[tuple[str, str], float]:
    return {(k[2], k[3]): v for k, v in scores.items() if k[0] == arch and k[1] == variant}


def _cells(rows: Sequence[CaseRow], scores: Mapping[tuple, float]) -> dict[tuple[str, str], Cell]:
    meta: dict[tuple[str, str], dict[str, tuple[float, int]]] = defaultdict(dict)
    for row in rows:
        meta[(row.arch, row.variant)][row.run_key] = (row.val_dice, row.n_params)
    cells = {}
    for (arch, variant), runs in meta.items():
        per_run: dict[str, list[float]] = defaultdict(list)
        subjects = set()
        for (run, subject), value in _cell_map(scores, arch, variant).items():
            per_run[run].append(value)
            subjects.add(subject)
        run_means = [float(np.mean(v)) for v in per_run.values()]
        vals = [v for v, _ in runs.values() if not math.isnan(v)]
        cells[(arch, variant)] = Cell(
            arch=arch,
            variant=variant,
            runs=tuple(sorted(runs)),
            mean=float(np.mean(run_means)) if run_means else math.nan,
            spread=float(np.std(run_means, ddof=1)) if len(run_means) > 1 else math.nan,
            val_dice=float(np.mean(vals)) if vals else math.nan,
            n_params=int(np.median([n for _, n in runs.values()])),
            subjects=len(subjects),
        )
    return cells


def under_trained(rows: Iterable[CaseRow], margin: float) -> dict[str, str]:
    """Architectures whose ``none`` validation Dice is more than ``margin`` below another architecture's, each with
    the reason.

    Compared on the folds both architectures have (seeds averaged within a fold): a fold's validation subjects
    set its level (on CHAOS one fold validates near 0.66, the others near 0.88), so a sweep that has reached only
    some folds of one architecture must not be held against all folds of another. Without cross-validation there
    is one set of validation subjects and this is the mean over each architecture's runs.
    """
    per_run: dict[str, dict[int | None, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row.variant == "none" and not math.isnan(row.val_dice):
            per_run[row.arch][row.fold][row.run_key] = row.val_dice
    by_fold = {a: {f: float(np.mean(list(runs.values()))) for f, runs in folds.items()} for a, folds in per_run.items()}
    found = {}
    for arch, own in by_fold.items():
        worst = (0.0, math.nan, math.nan, ())
        for other, theirs in by_fold.items():
            common = sorted(set(own) & set(theirs), key=str)
            if other == arch or not common:
                continue
            mine, best = np.mean([own[f] for f in common]), np.mean([theirs[f] for f in common])
            if best - mine > worst[0]:
                worst = (float(best - mine), float(mine), float(best), tuple(common))
        gap, mine, best, common = worst
        if gap > margin:
            folds = "" if common == (None,) else f", on folds {', '.join(str(f) for f in common)}"
            found[arch] = (
                f"`none` validation Dice {mine:.3f} is {gap:.3f} below the best architecture's {best:.3f} "
                f"(margin {margin:g}{folds})"
            )
    return found


SAME_NETWORK = "the same network: identical Dice on every case"


def _compare(scores, arch, a, b, family, settings, seed) -> Effect:
    ma, mb, _, _ = align(_cell_map(scores, arch, a), _cell_map(scores, arch, b))
    effect = compare(
        ma,
        mb,
        names=(a, b),
        family_size=family,
        alpha=settings.alpha,
        margin=settings.equivalence_margin,
        n_boot=settings.n_boot,
        seed=seed,
    )
    # two cells that trained one network (a capacity match that found no wider width nearer its target than the
    # plain one) agree to the last bit; their "equivalent" would read as evidence, so it is named for what it is
    if ma.size and np.array_equal(ma, mb, equal_nan=True):
        effect = dataclasses.replace(effect, note="; ".join(filter(None, (effect.note, SAME_NETWORK))))
    return effect


def _decide(effects: Sequence[tuple[str, Effect]], need: str = "all") -> tuple[str, tuple[str, ...]]:
    """``all``: reproduced when every comparison is better, contradicted when any is worse or equivalent;
    ``any``: reproduced when one is better, contradicted when every one is worse or equivalent. Comparisons with
    too few runs test nothing (one network per cell cannot see a rerun's move): they keep a claim from being
    reproduced (``all``) or contradicted (``any``), and with only those it is "not tested"."""
    if all(e.verdict == "too few runs" for _, e in effects):
        return "not tested", ()
    better = [a for a, e in effects if e.verdict == "better"]
    against = [a for a, e in effects if e.verdict in ("worse", "equivalent")]
    if need == "all":
        if against:
            return "contradicted", tuple(dict.fromkeys(against))
        if len(better) == len(effects):
            return "reproduced", tuple(dict.fromkeys(better))
    else:
        if better:
            return "reproduced", tuple(dict.fromkeys(better))
        if len(against) == len(effects):
            return "contradicted", tuple(dict.fromkeys(against))
    return "inconclusive", ()


def analyse(rows: Sequence[CaseRow], settings: StudySettings | None = None) -> StudyAnalysis:
    """The whole analysis of one task's rows (see the module docstring)."""
    settings = settings or StudySettings()
    if not rows:
        raise ValueError("no rows to analyse")
    scores = subject_scores(rows)
    cells = _cells(rows, scores)
    archs = _order({r.arch for r in rows}, ARCH_ORDER)
    variants = _order({r.variant for r in rows}, VARIANT_ORDER)
    analysis = StudyAnalysis(settings, cells, archs, variants, under_trained={}, unlike=unlike_runs(rows))
    analysis.under_trained.update(under_trained(rows, settings.under_trained_margin))
    plan = [(a, v) for a in archs for v in variants if v in PAPER_VARIANTS and (a, v) in cells and (a, "none") in cells]
    for i, (arch, variant) in enumerate(plan):
        analysis.vs_none.append((arch, _compare(scores, arch, variant, "none", len(plan), settings, seed=i)))
    # a cell some control of this study compares (per architecture) is shown there; any other non-paper cell (a
    # module, a library preset, or a control cell whose partner was not trained) is compared with none in its own family
    controlled = {
        (a, v) for a in archs for x, y, _ in CONTROL_PAIRS if (a, x) in cells and (a, y) in cells for v in (x, y)
    }
    others = [
        (a, v)
        for a in archs
        for v in variants
        if v != "none"
        and v not in PAPER_VARIANTS
        and (a, v) not in controlled
        and (a, v) in cells
        and (a, "none") in cells
    ]
    for i, (arch, variant) in enumerate(others):
        analysis.others_vs_none.append((arch, _compare(scores, arch, variant, "none", len(others), settings, 500 + i)))
    pairs = [(a, x, y) for a in archs for x, y in VARIANT_PAIRS if (a, x) in cells and (a, y) in cells]
    for i, (arch, x, y) in enumerate(pairs):
        analysis.between.append((arch, _compare(scores, arch, x, y, len(pairs), settings, seed=100 + i)))
    for k, family in enumerate(settings.families):
        duels = [(a, x, y) for a in archs for x, y in family.pairs() if (a, x) in cells and (a, y) in cells]
        effects = [
            (arch, _compare(scores, arch, x, y, len(duels), settings, seed=1000 * (k + 1) + i))
            for i, (arch, x, y) in enumerate(duels)
        ]
        analysis.families.append((family, effects))
        names = (*family.cells, *([family.reference] if family.reference else []))
        absent = tuple(n for n in dict.fromkeys(names) if n not in variants)
        if absent:  # a cell not trained yet, or a misspelt name: said on the page, never silently dropped
            analysis.family_absent[family.key] = absent
    controls = [(a, x, y, why) for a in archs for x, y, why in CONTROL_PAIRS if (a, x) in cells and (a, y) in cells]
    for i, (arch, x, y, why) in enumerate(controls):
        effect = _compare(scores, arch, x, y, len(controls), settings, seed=200 + i)
        analysis.controls.append((arch, effect, why))
    _small_vs_large(analysis, rows, settings)
    _boundary(analysis, rows, plan, settings)
    if settings.per_structure:
        _per_structure(analysis, rows, [*plan, *others], settings)
    analysis.claims = _claims(analysis, settings)
    return analysis


def _boundary(
    analysis: StudyAnalysis, rows: Sequence[CaseRow], plan: Sequence[tuple[str, str]], settings: StudySettings
) -> None:
    """Each SE variant vs none on HD95 and NSD, for the cells whose runs all computed them (runs from before the
    boundary metrics have NaN there, and a comparison needs both sides)."""
    margins = {"hd95": settings.hd95_margin_mm, "nsd": settings.nsd_margin}
    for m, (metric, lower_is_better) in enumerate(BOUNDARY_METRICS.items()):
        scores = subject_scores(rows, metric=metric)
        measured = {(k[0], k[1]) for k in scores}
        pairs = [(a, v) for a, v in plan if (a, v) in measured and (a, "none") in measured]
        for i, (arch, variant) in enumerate(pairs):
            first, second = (_cell_map(scores, arch, v) for v in (variant, "none"))
            ma, mb, _, _ = align(first, second)
            names = (variant, "none")
            if lower_is_better:  # none - variant: a reduction is positive
                ma, mb, names = mb, ma, ("none", variant)
            effect = compare(
                ma,
                mb,
                names=names,
                family_size=len(pairs),
                alpha=settings.alpha,
                margin=margins[metric],
                n_boot=settings.n_boot,
                seed=400 + 100 * m + i,
            )
            if lower_is_better:  # relative to none's distance, not the variant's
                effect = dataclasses.replace(effect, relative=effect.estimate / float(np.nanmean(ma)))
            analysis.boundary.append((metric, arch, effect))


def _per_structure(
    analysis: StudyAnalysis, rows: Sequence[CaseRow], plan: Sequence[tuple[str, str]], settings: StudySettings
) -> None:
    """Each paper variant (and other module) vs none on each structure's Dice, by the same estimator as the main
    effects (runs and subjects resampled), Bonferroni over the structures of one column: which structures move.
    Structures run from the smallest mean reference volume to the largest (the paper's small-structure claim)."""
    volumes: dict[str, list[float]] = defaultdict(list)
    by_structure: dict[str, list[CaseRow]] = defaultdict(list)
    for row in rows:
        by_structure[row.structure].append(row)
        if row.variant == "none" and row.n_ref > 0:
            volumes[row.structure].append(row.n_ref)
    order = sorted(volumes, key=lambda s: float(np.mean(volumes[s])))
    analysis.structure_volumes = {s: float(np.mean(volumes[s])) for s in order}
    scores = {s: subject_scores(by_structure[s]) for s in order}
    for i, (arch, variant) in enumerate(plan):
        for j, structure in enumerate(order):
            cell, base = _cell_map(scores[structure], arch, variant), _cell_map(scores[structure], arch, "none")
            if not cell or not base:
                continue
            effect = _compare(scores[structure], arch, variant, "none", len(order), settings, 1000 + 100 * i + j)
            analysis.per_structure.append((arch, structure, effect))


def _small_vs_large(analysis: StudyAnalysis, rows: Sequence[CaseRow], settings: StudySettings) -> None:
    """cSE - none on the named small structures minus on every other structure, per architecture; and the slope of
    the per-structure effect against log10 of the structure's mean reference volume."""
    small = set(settings.small_structures)
    structures = {r.structure for r in rows}
    if not small or not small <= structures:
        return
    large = structures - small
    small_scores, large_scores = subject_scores(rows, small), subject_scores(rows, large)
    archs = [a for a in analysis.archs if (a, "cse") in analysis.cells and (a, "none") in analysis.cells]
    for i, arch in enumerate(archs):
        diff = {}
        for scores, name in ((small_scores, "small"), (large_scores, "large")):
            a, b, runs, subjects = align(_cell_map(scores, arch, "cse"), _cell_map(scores, arch, "none"))
            diff[name] = (a - b, runs, subjects)
        (ds, _, _), (dl, _, _) = diff["small"], diff["large"]
        effect = compare(
            ds,
            dl,
            names=("cse-none on small", "cse-none on large"),
            family_size=len(archs),
            alpha=settings.alpha,
            margin=settings.equivalence_margin,
            n_boot=settings.n_boot,
            seed=300 + i,
        )
        # a difference of differences has no meaningful baseline to be relative to
        analysis.small_vs_large.append((arch, dataclasses.replace(effect, relative=math.nan)))
        analysis.volume_slopes[arch] = _volume_slope(rows, arch)


def _volume_slope(rows: Sequence[CaseRow], arch: str) -> float:
    """Least-squares slope of (cSE - none mean Dice per structure) on log10(mean reference volume)."""
    dice: dict[tuple[str, str], list[float]] = defaultdict(list)
    volume: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.arch != arch or row.variant not in ("cse", "none"):
            continue
        if not math.isnan(row.dice):
            dice[(row.variant, row.structure)].append(row.dice)
        if row.variant == "none" and row.n_ref > 0:
            volume[row.structure].append(row.n_ref)
    xs, ys = [], []
    for structure, volumes in volume.items():
        if dice.get(("cse", structure)) and dice.get(("none", structure)):
            xs.append(math.log10(float(np.mean(volumes))))
            ys.append(float(np.mean(dice[("cse", structure)]) - np.mean(dice[("none", structure)])))
    if len(xs) < 3:
        return math.nan
    return float(np.polyfit(xs, ys, 1)[0])


def _partial_grid(
    effects: Sequence[tuple[str, Effect]], needed: Sequence[tuple[str, str]], verdict: tuple[str, tuple[str, ...]]
) -> tuple[tuple[str, tuple[str, ...]], str]:
    """An "every ..." claim over architectures that trained only part of what it compares (e.g. QuickNAT with scSE
    alone): a comparison against it still contradicts, but "reproduced" needs every architecture's whole set, and
    no architecture with its whole set means "not tested". Returns the verdict and a note naming the incomplete."""
    have: dict[str, set[tuple[str, str]]] = {}
    for name, effect in effects:
        have.setdefault(name, set()).add((effect.a, effect.b))
    partial = [n for n, pairs in have.items() if not set(needed) <= pairs]
    if not partial or verdict[0] == "contradicted":
        return verdict, ""
    label = {"none": "none", "cse": "cSE", "sse": "sSE", "scse": "scSE"}  # the paper's variants (the page's names)
    wanted = ", ".join(f"{label.get(a, a)} - {label.get(b, b)}" for a, b in needed)
    note = f"Trained only part of what the claim compares ({wanted}): {', '.join(partial)}."
    if len(partial) == len(have):
        return ("not tested", ()), note
    return ("inconclusive", ()), note + " A reproduction needs every architecture's whole set."


def _claims(analysis: StudyAnalysis, settings: StudySettings) -> list[Claim]:
    skip = analysis.under_trained
    vs_none = [(arch_name(a), e) for a, e in analysis.vs_none if a not in skip]
    c1, c1_note = _partial_grid(vs_none, [(v, "none") for v in PAPER_VARIANTS], _decide(vs_none, "all"))
    claims = [
        Claim(
            "C1",
            "Every SE variant improves every architecture.",
            *c1,
            rule="reproduced if every variant-vs-none effect is better; contradicted if any is worse or equivalent",
            effects=tuple(e for _, e in vs_none),
            detail=c1_note,
        )
    ]
    sse_cse = [(arch_name(a), e) for a, e in analysis.between if a not in skip and (e.a, e.b) == ("sse", "cse")]
    claims.append(
        Claim(
            "C2",
            "sSE beats cSE.",
            *_decide(sse_cse, "all"),
            rule="sSE - cSE per architecture: reproduced if better in every one; contradicted if worse or "
            "equivalent in any",
            effects=tuple(e for _, e in sse_cse),
        )
    )
    scse = [(arch_name(a), e) for a, e in analysis.between if a not in skip and e.a == "scse"]
    scse += [(arch_name(a), e) for a, e in analysis.vs_none if a not in skip and e.a == "scse"]
    c3, c3_note = _partial_grid(scse, [("scse", v) for v in ("none", "cse", "sse")], _decide(scse, "all"))
    claims.append(
        Claim(
            "C3",
            "scSE is the best variant.",
            *c3,
            rule="scSE - none, scSE - cSE and scSE - sSE per architecture: reproduced if all better; contradicted "
            "if any is worse or equivalent",
            effects=tuple(e for _, e in scse),
            detail=c3_note,
        )
    )
    small = [(arch_name(a), e) for a, e in analysis.small_vs_large if a not in skip]
    worse_small = [(n, e) for n, e in small if e.verdict == "worse"]
    if not small:
        c4 = ("not tested", ())
    elif worse_small:
        c4 = ("reproduced", tuple(n for n, _ in worse_small))
    elif all(e.verdict in ("better", "equivalent") for _, e in small):
        c4 = ("contradicted", tuple(n for n, _ in small))
    else:
        c4 = ("inconclusive", ())
    names = ", ".join(settings.small_structures)
    claims.append(
        Claim(
            "C4",
            "cSE can hurt small structures.",
            *c4,
            rule=f"(cSE - none on the small structures) - (cSE - none on every other structure), per architecture; "
            f"small: {names or 'not configured'}. Reproduced if worse in any architecture; contradicted if better "
            "or equivalent in every one",
            effects=tuple(e for _, e in small),
            detail=settings.small_structures_reason,
        )
    )
    magnitude = [(a, e) for a, e in analysis.vs_none if a == settings.magnitude_arch and e.a == "scse"]
    low, high = settings.magnitude_band
    if magnitude and settings.magnitude_arch not in skip:
        verdict = magnitude_verdict(magnitude[0][1], settings.magnitude_band)
        deciding = (arch_name(settings.magnitude_arch),) if verdict != "inconclusive" else ()
    else:
        verdict, deciding = "not tested", ()
    claims.append(
        Claim(
            "C-magnitude",
            f"{arch_name(settings.magnitude_arch)} gains +{100 * low:g} to {100 * high:g} % Dice from scSE.",
            verdict,
            deciding,
            rule=f"the relative interval of scSE - none: reproduced if inside [{100 * low:g}, {100 * high:g}] %, "
            f"contradicted if wholly below {100 * low:g} % (or above {100 * high:g} %)",
            effects=tuple(e for _, e in magnitude),
        )
    )
    return claims


__all__: Sequence[str] = ["Cell", "Claim", "StudyAnalysis", "StudySettings", "analyse", "arch_name", "subject_scores"]
