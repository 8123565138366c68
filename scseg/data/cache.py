"""Content-keyed, atomically written cache of preprocessed subjects, and the class statistics built on it.

Why this module exists: preprocessing a volume takes seconds, training reads its slices thousands of
times. Each subject is stored once as .npy files (memory-mapped on read) plus a meta JSON, in
`$SCSEG_CACHE` (else `~/.cache/scseg`), never next to the data. The folder name is a hash of the raw
files (path, size, mtime_ns), every preprocessing setting, the label map and `PREPROCESS_VERSION`, so a
changed setting or a touched file can never be served stale. Entries are written into a temporary
folder beside the target (each file fsynced) and `os.rename`d into place whole; when two processes race, the
loser discards its copy, so nobody ever reads a half-written entry. A full disk ends in a `DiskFullError`
naming the entry, with no temporary folder left.

Class statistics: each entry's meta holds its per-class voxel counts and the voxel counts of the slices
containing each class (computed at preprocessing), so the training-set statistics are a cached sum.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scseg.atomic import DiskFullError, atomic_write, atomic_write_text, fsync_dir, is_disk_full
from scseg.data.errors import DataError
from scseg.data.io import read_subject
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import (
    PREPROCESS_VERSION,
    PreprocessedSubject,
    PreprocessMeta,
    PreprocessSettings,
    preprocess_subject,
)
from scseg.data.types import Case
from scseg.paths import CACHE_ENV, cache_root

IMAGE_FILE = "image.npy"
LABEL_FILE = "label.npy"
META_FILE = "meta.json"
# Size and SHA-1 of each array file, written with the entry: a file changed afterwards (a disk error, a copy cut
# short, a stray write) is detected when the entry is opened, and the entry is rebuilt with a warning. Entries
# written before this file existed are trusted as they are.
INTEGRITY_FILE = "integrity.json"


def _digest(path: Path) -> dict[str, Any]:
    sha1 = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha1.update(block)
    return {"size": path.stat().st_size, "sha1": sha1.hexdigest()}


def integrity_problem(path: Path) -> str | None:
    """Why the entry at ``path`` fails its recorded sizes and checksums, or None when it passes (or predates them)."""
    record_path = path / INTEGRITY_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable {INTEGRITY_FILE} ({err})"
    for name, expected in record.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} has {file.stat().st_size} bytes, {expected['size']} were written"
        if _digest(file)["sha1"] != expected["sha1"]:
            return f"{name} differs from what was written (checksum)"
    return None


SUBJECTS_DIR = "subjects"


def file_fingerprint(path: str | os.PathLike) -> list[Any]:
    """(resolved path, size, mtime_ns): changes when the file is replaced or touched."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise DataError(f"{p}: cannot read the file ({err.strerror}); expected an existing image/label file") from err
    return [str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)]


def label_map_fingerprint(label_map: LabelMap) -> dict[str, Any]:
    """The parts of a LabelMap that change the mapped labels, in a stable JSON-able form."""
    return {
        "class_names": list(label_map.class_names),
        "raw_to_class": sorted((int(k), int(v)) for k, v in label_map.raw_to_class.items()),
        "unknown": str(label_map.unknown),
    }


