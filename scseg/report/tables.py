"""Build the paper-style comparison tables from a loaded sweep, and write them as Markdown and CSV.

Three tables, all from the same seed-averaged per-subject values (see ``stats``): the main table
(architectures x SE variants, subject-level foreground Dice), each variant minus ``none`` with a paired
Wilcoxon p-value, and one per-structure table per architecture (from ``per_case.csv``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scseg.atomic import atomic_write_text
from scseg.report.likeness import CellCheck, check_sweep
from scseg.report.runs import (
    EXTRA_DIMENSIONS,
    NOT_APPLICABLE,
    UNKNOWN,
    Problem,
    Sweep,
    Variant,
    baseline_row_key,
    split_row_key,
)
from scseg.report.stats import MIN_PAIRS, PairedComparison, Summary, paired_comparison, seed_average, summarise
from scseg.se_options import SE_VARIANTS, run_name_option

DEFAULT_VARIANT_ORDER: tuple[str, ...] = SE_VARIANTS  # the paper's column order: none, cSE, sSE, scSE
DEFAULT_ARCH_ORDER: tuple[str, ...] = (
    "unet",
    "sdnet",
    "fcdensenet",
    "fcdensenet56",
    "fcdensenet67",
    "fcdensenet103",
    "quicknat",
)
ARCH_LABELS: dict[str, str] = {
    "unet": "U-Net",
    "sdnet": "SD-Net",
    "fcdensenet": "FC-DenseNet",
    "fcdensenet56": "FC-DenseNet56",
    "fcdensenet67": "FC-DenseNet67",
    "fcdensenet103": "FC-DenseNet103",
    "quicknat": "QuickNAT",
}
BASELINE = Variant("none", None)
CSV_COLUMNS: tuple[str, ...] = (
    "table",
    "arch",
    *EXTRA_DIMENSIONS,
    "variant",
    "variant_label",
    "structure",
    "class_id",
    "mean",
    "std",
    "n_subjects",
    "n_seeds",
    "diff_vs_none",
    "diff_std",
    "n_pairs",
    "p_value",
    "p_note",
    "n_params",
    "like_none",
)
UNLIKE_MARK = "†"  # a cell whose runs were not trained like their `none` baseline (see likeness)


@dataclass(frozen=True)
class Cell:
    """One table cell: summary over subjects of seed-averaged values, and how many seeds fed it."""

    summary: Summary
    n_seeds: int


@dataclass(frozen=True)
class Structure:
    class_id: int
    name: str


@dataclass
class ComparisonTables:
    """Everything the report shows, already computed; rendering only formats it.

    ``archs`` holds the table rows: architectures, or ``arch|dimension=value|..`` keys when a sweep varies an
    extra dimension such as the cSE reduction (``runs.row_key``; ``arch_label`` renders them).
    """

    archs: list[str]
    variants: list[Variant]
    overall: dict[tuple[str, Variant], Cell]
    diffs: dict[tuple[str, Variant], PairedComparison]
    structures: dict[str, list[Structure]]
    per_structure: dict[tuple[str, Variant, str], Cell]
    problems: list[Problem]
    default_aggregation: str = "add"
    ddof: int = 1
    min_pairs: int = MIN_PAIRS
    notes: list[str] = field(default_factory=list)
    # per main-table cell: the trainable parameters of its runs (None: not recorded), and the like-with-like check
    n_params: dict[tuple[str, Variant], list[int | None]] = field(default_factory=dict)
    likeness: dict[tuple[str, Variant], CellCheck] = field(default_factory=dict)
    # per main-table cell: each subject's fg Dice averaged over seeds (what every test pairs), and each seed's mean
    # over subjects in seed order (its spread says how much a rerun moves the cell)
    subject_means: dict[tuple[str, Variant], dict[str, float]] = field(default_factory=dict)
    seed_means: dict[tuple[str, Variant], list[float]] = field(default_factory=dict)
    # per main-table cell and boundary metric (hd95, nsd): the subject's mean over foreground structures, averaged
    # over seeds, summarised over subjects; only cells whose runs computed it
    boundary: dict[tuple[str, Variant, str], Cell] = field(default_factory=dict)

    def variant_label(self, variant: Variant) -> str:
        return variant.label(self.default_aggregation)

    def unlike(self, arch: str, variant: Variant) -> bool:
        """Whether the cell's runs differ from their ``none`` baseline in more than the SE settings and seed."""
        check = self.likeness.get((arch, variant))
        return check is not None and check.flagged


