"""Read a sweep's run folders into records, and list every run that cannot be used and why.

The comparison report must never drop a run silently: a folder without ``summary.json``, a failed or
still-running run, a malformed file and an expected (architecture, variant, seed) cell that has no run at
all each become a :class:`Problem` that the report prints.  Identity (architecture, SE variant, seed) is
taken from ``summary.json``; for runs without one it is parsed from the run folder name
``<arch>-<se>[-<aggregation>]-seed<k>-<hash8>`` (:func:`scseg.run_identity.read_run_name`, the engine's own
pattern read leniently).

Extra swept dimensions (the cSE reduction and the SE positions, :data:`EXTRA_DIMENSIONS`) are read from
``summary.json`` when it has them, else from the run's ``.hydra/config.yaml``. Those that vary within a sweep split
an architecture into several table rows (:func:`row_key`), so runs that differ in them are never averaged together.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from scseg.run_identity import read_run_name
from scseg.se_options import SE_VARIANTS, module_label, positions_label, resolve_positions, run_name_option, se_settings

DEFAULT_AGGREGATION = "add"
SUMMARY_KEYS: tuple[str, ...] = ("arch", "se", "seed", "fg_dice_per_subject")
PER_CASE_COLUMNS: tuple[str, ...] = ("subject", "class_id", "class_name", "dice")
RUN_MARKERS: tuple[str, ...] = ("status.json", "summary.json", "per_case.csv", ".hydra")
# Settings a sweep may vary besides (arch, variant, seed); each that takes more than one value becomes a row part.
EXTRA_DIMENSIONS: tuple[str, ...] = ("se_reduction", "se_positions", "se_gate_scale")
NOT_APPLICABLE = "n/a"  # the variant has no such setting (no cSE: no reduction; none: no positions either)
UNKNOWN = "?"  # neither summary.json nor .hydra/config.yaml says
Extras = tuple[tuple[str, str], ...]  # ((dimension, value), ...) in EXTRA_DIMENSIONS order


class SweepError(ValueError):
    """The experiment folder does not exist or holds no run folders (the report cannot be written)."""


@dataclass(frozen=True, order=True)
class Variant:
    """One SE configuration: a column of the paper's table. ``aggregation`` is set only for scSE."""

    se: str
    aggregation: str | None = None

    @property
    def key(self) -> str:
        """Machine name used in the CSV and on the command line (``none``, ``scse-max``, ...)."""
        return self.se if self.aggregation is None else f"{self.se}-{self.aggregation}"

    def label(self, default_aggregation: str = DEFAULT_AGGREGATION) -> str:
        """Display name as in the paper; scSE with a non-default aggregation is named, e.g. ``scSE (max)``."""
        base = module_label(self.se)  # the registry's display name (scSE, CBAM, ...)
        if self.aggregation is None or self.aggregation == default_aggregation:
            return base
        return f"{base} ({self.aggregation})"


def make_variant(se: str, aggregation: str | None, default_aggregation: str = DEFAULT_AGGREGATION) -> Variant:
    """Normalise (se, aggregation): an aggregation only for a module whose run name carries it (the registry's
    ``run_name_option``: scSE), and such a module without one gets the default."""
    se = se.lower()
    if run_name_option(se) != "aggregation":
        return Variant(se, None)
    return Variant(se, (aggregation or default_aggregation).lower())


@dataclass(frozen=True)
class CaseDice:
    """One row of ``per_case.csv`` reduced to what the report needs (dice is NaN when undefined).

    ``n_ref`` (reference voxels) ranks structures by size for the results page; NaN when the file has no such column.
    """

    subject: str
    class_id: int
    class_name: str
    dice: float
    n_ref: float = math.nan
    hd95: float = math.nan  # mm; NaN where not computed (runs from before boundary metrics) or undefined
    nsd: float = math.nan


@dataclass
class Run:
    """A finished run whose summary could be read: one seed of one (architecture, variant) cell."""

    path: Path
    arch: str
    variant: Variant
    seed: int
    fg_dice_per_subject: dict[str, float]
    per_case: list[CaseDice] | None
    summary: dict
    extras: Extras = ()
    row: str = ""  # the table row (see row_key); set by load_sweep

    def __post_init__(self) -> None:
        self.row = self.row or self.arch


