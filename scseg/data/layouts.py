"""Find a dataset's files on disk and split them into train / test (/ val) lists of `Case`s.

Why this module exists: every dataset stores its files differently (a folder of globs, nnU-Net's
imagesTr/labelsTr + dataset.json, MALC's `<id>_SS` / `<id>_glm` with rescans, CHAOS, the generated phantom),
but everything downstream only needs "which image files and which label file make one case, and which split
is it in". Splits are always by subject, deterministic, and checked: an empty dataset, a split naming unknown
cases, or a case in two splits is a `DataError` naming the split file.

`load_layout(cfg)` takes the `data.layout` config node; `cfg.type` picks the layout:

- folder:  root, images (glob, or list of globs = one per modality), labels (glob or null), case_id (regex whose
           group 1, searched in the file name, is the case id), split_file (optional), test_fraction, split_seed
- nnunet:  root (with dataset.json, imagesTr/, labelsTr/), split_file (optional), test_fraction, split_seed
- malc:    root, split_file (train/test + rescans map), include_rescans_in_test, include_rescans_in_train
- chaos:   root, split_file
- phantom: n_subjects, n_test, size, seed, generator (keyword arguments of phantom.generate_phantom_subject),
           cache_dir (optional; else $SCSEG_CACHE or ~/.cache/scseg)

Relative paths (root, split_file relative to root) are resolved against the repository root.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scseg.data.errors import DataError
from scseg.data.io import IMAGE_SUFFIXES, strip_image_suffix
from scseg.data.jsonio import read_json_object
from scseg.data.label_map import read_dataset_json
from scseg.data.phantom import PHANTOM_CASE_ID, PHANTOM_IMAGE_GLOB, PHANTOM_LABEL_GLOB, ensure_phantom_dataset
from scseg.data.types import SPLITS, Case
from scseg.paths import resolve_path
from scseg.plain import to_plain

# Keys a split file may carry besides the splits (free text, MALC's rescan table).
SPLIT_FILE_EXTRA_KEYS = ("note", "description", "comment", "_comment", "rescans")
LAYOUT_TYPES = ("folder", "nnunet", "malc", "chaos", "phantom")


def _root(cfg: Mapping[str, Any], kind: str) -> Path:
    if cfg.get("root") in (None, ""):
        raise DataError(f"data.layout.root: missing; the {kind} layout needs the dataset folder")
    root = resolve_path(cfg["root"])
    if not root.is_dir():
        raise DataError(f"data.layout.root: {root} is not a folder; expected the {kind} dataset folder")
    return root


# ---- split files ----------------------------------------------------------------------------------
def read_split_file(path: Path) -> dict[str, Any]:
    """A split JSON: {"train": [ids], "test": [ids], optional "val", optional extra keys}; checked for overlap."""
    data = read_json_object(path, "split file", "a JSON object with train/test id lists")
    unknown = sorted(set(data) - set(SPLITS) - set(SPLIT_FILE_EXTRA_KEYS))
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; expected {list(SPLITS)} (and {list(SPLIT_FILE_EXTRA_KEYS)})")
    if "train" not in data or "test" not in data:
        raise DataError(f"{path}: expected both 'train' and 'test' id lists, got keys {sorted(data)}")
    seen: dict[str, str] = {}
    for key in SPLITS:
        if key not in data:
            continue
        ids = data[key]
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise DataError(f"{path}: '{key}' must be a list of case ids (strings)")
        data[key] = [str(i) for i in ids]
        for i in data[key]:
            if i in seen:
                where = "twice in" if seen[i] == key else f"in both '{seen[i]}' and"
                raise DataError(f"{path}: case {i!r} is listed {where} '{key}'; expected disjoint splits")
            seen[i] = key
    return data


def apply_split(cases: Mapping[str, Case], split: Mapping[str, Any], split_path: Path) -> dict[str, list[Case]]:
    """Split lists of ids -> lists of cases; unknown ids are an error naming the split file."""
    out: dict[str, list[Case]] = {}
    for key in SPLITS:
        if key not in split:
            continue
        missing = [i for i in split[key] if i not in cases]
        if missing:
            raise DataError(
                f"{split_path}: '{key}' names cases not found in the dataset: {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}; found {len(cases)} cases, e.g. {sorted(cases)[:5]}"
            )
        out[key] = [cases[i] for i in split[key]]
    return out


def _warn_unused(cases: Mapping[str, Case], splits: Mapping[str, list[Case]], split_path: Path) -> None:
    used = {c.id for v in splits.values() for c in v}
    unused = sorted(set(cases) - used)
    if unused:
        warnings.warn(
            f"{split_path}: {len(unused)} case(s) are in no split and are not used: {unused[:10]}", stacklevel=3
        )


def fraction_split(cases: list[Case], test_fraction: float, seed: int, where: str) -> dict[str, list[Case]]:
    """Seeded by-subject split when there is no split file: round(n * test_fraction) subjects go to test."""
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"{where}.test_fraction: expected a number in [0, 1), got {test_fraction}")
    subjects = sorted({c.subject_id for c in cases})
    n_test = int(round(len(subjects) * test_fraction))
    if test_fraction > 0 and n_test == 0:
        n_test = 1
    if n_test >= len(subjects) and n_test > 0:
        raise DataError(
            f"{where}.test_fraction: {test_fraction} of {len(subjects)} subject(s) leaves no training subject; "
            "expected at least 2 subjects or test_fraction 0"
        )
    rng = np.random.default_rng(seed)
    test_subjects = {subjects[i] for i in rng.permutation(len(subjects))[:n_test]}
    return {
        "train": [c for c in cases if c.subject_id not in test_subjects],
        "test": [c for c in cases if c.subject_id in test_subjects],
    }


def split_validation(train: list[Case], n_val: int, seed: int) -> tuple[list[Case], list[Case]]:
    """Carve `n_val` subjects from train, by subject, seeded and deterministic; returns (train, val)."""
    if n_val < 0:
        raise DataError(f"data.val_subjects: expected >= 0, got {n_val}")
    subjects = sorted({c.subject_id for c in train})
    if n_val == 0:
        return list(train), []
    if n_val >= len(subjects):
        raise DataError(
            f"data.val_subjects: {n_val} validation subjects need more than the {len(subjects)} training "
            "subject(s); expected val_subjects < number of training subjects"
        )
    rng = np.random.default_rng(seed)
    val_subjects = {subjects[i] for i in rng.permutation(len(subjects))[:n_val]}
    return [c for c in train if c.subject_id not in val_subjects], [c for c in train if c.subject_id in val_subjects]


def _split_cases(cases: dict[str, Case], cfg: Mapping[str, Any], root: Path, where: str) -> dict[str, list[Case]]:
    if not cases:
        raise DataError(f"{where}: no cases found under {root}; expected at least one image/label pair")
    split_file = cfg.get("split_file")
    if split_file:
        path = resolve_path(split_file, base=root)
        splits = apply_split(cases, read_split_file(path), path)
        _warn_unused(cases, splits, path)
    else:
        ordered = [cases[k] for k in sorted(cases)]
        splits = fraction_split(ordered, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)), where)
    if not any(splits.values()):
        raise DataError(f"{split_file or where}: every split is empty; expected at least one training case")
    return splits


# ---- folder ---------------------------------------------------------------------------------------
def _match_id(name: str, pattern: re.Pattern[str], path: Path, setting: str) -> str:
    m = pattern.search(name)
    if m is None or not m.groups() or not m.group(1):
        raise DataError(
            f"{path}: {setting} regex {pattern.pattern!r} does not match the file name (or its group 1 is empty); "
            "expected a regex whose group 1 is the case id"
        )
    return m.group(1)


def _glob_ids(root: Path, glob: str, pattern: re.Pattern[str], setting: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.glob(glob)):
        if not path.is_file():
            continue
        cid = _match_id(path.name, pattern, path, setting)
        if cid in found:
            raise DataError(
                f"{path}: case id {cid!r} (from {setting} regex {pattern.pattern!r}) is also that of {found[cid]}; "
                "expected one file per case"
            )
        found[cid] = path
    return found


def folder_cases(
    root: Path, images: str | Iterable[str], labels: str | None, case_id: str, where: str = "data.layout"
) -> dict[str, Case]:
    """Pair image files (one glob per modality) and label files by the case id regex; unpaired files -> error."""
    try:
        pattern = re.compile(case_id)
    except re.error as err:
        raise DataError(f"{where}.case_id: invalid regex {case_id!r} ({err})") from err
    if pattern.groups < 1:
        raise DataError(f"{where}.case_id: regex {case_id!r} has no group; expected group 1 = case id")
    globs = [images] if isinstance(images, str) else list(images)
    if not globs:
        raise DataError(f"{where}.images: expected a glob (or a list of globs, one per modality)")
    per_modality = [_glob_ids(root, g, pattern, f"{where}.case_id") for g in globs]
    label_files = _glob_ids(root, labels, pattern, f"{where}.case_id") if labels else None
    ids = set().union(*per_modality)
    problems = []
    for g, found in zip(globs, per_modality, strict=True):
        missing = sorted(ids - set(found))
        if missing:
            problems.append(f"no image matching {g!r} for cases {missing[:10]}")
    if label_files is not None:
        no_label = sorted(ids - set(label_files))
        no_image = sorted(set(label_files) - ids)
        if no_label:
            problems.append(
                f"images without a label ({labels!r}): {[str(per_modality[0].get(i)) for i in no_label[:10]]}"
            )
        if no_image:
            problems.append(f"labels without an image ({globs!r}): {[str(label_files[i]) for i in no_image[:10]]}")
    if problems:
        raise DataError(f"{root}: unpaired files: " + "; ".join(problems))
    return {
        cid: Case(
            id=cid,
            image_paths=tuple(found[cid] for found in per_modality),
            label_path=None if label_files is None else label_files[cid],
        )
        for cid in sorted(ids)
    }


def folder_layout(cfg: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Cases of a plain folder of images and labels matched by patterns (``data=folder``), split by a file or seed."""
    root = _root(cfg, "folder")
    for key in ("images", "case_id"):
        if not cfg.get(key):
            raise DataError(f"data.layout.{key}: missing; the folder layout needs images, labels and case_id")
    cases = folder_cases(root, cfg["images"], cfg.get("labels"), str(cfg["case_id"]))
    return _split_cases(cases, cfg, root, "data.layout")