EXTRA_LABELS: dict[str, str] = {"se_reduction": "r={}", "se_positions": "SE at {}", "se_gate_scale": "gates x{}"}


def arch_label(arch: str) -> str:
    """Paper-style name of a table row: the architecture (unknown names as they are), then the extra swept
    settings of the row, e.g. ``U-Net (r=8, SE at encoder+decoder)``; settings that do not apply are left out."""
    name, extras = split_row_key(arch)
    parts = [EXTRA_LABELS.get(d, d + "={}").format(v) for d, v in extras.items() if v != NOT_APPLICABLE]
    base = ARCH_LABELS.get(name, name)
    return f"{base} ({', '.join(parts)})" if parts else base


def order_rows(found: Sequence[str], order: Sequence[str] = DEFAULT_ARCH_ORDER) -> list[str]:
    """Rows by architecture (as :func:`order_archs`), then by their extra settings: ``n/a`` (the ``none``
    baseline) first, numbers numerically, text alphabetically."""
    archs = order_archs(sorted({split_row_key(r)[0] for r in found}), order)

    def setting(value: str) -> tuple[int, float, str]:
        if value == NOT_APPLICABLE:
            return (0, 0.0, "")
        try:
            return (1, float(value), "")
        except ValueError:
            return (2, 0.0, value)

    def key(row: str) -> tuple:
        arch, extras = split_row_key(row)
        return (archs.index(arch), *(setting(v) for v in extras.values()))

    return sorted(found, key=key)


def parse_variant_order(text: str) -> list[str]:
    """Tokens of ``--variant-order``: se names, or ``scse-<aggregation>`` for one scSE aggregation."""
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"--variant-order is empty; expected e.g. {','.join(DEFAULT_VARIANT_ORDER)}")
    for token in tokens:
        se, _, aggregation = token.partition("-")
        if se not in SE_VARIANTS or (aggregation and run_name_option(se) != "aggregation"):
            raise ValueError(
                f"--variant-order: unknown variant {token!r}; expected one of "
                f"{', '.join(SE_VARIANTS)} or scse-<aggregation> (e.g. scse-max)"
            )
    return tokens


def order_variants(found: Sequence[Variant], order: Sequence[str], default_aggregation: str) -> list[Variant]:
    """Variants in the requested order; a plain ``scse`` token places the default aggregation first, then the
    others alphabetically; variants the order does not name follow at the end (never dropped)."""
    ranked: list[Variant] = []
    for token in order:
        se, _, aggregation = token.partition("-")
        matches = [v for v in found if v.se == se and (not aggregation or v.aggregation == aggregation)]
        matches.sort(key=lambda v: (v.aggregation != default_aggregation, v.aggregation or ""))
        ranked.extend(v for v in matches if v not in ranked)
    ranked.extend(v for v in sorted(found) if v not in ranked)
    return ranked


def order_archs(found: Sequence[str], order: Sequence[str] = DEFAULT_ARCH_ORDER) -> list[str]:
    """Architectures in ``order`` first, then any others alphabetically."""
    return [a for a in order if a in found] + sorted(a for a in found if a not in order)


def _structure_values(runs, background_ids: Sequence[int]) -> tuple[list[Structure], dict[str, list[dict]]]:
    """Structures seen in the runs' per_case rows, and per structure name the per-seed {subject: dice}."""
    structures: dict[int, str] = {}
    per_name: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        if run.per_case is None:
            continue
        this_run: dict[str, dict[str, float]] = {}
        for row in run.per_case:
            if row.class_id in background_ids:
                continue
            structures.setdefault(row.class_id, row.class_name)
            this_run.setdefault(row.class_name, {})[row.subject] = row.dice
        for name, values in this_run.items():
            per_name.setdefault(name, []).append(values)
    ordered = [Structure(cid, name) for cid, name in sorted(structures.items())]
    return ordered, per_name


BOUNDARY_METRICS: tuple[str, ...] = ("hd95", "nsd")


def _subject_metric(run, metric: str, background_ids: Sequence[int]) -> dict[str, float]:
    """``{subject: mean of metric over its foreground structures}`` where defined (empty for runs without it)."""
    values: dict[str, list[float]] = {}
    for row in run.per_case or ():
        value = getattr(row, metric)
        if row.class_id not in background_ids and not math.isnan(value):
            values.setdefault(row.subject, []).append(value)
    return {subject: sum(v) / len(v) for subject, v in values.items()}


