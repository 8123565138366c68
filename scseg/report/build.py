"""Write the whole comparison report of one experiment folder (Markdown, CSV and figures), or its results page.

These are the two functions the ``scseg-compare`` face calls; they glue the loading (``runs``), the numbers
(``tables``/``stats``, and ``claims`` for the results page) and the optional figures together and say what they
wrote and what they skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scseg.atomic import atomic_write_text
from scseg.report.claims import ALPHA, PAPER_ARCHS, ClaimsReport, evaluate_claims
from scseg.report.figures import write_figures, write_structure_figure
from scseg.report.results_page import claims_summary, main_table, render_results_page
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
FIGURE_SUFFIX = "_structures.png"  # the results page's PNG: <page stem>_structures.png next to the page


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


@dataclass
class ResultsPageResult:
    """The page and its figure (None: ``figure_note`` says why), and the text printed on the terminal."""

    markdown: Path
    figure: Path | None
    figure_note: str | None
    main_table: str
    claims_table: str
    claims: ClaimsReport
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
    atomic_write_text(md_path, render_markdown(tables, title, links, note, provenance(sweep), digits))
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


def default_task(sweep: Sweep) -> str:
    """The runs' experiment name(s) from summary.json, else the experiment folder's name."""
    names = sorted({str(r.summary["experiment"]) for r in sweep.runs if r.summary.get("experiment")})
    return ", ".join(names) if names else sweep.root.resolve().name


def build_results_page(
    experiment_dir: str | Path,
    page: str | Path,
    task: str | None = None,
    variant_order: Sequence[str] = DEFAULT_VARIANT_ORDER,
    arch_order: Sequence[str] = DEFAULT_ARCH_ORDER,
    default_aggregation: str = DEFAULT_AGGREGATION,
    ddof: int = 1,
    min_pairs: int = MIN_PAIRS,
    alpha: float = ALPHA,
    background_ids: Sequence[int] = (0,),
    digits: int = 3,
    figures: bool = True,
    dpi: int = 120,
    claim_archs: Sequence[str] = PAPER_ARCHS,
) -> ResultsPageResult:
    """Write the results page ``page`` (Markdown) and ``<page stem>_structures.png`` beside it.

    Only reads ``experiment_dir``. Every test is two-sided (the claims name their direction). Raises
    ``SweepError`` when the folder does not exist or holds no runs.
    """
    sweep = load_sweep(Path(experiment_dir), default_aggregation=default_aggregation)
    tables = build_tables(
        sweep,
        variant_order=variant_order,
        arch_order=arch_order,
        ddof=ddof,
        min_pairs=min_pairs,
        alternative="two-sided",
        background_ids=background_ids,
    )
    claims = evaluate_claims(sweep, tables, alpha=alpha, archs=claim_archs, background_ids=background_ids)
    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    figure_path = page.with_name(page.stem + FIGURE_SUFFIX)
    if figures:
        figure, note = write_structure_figure(tables, figure_path, dpi=dpi)
    else:
        figure, note = None, "disabled (--no-figures)"
    text = render_results_page(
        sweep, tables, claims, task or default_task(sweep), figure.name if figure else None, note, digits
    )
    atomic_write_text(page, text)
    messages = [f"Figure skipped: {note}"] if note else []
    if tables.problems:
        messages.append(f"{len(tables.problems)} run(s) not used or used with a caveat: see {page}")
    messages.extend(unlike_notes(tables))
    return ResultsPageResult(
        markdown=page,
        figure=figure,
        figure_note=note,
        main_table=main_table(tables, digits),
        claims_table=claims_summary(claims),
        claims=claims,
        messages=messages,
    )