@dataclass(frozen=True)
class Problem:
    """A run that is not in the tables (or only partly), with what is known of its identity and why."""

    name: str
    reason: str
    arch: str | None = None
    variant: Variant | None = None
    seed: int | None = None
    state: str = "unknown"
    extras: Extras = ()
    row: str | None = None  # the table row (see row_key); set by load_sweep when the arch is known


@dataclass
class Sweep:
    """Everything read from one experiment folder."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    default_aggregation: str = DEFAULT_AGGREGATION

    extra_dimensions: tuple[str, ...] = ()  # the EXTRA_DIMENSIONS that vary here, i.e. are part of the row keys

    @property
    def archs(self) -> list[str]:
        return sorted({r.arch for r in self.runs} | {p.arch for p in self.problems if p.arch})

    @property
    def rows(self) -> list[str]:
        """Table row keys: the architectures, split by the extra dimensions that vary (see :func:`row_key`)."""
        return sorted({r.row for r in self.runs} | {p.row for p in self.problems if p.row})

    @property
    def variants(self) -> list[Variant]:
        found = {r.variant for r in self.runs} | {p.variant for p in self.problems if p.variant}
        return sorted(found)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs} | {p.seed for p in self.problems if p.seed is not None})


def parse_run_name(name: str, default_aggregation: str = DEFAULT_AGGREGATION) -> tuple[str, Variant, int] | None:
    """(arch, variant, seed) from a run folder name, or None when the name does not follow the contract."""
    parts = read_run_name(name)
    if parts is None:
        return None
    return parts["arch"], make_variant(parts["se"], parts["aggregation"], default_aggregation), parts["seed"]


def _read_config(path: Path) -> dict | None:
    """A run's resolved ``.hydra/config.yaml`` as a plain dict, or None when absent or unreadable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _extra_text(dimension: str, value: object, se: str | None) -> str:
    if se == "none" or (dimension == "se_reduction" and se == "sse"):
        return NOT_APPLICABLE
    if value is None:
        return UNKNOWN
    if dimension == "se_positions":
        try:
            return positions_label(resolve_positions(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
    if dimension == "se_gate_scale":
        try:
            return f"{float(value):g}"  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
    try:
        return str(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(value)


def read_extras(path: Path, summary: dict | None = None, se: str | None = None) -> Extras:
    """The run's :data:`EXTRA_DIMENSIONS` as display text: from ``summary`` when it has them, else from the run's
    ``.hydra/config.yaml`` (older runs: defaults for keys that did not exist yet), else ``?``; ``n/a`` where the
    variant ``se`` has no such setting."""
    values = {d: summary[d] for d in EXTRA_DIMENSIONS if summary is not None and summary.get(d) is not None}
    if len(values) < len(EXTRA_DIMENSIONS):
        config = _read_config(path / ".hydra" / "config.yaml")
        if config is not None:
            try:
                settings = se_settings(config)
            except (AttributeError, TypeError, ValueError):
                settings = {}
            for dimension in EXTRA_DIMENSIONS:
                values.setdefault(dimension, settings.get(dimension))
    return tuple((d, _extra_text(d, values.get(d), se)) for d in EXTRA_DIMENSIONS)


def varying_dimensions(all_extras: Iterable[Extras]) -> tuple[str, ...]:
    """The extra dimensions that take more than one value (``n/a`` does not count) across a sweep."""
    seen: dict[str, set[str]] = {d: set() for d in EXTRA_DIMENSIONS}
    for extras in all_extras:
        for dimension, value in extras:
            if value != NOT_APPLICABLE:
                seen.setdefault(dimension, set()).add(value)
    return tuple(d for d in EXTRA_DIMENSIONS if len(seen[d]) > 1)


def row_key(arch: str, extras: Extras, dimensions: Sequence[str]) -> str:
    """A table row: ``arch``, or ``arch|se_reduction=8|se_positions=encoder`` for the varying ``dimensions``."""
    values = dict(extras)
    return "|".join([arch, *(f"{d}={values.get(d, UNKNOWN)}" for d in dimensions)])


def split_row_key(key: str) -> tuple[str, dict[str, str]]:
    """Inverse of :func:`row_key`: (arch, {dimension: value})."""
    arch, *parts = key.split("|")
    return arch, dict(part.split("=", 1) for part in parts)


def baseline_row_key(key: str) -> str:
    """The row that holds the architecture's ``none`` runs (their reduction and positions do not apply)."""
    arch, extras = split_row_key(key)
    return row_key(arch, tuple((d, NOT_APPLICABLE) for d in extras), tuple(extras))


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and (
        read_run_name(path.name) is not None or any((path / marker).exists() for marker in RUN_MARKERS)
    )


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; ValueError naming the file otherwise."""
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def as_float(value: object) -> float:
    """A CSV or JSON value as a float, NaN where it is empty or missing."""
    if value is None or value == "":
        return math.nan
    return float(value)  # type: ignore[arg-type]


def _optional_float(value: object) -> float:
    """A column only the results page needs (n_ref): NaN when absent or unreadable, never a reason to drop the file."""
    try:
        return as_float(value)
    except (TypeError, ValueError):
        return math.nan


def read_per_case(path: Path) -> list[CaseDice]:
    """Rows of a run's ``per_case.csv``; raises ValueError naming the file when a column or value is bad."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PER_CASE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(PER_CASE_COLUMNS)}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    CaseDice(
                        str(row["subject"]),
                        int(row["class_id"]),
                        str(row["class_name"]),
                        as_float(row["dice"]),
                        _optional_float(row.get("n_ref")),
                        _optional_float(row.get("hd95")),
                        _optional_float(row.get("nsd")),
                    )
                )
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}, line {line}: expected integer class_id and numeric or empty dice ({err})"
                ) from err
    return rows


