"""Like with like: does every run of a table cell differ from its architecture's ``none`` run only in what an SE
comparison may vary (the SE variant, aggregation, reduction, positions, and the seed)?

A cell trained with another learning rate, width or loss than its ``none`` baseline measures that difference
too, so the report marks it. Two runs are compared by the ``comparison_hash`` training stores in
``summary.json`` (:func:`scseg.run_identity.comparison_hash`) when both have one; otherwise by their resolved
``.hydra/config.yaml`` reduced to :func:`scseg.run_identity.comparable_settings`, which also names the keys
that differ. Runs with neither are counted as not checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scseg.report.runs import Run, Sweep, Variant, baseline_row_key
from scseg.run_identity import comparable_settings

BASELINE = Variant("none", None)
MAX_LISTED_KEYS = 6


@dataclass(frozen=True)
class Mismatch:
    """One run of a cell that was not trained like the ``none`` run it is compared with."""

    run: str
    baseline: str
    detail: str


@dataclass
class CellCheck:
    """The like-with-like verdict of one cell: its mismatches and how many run pairs could not be checked."""

    mismatches: list[Mismatch] = field(default_factory=list)
    unchecked: int = 0

    @property
    def flagged(self) -> bool:
        return bool(self.mismatches)

    @property
    def verdict(self) -> str:
        """``no`` (differs), ``yes`` (every pair checked and alike) or ``unknown`` (some pair unchecked)."""
        if self.mismatches:
            return "no"
        return "unknown" if self.unchecked else "yes"


def _read_settings(path: Path) -> dict[str, Any] | None:
    """The comparable settings of a run's ``.hydra/config.yaml``, or None when it has none (or it is unreadable)."""
    config_path = path / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    return comparable_settings(config)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``key: a vs b; ...`` for the keys whose values differ (a missing key reads ``(absent)``)."""
    missing = "(absent)"
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]
    parts = [f"{k}: {_short(a.get(k, missing))} vs {_short(b.get(k, missing))}" for k in keys[:MAX_LISTED_KEYS]]
    if len(keys) > MAX_LISTED_KEYS:
        parts.append(f"and {len(keys) - MAX_LISTED_KEYS} more")
    return "; ".join(parts)


class _Checker:
    """Pairwise run comparison with the ``.hydra`` settings read once per run."""

    def __init__(self) -> None:
        self._settings: dict[Path, dict[str, Any] | None] = {}

    def settings(self, run: Run) -> dict[str, Any] | None:
        if run.path not in self._settings:
            self._settings[run.path] = _read_settings(run.path)
        return self._settings[run.path]

    def compare(self, run: Run, baseline: Run) -> tuple[bool | None, str]:
        """(alike, what differs): alike is None when the pair cannot be checked."""
        ha, hb = _hash(run), _hash(baseline)
        if ha and hb and ha == hb:
            return True, ""
        sa, sb = self.settings(run), self.settings(baseline)
        if ha and hb:  # the hashes differ; equal resolved configs mean only interpolation text did
            if sa is not None and sb is not None:
                return (True, "") if sa == sb else (False, settings_diff(sa, sb))
            return False, f"comparison hash {ha[:8]} vs {hb[:8]} (no .hydra/config.yaml to name the keys)"
        if sa is None or sb is None:
            return None, ""
        return (True, "") if sa == sb else (False, settings_diff(sa, sb))


def _hash(run: Run) -> str | None:
    value = run.summary.get("comparison_hash")
    return value if isinstance(value, str) and value else None


def check_cell(runs: Sequence[Run], baselines: Sequence[Run], checker: _Checker | None = None) -> CellCheck:
    """Compare every run of a cell with every ``none`` run of its architecture (the ``none`` cell: with its
    first seed's run)."""
    checker = checker or _Checker()
    result = CellCheck()
    baselines = sorted(baselines, key=lambda r: (r.seed, r.path.name))
    for run in sorted(runs, key=lambda r: (r.seed, r.path.name)):
        for baseline in baselines:
            if baseline.path == run.path:
                continue
            alike, detail = checker.compare(run, baseline)
            if alike is None:
                result.unchecked += 1
            elif not alike:
                result.mismatches.append(Mismatch(run.path.name, baseline.path.name, detail))
                break  # one baseline named per run is enough to act on
    return result


def check_sweep(sweep: Sweep, cells: Iterable[tuple[str, Variant]]) -> dict[tuple[str, Variant], CellCheck]:
    """The verdict of every (row, variant) cell; a row without its own ``none`` uses its architecture's."""
    checker = _Checker()
    by_cell: dict[tuple[str, Variant], list[Run]] = {}
    for run in sweep.runs:
        by_cell.setdefault((run.row, run.variant), []).append(run)
    out = {}
    for row, variant in cells:
        runs = by_cell.get((row, variant), [])
        base_row = row if (row, BASELINE) in by_cell else baseline_row_key(row)
        baselines = by_cell.get((base_row, BASELINE), [])
        if variant == BASELINE:
            baselines = sorted(runs, key=lambda r: (r.seed, r.path.name))[:1]
        out[row, variant] = check_cell(runs, baselines, checker)
    return out


__all__ = ["CellCheck", "Mismatch", "check_cell", "check_sweep", "settings_diff"]