def build_tables(
    sweep: Sweep,
    variant_order: Sequence[str] = DEFAULT_VARIANT_ORDER,
    arch_order: Sequence[str] = DEFAULT_ARCH_ORDER,
    ddof: int = 1,
    min_pairs: int = MIN_PAIRS,
    alternative: str = "two-sided",
    background_ids: Sequence[int] = (0,),
) -> ComparisonTables:
    """Compute every table of the report from a sweep (seed-average per subject first, then summarise)."""
    archs = order_rows(sweep.rows, arch_order)
    variants = order_variants(sweep.variants, variant_order, sweep.default_aggregation)
    overall: dict[tuple[str, Variant], Cell] = {}
    subject_means: dict[tuple[str, Variant], dict[str, float]] = {}
    structures: dict[str, list[Structure]] = {}
    per_structure: dict[tuple[str, Variant, str], Cell] = {}
    n_params: dict[tuple[str, Variant], list[int | None]] = {}
    seed_means: dict[tuple[str, Variant], list[float]] = {}
    boundary: dict[tuple[str, Variant, str], Cell] = {}
    for arch in archs:
        arch_structures: dict[int, Structure] = {}
        for variant in variants:
            runs = [r for r in sweep.runs if r.row == arch and r.variant == variant]
            if not runs:
                continue
            averaged = seed_average(r.fg_dice_per_subject for r in runs)
            subject_means[arch, variant] = averaged
            overall[arch, variant] = Cell(summarise(averaged.values(), ddof=ddof), len(runs))
            n_params[arch, variant] = [_n_params(r.summary) for r in sorted(runs, key=lambda r: r.seed)]
            seed_means[arch, variant] = [
                summarise(r.fg_dice_per_subject.values()).mean for r in sorted(runs, key=lambda r: r.seed)
            ]
            for metric in BOUNDARY_METRICS:
                measured = [_subject_metric(r, metric, background_ids) for r in runs]
                if measured and all(measured):
                    boundary[arch, variant, metric] = Cell(
                        summarise(seed_average(measured).values(), ddof=ddof), len(measured)
                    )
            found, per_name = _structure_values(runs, background_ids)
            for structure in found:
                arch_structures.setdefault(structure.class_id, structure)
                values = per_name.get(structure.name, [])
                per_structure[arch, variant, structure.name] = Cell(
                    summarise(seed_average(values).values(), ddof=ddof), len(values)
                )
        structures[arch] = [arch_structures[k] for k in sorted(arch_structures)]
    likeness = check_sweep(sweep, overall)
    diffs = {}
    for (arch, variant), values in subject_means.items():
        # a row without its own `none` (e.g. r=8) compares with the architecture's `none` row
        base = arch if (arch, BASELINE) in subject_means else baseline_row_key(arch)
        if variant != BASELINE and (base, BASELINE) in subject_means:
            diffs[arch, variant] = paired_comparison(
                values, subject_means[base, BASELINE], min_pairs=min_pairs, alternative=alternative, ddof=ddof
            )
    return ComparisonTables(
        archs=archs,
        variants=variants,
        overall=overall,
        diffs=diffs,
        structures=structures,
        per_structure=per_structure,
        problems=list(sweep.problems),
        default_aggregation=sweep.default_aggregation,
        ddof=ddof,
        min_pairs=min_pairs,
        notes=_constant_settings(sweep) + _unchecked_note(likeness),
        n_params=n_params,
        likeness=likeness,
        subject_means=subject_means,
        seed_means=seed_means,
        boundary=boundary,
    )


def _n_params(summary: dict) -> int | None:
    value = summary.get("n_params")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _unchecked_note(likeness: dict[tuple[str, Variant], CellCheck]) -> list[str]:
    pairs = sum(c.unchecked for c in likeness.values())
    if not pairs:
        return []
    return [
        f"like with like: {pairs} run pair(s) not checked (no comparison_hash in summary.json and no "
        ".hydra/config.yaml in the run folder)"
    ]


