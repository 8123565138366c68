"""The plain data types every data module shares, and the data vocabulary (split names, label dtypes).

Why this module exists: the file reader (`io`), the layouts, the preprocessing and the cache all speak of cases,
subjects and file geometries. Defining them here, in a module that imports nothing of scseg, lets each of those
modules import the types it needs without importing another module that imports it back (the cycle io ->
layouts -> label_map/phantom -> io closed by `Case` alone).

- `Case`: which files make one case (image file(s), optional label file), as a layout found them;
- `Subject`: one case read into memory in canonical RAS+ voxel order (`io.read_subject`);
- `Geometry`: the file's own grid, to put a canonical array back voxel for voxel (`io.to_original`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import inv_ornt_aff

# The dataset splits, in the order they are prepared and reported.
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    """One case: image file(s) (one per modality/channel) and an optional label file."""

    id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None
    subject: str | None = None  # the subject this case belongs to when it differs from id (MALC rescans)

    @property
    def subject_id(self) -> str:
        """The id splits group by: cases of one subject never end up in different splits."""
        return self.subject if self.subject is not None else self.id


@dataclass(frozen=True)
class Geometry:
    """What is needed to put a canonical array back into the file's own grid."""

    affine: np.ndarray  # the file's own 4x4 affine
    shape: tuple[int, int, int]  # the file's own spatial shape
    ornt_to_canonical: np.ndarray  # nibabel orientation transform (file -> RAS+ canonical), (3, 2)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Spatial shape after reorientation (the axes permuted as `ornt_to_canonical` says)."""
        shape = [0, 0, 0]
        for file_axis, (target_axis, _flip) in enumerate(self.ornt_to_canonical):
            shape[int(target_axis)] = self.shape[file_axis]
        return (shape[0], shape[1], shape[2])

    @property
    def canonical_affine(self) -> np.ndarray:
        """The 4x4 affine of the canonical (RAS+ voxel order) array."""
        return self.affine @ inv_ornt_aff(self.ornt_to_canonical, self.shape)


@dataclass
class Subject:
    """One subject in canonical RAS+ voxel order, with what is needed to go back to the file grid."""

    id: str
    image: np.ndarray  # float32, (M, X, Y, Z): modalities first, canonical RAS+ orientation
    label: np.ndarray | None  # RAW integer label ids (int32), (X, Y, Z), canonical; None without a label
    affine: np.ndarray  # canonical 4x4 affine
    spacing: tuple[float, float, float]  # canonical voxel size in mm
    geometry: Geometry  # the original file geometry (of the first image)
    image_paths: tuple[Path, ...]
    label_path: Path | None


def label_dtype(lo: int, hi: int) -> np.dtype:
    """The smallest of uint8 / int16 / int32 that holds every label value in ``[lo, hi]``.

    uint8 and int16 are also what OpenCV (the augmentation of label slices) and the cache handle; mapped labels
    (class indices ``0..K-1``) therefore stay within int16 (see `label_map.MAX_CLASSES`).
    """
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


__all__ = ["SPLITS", "Case", "Geometry", "Subject", "label_dtype"]
