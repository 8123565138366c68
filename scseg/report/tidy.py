"""A study's per-case data as one tidy CSV: a row per run x test subject x structure.

Why: run folders live on the machine that trained them; once it is gone no page can be regenerated or re-analysed.
The tidy CSV is what gets committed beside a results page (Dice values are derived numbers; images and labels never
are), and the page's analysis (:mod:`scseg.report.study`) reads nothing else. ``scseg-compare RUNS --tidy-csv CSV``
writes it from finished run folders; ``scseg-compare --from-csv CSV --results-page PAGE`` analyses it.

Each row carries the run's identity (architecture, variant label, SE settings, precision, seed, fold, parameter count,
comparison hash, commit, the best validation Dice of training) and the subject's structure with its reference
volume in voxels, its Dice (empty when undefined: absent in reference and prediction), HD95 in mm and normalised
surface Dice (empty where the run was evaluated without boundary metrics).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scseg.atomic import atomic_write, atomic_write_text
from scseg.report.runs import as_float, read_json_object
from scseg.run_identity import read_run_name
from scseg.se_options import run_name_option

# Columns a CSV written before they existed may lack, with the value such runs had.
OPTIONAL_COLUMNS: dict[str, str] = {"precision": "fp32", "software": ""}
# summary.json's version keys, as the ``software`` column names them (the packages training's numbers depend on).
SOFTWARE_KEYS: tuple[tuple[str, str], ...] = (
    ("torch", "torch_version"),
    ("numpy", "numpy_version"),
    ("scipy", "scipy_version"),
    ("python", "python_version"),
)
COLUMNS: tuple[str, ...] = (
    "arch",
    "variant",
    "se",
    "aggregation",
    "gate_scale",
    "capacity_match",
    "precision",
    "seed",
    "fold",
    "run",
    "n_params",
    "comparison_hash",
    "commit",
    "dirty",
    "cpu",
    "software",
    "se_kernels",
    "val_dice",
    "subject",
    "class_id",
    "structure",
    "n_ref",
    "dice",
    "hd95",
    "nsd",
)


@dataclass(frozen=True)
class CaseRow:
    """One row of the tidy CSV (see :data:`COLUMNS`); ``dice`` NaN where undefined, ``fold`` None without CV."""

    arch: str
    variant: str
    se: str
    aggregation: str
    gate_scale: float
    capacity_match: str
    seed: int
    fold: int | None
    run: str
    n_params: int
    comparison_hash: str
    commit: str
    dirty: str
    cpu: str
    se_kernels: str
    val_dice: float
    subject: str
    class_id: int
    structure: str
    n_ref: float
    dice: float
    hd95: float = math.nan  # mm; empty in the CSV where not computed (runs from before boundary metrics)
    nsd: float = math.nan
    precision: str = "fp32"  # training's autocast: fp32, bf16 or fp16 (runs from before it was recorded: fp32)
    software: str = ""  # versions summary.json records, e.g. "torch 2.13.0+cpu, numpy 2.4.6" (empty: unknown)

    @property
    def run_key(self) -> str:
        """The pairing unit: runs of two variants with the same seed and fold share data order and backbone."""
        return f"seed{self.seed}" if self.fold is None else f"seed{self.seed}-fold{self.fold}"


def variant_label(
    se: str,
    aggregation: str | None,
    gate_scale: float = 1.0,
    capacity_match: str | None = None,
    preset: str | None = None,
    precision: str | None = None,
) -> str:
    """The cell a run belongs to: ``none``, ``cse``, ``sse``, ``scse`` (add), ``scse-max``, with ``-g2`` for a gate
    scale of 2 and ``none-wide-<variant>`` for a backbone widened to that variant's parameter count. A library
    preset (``se=smp_scse``: a module with its library's positions and reduction) is its own cell, named by the
    preset, so it never merges with the module at the paper's settings. A run trained under bf16 or fp16 autocast
    gets ``-bf16`` / ``-fp16``: precision changes results, so a cell never pools precisions."""
    suffix = f"-{precision}" if precision and precision != "fp32" else ""
    if capacity_match:
        return f"none-wide-{capacity_match}{suffix}"
    if preset and preset != se:
        return preset + (f"-g{gate_scale:g}" if gate_scale != 1.0 else "") + suffix
    label = se
    if run_name_option(se) == "aggregation" and aggregation and aggregation != "add":
        label += f"-{aggregation}"
    if se != "none" and gate_scale != 1.0:
        label += f"-g{gate_scale:g}"
    return label + suffix


def se_config_name(folder: Path) -> str | None:
    """The ``se=<name>`` config group a run was launched with (``.hydra/overrides.yaml``), or None: a library preset
    such as ``smp_scse`` names a configuration of a module that the summary alone does not tell apart."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        item = line.strip().lstrip("-").strip().strip("'\"")
        if item.startswith("se="):
            return item[len("se=") :]
    return None


def software_of(summary: Mapping[str, object]) -> str:
    """The versions a run's summary.json records, as one ``software`` cell (the keys it lacks are left out)."""
    return ", ".join(f"{name} {summary[key]}" for name, key in SOFTWARE_KEYS if summary.get(key))


def rows_of_run(folder: Path) -> list[CaseRow]:
    """The tidy rows of one finished run folder (``summary.json`` and ``per_case.csv``); background left out.

    Raises ``ValueError`` naming the file when either is missing or malformed.
    """
    summary_path, per_case_path = folder / "summary.json", folder / "per_case.csv"
    for path in (summary_path, per_case_path):
        if not path.is_file():
            raise ValueError(f"{path}: missing; a finished run folder has summary.json and per_case.csv")
    summary = read_json_object(summary_path)
    try:
        se = str(summary["se"])
        aggregation = summary.get("aggregation")
        if run_name_option(se) == "aggregation" and not aggregation:
            named = read_run_name(folder.name)
            aggregation = named["aggregation"] if named else "add"
        gate_scale = float(summary.get("se_gate_scale") or 1.0)
        capacity = summary.get("capacity_match") or {}
        capacity_variant = capacity.get("variant", "") if isinstance(capacity, Mapping) else str(capacity)
        fold = summary.get("fold")
        precision = str(summary.get("precision") or "fp32")
        identity = {
            "arch": str(summary["arch"]),
            "variant": variant_label(
                se, aggregation, gate_scale, capacity_variant or None, se_config_name(folder), precision
            ),
            "se": se,
            "aggregation": str(aggregation or ""),
            "gate_scale": gate_scale,
            "capacity_match": capacity_variant,
            "precision": precision,
            "seed": int(summary["seed"]),
            "fold": None if fold is None else int(fold),
            "run": folder.name,
            "n_params": int(summary.get("n_params") or 0),
            "comparison_hash": str(summary.get("comparison_hash") or ""),
            "commit": str(summary.get("git_commit") or "")[:12],
            "dirty": {True: "yes", False: "no"}.get(summary.get("git_dirty"), ""),
            "cpu": str(summary.get("cpu_model") or ""),
            "software": software_of(summary),
            "se_kernels": str(summary.get("se_kernels") or ""),
            "val_dice": as_float(summary.get("best_val_dice")),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{summary_path}: unusable run identity ({err})") from err
    rows = []
    with per_case_path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                class_id = int(row["class_id"])
                if class_id == 0:
                    continue
                rows.append(
                    CaseRow(
                        **identity,
                        subject=str(row["subject"]),
                        class_id=class_id,
                        structure=str(row["class_name"]),
                        n_ref=as_float(row.get("n_ref")),
                        dice=as_float(row["dice"]),
                        hd95=as_float(row.get("hd95")),
                        nsd=as_float(row.get("nsd")),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{per_case_path}, line {line}: {err}") from err
    return rows


def collect(experiment: Path) -> tuple[list[CaseRow], list[str]]:
    """Rows of every finished run under ``experiment`` (status ``done``), and one note per folder left out."""
    if not experiment.is_dir():
        raise ValueError(f"{experiment}: not a folder; expected an experiment folder of run folders")
    rows: list[CaseRow] = []
    notes: list[str] = []
    for folder in sorted(p for p in experiment.iterdir() if p.is_dir() and not p.name.startswith(".")):
        status = folder / "status.json"
        try:
            state = read_json_object(status).get("state") if status.is_file() else None
        except (OSError, ValueError) as err:
            notes.append(f"{folder.name}: left out (unreadable {status.name}: {err})")
            continue
        if state != "done":
            notes.append(f"{folder.name}: left out (state {state or 'unknown'})")
            continue
        try:
            rows.extend(rows_of_run(folder))
        except ValueError as err:
            notes.append(f"{folder.name}: left out ({err})")
    return rows, notes


def merge_rows(existing: Iterable[CaseRow], collected: Iterable[CaseRow]) -> list[CaseRow]:
    """``collected`` plus the rows of ``existing`` whose run it does not hold (a run in both: the newly collected
    rows). Why: a study's runs can finish on different machines or in different sessions, and the committed CSV is
    the lasting record of the finished ones; adding a batch of runs must not drop those no longer on disk."""
    collected = list(collected)
    fresh = {r.run for r in collected}
    return [r for r in existing if r.run not in fresh] + collected


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}" if not value.is_integer() else f"{value:g}"
    return str(value)


def to_csv_text(rows: Iterable[CaseRow]) -> str:
    """The CSV text, rows sorted (architecture, variant, seed, fold, subject, class) so it is byte-stable."""
    ordered = sorted(rows, key=lambda r: (r.arch, r.variant, r.seed, r.fold or -1, r.subject, r.class_id))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in ordered:
        writer.writerow([_text(getattr(row, column)) for column in COLUMNS])
    return buffer.getvalue()


def write_csv(rows: Iterable[CaseRow], path: Path) -> None:
    """The CSV at ``path``; a ``.gz`` path is gzip-compressed with a fixed time stamp, so the same rows give the same
    bytes (a whole study's CSV repeats each run's identity on every row and compresses about tenfold)."""
    text = to_csv_text(rows)
    if Path(path).suffix == ".gz":
        data = gzip.compress(text.encode("utf-8"), mtime=0)
        atomic_write(path, lambda fh: fh.write(data))
    else:
        atomic_write_text(path, text)


def read_csv(path: Path) -> list[CaseRow]:
    """Rows of a tidy CSV (plain or ``.gz``); ``ValueError`` naming the file and line when a column or value is bad."""
    path = Path(path)
    opened = gzip.open(path, "rt", newline="", encoding="utf-8") if path.suffix == ".gz" else None
    with opened or path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL_COLUMNS]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append(
                    CaseRow(
                        arch=row["arch"],
                        variant=row["variant"],
                        se=row["se"],
                        aggregation=row["aggregation"],
                        gate_scale=float(row["gate_scale"] or 1.0),
                        capacity_match=row["capacity_match"],
                        seed=int(row["seed"]),
                        fold=int(row["fold"]) if row["fold"] else None,
                        run=row["run"],
                        n_params=int(row["n_params"] or 0),
                        comparison_hash=row["comparison_hash"],
                        commit=row["commit"],
                        dirty=row["dirty"],
                        cpu=row["cpu"],
                        se_kernels=row["se_kernels"],
                        val_dice=as_float(row["val_dice"]),
                        subject=row["subject"],
                        class_id=int(row["class_id"]),
                        structure=row["structure"],
                        n_ref=as_float(row["n_ref"]),
                        dice=as_float(row["dice"]),
                        hd95=as_float(row["hd95"]),
                        nsd=as_float(row["nsd"]),
                        precision=row.get("precision") or OPTIONAL_COLUMNS["precision"],
                        software=row.get("software") or OPTIONAL_COLUMNS["software"],
                    )
                )
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
    return rows


__all__: Sequence[str] = [
    "COLUMNS",
    "CaseRow",
    "collect",
    "read_csv",
    "rows_of_run",
    "software_of",
    "to_csv_text",
    "variant_label",
]
