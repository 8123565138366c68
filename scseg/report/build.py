"""Write the whole comparison report of one experiment folder: Markdown, CSV and figures.

This is the one function the ``scseg-compare`` face calls; it glues the loading (``runs``), the numbers
(``tables``/``stats``) and the optional figures together and says what it wrote and what it skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scseg.report.figures import write_figures
from scseg.report.runs import DEFAULT_AGGREGATION, Sweep, load_sweep
from scseg.report.stats import MIN_PAIRS
from scseg.report.tables import (
    DEFAULT_ARCH_ORDER,
    DEFAULT_VARIANT_ORDER,
    ComparisonTables,
    build_tables,
    main_table_markdown,
    render_markdown,
    unlike_notes,
    write_csv,
)

PROVENANCE_KEYS: tuple[str, ...] = ("split", "scseg_version", "git_commit", "torch_version", "device")


@dataclass
class ReportResult:
    """What was written, the main table as text for the terminal, and why figures were skipped (if so)."""

    markdown: Path
    csv: Path
    figures: dict[str, Path]
    figures_note: str | None
    main_table: str
    tables: ComparisonTables
    messages: list[str] = field(default_factory=list)


def provenance(sweep: Sweep, keys: Sequence[str] = PROVENANCE_KEYS) -> list[str]:
    """One line per metadata key: the distinct values across the used runs (mixed commits are worth seeing)."""
    lines = []
    for key in keys:
        values = sorted({str(r.summary.get(key)) for r in sweep.runs if r.summary.get(key) is not None})
        if values:
            lines.append(f"{key}: {', '.join(values)}" + (" (MIXED)" if len(values) > 1 else ""))
    return lines


def build_report(
    experiment_dir: str | Path,
    out_dir: str | Path | None = None,
    variant_order: Sequence[str] = DEFAULT_VARIANT_ORDER,
    arch_order: Sequence[str] = DEFAULT_ARCH_ORDER,
    default_aggregation: str = DEFAULT_AGGREGATION,
    ddof: int = 1,
    min_pairs: int = MIN_PAIRS,
    alternative: str = "two-sided",
    background_ids: Sequence[int] = (0,),
    digits: int = 3,
    figures: bool = True,
    dpi: int = 120,
) -> ReportResult:
    """Read ``experiment_dir`` and write comparison.md, comparison.csv and PNGs into ``out_dir`` (default: it).

    Raises ``SweepError`` when the folder does not exist or holds no runs.
    """
    experiment_dir = Path(experiment_dir)
    sweep = load_sweep(experiment_dir, default_aggregation=default_aggregation)
    tables = build_tables(
        sweep,
        variant_order=variant_order,
        arch_order=arch_order,
        ddof=ddof,
        min_pairs=min_pairs,
        alternative=alternative,
        background_ids=background_ids,
    )
    out = Path(out_dir) if out_dir is not None else experiment_dir
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        written, note = write_figures(tables, out, dpi=dpi)
    else:
        written, note = {}, "disabled (--no-figures)"
    md_path, csv_path = out / "comparison.md", out / "comparison.csv"
    links = {arch: _relative(path, out) for arch, path in written.items()}
    title = f"SE comparison: {experiment_dir.resolve().name}"
    md_path.write_text(render_markdown(tables, title, links, note, provenance(sweep), digits), encoding="utf-8")
    write_csv(tables, csv_path)
    messages = [f"Figures skipped: {note}"] if note else []
    if tables.problems:
        messages.append(f"{len(tables.problems)} run(s) not used or used with a caveat: see {md_path}")
    messages.extend(unlike_notes(tables))  # cells that do not compare like with like, and why
    return ReportResult(
        markdown=md_path,
        csv=csv_path,
        figures=written,
        figures_note=note,
        main_table=main_table_markdown(tables, digits),
        tables=tables,
        messages=messages,
    )


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