def cache_key(case: Case, settings: PreprocessSettings, label_map: LabelMap, allow_4d_channels: bool = False) -> str:
    """Hash of the raw files, every preprocessing setting, the label map and PREPROCESS_VERSION."""
    payload = {
        "version": PREPROCESS_VERSION,
        "images": [file_fingerprint(p) for p in case.image_paths],
        "label": None if case.label_path is None else file_fingerprint(case.label_path),
        "settings": settings.to_dict(),
        "label_map": label_map_fingerprint(label_map),
        "allow_4d_channels": bool(allow_4d_channels),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class CachedSubject(PreprocessedSubject):
    """A PreprocessedSubject memory-mapped from a cache entry.

    Pickling it (DataLoader workers started with spawn, DDP) sends only the entry path and metadata; the
    arrays are re-mapped on the other side instead of being copied.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["image"] = state["label"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.image is None and self.path is not None:
            self.image, self.label = load_arrays(self.path)


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Memory-map an entry's image and (if present) label."""
    image = np.load(path / IMAGE_FILE, mmap_mode="r")
    label_file = path / LABEL_FILE
    label = np.load(label_file, mmap_mode="r") if label_file.exists() else None
    return image, label


def load_entry(path: Path) -> CachedSubject:
    """Read a complete cache entry (arrays memory-mapped)."""
    try:
        meta = PreprocessMeta.from_dict(json.loads((path / META_FILE).read_text()))
        image, label = load_arrays(path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise DataError(f"{path}: unreadable cache entry ({err}); delete this folder to rebuild it") from err
    return CachedSubject(id=meta.id, image=image, label=label, meta=meta, path=path)


def write_entry(subject: PreprocessedSubject, target: Path) -> Path:
    """Write `subject` to `target` atomically: a temporary sibling folder, its files fsynced, renamed into place.

    If `target` appeared meanwhile (another process won the race), our copy is discarded. A full disk raises
    DiskFullError naming the entry's file and leaves no temporary folder.
    """
    image = np.ascontiguousarray(subject.image, dtype=np.float32)
    label = None if subject.label is None else np.ascontiguousarray(subject.label)
    meta = json.dumps(subject.meta.to_dict(), indent=1)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        atomic_write(tmp / IMAGE_FILE, lambda f: np.save(f, image))
        if label is not None:
            atomic_write(tmp / LABEL_FILE, lambda f: np.save(f, label))
        atomic_write_text(tmp / META_FILE, meta)
        arrays = [IMAGE_FILE] + ([LABEL_FILE] if label is not None else [])
        atomic_write_text(tmp / INTEGRITY_FILE, json.dumps({name: _digest(tmp / name) for name in arrays}))
        try:
            os.rename(tmp, target)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                raise
        fsync_dir(target.parent)
    except OSError as err:
        if is_disk_full(err):
            name = Path(err.filename).name if err.filename and Path(err.filename).parent == tmp else ""
            hint = f" in {target.parent} (or point ${CACHE_ENV} at a disk with room)"
            raise DiskFullError(target / name, err.errno, hint=hint) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "subject"


class SubjectCache:
    """Prepare-once, memory-map-after access to preprocessed subjects under one cache root."""

    def __init__(
        self,
        root: str | os.PathLike | None,
        settings: PreprocessSettings,
        label_map: LabelMap,
        allow_4d_channels: bool = False,
    ) -> None:
        self.root = cache_root(root)
        self.settings = settings
        self.label_map = label_map
        self.allow_4d_channels = allow_4d_channels

    def entry_path(self, case: Case) -> Path:
        key = cache_key(case, self.settings, self.label_map, self.allow_4d_channels)
        return self.root / SUBJECTS_DIR / f"{_safe_name(case.id)}-{key}"

    def get(self, case: Case) -> CachedSubject:
        """The cached subject; reads and preprocesses it first if the entry does not exist, or again (with a warning
        naming the subject) if the entry fails its recorded sizes and checksums."""
        path = self.entry_path(case)
        problem = integrity_problem(path) if path.is_dir() else None
        if problem is not None:
            warnings.warn(
                f"subject {case.id}: its cache entry {path} is corrupted ({problem}); rebuilding it", stacklevel=2
            )
            shutil.rmtree(path, ignore_errors=True)
        if not path.is_dir():
            subject = read_subject(case, allow_4d_channels=self.allow_4d_channels)
            write_entry(preprocess_subject(subject, self.settings, self.label_map), path)
        return load_entry(path)


@dataclass(frozen=True)
class ClassStatistics:
    """Summed per-class counts over a set of subjects (see preprocess.class_statistics)."""

    class_names: tuple[str, ...]
    voxels: np.ndarray  # int64 (K,)
    slice_voxels: np.ndarray  # int64 (K,)

    def weights(self) -> np.ndarray:
        return median_frequency_weights(self.voxels, self.slice_voxels, self.class_names)


def class_statistics_of(subjects: Sequence[PreprocessedSubject], class_names: Sequence[str]) -> ClassStatistics:
    """Sum the per-subject statistics cached in each entry's meta; every subject must have a label."""
    k = len(class_names)
    voxels = np.zeros(k, dtype=np.int64)
    slice_voxels = np.zeros(k, dtype=np.int64)
    for s in subjects:
        m = s.meta
        if m.class_voxels is None or m.class_slice_voxels is None:
            raise DataError(f"subject {s.id}: has no label, so it cannot contribute class statistics")
        if len(m.class_voxels) != k:
            raise DataError(f"subject {s.id}: statistics for {len(m.class_voxels)} classes, expected {k}")
        voxels += np.asarray(m.class_voxels, dtype=np.int64)
        slice_voxels += np.asarray(m.class_slice_voxels, dtype=np.int64)
    return ClassStatistics(tuple(class_names), voxels, slice_voxels)


def median_frequency_weights(
    voxels: Sequence[int] | np.ndarray,
    slice_voxels: Sequence[int] | np.ndarray,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Median-frequency class weights (Eigen & Fergus): w_c = median_k(f_k) / f_c, float64.

    f_c = voxels of class c / voxels of the slices that contain c. The median runs over the classes
    present; an absent class gets weight 0 and a warning naming it.
    """
    v = np.asarray(voxels, dtype=np.float64)
    sv = np.asarray(slice_voxels, dtype=np.float64)
    if v.shape != sv.shape or v.ndim != 1:
        raise ValueError(f"median_frequency_weights: shapes {v.shape} and {sv.shape} differ or are not 1-D")
    names = list(class_names) if class_names is not None else [str(i) for i in range(v.size)]
    present = v > 0
    if np.any(present & (sv <= 0)):
        raise ValueError("median_frequency_weights: a class with voxels has no slice voxels")
    weights = np.zeros_like(v)
    if not present.any():
        raise DataError("class weights: no class occurs in the training labels")
    freq = v[present] / sv[present]
    weights[present] = np.median(freq) / freq
    absent = [names[i] for i in np.flatnonzero(~present)]
    if absent:
        warnings.warn(
            f"class weights: classes absent from the training labels get weight 0: {', '.join(absent)}",
            stacklevel=2,
        )
    return weights
