"""Every effect of a study analysis as one machine-readable CSV (``scseg-study page --effects-csv``).

Why: a page is for reading; a researcher citing an interval, drawing their own figure or pooling tasks wants the
numbers themselves, with the same identity the page gives them (table, architecture, comparison, structure) and
nothing rounded for display. Dice effects are in Dice fractions (0.01 = one point), HD95 in mm (as none - variant:
positive is a smaller distance), NSD in fractions; standard deviations of the variance components in the same unit.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from scseg.atomic import atomic_write_text
from scseg.report.effects import Effect
from scseg.report.study import StudyAnalysis

COLUMNS: tuple[str, ...] = (
    "table",
    "arch",
    "a",
    "b",
    "structure",
    "metric",
    "unit",
    "estimate",
    "relative",
    "ci_low",
    "ci_high",
    "level",
    "se",
    "n_runs",
    "n_subjects",
    "sd_run",
    "sd_subject",
    "sd_residual",
    "mde",
    "runs_to_decide",
    "verdict",
    "controls",
)

UNITS = {"dice": "dice", "hd95": "mm", "nsd": "fraction"}


def _rows(analysis: StudyAnalysis) -> Iterator[tuple[str, str, Effect, str, str, str]]:
    """(table, arch, effect, structure, metric, what it controls) for every effect, in the page's order."""
    for arch, effect in analysis.vs_none:
        yield "vs_none", arch, effect, "", "dice", ""
    for arch, effect in analysis.others_vs_none:
        yield "others_vs_none", arch, effect, "", "dice", ""
    for family, effects in analysis.families:
        for arch, effect in effects:
            yield family.key, arch, effect, "", "dice", ""
    for arch, effect in analysis.between:
        yield "variant_vs_variant", arch, effect, "", "dice", ""
    for arch, effect, why in analysis.controls:
        yield "controls", arch, effect, "", "dice", why
    for arch, effect in analysis.small_vs_large:
        yield "small_vs_large", arch, effect, "", "dice", ""
    for arch, structure, effect in analysis.per_structure:
        yield "per_structure", arch, effect, structure, "dice", ""
    for metric, arch, effect in analysis.boundary:
        yield f"boundary_{metric}", arch, effect, "", metric, ""


def _num(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _sd(variance: float) -> float:
    return math.sqrt(variance) if math.isfinite(variance) and variance >= 0 else math.nan


def _decide(effect: Effect) -> str:
    """Runs to decide as the page gives it: a number, ">100" past the projection's reach, empty when decided or
    unknown (one run: no spread between runs to project with)."""
    if effect.verdict not in ("inconclusive", "too few runs") or effect.n_runs < 2:
        return ""
    return str(effect.runs_to_decide) if effect.runs_to_decide else ">100"


def effects_csv_text(analysis: StudyAnalysis) -> str:
    """The CSV text: a header of :data:`COLUMNS`, then one row per effect (same analysis, same bytes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for table, arch, e, structure, metric, why in _rows(analysis):
        c = e.components
        values: Sequence[object] = (
            table,
            arch,
            e.a,
            e.b,
            structure,
            metric,
            UNITS[metric],
            _num(e.estimate),
            _num(e.relative),
            _num(e.ci_low),
            _num(e.ci_high),
            _num(e.level),
            _num(e.se),
            _num(e.n_runs),
            _num(e.n_subjects),
            _num(_sd(c.run)),
            _num(_sd(c.subject)),
            _num(_sd(c.residual)),
            _num(e.mde),
            _decide(e),
            e.verdict,
            why,
        )
        writer.writerow(values)
    return buffer.getvalue()


def write_effects_csv(analysis: StudyAnalysis, path: Path) -> Path:
    """Write :func:`effects_csv_text` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, effects_csv_text(analysis))


__all__ = ["COLUMNS", "effects_csv_text", "write_effects_csv"]
