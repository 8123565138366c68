"""Map a dataset's raw label ids onto the contiguous class indices 0..K-1 the networks are trained on.

Why this module exists: raw label files use dataset-specific ids (MALC has 130+ ids, of which many are
merged into 27 structures), and which ids merge into which class is a research decision that must be
written down in a config (`configs/label_map/<name>.yaml`), not buried in code. A raw id that the map does
not mention is never silently dropped: `unknown: error` stops with the file name and the ids, `unknown:
background` maps them to 0 and warns with the voxel count.

Config forms accepted by `load_label_map` (the composed `data.label_map` node):

1. explicit:  ``class_names: [background, liver, ...]`` and ``raw_to_class: {0: 0, 1: 1, ...}``
2. grouped:   ``classes: [{name: liver, raw_ids: [1]}, ...]`` (class index = position + 1) and
   ``background_ids: [0, ...]`` (raw ids that become class 0 "background")
3. nnU-Net:   ``from_dataset_json: <path to dataset.json>`` (its ``labels`` name -> id table; class
   indices follow the sorted ids; id 0 must exist and becomes "background")

All forms take ``unknown: error | background`` (default error). Relative paths are resolved against the
repository root.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from scseg.data.errors import DataError
from scseg.data.io import read_label_file
from scseg.data.jsonio import read_json_object
from scseg.data.types import label_dtype
from scseg.paths import resolve_path
from scseg.plain import to_plain

UNKNOWN_MODES = ("error", "background")
BACKGROUND = "background"
# Raw ids in [0, LUT_LIMIT) are mapped with a lookup table; anything else goes through np.unique.
LUT_LIMIT = 1 << 16
# Mapped labels are stored as uint8 up to 256 classes, else int16 (what the cache and OpenCV handle).
MAX_CLASSES = 32768


@dataclass(frozen=True)
class LabelMap:
    """Raw label id -> class index table with class names (index 0 = background)."""

    class_names: tuple[str, ...]
    raw_to_class: dict[int, int]
    unknown: str = "error"
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.class_names)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "raw_to_class", {int(k): int(v) for k, v in self.raw_to_class.items()})
        _validate(self)
        ids = [k for k in self.raw_to_class if 0 <= k < LUT_LIMIT]
        lut = np.full(max(ids, default=-1) + 1, -1, dtype=np.int32)
        for k in ids:
            lut[k] = self.raw_to_class[k]
        object.__setattr__(self, "_lut", lut)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def out_dtype(self) -> np.dtype:
        """dtype of mapped labels: the smallest that holds the class indices 0..K-1 (uint8, or int16)."""
        return label_dtype(0, self.num_classes - 1)

    def apply(self, raw: np.ndarray, source: str) -> np.ndarray:
        """Raw ids -> class indices (uint8, or int16 beyond 256 classes); `source` names the file in messages."""
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iub":
            raise DataError(f"{source}: label map expects integer raw label ids, got dtype {raw.dtype}")
        if raw.size and int(raw.min()) >= 0 and int(raw.max()) < LUT_LIMIT:
            lut = self._lut
            hi = int(raw.max())
            if hi >= lut.size:
                lut = np.concatenate([lut, np.full(hi + 1 - lut.size, -1, dtype=np.int32)])
            mapped = lut[raw]
        else:
            values, inverse = np.unique(raw, return_inverse=True)
            table = np.array([self.raw_to_class.get(int(v), -1) for v in values], dtype=np.int32)
            mapped = table[inverse.reshape(raw.shape)] if raw.size else np.zeros(raw.shape, np.int32)
        unknown_mask = mapped < 0
        if unknown_mask.any():
            ids, counts = np.unique(raw[unknown_mask], return_counts=True)
            listing = ", ".join(f"{int(i)} ({int(c)} voxels)" for i, c in zip(ids[:20], counts[:20], strict=True))
            more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
            n = int(counts.sum())
            if self.unknown == "error":
                raise DataError(
                    f"{source}: raw label ids not in the label map: {listing}{more}; expected only ids "
                    f"{_id_summary(self.raw_to_class)} (add them to the label map or set unknown: background)"
                )
            warnings.warn(
                f"{source}: {n} voxels with raw label ids not in the label map ({listing}{more}) mapped to "
                "background (label map unknown: background)",
                stacklevel=2,
            )
            mapped = np.where(unknown_mask, 0, mapped)
        return mapped.astype(self.out_dtype)


def _id_summary(raw_to_class: Mapping[int, int], limit: int = 30) -> str:
    ids = sorted(raw_to_class)
    text = ", ".join(str(i) for i in ids[:limit])
    return "{" + text + (f", ... ({len(ids)} ids)" if len(ids) > limit else "") + "}"


def _validate(lm: LabelMap) -> None:
    if len(lm.class_names) > MAX_CLASSES:
        raise DataError(f"label map: {len(lm.class_names)} classes is more than the supported {MAX_CLASSES}")
    if not lm.class_names or lm.class_names[0] != BACKGROUND:
        raise DataError(f"label_map.class_names: expected index 0 to be {BACKGROUND!r}, got {list(lm.class_names)}")
    if len(set(lm.class_names)) != len(lm.class_names):
        dupes = sorted({n for n in lm.class_names if lm.class_names.count(n) > 1})
        raise DataError(f"label_map.class_names: duplicate names {dupes}; expected unique class names")
    if lm.unknown not in UNKNOWN_MODES:
        raise DataError(f"label_map.unknown: got {lm.unknown!r}; expected one of {list(UNKNOWN_MODES)}")
    bad = {k: v for k, v in lm.raw_to_class.items() if not 0 <= v < len(lm.class_names)}
    if bad:
        raise DataError(
            f"label_map.raw_to_class: class indices {bad} outside 0..{len(lm.class_names) - 1} "
            f"(there are {len(lm.class_names)} class names)"
        )
    unused = sorted(set(range(1, len(lm.class_names))) - set(lm.raw_to_class.values()))
    if unused:
        raise DataError(
            f"label_map: classes {[lm.class_names[i] for i in unused]} have no raw ids; "
            "expected every class to receive at least one raw id"
        )


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise DataError(f"{where}: expected an integer label id, got {value!r}")
    try:
        f = float(value)
    except ValueError as err:
        raise DataError(f"{where}: expected an integer label id, got {value!r}") from err
    if f != int(f):
        raise DataError(f"{where}: expected an integer label id, got {value!r}")
    return int(f)


def read_dataset_json(path: Path) -> dict:
    """An nnU-Net dataset.json as a dict; a missing or unreadable file is a DataError naming it."""
    return read_json_object(path, "dataset.json", "an nnU-Net dataset.json object in data.layout.root")


def nnunet_label_map(dataset_json_path: str | Path, unknown: str = "error") -> LabelMap:
    """LabelMap from an nnU-Net dataset.json `labels` table (name -> id); classes ordered by id."""
    path = Path(dataset_json_path)
    meta = read_dataset_json(path)
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: expected a non-empty 'labels' object (name -> integer id)")
    by_id: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            raise DataError(
                f"{path}: label {name!r} is a region ({value}); region-based labels are not supported, "
                "expected one integer id per label"
            )
        i = _as_int(value, f"{path}: labels.{name}")
        if i in by_id:
            raise DataError(f"{path}: labels {by_id[i]!r} and {name!r} share id {i}; expected unique ids")
        by_id[i] = str(name)
    if 0 not in by_id:
        raise DataError(f"{path}: labels have no id 0; expected 0 = background")
    ids = sorted(by_id)
    names = [BACKGROUND] + [by_id[i] for i in ids[1:]]
    return LabelMap(class_names=tuple(names), raw_to_class={i: k for k, i in enumerate(ids)}, unknown=unknown)


def load_label_map(cfg: Mapping) -> LabelMap:
    """The composed `label_map` config node -> LabelMap (forms: see module docstring)."""
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise DataError(f"label_map: expected a mapping, got {type(cfg).__name__}")
    unknown = str(cfg.get("unknown", "error"))
    forms = [k for k in ("raw_to_class", "classes", "from_dataset_json") if cfg.get(k) is not None]
    if len(forms) != 1:
        raise DataError(
            f"label_map: expected exactly one of raw_to_class (with class_names), classes (with background_ids) "
            f"or from_dataset_json, got {forms or 'none'} (keys {sorted(cfg)})"
        )
    form = forms[0]
    if form == "from_dataset_json":
        return nnunet_label_map(resolve_path(str(cfg["from_dataset_json"])), unknown=unknown)
    if form == "raw_to_class":
        names = cfg.get("class_names")
        table = cfg["raw_to_class"]
        if not isinstance(names, list | tuple) or not isinstance(table, Mapping):
            raise DataError("label_map: expected class_names as a list and raw_to_class as a mapping raw id -> index")
        raw_to_class = {
            _as_int(k, f"label_map.raw_to_class key {k!r}"): _as_int(v, f"label_map.raw_to_class[{k}]")
            for k, v in table.items()
        }
        if len(raw_to_class) != len(table):
            raise DataError("label_map.raw_to_class: the same raw id is listed twice (e.g. as 1 and '1')")
        return LabelMap(class_names=tuple(names), raw_to_class=raw_to_class, unknown=unknown)

    classes = cfg["classes"]
    if not isinstance(classes, list | tuple):
        raise DataError("label_map.classes: expected a list of {name, raw_ids}")
    raw_to_class = {}
    owner: dict[int, str] = {}

    def add(raw_id: Any, index: int, name: str, where: str) -> None:
        rid = _as_int(raw_id, where)
        if rid in raw_to_class:
            raise DataError(f"label_map: raw id {rid} is listed for both {owner[rid]!r} and {name!r}")
        raw_to_class[rid] = index
        owner[rid] = name

    for rid in cfg.get("background_ids") or []:
        add(rid, 0, BACKGROUND, "label_map.background_ids")
    names = [BACKGROUND]
    for i, entry in enumerate(classes, start=1):
        if not isinstance(entry, Mapping) or "name" not in entry or not entry.get("raw_ids"):
            raise DataError(f"label_map.classes[{i - 1}]: expected {{name: ..., raw_ids: [...]}}, got {entry!r}")
        name = str(entry["name"])
        names.append(name)
        for rid in entry["raw_ids"]:
            add(rid, i, name, f"label_map.classes[{i - 1}] ({name}).raw_ids")
    return LabelMap(class_names=tuple(names), raw_to_class=raw_to_class, unknown=unknown)


@dataclass(frozen=True)
class LabelAudit:
    """How a label map treats the raw ids found in a set of label files (the numbers in a label-map header)."""

    raw_counts: dict[int, int]  # raw id -> voxels over all files
    class_counts: np.ndarray  # (K,) voxels per class after mapping
    unknown_ids: tuple[int, ...]  # raw ids the map does not list
    background_ids: frozenset[int]  # raw ids that end in class 0 (listed as background, or unknown)

    @property
    def labelled_to_background(self) -> float:
        """Share of labelled (raw id != 0) voxels that the map sends to background."""
        labelled = sum(c for k, c in self.raw_counts.items() if k != 0)
        return self.lost_counts_total / labelled if labelled else 0.0

    @property
    def lost_counts_total(self) -> int:
        return sum(self.lost_counts.values())

    @property
    def lost_counts(self) -> dict[int, int]:
        """Raw id (!= 0) -> voxels, for the ids mapped (or, as unknown, sent) to background."""
        return {k: c for k, c in self.raw_counts.items() if k != 0 and k in self.background_ids}


def audit_label_map(label_map: LabelMap, label_paths: Iterable[str | Path]) -> LabelAudit:
    """Count raw ids over label files and report their fate under `label_map` (unknown ids count as background)."""
    raw: dict[int, int] = {}
    for p in label_paths:
        data, _ = read_label_file(Path(p))
        ids, counts = np.unique(data, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
            raw[i] = raw.get(i, 0) + c
    class_counts = np.zeros(label_map.num_classes, dtype=np.int64)
    unknown = []
    background = set()
    for i, c in raw.items():
        k = label_map.raw_to_class.get(i)
        if k is None:
            unknown.append(i)
            k = 0
        class_counts[k] += c
        if k == 0:
            background.add(i)
    return LabelAudit(raw, class_counts, tuple(sorted(unknown)), frozenset(background))


def main(argv: list[str] | None = None) -> int:
    """`python -m scseg.data.label_map <label_map.yaml> <label files...>`: print each raw id's fate."""
    parser = argparse.ArgumentParser(prog="python -m scseg.data.label_map", description=main.__doc__)
    parser.add_argument("label_map", help="a configs/label_map/<name>.yaml file (explicit or grouped form)")
    parser.add_argument("labels", nargs="+", help="label files to count")
    args = parser.parse_args(argv)
    try:
        lm = load_label_map(OmegaConf.load(args.label_map))
        audit = audit_label_map(lm, args.labels)
    except DataError as err:
        print(f"error: {err}")
        return 2
    labelled = sum(c for k, c in audit.raw_counts.items() if k != 0)
    print(f"{len(args.labels)} label file(s), {len(audit.raw_counts)} raw ids, {labelled} labelled voxels")
    print("raw ids sent to background (share of labelled voxels):")
    for i, c in sorted(audit.lost_counts.items(), key=lambda t: -t[1]):
        tag = "  (UNKNOWN to the map)" if i in audit.unknown_ids else ""
        print(f"  {i:>6} {c:>12} {100 * c / max(labelled, 1):8.4f} %{tag}")
    print(f"total labelled voxels ending in background: {100 * audit.labelled_to_background:.3f} %")
    print("classes present after mapping:", int(np.count_nonzero(audit.class_counts)), "of", lm.num_classes)
    for k, name in enumerate(lm.class_names):
        print(f"  {k:>3} {name:<32} {int(audit.class_counts[k]):>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