# ---- nnU-Net channel files (<case>_XXXX): datasets and prediction inputs alike -------------------------------------
CHANNEL_FILE = re.compile(r"(.+)_(\d{4})")


def channel_file_name(case: str, channel: int, ending: str = ".nii.gz") -> str:
    """nnU-Net's name of one channel of a case: ``<case>_0000.nii.gz``."""
    return f"{case}_{channel:04d}{ending}"


def _stem(path: Path) -> str:
    """File name without its image suffix."""
    return strip_image_suffix(path.name)


def _case_of(path: Path) -> tuple[str, int]:
    name = _stem(path)
    match = CHANNEL_FILE.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match else (name, 0)


def is_image_name(path: Path) -> bool:
    """Whether the file name is one of the image types predict reads (.nii, .nii.gz, .mgz)."""
    return path.name.endswith(IMAGE_SUFFIXES)


def _single_case(path: Path) -> str:
    """Case name of a single-modality image: `<case>_0000.nii.gz` and `<case>.nii.gz` both give `<case>`."""
    return _case_of(path)[0] if re.search(r"_0000\.", path.name) else path.name.split(".")[0]


def group_file(path: Path, modalities: int) -> dict[str, list[Path]]:
    """{case: [channel 0 path, ...]} for one image file given as IN.

    A multi-modality run needs every channel, so one file is accepted only as the `<case>_0000` file of an
    nnU-Net style group whose `_0001`, ... siblings lie next to it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    if not is_image_name(path):
        raise ValueError(f"input {path}: not a .nii, .nii.gz or .mgz image (or a folder of them)")
    if modalities == 1:
        return {_single_case(path): [path]}
    expected = f"{modalities} modalities (<case>_0000 .. <case>_{modalities - 1:04d})"
    match = CHANNEL_FILE.fullmatch(_stem(path))
    if match is None or int(match.group(2)) != 0:
        raise ValueError(
            f"input {path}: the run expects {expected} per case; give the case's _0000 file (with its siblings "
            f"next to it) or a folder"
        )
    case = match.group(1)
    paths = [path]
    missing = []
    for channel in range(1, modalities):
        stem = channel_file_name(case, channel, ending="")
        found = [path.parent / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
        found = [f for f in found if f.is_file()]
        if found:
            paths.append(found[0])
        else:
            missing.append(f"{stem}.nii.gz/.nii/.mgz")
    if missing:
        raise ValueError(
            f"input {path}: the run expects {expected} per case, but {', '.join(missing)} not found in {path.parent}"
        )
    return {case: paths}


def group_images(folder: Path, modalities: int) -> dict[str, list[Path]]:
    """{case: [channel 0 path, channel 1 path, ...]}; single-modality runs take every image as its own case."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
    if modalities == 1:
        return {_single_case(p): [p] for p in files}
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    for p in files:
        case, channel = _case_of(p)
        grouped[case][channel] = p
    cases = {}
    for case, channels in grouped.items():
        if sorted(channels) != list(range(modalities)):
            raise ValueError(
                f"case {case!r} in {folder}: expected channels _0000.._{modalities - 1:04d}, found {sorted(channels)}"
            )
        cases[case] = [channels[i] for i in range(modalities)]
    return cases