def _run_from_summary(path: Path, summary: dict, default_aggregation: str) -> Run:
    where = path / "summary.json"
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    se = str(summary["se"]).lower()
    if se not in SE_VARIANTS:
        raise ValueError(f"{where}: se is {summary['se']!r}; expected one of {', '.join(SE_VARIANTS)}")
    per_subject = summary["fg_dice_per_subject"]
    if not isinstance(per_subject, dict):
        raise ValueError(f"{where}: fg_dice_per_subject must map subject id -> Dice")
    try:
        dice = {str(k): as_float(v) for k, v in per_subject.items()}
        seed = int(summary["seed"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected an integer seed and numeric Dice values ({err})") from err
    aggregation = summary.get("aggregation")
    if run_name_option(se) == "aggregation" and not aggregation:
        # summaries rewritten by older versions of scseg-evaluate lost the aggregation; the folder name keeps it
        named = read_run_name(path.name)
        aggregation = named["aggregation"] if named is not None and named["se"] == se else None
    return Run(
        path=path,
        arch=str(summary["arch"]),
        variant=make_variant(se, aggregation, default_aggregation),
        seed=seed,
        fg_dice_per_subject=dice,
        per_case=None,
        summary=summary,
    )


def _load_one(path: Path, default_aggregation: str) -> tuple[Run | None, list[Problem]]:
    """Read one run folder: a usable Run (possibly with a problem note) or only the problem."""
    parsed = parse_run_name(path.name, default_aggregation)
    arch, variant, seed = parsed if parsed else (None, None, None)
    state = "unknown"
    status_path = path / "status.json"
    if status_path.is_file():
        try:
            state = str(read_json_object(status_path).get("state", "unknown"))
        except (OSError, ValueError) as err:
            return None, [Problem(path.name, f"unreadable {status_path}: {err}", arch, variant, seed)]

    extras = read_extras(path, None, variant.se if variant else None)

    def problem(reason: str) -> Problem:
        return Problem(path.name, reason, arch, variant, seed, state, extras)

    if state == "failed":
        return None, [problem(_failure_reason(status_path))]
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        why = "still running" if state == "running" else "no summary.json"
        return None, [problem(f"{why} (state: {state})")]
    try:
        run = _run_from_summary(path, read_json_object(summary_path), default_aggregation)
    except (OSError, ValueError) as err:
        return None, [problem(f"unusable summary.json: {err}")]
    matched = run.summary.get("capacity_match") if run.summary else None
    if matched:
        # a network without SE widened to an SE variant's parameters: a control beside the grid, not its `none`
        variant_name = matched.get("variant") if isinstance(matched, dict) else matched
        return None, [problem(f"capacity-matched control (none at {variant_name}'s parameter count): not a grid cell")]
    run.extras = read_extras(path, run.summary, run.variant.se)
    notes = []
    if state == "running":
        notes.append("status.json says running although summary.json exists; summary used")
    per_case_path = path / "per_case.csv"
    if not per_case_path.is_file():
        notes.append(f"no per_case.csv: left out of the per-structure tables ({per_case_path})")
    else:
        try:
            run.per_case = read_per_case(per_case_path)
        except (OSError, ValueError) as err:
            notes.append(f"unusable per_case.csv, left out of the per-structure tables: {err}")
    return run, [Problem(path.name, n, run.arch, run.variant, run.seed, state, run.extras) for n in notes]


def _failure_reason(status_path: Path) -> str:
    try:
        trace = str(read_json_object(status_path).get("traceback") or "").strip()
    except (OSError, ValueError):
        trace = ""
    last = trace.splitlines()[-1] if trace else "no traceback recorded"
    return f"failed: {last}"


def _dedupe(runs: Sequence[Run]) -> tuple[list[Run], list[Problem]]:
    """Keep the newest summary per (row, variant, seed); the others are listed, not averaged in."""
    groups: dict[tuple[str, Variant, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.row, run.variant, run.seed), []).append(run)
    kept, problems = [], []
    for group in groups.values():
        group.sort(key=lambda r: ((r.path / "summary.json").stat().st_mtime, r.path.name))
        kept.append(group[-1])
        for old in group[:-1]:
            problems.append(
                Problem(
                    old.path.name,
                    f"superseded: same arch/variant/seed as {group[-1].path.name} (newer summary.json), not used",
                    old.arch,
                    old.variant,
                    old.seed,
                    "done",
                    old.extras,
                    old.row,
                )
            )
    return kept, problems


def missing_cells(runs: Iterable[Run], problems: Iterable[Problem]) -> list[Problem]:
    """Expected grid (every row x variant seen anywhere x every seed seen anywhere) cells with no run folder."""
    runs, problems = list(runs), list(problems)
    present = {(r.row, r.variant, r.seed) for r in runs}
    present |= {(p.row or p.arch, p.variant, p.seed) for p in problems}
    cells = {(r.row, r.variant) for r in runs}
    cells |= {(p.row or p.arch, p.variant) for p in problems if p.arch and p.variant}
    seeds = {r.seed for r in runs} | {p.seed for p in problems if p.seed is not None}
    out = []
    for row, variant in sorted(cells):
        arch, extras = split_row_key(row)
        where = "".join(f" {d}={v}" for d, v in extras.items())
        for seed in sorted(seeds):
            if (row, variant, seed) not in present:
                out.append(
                    Problem(
                        f"{arch}-{variant.key}-seed{seed}" + (f" ({where.strip()})" if where else ""),
                        "missing: no run folder for this grid cell",
                        arch,
                        variant,
                        seed,
                        "missing",
                        tuple(extras.items()),
                        row,
                    )
                )
    return out


def load_sweep(root: str | Path, default_aggregation: str = DEFAULT_AGGREGATION) -> Sweep:
    """Read every run folder directly under ``root``; raises SweepError when there is nothing to report."""
    root = Path(root)
    if not root.is_dir():
        raise SweepError(f"experiment folder {root} does not exist (expected <runs root>/<experiment>)")
    folders = sorted(p for p in root.iterdir() if _is_run_folder(p))
    if not folders:
        nested = sorted(p.name for p in root.iterdir() if p.is_dir() and any(_is_run_folder(q) for q in p.iterdir()))
        hint = f"; did you mean one of its experiments: {', '.join(nested)}?" if nested else ""
        raise SweepError(
            f"{root} holds no run folders (expected <arch>-<se>[-<agg>]-seed<k>-<hash8>/ "
            f"with status.json or summary.json){hint}"
        )
    loaded, problems = [], []
    for folder in folders:
        run, notes = _load_one(folder, default_aggregation)
        if run is not None:
            loaded.append(run)
        problems.extend(notes)
    dimensions = varying_dimensions([r.extras for r in loaded] + [p.extras for p in problems])
    for run in loaded:
        run.row = row_key(run.arch, run.extras, dimensions)
    problems = [replace(p, row=row_key(p.arch, p.extras, dimensions)) if p.arch else p for p in problems]
    runs, superseded = _dedupe(loaded)
    problems.extend(superseded)
    problems.extend(missing_cells(runs, problems))
    return Sweep(
        root=root,
        runs=runs,
        problems=problems,
        default_aggregation=default_aggregation,
        extra_dimensions=dimensions,
    )
