"""Read a sweep's run folders into records, and list every run that cannot be used and why.

The comparison report must never drop a run silently: a folder without ``summary.json``, a failed or
still-running run, a malformed file and an expected (architecture, variant, seed) cell that has no run at
all each become a :class:`Problem` that the report prints.  Identity (architecture, SE variant, seed) is
taken from ``summary.json``; for runs without one it is parsed from the run folder name
``<arch>-<se>[-<aggregation>]-seed<k>-<hash8>``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SE_NAMES: tuple[str, ...] = ("none", "cse", "sse", "scse")
DEFAULT_AGGREGATION = "add"

RUN_NAME = re.compile(
    r"^(?P<arch>[A-Za-z0-9_.]+)-(?P<se>none|cse|sse|scse)(?:-(?P<aggregation>[A-Za-z0-9_.]+))?"
    r"-seed(?P<seed>\d+)-(?P<hash>[0-9A-Za-z]+)$"
)
SUMMARY_KEYS: tuple[str, ...] = ("arch", "se", "seed", "fg_dice_per_subject")
PER_CASE_COLUMNS: tuple[str, ...] = ("subject", "class_id", "class_name", "dice")
RUN_MARKERS: tuple[str, ...] = ("status.json", "summary.json", "per_case.csv", ".hydra")


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
        base = {"none": "none", "cse": "cSE", "sse": "sSE", "scse": "scSE"}.get(self.se, self.se)
        if self.aggregation is None or self.aggregation == default_aggregation:
            return base
        return f"{base} ({self.aggregation})"


def make_variant(se: str, aggregation: str | None, default_aggregation: str = DEFAULT_AGGREGATION) -> Variant:
    """Normalise (se, aggregation): aggregation only for scSE, and scSE without one gets the default."""
    se = se.lower()
    if se != "scse":
        return Variant(se, None)
    return Variant(se, (aggregation or default_aggregation).lower())


@dataclass(frozen=True)
class CaseDice:
    """One row of ``per_case.csv`` reduced to what the report needs (dice is NaN when undefined)."""

    subject: str
    class_id: int
    class_name: str
    dice: float


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


@dataclass(frozen=True)
class Problem:
    """A run that is not in the tables (or only partly), with what is known of its identity and why."""

    name: str
    reason: str
    arch: str | None = None
    variant: Variant | None = None
    seed: int | None = None
    state: str = "unknown"


@dataclass
class Sweep:
    """Everything read from one experiment folder."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    default_aggregation: str = DEFAULT_AGGREGATION

    @property
    def archs(self) -> list[str]:
        return sorted({r.arch for r in self.runs} | {p.arch for p in self.problems if p.arch})

    @property
    def variants(self) -> list[Variant]:
        found = {r.variant for r in self.runs} | {p.variant for p in self.problems if p.variant}
        return sorted(found)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs} | {p.seed for p in self.problems if p.seed is not None})


def parse_run_name(name: str, default_aggregation: str = DEFAULT_AGGREGATION) -> tuple[str, Variant, int] | None:
    """(arch, variant, seed) from a run folder name, or None when the name does not follow the contract."""
    match = RUN_NAME.match(name)
    if match is None:
        return None
    se = match["se"]
    aggregation = match["aggregation"]
    if aggregation is not None and se != "scse":
        return None
    return match["arch"], make_variant(se, aggregation, default_aggregation), int(match["seed"])


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and (
        RUN_NAME.match(path.name) is not None or any((path / marker).exists() for marker in RUN_MARKERS)
    )


def _read_json(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _as_float(value: object) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)  # type: ignore[arg-type]


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
                    CaseDice(str(row["subject"]), int(row["class_id"]), str(row["class_name"]), _as_float(row["dice"]))
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
    if se not in SE_NAMES:
        raise ValueError(f"{where}: se is {summary['se']!r}; expected one of {', '.join(SE_NAMES)}")
    per_subject = summary["fg_dice_per_subject"]
    if not isinstance(per_subject, dict):
        raise ValueError(f"{where}: fg_dice_per_subject must map subject id -> Dice")
    try:
        dice = {str(k): _as_float(v) for k, v in per_subject.items()}
        seed = int(summary["seed"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected an integer seed and numeric Dice values ({err})") from err
    return Run(
        path=path,
        arch=str(summary["arch"]),
        variant=make_variant(se, summary.get("aggregation"), default_aggregation),
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
            state = str(_read_json(status_path).get("state", "unknown"))
        except (OSError, ValueError) as err:
            return None, [Problem(path.name, f"unreadable {status_path}: {err}", arch, variant, seed)]

    def problem(reason: str) -> Problem:
        return Problem(path.name, reason, arch, variant, seed, state)

    if state == "failed":
        return None, [problem(_failure_reason(status_path))]
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        why = "still running" if state == "running" else "no summary.json"
        return None, [problem(f"{why} (state: {state})")]
    try:
        run = _run_from_summary(path, _read_json(summary_path), default_aggregation)
    except (OSError, ValueError) as err:
        return None, [problem(f"unusable summary.json: {err}")]
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
    return run, [Problem(path.name, n, run.arch, run.variant, run.seed, state) for n in notes]


def _failure_reason(status_path: Path) -> str:
    try:
        trace = str(_read_json(status_path).get("traceback") or "").strip()
    except (OSError, ValueError):
        trace = ""
    last = trace.splitlines()[-1] if trace else "no traceback recorded"
    return f"failed: {last}"


def _dedupe(runs: Sequence[Run]) -> tuple[list[Run], list[Problem]]:
    """Keep the newest summary per (arch, variant, seed); the others are listed, not averaged in."""
    groups: dict[tuple[str, Variant, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.arch, run.variant, run.seed), []).append(run)
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
                )
            )
    return kept, problems


def missing_cells(runs: Iterable[Run], problems: Iterable[Problem]) -> list[Problem]:
    """Expected grid (every arch x variant seen anywhere x every seed seen anywhere) cells with no run folder."""
    runs, problems = list(runs), list(problems)
    present = {(r.arch, r.variant, r.seed) for r in runs}
    present |= {(p.arch, p.variant, p.seed) for p in problems}
    cells = {(r.arch, r.variant) for r in runs} | {(p.arch, p.variant) for p in problems if p.arch and p.variant}
    seeds = {r.seed for r in runs} | {p.seed for p in problems if p.seed is not None}
    out = []
    for arch, variant in sorted(cells):
        for seed in sorted(seeds):
            if (arch, variant, seed) not in present:
                out.append(
                    Problem(
                        f"{arch}-{variant.key}-seed{seed}",
                        "missing: no run folder for this grid cell",
                        arch,
                        variant,
                        seed,
                        "missing",
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
    runs, superseded = _dedupe(loaded)
    problems.extend(superseded)
    problems.extend(missing_cells(runs, problems))
    return Sweep(root=root, runs=runs, problems=problems, default_aggregation=default_aggregation)