# ---- nnU-Net --------------------------------------------------------------------------------------
def nnunet_layout(cfg: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Cases of an nnU-Net raw dataset (``dataset.json``, imagesTr/labelsTr, channels as ``_0000`` files)."""
    root = _root(cfg, "nnunet")
    ds_path = root / "dataset.json"
    meta = read_dataset_json(ds_path)
    channels = meta.get("channel_names") or meta.get("modality")
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{ds_path}: expected a non-empty 'channel_names' object (e.g. {{'0': 'T2'}})")
    ending = str(meta.get("file_ending", ".nii.gz"))
    n_ch = len(channels)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not labels_dir.is_dir():
        raise DataError(f"{labels_dir}: not found; expected the nnU-Net labelsTr folder")
    cases: dict[str, Case] = {}
    for label in sorted(labels_dir.glob(f"*{ending}")):
        cid = label.name[: -len(ending)]
        paths = tuple(images_dir / channel_file_name(cid, c, ending) for c in range(n_ch))
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{label}: missing image channel file(s) {missing}; expected {n_ch} channel(s) "
                f"{list(channels.values())} as imagesTr/{cid}_XXXX{ending}"
            )
        cases[cid] = Case(id=cid, image_paths=paths, label_path=label)
    known = {channel_file_name(cid, c, ending) for cid in cases for c in range(n_ch)}
    orphans = (
        sorted(p.name for p in images_dir.glob(f"*{ending}") if p.name not in known) if images_dir.is_dir() else []
    )
    if orphans:
        raise DataError(f"{images_dir}: image files without a label in labelsTr: {orphans[:10]}")
    n_train = meta.get("numTraining")
    if n_train is not None and int(n_train) != len(cases):
        warnings.warn(f"{ds_path}: numTraining is {n_train} but labelsTr holds {len(cases)} cases", stacklevel=2)
    return _split_cases(cases, cfg, root, "data.layout")


# ---- MALC -----------------------------------------------------------------------------------------
MALC_IMAGE = "*_SS.nii.gz"
MALC_LABEL = "*_glm.nii.gz"
MALC_ID = r"^(.+?)_(?:SS|glm)\.nii\.gz$"


def malc_layout(cfg: Mapping[str, Any]) -> dict[str, list[Case]]:
    """MALC 2012: split.json train/test, rescans kept on their original subject's side (or left out)."""
    root = _root(cfg, "malc")
    cases = folder_cases(root, MALC_IMAGE, MALC_LABEL, MALC_ID)
    if not cases:
        raise DataError(f"{root}: no MALC cases ({MALC_IMAGE} with {MALC_LABEL}) found")
    path = resolve_path(cfg.get("split_file") or "split.json", base=root)
    split = read_split_file(path)
    rescans = split.get("rescans") or {}
    if not isinstance(rescans, dict):
        raise DataError(f"{path}: 'rescans' must map rescan id -> original subject id")
    rescans = {str(k): str(v) for k, v in rescans.items()}
    listed = {i for k in SPLITS for i in split.get(k, [])}
    for rescan, original in rescans.items():
        if rescan in listed:
            raise DataError(f"{path}: rescan {rescan!r} is listed in a split; expected rescans only under 'rescans'")
        if original not in listed:
            raise DataError(f"{path}: rescan {rescan!r} repeats {original!r}, which is in no split")
    for cid, case in list(cases.items()):
        if cid in rescans:
            cases[cid] = Case(
                id=case.id, image_paths=case.image_paths, label_path=case.label_path, subject=rescans[cid]
            )
    splits = apply_split(cases, split, path)
    include = {
        "test": bool(cfg.get("include_rescans_in_test", False)),
        "train": bool(cfg.get("include_rescans_in_train", False)),
        "val": bool(cfg.get("include_rescans_in_train", False)),
    }
    for key, chosen in splits.items():
        if not include[key]:
            continue
        originals = {c.id for c in chosen}
        chosen.extend(cases[r] for r, o in sorted(rescans.items()) if o in originals and r in cases)
    _warn_unused({k: v for k, v in cases.items() if k not in rescans}, splits, path)
    if not splits.get("train") and not splits.get("test"):
        raise DataError(f"{path}: every split is empty; expected at least one training case")
    return splits


# ---- CHAOS ----------------------------------------------------------------------------------------
CHAOS_IMAGE = "image_*.nii.gz"
CHAOS_LABEL = "label_*.nii.gz"
CHAOS_ID = r"^(?:image|label)_(.+?)\.nii\.gz$"


def chaos_layout(cfg: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Cases of the CHAOS T2 folder (``image_*.nii.gz`` / ``label_*.nii.gz``, its ``split.json`` by default)."""
    root = _root(cfg, "chaos")
    cases = folder_cases(root, CHAOS_IMAGE, CHAOS_LABEL, CHAOS_ID)
    return _split_cases(cases, {"split_file": cfg.get("split_file") or "split.json"}, root, "data.layout")


# ---- phantom --------------------------------------------------------------------------------------
def phantom_layout(cfg: Mapping[str, Any]) -> dict[str, list[Case]]:
    """Generate the phantom dataset once (content-addressed cache folder), then read it as a folder layout."""
    root = ensure_phantom_dataset(
        n_subjects=int(cfg.get("n_subjects", 20)),
        n_test=int(cfg.get("n_test", 5)),
        size=tuple(int(s) for s in cfg.get("size", (64, 64, 64))),
        seed=int(cfg.get("seed", 0)),
        generator=dict(cfg.get("generator") or {}),
        cache_dir=cfg.get("cache_dir"),
    )
    cases = folder_cases(root, PHANTOM_IMAGE_GLOB, PHANTOM_LABEL_GLOB, PHANTOM_CASE_ID)
    return _split_cases(cases, {"split_file": "split.json"}, root, "data.layout")


_LAYOUTS = {
    "folder": folder_layout,
    "nnunet": nnunet_layout,
    "malc": malc_layout,
    "chaos": chaos_layout,
    "phantom": phantom_layout,
}


def load_layout(cfg: Mapping) -> dict[str, list[Case]]:
    """The `data.layout` node -> {"train": [...], "test": [...]} (and "val" only if the layout defines it)."""
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise DataError(f"data.layout: expected a mapping, got {type(cfg).__name__}")
    kind = cfg.get("type")
    if kind not in _LAYOUTS:
        raise DataError(f"data.layout.type: got {kind!r}; expected one of {list(LAYOUT_TYPES)}")
    splits = _LAYOUTS[kind](cfg)
    if not any(splits.values()):
        raise DataError(f"data.layout ({kind}): the dataset is empty; expected at least one case")
    return {k: list(v) for k, v in splits.items()}