def _constant_settings(sweep: Sweep) -> list[str]:
    """The extra settings every run shares (they are not row parts, but a reader should know them)."""
    notes = []
    for dimension in EXTRA_DIMENSIONS:
        if dimension in sweep.extra_dimensions:
            continue
        values = sorted({dict(r.extras).get(dimension) for r in sweep.runs} - {None, NOT_APPLICABLE, UNKNOWN})
        if values:
            notes.append(f"{dimension}: {', '.join(values)} (every run it applies to)")
    return notes


# ----------------------------------------------------------------------------------------------- rendering


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _counts_note(cells: Sequence[Cell]) -> tuple[bool, str]:
    """Whether all cells share (seeds, subjects), and the sentence that states the counts."""
    pairs = {(c.n_seeds, c.summary.n) for c in cells}
    if len(pairs) == 1:
        seeds, subjects = pairs.pop()
        return True, f"{seeds} seed(s) per cell, {subjects} test subject(s) per cell."
    return False, "Seeds (s) and subjects (n) differ between cells; each cell states its own."


def _cell_text(cell: Cell | None, digits: int, show_counts: bool) -> str:
    if cell is None:
        return "—"
    text = f"{_fmt(cell.summary.mean, digits)} ± {_fmt(cell.summary.std, digits)}"
    return f"{text} (s={cell.n_seeds}, n={cell.summary.n})" if show_counts else text


BLIND_TO_TRAINING_VARIANCE = (
    "Blind to training variance: a seed whose network is a little better everywhere moves every subject alike and "
    "reads as significant, so these p-values overstate certainty. For verdicts with intervals over runs and "
    "subjects: `scseg-study` (docs/studies.md)."
)


def main_table_markdown(tables: ComparisonTables, digits: int = 3) -> str:
    """The paper's table: rows = architectures, columns = variants, mean ± std of subject-level fg Dice.

    A cell marked † was not trained like its ``none`` baseline (other settings than the SE variant, its
    aggregation, reduction and positions, and the seed); the lines under the table say what differs.
    """
    uniform, note = _counts_note(list(tables.overall.values()))
    header = ["Architecture"] + [tables.variant_label(v) for v in tables.variants]

    def text(arch: str, variant: Variant) -> str:
        cell = _cell_text(tables.overall.get((arch, variant)), digits, not uniform)
        return f"{cell} {UNLIKE_MARK}" if tables.unlike(arch, variant) else cell

    rows = [[arch_label(a)] + [text(a, v) for v in tables.variants] for a in tables.archs]
    footnotes = unlike_notes(tables)
    return f"{_md_table(header, rows)}\n\n{note}" + "".join(f"\n\n{line}" for line in footnotes)


def unlike_notes(tables: ComparisonTables) -> list[str]:
    """One line per † cell: which run differs from which ``none`` run, and in what."""
    lines = []
    for arch in tables.archs:
        for variant in tables.variants:
            check = tables.likeness.get((arch, variant))
            if check is None or not check.flagged:
                continue
            details = "; ".join(f"`{m.run}` vs `{m.baseline}`: {m.detail}" for m in check.mismatches)
            lines.append(
                f"{UNLIKE_MARK} {arch_label(arch)} / {tables.variant_label(variant)}: not like with like "
                f"(differs from `none` in more than the SE settings and seed): {details}"
            )
    return lines


def _params_text(counts: Sequence[int | None], baseline: Sequence[int | None] | None) -> str:
    known = sorted({c for c in counts if c is not None})
    if not known:
        return "?"
    text = f"{known[0]:,}" if len(known) == 1 else f"{known[0]:,}–{known[-1]:,}"
    if any(c is None for c in counts):  # a run of the cell did not record it (not: seeds that agree)
        text += " (some ?)"
    base = sorted({c for c in baseline or () if c is not None})
    if len(known) == 1 and len(base) == 1 and base[0] and known[0] != base[0]:
        text += f" ({(known[0] - base[0]) / base[0]:+.1%})"
    return text


def params_table_markdown(tables: ComparisonTables) -> str:
    """Trainable parameters of every main-table cell (from summary.json), with the change against ``none``."""
    header = ["Architecture"] + [tables.variant_label(v) for v in tables.variants]
    rows = []
    for arch in tables.archs:
        base_row = arch if (arch, BASELINE) in tables.n_params else baseline_row_key(arch)
        baseline = tables.n_params.get((base_row, BASELINE))
        cells = [
            _params_text(tables.n_params[arch, v], None if v == BASELINE else baseline)
            if (arch, v) in tables.n_params
            else "—"
            for v in tables.variants
        ]
        rows.append([arch_label(arch), *cells])
    return _md_table(header, rows)


