"""Build the paper-style comparison tables from a loaded sweep, and write them as Markdown and CSV.

Three tables, all from the same seed-averaged per-subject values (see ``stats``): the main table
(architectures x SE variants, subject-level foreground Dice), each variant minus ``none`` with a paired
Wilcoxon p-value, and one per-structure table per architecture (from ``per_case.csv``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scseg.report.runs import SE_NAMES, Problem, Sweep, Variant
from scseg.report.stats import MIN_PAIRS, PairedComparison, Summary, paired_comparison, seed_average, summarise

DEFAULT_VARIANT_ORDER: tuple[str, ...] = ("none", "cse", "sse", "scse")
DEFAULT_ARCH_ORDER: tuple[str, ...] = ("unet", "sdnet", "fcdensenet", "fcdensenet56", "fcdensenet67", "fcdensenet103")
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
)


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
    """Everything the report shows, already computed; rendering only formats it."""

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

    def variant_label(self, variant: Variant) -> str:
        return variant.label(self.default_aggregation)


def arch_label(arch: str) -> str:
    """Paper-style architecture name (unknown names are shown as they are)."""
    return ARCH_LABELS.get(arch, arch)


def parse_variant_order(text: str) -> list[str]:
    """Tokens of ``--variant-order``: se names, or ``scse-<aggregation>`` for one scSE aggregation."""
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"--variant-order is empty; expected e.g. {','.join(DEFAULT_VARIANT_ORDER)}")
    for token in tokens:
        se, _, aggregation = token.partition("-")
        if se not in SE_NAMES or (aggregation and se != "scse"):
            raise ValueError(
                f"--variant-order: unknown variant {token!r}; expected one of "
                f"{', '.join(SE_NAMES)} or scse-<aggregation> (e.g. scse-max)"
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
    archs = order_archs(sweep.archs, arch_order)
    variants = order_variants(sweep.variants, variant_order, sweep.default_aggregation)
    overall: dict[tuple[str, Variant], Cell] = {}
    subject_means: dict[tuple[str, Variant], dict[str, float]] = {}
    structures: dict[str, list[Structure]] = {}
    per_structure: dict[tuple[str, Variant, str], Cell] = {}
    for arch in archs:
        arch_structures: dict[int, Structure] = {}
        for variant in variants:
            runs = [r for r in sweep.runs if r.arch == arch and r.variant == variant]
            if not runs:
                continue
            averaged = seed_average(r.fg_dice_per_subject for r in runs)
            subject_means[arch, variant] = averaged
            overall[arch, variant] = Cell(summarise(averaged.values(), ddof=ddof), len(runs))
            found, per_name = _structure_values(runs, background_ids)
            for structure in found:
                arch_structures.setdefault(structure.class_id, structure)
                values = per_name.get(structure.name, [])
                per_structure[arch, variant, structure.name] = Cell(
                    summarise(seed_average(values).values(), ddof=ddof), len(values)
                )
        structures[arch] = [arch_structures[k] for k in sorted(arch_structures)]
    diffs = {}
    for (arch, variant), values in subject_means.items():
        if variant != BASELINE and (arch, BASELINE) in subject_means:
            diffs[arch, variant] = paired_comparison(
                values, subject_means[arch, BASELINE], min_pairs=min_pairs, alternative=alternative, ddof=ddof
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
    )


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


def main_table_markdown(tables: ComparisonTables, digits: int = 3) -> str:
    """The paper's table: rows = architectures, columns = variants, mean ± std of subject-level fg Dice."""
    uniform, note = _counts_note(list(tables.overall.values()))
    header = ["Architecture"] + [tables.variant_label(v) for v in tables.variants]
    rows = [
        [arch_label(a)] + [_cell_text(tables.overall.get((a, v)), digits, not uniform) for v in tables.variants]
        for a in tables.archs
    ]
    return f"{_md_table(header, rows)}\n\n{note}"


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
        "## Difference to `none` (paired per subject)",
        "",
        f"Wilcoxon signed-rank test on the seed-averaged per-subject values; fewer than {tables.min_pairs} "
        "pairs give no p-value.",
        "",
        diff_table_markdown(tables, digits),
        "",
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


def write_csv(tables: ComparisonTables, path: str | Path) -> None:
    """Long-format CSV: one row per main-table cell (``table=overall``, with the diff to none) and per
    structure cell (``table=structure``)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for arch in tables.archs:
            for variant in tables.variants:
                cell = tables.overall.get((arch, variant))
                if cell is None:
                    continue
                diff = tables.diffs.get((arch, variant))
                writer.writerow(
                    {
                        "table": "overall",
                        "arch": arch,
                        "variant": variant.key,
                        "variant_label": tables.variant_label(variant),
                        "structure": "",
                        "class_id": "",
                        "mean": _csv_float(cell.summary.mean),
                        "std": _csv_float(cell.summary.std),
                        "n_subjects": cell.summary.n,
                        "n_seeds": cell.n_seeds,
                        "diff_vs_none": _csv_float(diff.mean_diff) if diff else "",
                        "diff_std": _csv_float(diff.std_diff) if diff else "",
                        "n_pairs": diff.n_pairs if diff else "",
                        "p_value": _csv_float(diff.p_value) if diff else "",
                        "p_note": diff.note if diff else "",
                    }
                )
            for structure in tables.structures.get(arch, []):
                for variant in tables.variants:
                    cell = tables.per_structure.get((arch, variant, structure.name))
                    if cell is None:
                        continue
                    writer.writerow(
                        {
                            "table": "structure",
                            "arch": arch,
                            "variant": variant.key,
                            "variant_label": tables.variant_label(variant),
                            "structure": structure.name,
                            "class_id": structure.class_id,
                            "mean": _csv_float(cell.summary.mean),
                            "std": _csv_float(cell.summary.std),
                            "n_subjects": cell.summary.n,
                            "n_seeds": cell.n_seeds,
                        }
                    )
