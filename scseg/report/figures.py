"""Per-structure bar charts like the paper's Fig. 2: one group per structure, one bar per SE variant.

matplotlib is an optional extra (``pip install -e .[report]``) and is imported only here, lazily.  The
object-oriented API with the Agg canvas is used, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

from scseg.atomic import atomic_write
from scseg.report.tables import ComparisonTables, arch_label

FIGURE_STEM = "comparison_{arch}.png"


def _load_matplotlib():
    """The Figure class and the Agg canvas, or ImportError when matplotlib is not installed."""
    # Imported here on purpose: matplotlib is the optional `report` extra; without it the figures are skipped.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _draw_structure_bars(ax, tables: ComparisonTables, arch: str, bar_group_width: float = 0.8) -> None:
    """One architecture's grouped bars (error bars: std over subjects) on the axes ``ax``."""
    structures = tables.structures.get(arch, [])
    variants = [v for v in tables.variants if (arch, v) in tables.overall]
    width = bar_group_width / max(len(variants), 1)
    for i, variant in enumerate(variants):
        means, stds = [], []
        for structure in structures:
            cell = tables.per_structure.get((arch, variant, structure.name))
            mean = cell.summary.mean if cell else math.nan
            std = cell.summary.std if cell else math.nan
            means.append(0.0 if math.isnan(mean) else mean)
            stds.append(0.0 if math.isnan(std) else std)
        xs = [k + (i - (len(variants) - 1) / 2) * width for k in range(len(structures))]
        ax.bar(xs, means, width=width, yerr=stds, capsize=2, label=tables.variant_label(variant))
    ax.set_xticks(range(len(structures)))
    ax.set_xticklabels([s.name for s in structures], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Dice")
    ax.set_ylim(0.0, 1.15)  # headroom for the legend above the bars
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_title(f"{arch_label(arch)}: per-structure Dice (mean ± std over subjects)")
    ax.legend(fontsize=8, ncol=max(1, len(variants)), loc="upper center")


def plot_structure_bars(
    tables: ComparisonTables,
    arch: str,
    path: str | Path,
    dpi: int = 120,
    bar_group_width: float = 0.8,
    inch_per_structure: float = 0.6,
    height_in: float = 4.5,
) -> Path:
    """Write one architecture's per-structure Dice bar chart (error bars: std over subjects) to ``path``."""
    return plot_structure_panels(tables, [arch], path, dpi, bar_group_width, inch_per_structure, height_in)


def plot_structure_panels(
    tables: ComparisonTables,
    archs: Sequence[str],
    path: str | Path,
    dpi: int = 120,
    bar_group_width: float = 0.8,
    inch_per_structure: float = 0.6,
    height_in: float = 4.5,
) -> Path:
    """Write one figure with a per-structure bar panel per architecture, stacked (the results page's one PNG)."""
    figure_cls, canvas_cls = _load_matplotlib()
    n_structures = max((len(tables.structures.get(a, [])) for a in archs), default=0)
    fig = figure_cls(figsize=(max(6.0, inch_per_structure * n_structures + 2.0), height_in * max(len(archs), 1)))
    canvas_cls(fig)
    for k, arch in enumerate(archs):
        _draw_structure_bars(fig.add_subplot(max(len(archs), 1), 1, k + 1), tables, arch, bar_group_width)
    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def write_figures(
    tables: ComparisonTables, out_dir: str | Path, archs: Sequence[str] | None = None, dpi: int = 120
) -> tuple[dict[str, Path], str | None]:
    """One PNG per architecture with per-structure rows; returns ({arch: path}, reason figures were skipped)."""
    try:
        _load_matplotlib()
    except ImportError:
        return {}, "matplotlib not installed (pip install -e .[report])"
    out_dir = Path(out_dir)
    written = {}
    for arch in archs if archs is not None else tables.archs:
        if tables.structures.get(arch):
            stem = FIGURE_STEM.format(arch=re.sub(r"[^A-Za-z0-9_.-]+", "_", arch))  # row keys hold | = +
            written[arch] = plot_structure_bars(tables, arch, out_dir / stem, dpi=dpi)
    skipped = [a for a in (archs if archs is not None else tables.archs) if a not in written]
    note = f"no per-structure rows for {', '.join(skipped)}" if skipped else None
    return written, note


def write_structure_figure(
    tables: ComparisonTables, path: str | Path, archs: Sequence[str] | None = None, dpi: int = 120
) -> tuple[Path | None, str | None]:
    """The one-PNG form (a panel per architecture with per-structure rows); returns (path, why it was not drawn)."""
    try:
        _load_matplotlib()
    except ImportError:
        return None, "matplotlib not installed (pip install -e .[report])"
    drawn = [a for a in (archs if archs is not None else tables.archs) if tables.structures.get(a)]
    if not drawn:
        return None, "no per-structure rows (per_case.csv) in any run"
    return plot_structure_panels(tables, drawn, path, dpi=dpi), None