def diff_table_markdown(tables: ComparisonTables, digits: int = 3) -> str:
    """Each variant minus ``none`` per architecture, with the paired Wilcoxon p-value (or why there is none)."""
    header = ["Architecture", "Variant", "Δ Dice vs none (mean ± std of paired diffs)", "pairs", "Wilcoxon p"]
    rows = []
    for arch in tables.archs:
        for variant in tables.variants:
            if variant == BASELINE or (arch, variant) not in tables.overall:
                continue
            diff = tables.diffs.get((arch, variant))
            if diff is None:
                rows.append([arch_label(arch), tables.variant_label(variant), "no `none` baseline", "0", "—"])
                continue
            p = f"{diff.p_value:.4g}" if diff.p_value is not None else diff.note
            rows.append(
                [
                    arch_label(arch),
                    tables.variant_label(variant),
                    f"{_fmt(diff.mean_diff, digits, True)} ± {_fmt(diff.std_diff, digits)}",
                    str(diff.n_pairs),
                    p,
                ]
            )
    return _md_table(header, rows) if rows else "No variant to compare with `none`."


def boundary_table_markdown(tables: ComparisonTables, digits: int = 2) -> str:
    """HD95 (mm) and NSD per main-table cell, or "" when no run computed them."""
    if not tables.boundary:
        return ""

    def text(arch: str, variant: Variant) -> str:
        parts = []
        for metric, unit in (("hd95", " mm"), ("nsd", "")):
            cell = tables.boundary.get((arch, variant, metric))
            if cell is not None:
                s = cell.summary
                parts.append(f"{metric.upper()} {_fmt(s.mean, digits)} ± {_fmt(s.std, digits)}{unit}")
        return "; ".join(parts) or "-"

    header = ["", *(tables.variant_label(v) for v in tables.variants)]
    rows = [[arch_label(a), *(text(a, v) for v in tables.variants)] for a in tables.archs]
    return _md_table(header, rows)


def structure_table_markdown(tables: ComparisonTables, arch: str, digits: int = 3) -> str:
    """Per-structure Dice for one architecture: rows = structures, columns = variants."""
    structures = tables.structures.get(arch, [])
    if not structures:
        return "No per_case.csv rows for this architecture."
    variants = [v for v in tables.variants if (arch, v) in tables.overall]
    cells = [
        tables.per_structure[arch, v, s.name]
        for v in variants
        for s in structures
        if (arch, v, s.name) in tables.per_structure
    ]
    uniform, note = _counts_note(cells)
    header = ["Structure"] + [tables.variant_label(v) for v in variants]
    rows = [
        [s.name] + [_cell_text(tables.per_structure.get((arch, v, s.name)), digits, not uniform) for v in variants]
        for s in structures
    ]
    return f"{_md_table(header, rows)}\n\n{note}"


def problems_markdown(problems: Sequence[Problem]) -> str:
    """Failed, running, unusable, superseded and missing runs: the report lists every one."""
    if not problems:
        return "None: every expected run finished and was used."
    header = ["Run", "Architecture", "Variant", "Seed", "State", "Reason"]
    rows = [
        [
            f"`{p.name}`",
            p.arch or "?",
            p.variant.key if p.variant else "?",
            "?" if p.seed is None else str(p.seed),
            p.state,
            p.reason.replace("|", "\\|").replace("\n", " "),
        ]
        for p in sorted(problems, key=lambda p: (p.state, p.name))
    ]
    return _md_table(header, rows)


