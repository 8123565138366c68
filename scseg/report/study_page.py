"""The results page of one study, rendered from :func:`scseg.report.study.analyse` (and so from its tidy CSV).

Deterministic: the same CSV and settings give the same bytes (the bootstrap is seeded per comparison), so a
committed page is checked against its committed CSV by a fast test. The forest plot beside it is drawn with
matplotlib when the ``report`` extra is installed.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from scseg.atomic import atomic_write
from scseg.report.effects import Effect, format_points
from scseg.report.study import ARCH_NAMES, SAME_NETWORK, StudyAnalysis, arch_name
from scseg.report.tidy import CaseRow

VARIANT_NAMES = {
    "none": "none",
    "cse": "cSE",
    "sse": "sSE",
    "scse": "scSE",
    "scse-max": "scSE max",
    "cse-g2": "cSE x2",
    "sse-g2": "sSE x2",
    "none-wide-scse": "none, wide",
    "none-wide-cse": "none, wide (cSE)",
    "none-bf16": "none, bf16",
    "cbam": "CBAM",
    "eca": "ECA",
    "coord": "coordinate attention",
    "project_excite": "Project & Excite",
    "attention_gate": "attention gates",
    "authors_scse": "scSE (authors' code)",
    "smp_scse": "scSE (SMP)",
    "monai_cse": "cSE (MONAI)",
    "nnunet_cse": "cSE (nnU-Net)",
}


def variant_name(variant: str) -> str:
    """A variant's or module's name as the pages print it (``scse-max`` -> scSE max)."""
    return VARIANT_NAMES.get(variant, variant)


def _num(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ci(effect: Effect, fmt=format_points) -> str:
    if not math.isfinite(effect.ci_low):
        return "-"
    return f"[{fmt(effect.ci_low)}, {fmt(effect.ci_high)}]"


def _sd_points(variance: float, scale: float = 100.0) -> str:
    return "-" if variance is None or not math.isfinite(variance) else f"{scale * math.sqrt(variance):.2f}"


def _mm(value: float, signed: bool = True) -> str:
    """A distance difference in mm (HD95)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _effect_row(label: Sequence[str], effect: Effect, unit: str = "points") -> str:
    """One effect; ``unit`` ``points`` (Dice, NSD: fractions shown x100) or ``mm`` (HD95)."""
    fmt = _mm if unit == "mm" else format_points
    scale = 1.0 if unit == "mm" else 100.0
    c = effect.components
    decide = ""
    known = effect.n_runs >= 2  # one run: the spread between runs, so MDE and runs to decide, is unknown
    if effect.verdict in ("inconclusive", "too few runs") and known:
        decide = str(effect.runs_to_decide) if effect.runs_to_decide else "> 100 (subjects limit)"
    verdict = effect.verdict + (f" ({effect.note})" if effect.note else "")
    relative = "-" if not math.isfinite(effect.relative) else f"{100 * effect.relative:+.1f} %"
    cells = [
        *label,
        fmt(effect.estimate),
        relative,
        _ci(effect, fmt),
        f"{effect.n_runs} x {effect.n_subjects}",
        _sd_points(c.run, scale),
        _sd_points(c.subject, scale),
        _sd_points(c.residual, scale),
        fmt(effect.mde, signed=False) if known else "-",
        decide or "-",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def control_sentence(arch: str, effect: Effect, why: str, margin: float) -> str:
    """What one control shows, in one sentence no stronger than its interval (``margin`` in Dice, as the verdict's
    equivalence margin)."""
    a, b = variant_name(effect.a), variant_name(effect.b)
    size = f"{format_points(effect.estimate)} points, {_ci(effect, format_points)}"
    head = f"{arch_name(arch)}, {a} - {b} ({why}): {size}"
    band = f"+-{100 * margin:g} point(s)"
    if SAME_NETWORK in effect.note:
        why_same = (
            " (the module adds less than half a width step of parameters, so no wider backbone is nearer its count)"
            if "none-wide" in effect.a or "none-wide" in effect.b
            else ""
        )
        return f"{head}: {a} and {b} trained the same network{why_same}, so this comparison measures nothing here."
    if effect.verdict == "better":
        return f"{head}: {a} scored higher than {b}, by at least {format_points(effect.ci_low, signed=False)} points."
    if effect.verdict == "worse":
        return f"{head}: {a} scored lower than {b}, by at least {format_points(-effect.ci_high, signed=False)} points."
    if effect.verdict == "equivalent":
        isolated = "what this control isolates moves Dice by less than that here"
        return f"{head}: {a} and {b} are equivalent within {band}; {isolated}."
    if effect.verdict == "inconclusive":
        more = f"about {effect.runs_to_decide} paired runs" if effect.runs_to_decide else "more than 100 paired runs"
        return (
            f"{head}: inconclusive, neither a difference nor equivalence within {band} is shown; {more} would decide "
            "it at these variance components."
        )
    return f"{head}: {effect.n_runs} paired run(s), too few to see training variance, so nothing is decided yet."


EFFECT_HEADER = (
    "| Δ Dice (points) | relative | {level} CI | runs x subjects | sd run | sd subject | sd residual | MDE | "
    "runs to decide | verdict |"
)


def _effect_table(
    first: Sequence[str], rows: list[tuple[Sequence[str], Effect]], header: str | None = None, unit: str = "points"
) -> list[str]:
    if not rows:
        return ["(no such comparison in this study)"]
    level = f"{100 * rows[0][1].level:.2f} %"
    head = "| " + " | ".join(first) + " " + (header or EFFECT_HEADER).format(level=level)
    sep = "|" + "---|" * (len(first) + 10)
    return [head, sep, *(_effect_row(label, e, unit) for label, e in rows)]


BOUNDARY_TITLES = {
    "hd95": ("HD95 reduction (none - variant, mm)", "mm", "Δ HD95 (mm, reduction > 0)"),
    "nsd": ("NSD (variant - none, points)", "points", "Δ NSD (points)"),
}


VERDICT_MARKS = {"better": "▲", "worse": "▼", "equivalent": "="}


def _per_structure_section(analysis: StudyAnalysis) -> list[str]:
    """Each variant or module vs none per structure: estimate and verdict mark, smallest structure first."""
    if not analysis.per_structure:
        return []
    columns = list(dict.fromkeys((a, e.a) for a, _, e in analysis.per_structure))
    effects = {(a, e.a, s): e for a, s, e in analysis.per_structure}
    level = f"{100 * analysis.per_structure[0][2].level:.2f} %"
    out = [
        "",
        "## Per structure: each SE variant or module vs none",
        "",
        f"Δ Dice in points per structure, by the same estimator over runs and subjects; {level} intervals, Bonferroni "
        "over the structures of each column. ▲ better and ▼ worse (the interval excludes 0), = equivalent (inside "
        "the margin), no mark: inconclusive. Structures from the smallest mean reference volume (`none`'s test "
        "cases, voxels of each file's grid) to the largest. Secondary: decides no claim.",
        "",
        "| Structure | volume | " + " | ".join(f"{arch_name(a)} {variant_name(v)}" for a, v in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for structure, volume in analysis.structure_volumes.items():
        cells = []
        for a, v in columns:
            e = effects.get((a, v, structure))
            cells.append("-" if e is None else f"{100 * e.estimate:+.2f} {VERDICT_MARKS.get(e.verdict, '')}".rstrip())
        out.append(f"| {structure} | {volume:,.0f} | " + " | ".join(cells) + " |")
    return out


def _boundary_section(analysis: StudyAnalysis) -> list[str]:
    """Each SE variant vs none on HD95 and NSD (only where the runs computed them)."""
    if not analysis.boundary:
        return []
    s = analysis.settings
    out = [
        "",
        "## Boundary metrics: each SE variant vs none",
        "",
        "The subject's mean over structures of HD95 (95th-percentile Hausdorff distance, mm, in each file's voxel "
        "spacing) and NSD (normalised surface Dice at the tolerance in the runs' `eval.nsd_tolerance_mm`), compared "
        "by the same estimator; HD95 as none - variant, so `better` is a smaller distance. Equivalence margins: "
        f"+-{s.hd95_margin_mm:g} mm (`hd95_margin_mm`) and +-{100 * s.nsd_margin:g} point(s) (`nsd_margin`). "
        "Secondary: they decide no claim.",
    ]
    for metric, (title, unit, head) in BOUNDARY_TITLES.items():
        rows = [
            ((arch_name(a), variant_name(e.b if metric == "hd95" else e.a)), e)
            for m, a, e in analysis.boundary
            if m == metric
        ]
        if not rows:
            continue
        header = EFFECT_HEADER.replace("Δ Dice (points)", head)
        out += ["", f"### {title}", "", *_effect_table(["Architecture", "Variant"], rows, header, unit)]
    return out


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cross_validation_note(rows: Sequence[CaseRow]) -> list[str]:
    """What changes in the reading of a cross-validated study (nothing is said for one without folds)."""
    folds = sorted({r.fold for r in rows if r.fold is not None})
    if not folds:
        return []
    return [
        f"- Cross-validation ({_count(len(folds), 'fold')} here): each fold's network is a run and tests only its "
        "fold's subjects, so every subject has one score per seed and variant. A cell's `spread` is between its fold "
        "networks' means, which also differ by how hard each fold's subjects are: not what a rerun moves. The t "
        "interval of these sparse designs takes the two-way cluster-robust variance over runs and subjects with "
        "min(runs, subjects) - 1 degrees of freedom; runs to decide counts fold networks (another seed of every "
        "fold adds one run per fold)."
    ]


def _provenance(rows: Sequence[CaseRow]) -> list[str]:
    runs = {r.run: r for r in rows}.values()
    lines = []
    for key, title in (
        ("commit", "scseg commit"),
        ("dirty", "uncommitted changes"),
        ("cpu", "CPU"),
        ("software", "software (summary.json)"),
    ):
        counts = Counter(getattr(r, key) or "?" for r in runs)
        lines.append(f"- {title}: " + ", ".join(f"{v} ({_count(n, 'run')})" for v, n in sorted(counts.items())))
    kernels = Counter(r.se_kernels or "?" for r in runs if r.se != "none")
    if kernels:
        computed = ", ".join(f"{v} ({_count(n, 'run')})" for v, n in sorted(kernels.items()))
        lines.append(f"- SE gates computed by: {computed}")
    return lines


def _see_also(lines: Sequence[str]) -> list[str]:
    """The settings' ``see_also`` lines as a list (nothing when there are none)."""
    return ["", "## See also", "", *(f"- {line}" for line in lines)] if lines else []


def render(
    analysis: StudyAnalysis,
    rows: Sequence[CaseRow],
    *,
    task: str,
    command: str,
    csv_name: str,
    figure_name: str | None,
) -> str:
    """The study page's Markdown: claims, cells, effects, controls, per structure, boundary metrics, provenance."""
    s = analysis.settings
    archs, variants = analysis.archs, analysis.variants
    out = [
        f"# Results: {task}",
        "",
        f"Generated from the tidy per-case data [{csv_name}]({csv_name}) by `{command}`; regenerate it rather than "
        "edit it (a test checks that the committed CSV gives this page byte for byte).",
        "",
        "## The paper's claims",
        "",
    ]
    if all(claim.verdict == "not tested" for claim in analysis.claims):
        out.append("None is tested here: no SE variant has a cell beside `none` (the comparisons are below).")
    else:
        out += ["| Claim | Verdict | Decided by |", "|---|---|---|"]
        for claim in analysis.claims:
            out.append(f"| {claim.key} {claim.text} | {claim.verdict} | {', '.join(claim.deciding) or '-'} |")
        out += ["", "Rules:", ""]
        for claim in analysis.claims:
            extra = f" {claim.detail}" if claim.detail else ""
            out.append(f"- **{claim.key}**: {claim.rule}.{extra}")
    if s.claims_scope:
        out += ["", f"**Scope.** {s.claims_scope.strip()}"]
    if analysis.unlike:
        out += [
            "",
            "**Unlike runs.** These runs differ in more than their SE settings and seed (settings, data or budget, by "
            "their comparison hash), so the effects that pair or pool them measure that difference too:",
            "",
            *(f"- {line}" for line in analysis.unlike),
        ]
    if analysis.under_trained:
        out += ["", "Left out of the claims as under-trained (validation Dice, never test Dice, decides):", ""]
        for arch, why in analysis.under_trained.items():
            out.append(f"- {arch_name(arch)}: {why}")
    out += [
        "",
        "## Reading this page",
        "",
        "- A run's score for a test subject is its mean Dice over the subject's foreground structures; a cell is the "
        "mean over its runs, and `spread` the standard deviation between its runs' means (what a rerun moves).",
        "- Every effect is one variant minus another in Dice points (0.01 Dice = 1 point), paired by run (seed and "
        "fold) and subject. Its confidence interval (95 % family-wise) sees training variance: a seed whose "
        "network is better everywhere is one draw, not fifteen. It is the wider of two intervals over runs and "
        f"subjects: the pigeonhole bootstrap's ({s.n_boot} replicates, runs and subjects resampled independently) "
        "and a t interval with Satterthwaite degrees of freedom, which keeps its level with 3-5 runs where the "
        "bootstrap alone covered a true zero only 86-92 % of the time (`python scripts/interval_coverage.py`; "
        "scseg/report/effects.py says why).",
        f"- Family-wise control: Bonferroni within each table (level 1 - {s.alpha:g}/m for m comparisons).",
        f"- Verdicts: better / worse when the interval excludes 0; equivalent when it lies inside "
        f"+-{100 * s.equivalence_margin:g} point(s) (`equivalence_margin`); inconclusive otherwise; too few runs "
        "below 3 paired runs.",
        "- sd run / sd subject / sd residual: the variance components of the per-subject difference, as standard "
        "deviations in points. MDE: the smallest effect this design detects with 80 % power. Runs to decide: paired "
        "runs on the same subjects (more than it has) after which the interval would exclude 0 or fit in the margin "
        "with 80 % power, if the estimate and the components are the truth (t quantile at the projected design's "
        "degrees of freedom).",
        *_cross_validation_note(rows),
        "",
        "## Cells",
        "",
        "Mean foreground Dice over test subjects (runs, spread between runs); validation Dice of training's best "
        "checkpoint; parameters.",
        "",
        "| Architecture | " + " | ".join(variant_name(v) for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for arch in archs:
        cells = []
        for variant in variants:
            cell = analysis.cells.get((arch, variant))
            if cell is None:
                cells.append("-")
                continue
            runs = _count(len(cell.runs), "run")
            cells.append(
                f"{_num(cell.mean)} ({runs}, spread {_num(cell.spread)}; val {_num(cell.val_dice)}; "
                f"{cell.n_params:,} params)"
            )
        mark = " (under-trained)" if arch in analysis.under_trained else ""
        out.append(f"| {arch_name(arch)}{mark} | " + " | ".join(cells) + " |")
    uneven = [arch_name(a) for a in archs if len({c.runs for (x, _), c in analysis.cells.items() if x == a}) > 1]
    if uneven:
        out += [
            "",
            f"Cells of {', '.join(uneven)} hold different runs (seeds or folds), so their means differ by which runs "
            "they hold too: compare them through the effects below, which pair the runs both cells hold.",
        ]
    out += ["", "## Each SE variant vs none", ""]
    if figure_name:
        out += [f"![effects vs none]({figure_name})", ""]
    out += _effect_table(
        ["Architecture", "Variant"], [((arch_name(a), variant_name(e.a)), e) for a, e in analysis.vs_none]
    )
    if analysis.others_vs_none:
        out += [
            "",
            "## Other modules and library presets vs none",
            "",
            "Their own family (Bonferroni over this table); they decide none of the paper's claims.",
            "",
        ]
        out += _effect_table(
            ["Architecture", "Module"], [((arch_name(a), variant_name(e.a)), e) for a, e in analysis.others_vs_none]
        )
    for family, effects in analysis.families:
        against = f"Each minus {variant_name(family.reference)}" if family.reference else "Each pair a - b"
        out += [
            "",
            f"## {family.title}",
            "",
            f"{against} on the runs both hold; one family (Bonferroni over this table).",
            "",
        ]
        out += _effect_table(
            ["Architecture", "Comparison"],
            [((arch_name(a), f"{variant_name(e.a)} - {variant_name(e.b)}"), e) for a, e in effects],
        )
        if family.key in analysis.family_absent:
            names = ", ".join(f"`{n}`" for n in analysis.family_absent[family.key])
            out += ["", f"Named in the settings, without runs in this study (left out): {names}."]
    out += ["", "## Variant vs variant", ""]
    out += _effect_table(
        ["Architecture", "Comparison"],
        [((arch_name(a), f"{variant_name(e.a)} - {variant_name(e.b)}"), e) for a, e in analysis.between],
    )
    out += ["", "## Controls", ""]
    out += _effect_table(
        ["Architecture", "Comparison", "What it controls"],
        [((arch_name(a), f"{variant_name(e.a)} - {variant_name(e.b)}", why), e) for a, e, why in analysis.controls],
    )
    if analysis.controls:
        out += ["", "What each control shows:", ""]
        out += [f"- {control_sentence(a, e, why, s.equivalence_margin)}" for a, e, why in analysis.controls]
    out += ["", "## C4: small against large structures", ""]
    out += _effect_table(
        ["Architecture", "Slope vs log10 volume"],
        [
            ((arch_name(a), format_points(analysis.volume_slopes.get(a, math.nan))), e)
            for a, e in analysis.small_vs_large
        ],
    )
    if analysis.small_vs_large:
        out += [
            "",
            "The slope is the least-squares slope of each structure's cSE - none effect (points) on log10 of its "
            "mean reference volume (voxels): positive means cSE does relatively worse on smaller structures.",
        ]
    out += [
        *_per_structure_section(analysis),
        *_boundary_section(analysis),
        *_see_also(s.see_also),
        "",
        "## Provenance",
        "",
        *_provenance(rows),
        f"- {_count(len({r.run for r in rows}), 'run')}, {_count(len({r.subject for r in rows}), 'test subject')}, "
        f"{_count(len({r.structure for r in rows}), 'structure')}",
        "",
    ]
    return "\n".join(out)


FOREST_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue"}
FOREST_SAME_NETWORK = "same network (measures nothing)"


def forest_style(effect: Effect) -> tuple[str, str]:
    """(legend key, colour) of an effect in the forest plot. Two cells that trained the same network (a capacity match
    that widened nothing) get their own hollow grey mark: their zero-width interval is no evidence of equivalence."""
    if SAME_NETWORK in effect.note:
        return FOREST_SAME_NETWORK, "0.6"
    if effect.verdict in FOREST_COLOURS:
        return effect.verdict, FOREST_COLOURS[effect.verdict]
    return "inconclusive or too few runs", "0.3"


def write_forest_plot(
    analysis: StudyAnalysis, path: Path, *, task: str, dpi: int = 120
) -> tuple[Path | None, str | None]:
    """Effect vs none with its interval for every architecture x variant, then the other modules and the controls;
    the equivalence band shaded and the paper's +4-9 % band marked for the magnitude claim's architecture.

    Returns (path, None), or (None, why nothing was drawn): matplotlib missing, or no effect to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the optional report extra
        return None, "matplotlib is not installed (pip install -e .[report])"
    rows = list(analysis.vs_none) + list(analysis.others_vs_none) + [(a, e) for a, e, _ in analysis.controls]
    if not rows:
        return None, "no effect to plot yet (no cell has a paired `none`)"
    s = analysis.settings
    height = 0.42 * len(rows) + 1.9
    fig, ax = plt.subplots(figsize=(7.5, height))
    margin = 100 * s.equivalence_margin
    ax.axvspan(-margin, margin, color="0.88", label=f"equivalence band (+-{margin:g} point)")
    ax.axvline(0, color="0.4", lw=0.8)
    labels, shown = [], set()
    for i, (arch, effect) in enumerate(reversed(rows)):
        y = i
        key, colour = forest_style(effect)
        if math.isfinite(effect.ci_low):
            ax.plot([100 * effect.ci_low, 100 * effect.ci_high], [y, y], color=colour, lw=2)
        face = "white" if key == FOREST_SAME_NETWORK else colour
        ax.plot([100 * effect.estimate], [y], "o", color=colour, mfc=face, label=None if key in shown else key)
        shown.add(key)
        labels.append(f"{ARCH_NAMES.get(arch, arch)}: {variant_name(effect.a)} - {variant_name(effect.b)}")
        if arch == s.magnitude_arch and (effect.a, effect.b) == ("scse", "none") and math.isfinite(effect.relative):
            base = effect.estimate / effect.relative if effect.relative else math.nan
            if math.isfinite(base):
                low, high = (100 * base * b for b in s.magnitude_band)
                ax.plot([low, high], [y + 0.3, y + 0.3], color="tab:orange", lw=4, alpha=0.6)
                ax.text(high, y + 0.3, "  paper: +4-9 %", va="center", fontsize=7, color="tab:orange")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("effect on mean foreground Dice (points), Bonferroni-adjusted interval")
    ax.set_title("\n".join(textwrap.wrap(task, 90)), fontsize=9)  # a long title would run off the figure
    handles, names = ax.get_legend_handles_labels()  # below the axes: inside, it hid intervals and the paper band
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path, None


__all__: Sequence[str] = ["render", "variant_name", "write_forest_plot"]