def render_markdown(
    tables: ComparisonTables,
    title: str,
    figures: dict[str, str],
    figures_note: str | None,
    provenance: Sequence[str] = (),
    digits: int = 3,
) -> str:
    """The whole ``comparison.md``: tables, figure links (paths relative to the report) and problem runs."""
    parts = [
        f"# {title}",
        "",
        "Cells: mean ± std over test subjects of the subject-level foreground Dice; each subject's value is "
        f"first averaged over seeds (std ddof={tables.ddof}).",
        "",
        "## Main table",
        "",
        main_table_markdown(tables, digits),
        "",
        "## Parameters",
        "",
        "Trainable parameters per cell (summary.json's n_params; in brackets the change against `none`).",
        "",
        params_table_markdown(tables),
        "",
        "## Difference to `none` (paired per subject)",
        "",
        f"Wilcoxon signed-rank test on the seed-averaged per-subject values; fewer than {tables.min_pairs} "
        "pairs give no p-value. " + BLIND_TO_TRAINING_VARIANCE,
        "",
        diff_table_markdown(tables, digits),
        "",
    ]
    boundary = boundary_table_markdown(tables)
    if boundary:
        parts += [
            "## Boundary metrics",
            "",
            "HD95 (95th-percentile Hausdorff distance, mm, in each file's voxel spacing) and normalised surface Dice: "
            "each subject's mean over its foreground structures, averaged over seeds, then mean ± std over subjects "
            "(cells whose runs computed them; `scseg-evaluate RUN_DIR` adds them to older runs).",
            "",
            boundary,
            "",
        ]
    parts += [
        "## Per-structure Dice",
        "",
        "Per subject averaged over seeds, then mean ± std over subjects (NaN ignored).",
        "",
    ]
    for arch in tables.archs:
        parts += [f"### {arch_label(arch)}", "", structure_table_markdown(tables, arch, digits), ""]
        if arch in figures:
            parts += [f"![{arch_label(arch)} per-structure Dice]({figures[arch]})", ""]
    if figures_note:
        parts += [f"Figures skipped: {figures_note}", ""]
    n_problems = len(tables.problems)
    parts += [f"## Runs not used, or used with a caveat ({n_problems})", "", problems_markdown(tables.problems), ""]
    if provenance or tables.notes:
        parts += ["## Provenance", ""] + [f"- {line}" for line in [*provenance, *tables.notes]] + [""]
    return "\n".join(parts)


def _csv_float(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def _row_columns(row: str) -> dict[str, str]:
    """CSV columns of a table row: the architecture and the row's extra settings (empty when not a row part)."""
    arch, extras = split_row_key(row)
    return {"arch": arch, **{d: extras.get(d, "") for d in EXTRA_DIMENSIONS}}


def write_csv(tables: ComparisonTables, path: str | Path) -> None:
    """Long-format CSV: one row per main-table cell (``table=overall``, with the diff to none), per boundary metric
    cell (``table=hd95`` / ``nsd``, where computed) and per structure cell (``table=structure``)."""
    fh = io.StringIO(newline="")
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
    writer.writeheader()

    def cell_row(table: str, arch: str, variant: Variant, cell: Cell, structure: Structure | None = None) -> dict:
        """The columns every table's row shares: where it sits and the cell's summary."""
        return {
            "table": table,
            **_row_columns(arch),
            "variant": variant.key,
            "variant_label": tables.variant_label(variant),
            "structure": structure.name if structure else "",
            "class_id": structure.class_id if structure else "",
            "mean": _csv_float(cell.summary.mean),
            "std": _csv_float(cell.summary.std),
            "n_subjects": cell.summary.n,
            "n_seeds": cell.n_seeds,
        }

    for arch in tables.archs:
        for variant in tables.variants:
            cell = tables.overall.get((arch, variant))
            if cell is None:
                continue
            diff = tables.diffs.get((arch, variant))
            writer.writerow(
                {
                    **cell_row("overall", arch, variant, cell),
                    "diff_vs_none": _csv_float(diff.mean_diff) if diff else "",
                    "diff_std": _csv_float(diff.std_diff) if diff else "",
                    "n_pairs": diff.n_pairs if diff else "",
                    "p_value": _csv_float(diff.p_value) if diff else "",
                    "p_note": diff.note if diff else "",
                    "n_params": ";".join("" if c is None else str(c) for c in tables.n_params.get((arch, variant), [])),
                    "like_none": tables.likeness[arch, variant].verdict if (arch, variant) in tables.likeness else "",
                }
            )
        for metric in BOUNDARY_METRICS:
            for variant in tables.variants:
                cell = tables.boundary.get((arch, variant, metric))
                if cell is not None:
                    writer.writerow(cell_row(metric, arch, variant, cell))
        for structure in tables.structures.get(arch, []):
            for variant in tables.variants:
                cell = tables.per_structure.get((arch, variant, structure.name))
                if cell is not None:
                    writer.writerow(cell_row("structure", arch, variant, cell, structure))

    atomic_write_text(Path(path), fh.getvalue())
