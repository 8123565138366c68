"""Per-subject preprocessing (resample, scale to [0, 1], map labels, crop, pad) and its exact inverse.

Why this module exists: the network sees cropped, padded, possibly resampled volumes, but Dice is
computed in the file's own grid. Every geometric step taken here is recorded in `PreprocessMeta` so that
`invert_to_canonical` can put a prediction back voxel for voxel (then `io.to_original` restores the file's
orientation). The crop box is computed from the IMAGE only, so the same crop is available at prediction
time when there is no label; with a label we check that no labelled voxel falls outside it.

Order of operations (canonical RAS+ volumes from `io.read_subject`):
  1. optional resampling to `target_spacing` (linear for the image, nearest for the label);
  2. intensity scaling to [0, 1] per modality with per-subject statistics (`percentile` / `minmax` /
     `ct_window`); z-score normalisation happens later, after augmentation (see `augment.normalize_image`);
  3. label mapping raw ids -> class indices (`LabelMap.apply`);
  4. crop to the bounding box of the image foreground (any modality > `foreground_threshold` after
     scaling) plus `crop_margin` voxels, clipped to the volume, along all three axes;
  5. zero padding of the two in-plane axes (those other than the slice axis) to `pad_size`, centred.

The slice axis is resolved per subject (`resolve_slice_axis`): a named anatomical axis, or `acquisition`, the
axis with the largest spacing of the subject's own (preprocessed) grid, i.e. the scanner's slice direction, which
on oblique data is a different canonical axis from subject to subject. It is recorded in `PreprocessMeta.slice_axis`
and everything downstream (slices, class statistics, stacking predictions) reads it from there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scseg.data.errors import DataError
from scseg.data.io import to_original
from scseg.data.label_map import LabelMap
from scseg.data.types import Geometry, Subject
from scseg.plain import to_plain

# Bump whenever the preprocessing code changes what it writes: it is part of every cache key.
PREPROCESS_VERSION = 2

AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
ACQUISITION = "acquisition"  # slice along each subject's coarsest voxel axis (see resolve_slice_axis)
SLICE_AXES = (*AXES, ACQUISITION)
INTENSITY_MODES = ("percentile", "minmax", "ct_window")
# How a prediction returns to the file's grid when preprocessing resampled the subject: ``linear`` interpolates
# every class's probability trilinearly and takes the arg-max there (nnU-Net's way: smooth boundaries at the finer
# grid), ``nearest`` takes the arg-max on the coarse grid and copies labels by nearest neighbour (blocky boundaries:
# 2 mm -> 1 mm costs MALC's U-Net ~3 points of mean Dice). Without resampling both are the same arg-max.
RESTORE_MODES = ("linear", "nearest")


def axis_index(axis: str | int) -> int:
    """Slice axis name ('axial' = canonical Z, 'coronal' = Y, 'sagittal' = X) -> array axis of (X, Y, Z)."""
    if isinstance(axis, int) and axis in (0, 1, 2):
        return axis
    if axis not in AXES:
        raise DataError(f"data.slices.axis: unknown axis {axis!r}; expected one of {sorted(AXES)}")
    return AXES[axis]


def check_slice_axis(axis: str) -> str:
    """Validate a `data.slices.axis` value (a named anatomical axis or `acquisition`)."""
    if axis not in SLICE_AXES:
        raise DataError(f"data.slices.axis: unknown axis {axis!r}; expected one of {list(SLICE_AXES)}")
    return axis


def resolve_slice_axis(
    axis: str, spacing: Sequence[float], fallback_axis: str = "axial", anisotropy_threshold: float = 1.5
) -> int:
    """The array axis (0, 1, 2 of canonical X, Y, Z) one subject is sliced along.

    A named axis is taken as is. `acquisition` takes the axis with the largest spacing (the scanner's slice
    direction, as nnU-Net's 2D configuration does) when the largest spacing is at least `anisotropy_threshold`
    times the smallest; isotropic-enough data fall back to `fallback_axis`.
    """
    check_slice_axis(axis)
    if axis != ACQUISITION:
        return AXES[axis]
    sp = [float(v) for v in spacing]
    if max(sp) < anisotropy_threshold * min(sp):
        return axis_index(fallback_axis)
    return int(np.argmax(sp))


def in_plane_axes(axis: str | int) -> tuple[int, int]:
    """The two volume axes that span a slice, in array order."""
    a = axis_index(axis)
    first, second = (i for i in range(3) if i != a)
    return first, second


@dataclass(frozen=True)
class IntensitySettings:
    """How the raw image is scaled to [0, 1] (statistics per subject and per modality)."""

    mode: str = "percentile"  # percentile | minmax | ct_window
    percentiles: tuple[float, float] = (0.5, 99.5)  # for `percentile`: clip to these, then min-max
    window: tuple[float, float] = (-160.0, 240.0)  # for `ct_window`: [lo, hi] in HU

    def __post_init__(self) -> None:
        if self.mode not in INTENSITY_MODES:
            raise DataError(
                f"data.preprocess.intensity.mode: unknown mode {self.mode!r}; expected one of {INTENSITY_MODES}"
            )
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise DataError(
                f"data.preprocess.intensity.percentiles: expected 0 <= low < high <= 100, got {self.percentiles}"
            )
        if not self.window[0] < self.window[1]:
            raise DataError(f"data.preprocess.intensity.window: expected [lo, hi] with lo < hi, got {self.window}")


@dataclass(frozen=True)
class PreprocessSettings:
    """Every knob of preprocessing; all of it goes into the cache key."""

    axis: str = "axial"  # slice axis (or `acquisition`): which two axes are padded, how class statistics count slices
    fallback_axis: str = "axial"  # `acquisition` on data whose spacing is isotropic enough
    anisotropy_threshold: float = 1.5  # `acquisition`: largest / smallest spacing at which the data count as sliced
    # mm, canonical (X, Y, Z); None = keep the subject's grid; a None entry keeps that axis's own spacing
    target_spacing: tuple[float | None, float | None, float | None] | None = None
    crop_margin: int = 8  # voxels added on each side of the image-foreground bounding box
    foreground_threshold: float = 0.05  # on the [0, 1]-scaled image: any modality above it is foreground
    pad_size: tuple[int, int] | None = None  # in-plane size (H, W) after padding; None = no padding
    intensity: IntensitySettings = field(default_factory=IntensitySettings)

    def __post_init__(self) -> None:
        check_slice_axis(self.axis)
        axis_index(self.fallback_axis)
        if not self.anisotropy_threshold >= 1.0:
            raise DataError(f"data.slices.anisotropy_threshold: expected a ratio >= 1, got {self.anisotropy_threshold}")
        if self.target_spacing is not None and (
            len(self.target_spacing) != 3 or any(s is not None and s <= 0 for s in self.target_spacing)
        ):
            raise DataError(
                f"data.preprocess.target_spacing: expected null or three positive numbers (mm, null = keep that "
                f"axis), "
                f"got {self.target_spacing}"
            )
        if self.crop_margin < 0:
            raise DataError(f"data.preprocess.crop_margin: expected >= 0 voxels, got {self.crop_margin}")
        if self.pad_size is not None and (len(self.pad_size) != 2 or any(s < 1 for s in self.pad_size)):
            raise DataError(f"data.preprocess.pad_size: expected null or [H, W] > 0, got {self.pad_size}")

    @classmethod
    def from_config(cls, cfg_data: Mapping) -> PreprocessSettings:
        """Read `data.preprocess` and `data.slices.axis` from the composed data config."""
        pre = to_plain(cfg_data.get("preprocess") or {})
        slices = to_plain(cfg_data.get("slices") or {})
        known = {"target_spacing", "crop_margin", "foreground_threshold", "pad_size", "intensity"}
        unknown = set(pre) - known
        if unknown:
            raise DataError(f"data.preprocess: unknown keys {sorted(unknown)}; expected {sorted(known)}")
        inten = dict(pre.get("intensity") or {})
        unknown = set(inten) - {"mode", "percentiles", "window"}
        if unknown:
            raise DataError(
                f"data.preprocess.intensity: unknown keys {sorted(unknown)}; expected mode, percentiles, window"
            )
        intensity = IntensitySettings(
            mode=str(inten.get("mode", IntensitySettings.mode)),
            percentiles=_floats(inten.get("percentiles", IntensitySettings.percentiles), 2, "percentiles"),
            window=_floats(inten.get("window", IntensitySettings.window), 2, "window"),
        )
        ts = pre.get("target_spacing")
        pad = pre.get("pad_size")
        return cls(
            axis=str(slices.get("axis", cls.axis)),
            fallback_axis=str(slices.get("fallback_axis") or cls.fallback_axis),
            anisotropy_threshold=float(slices.get("anisotropy_threshold") or cls.anisotropy_threshold),
            target_spacing=None
            if ts is None
            else tuple(None if v is None else float(v) for v in _seq(ts, 3, "target_spacing")),  # type: ignore
            crop_margin=int(pre.get("crop_margin", cls.crop_margin)),
            foreground_threshold=float(pre.get("foreground_threshold", cls.foreground_threshold)),
            pad_size=None if pad is None else tuple(int(v) for v in _seq(pad, 2, "pad_size")),  # type: ignore
            intensity=intensity,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-normalised (tuples as lists), so it equals itself after a round trip through meta.json."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _seq(value: Any, n: int, name: str) -> Sequence:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value] * n
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n:
        raise DataError(f"data.preprocess.{name}: expected {n} numbers, got {value!r}")
    return value


def _floats(value: Any, n: int, name: str) -> tuple:
    return tuple(float(v) for v in _seq(value, n, name))


@dataclass
class PreprocessMeta:
    """Everything needed to invert preprocessing and to weight classes; stored as JSON in the cache."""

    id: str
    settings: dict[str, Any]
    version: int
    canonical_shape: tuple[int, int, int]  # shape of io's canonical volume (before resampling)
    canonical_spacing: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]  # equals canonical_shape without resampling
    spacing: tuple[float, float, float]  # spacing of the preprocessed grid
    crop: tuple[tuple[int, int], ...]  # [start, stop) per axis in the resampled grid
    pad: tuple[tuple[int, int], ...]  # (before, after) per axis
    shape: tuple[int, int, int]  # preprocessed spatial shape
    modalities: int
    intensity_range: tuple[tuple[float, float], ...]  # raw (lo, hi) mapped to (0, 1), per modality
    norm_mean: tuple[float, ...]  # per modality, scaled image inside the foreground mask
    norm_std: tuple[float, ...]
    geometry: dict[str, Any]  # io.Geometry fields (affine, shape, ornt_to_canonical) as lists
    image_paths: tuple[str, ...]
    label_path: str | None
    num_classes: int
    class_voxels: tuple[int, ...] | None = None  # per class voxel count (None without label)
    class_slice_voxels: tuple[int, ...] | None = None  # per class: voxels of the slices containing it
    slice_axis: int = 2  # array axis this subject is sliced along (resolve_slice_axis)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessMeta:
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (v if k in ("settings", "geometry") else tup(v)) for k, v in d.items() if k in names}
        return cls(**kwargs)

    @property
    def has_label(self) -> bool:
        return self.class_voxels is not None

    @property
    def in_plane_shape(self) -> tuple[int, int]:
        """(H, W) of one slice of the preprocessed volume."""
        first, second = in_plane_axes(self.slice_axis)
        return int(self.shape[first]), int(self.shape[second])

    def to_geometry(self) -> Geometry:
        """Rebuild the file's Geometry (for io.to_original / io.write_label) without re-reading the file."""
        g = self.geometry
        return Geometry(
            affine=np.asarray(g["affine"], dtype=np.float64),
            shape=tuple(int(s) for s in g["shape"]),
            ornt_to_canonical=np.asarray(g["ornt_to_canonical"], dtype=np.float64),
        )


@dataclass
class PreprocessedSubject:
    """A preprocessed subject: image (M, X, Y, Z) float32 in [0, 1], label (X, Y, Z) class indices or None.

    `path` is the cache entry when the arrays are memory-mapped from the cache (see cache.CachedSubject).
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None
    meta: PreprocessMeta
    path: Path | None = None


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Grid size that covers the same extent at the target spacing."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))  # type: ignore


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(M, X, Y, Z) float -> (M, *shape) by trilinear interpolation (cell-centre aligned)."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=False)
    return out[0].numpy()


def resample_label(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(X, Y, Z) integer -> shape by nearest neighbour (cell-centre aligned 'nearest-exact')."""
    if tuple(label.shape) == tuple(shape):
        return np.array(label, copy=True)
    if np.abs(label).max(initial=0) >= 2**24:
        raise DataError("resample_label: label ids >= 2**24 cannot be resampled exactly")
    t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="nearest-exact")
    return out[0, 0].numpy().round().astype(label.dtype)


def scale_intensity(
    image: np.ndarray, settings: IntensitySettings, subject_id: str = "?"
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Scale each modality of (M, X, Y, Z) to [0, 1]; returns the scaled image and the raw (lo, hi) used."""
    out = np.empty(image.shape, dtype=np.float32)
    ranges: list[tuple[float, float]] = []
    for m in range(image.shape[0]):
        x = image[m]
        if not np.isfinite(x).all():
            raise DataError(f"subject {subject_id}: modality {m} contains NaN or infinite values")
        if settings.mode == "percentile":
            lo, hi = (float(v) for v in np.percentile(x, settings.percentiles))
        elif settings.mode == "minmax":
            lo, hi = float(x.min()), float(x.max())
        else:
            lo, hi = settings.window
        if not hi > lo:
            raise DataError(
                f"subject {subject_id}: modality {m} has no intensity range to scale "
                f"({settings.mode}: lo={lo}, hi={hi}); is the image constant?"
            )
        out[m] = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
        ranges.append((lo, hi))
    return out, ranges


def foreground_mask(image01: np.ndarray, threshold: float) -> np.ndarray:
    """Image-derived foreground: any modality of the [0, 1]-scaled image above `threshold`."""
    return (image01 > threshold).any(axis=0)


def crop_box(mask: np.ndarray, margin: int) -> tuple[tuple[int, int], ...]:
    """Bounding box [start, stop) of `mask` grown by `margin` and clipped; whole volume if mask is empty."""
    if not mask.any():
        return tuple((0, n) for n in mask.shape)
    box = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((max(0, int(hits[0]) - margin), min(mask.shape[ax], int(hits[-1]) + 1 + margin)))
    return tuple(box)


def class_statistics(label: np.ndarray, num_classes: int, axis: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: voxel count, and the voxel count of the slices (along `axis`) that contain the class.

    Both int64 arrays of length K; the inputs of the median-frequency weights (see cache.class_weights).
    """
    a = axis_index(axis)
    lab = np.moveaxis(np.asarray(label), a, 0).reshape(label.shape[a], -1).astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise DataError(f"class_statistics: label values outside 0..{num_classes - 1}")
    n_slices, area = lab.shape
    per_slice = np.bincount(
        (np.arange(n_slices, dtype=np.int64)[:, None] * num_classes + lab).ravel(),
        minlength=n_slices * num_classes,
    ).reshape(n_slices, num_classes)
    voxels = per_slice.sum(axis=0)
    slice_voxels = (per_slice > 0).sum(axis=0).astype(np.int64) * area
    return voxels.astype(np.int64), slice_voxels


def _geometry_dict(geometry: Any) -> dict[str, Any]:
    return {
        "affine": np.asarray(geometry.affine, dtype=np.float64).tolist(),
        "shape": [int(s) for s in geometry.shape],
        "ornt_to_canonical": np.asarray(geometry.ornt_to_canonical).tolist(),
    }


def _subject_arrays(subject: Subject) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The subject's image (M, X, Y, Z), raw label (or None) and the name of its label source, shapes checked."""
    image = np.asarray(subject.image)
    if image.ndim != 4:
        raise DataError(f"subject {subject.id}: expected image (M, X, Y, Z), got shape {image.shape}")
    label_src = str(subject.label_path) if subject.label_path is not None else subject.id
    raw_label = None if subject.label is None else np.asarray(subject.label)
    canonical_shape = tuple(int(s) for s in image.shape[1:])
    if raw_label is not None and tuple(raw_label.shape) != canonical_shape:
        raise DataError(f"{label_src}: label shape {tuple(raw_label.shape)} differs from image shape {canonical_shape}")
    return image, raw_label, label_src


def resample_subject(
    image: np.ndarray,
    raw_label: np.ndarray | None,
    spacing: tuple[float, float, float],
    target_spacing: tuple[float | None, float | None, float | None] | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int], tuple[float, float, float]]:
    """Step 1: resample image (linear) and raw label (nearest) to ``target_spacing`` (None: keep the grid; a None
    entry keeps that axis's own spacing, e.g. the thick slices of an anisotropic scan).

    Returns the image, the label, the resampled shape and its exact spacing (the extent kept, on a whole grid).
    """
    canonical_shape = tuple(int(s) for s in image.shape[1:])
    if target_spacing is None:
        return image, raw_label, canonical_shape, spacing  # type: ignore[return-value]
    target = [own if wanted is None else wanted for own, wanted in zip(spacing, target_spacing, strict=True)]
    shape = resampled_shape(canonical_shape, spacing, target)
    if shape != canonical_shape:
        image = resample_image(image, shape)
        if raw_label is not None:
            raw_label = resample_label(raw_label, shape)
    new_spacing = tuple(s * n / m for s, n, m in zip(spacing, canonical_shape, shape, strict=True))
    return image, raw_label, shape, new_spacing  # type: ignore[return-value]


def map_labels(raw_label: np.ndarray | None, label_map: LabelMap, source: str) -> np.ndarray | None:
    """Step 3: raw label ids -> class indices (``label_map.out_dtype``); None stays None (prediction)."""
    if raw_label is None:
        return None
    return np.asarray(label_map.apply(raw_label, source))


def crop_to_foreground(
    image01: np.ndarray,
    label: np.ndarray | None,
    settings: PreprocessSettings,
    subject_id: str,
    label_src: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[tuple[int, int], ...]]:
    """Step 4: crop image, foreground mask and label to the image-foreground box grown by ``crop_margin``.

    The box comes from the image alone (so prediction crops alike); a labelled voxel outside it is an error.
    Returns the cropped image, mask and label and the box ([start, stop) per axis).
    """
    mask = foreground_mask(image01, settings.foreground_threshold)
    box = crop_box(mask, settings.crop_margin)
    sl = tuple(slice(a, b) for a, b in box)
    if label is not None:
        total = int(np.count_nonzero(label))
        inside = int(np.count_nonzero(label[sl]))
        if inside != total:
            raise DataError(
                f"{label_src}: {total - inside} labelled voxels lie outside the image-foreground crop box "
                f"{[list(b) for b in box]} of subject {subject_id}; lower data.preprocess.foreground_threshold "
                f"(now {settings.foreground_threshold}) or raise data.preprocess.crop_margin "
                f"(now {settings.crop_margin})"
            )
        label = label[sl]
    return image01[(slice(None), *sl)], mask[sl], label, box


def pad_in_plane(
    image01: np.ndarray,
    mask: np.ndarray,
    label: np.ndarray | None,
    pad_size: tuple[int, int] | None,
    slice_axis: int,
    subject_id: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[tuple[int, int]]]:
    """Step 5: zero-pad the two in-plane axes (those other than ``slice_axis``) to ``pad_size``, centred.

    Returns the padded image, mask and label and the (before, after) padding per axis (all zero without a
    ``pad_size``).
    """
    pad = [(0, 0), (0, 0), (0, 0)]
    if pad_size is None:
        return image01, mask, label, pad
    cropped = image01.shape[1:]
    planes = in_plane_axes(slice_axis)
    needed = [max(pad_size[i], cropped[ax]) for i, ax in enumerate(planes)]
    if any(cropped[ax] > pad_size[i] for i, ax in enumerate(planes)):
        raise DataError(
            f"subject {subject_id}: cropped in-plane size {[cropped[ax] for ax in planes]} exceeds "
            f"data.preprocess.pad_size {list(pad_size)}; a pad_size of at least {needed} is needed"
        )
    for i, ax in enumerate(planes):
        extra = pad_size[i] - cropped[ax]
        pad[ax] = (extra // 2, extra - extra // 2)
    image01 = np.pad(image01, [(0, 0), *pad])
    mask = np.pad(mask, pad)
    if label is not None:
        label = np.pad(label, pad)
    return image01, mask, label, pad


def normalisation_statistics(image01: np.ndarray, mask: np.ndarray) -> tuple[list[float], list[float]]:
    """Per modality: mean and std of the scaled image inside the foreground mask (whole image if the mask is
    empty; a std below 1e-6 becomes 1). The z-score itself is applied after augmentation, in the dataset."""
    means, stds = [], []
    for m in range(image01.shape[0]):
        values = image01[m][mask] if mask.any() else image01[m].ravel()
        means.append(float(values.mean()))
        std = float(values.std())
        stds.append(std if std > 1e-6 else 1.0)
    return means, stds


def label_statistics(
    label: np.ndarray | None, num_classes: int, slice_axis: int
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """Per class: voxels, and voxels of the slices containing the class (see :func:`class_statistics`); None
    without a label."""
    if label is None:
        return None, None
    v, s = class_statistics(label, num_classes, slice_axis)
    return tuple(int(x) for x in v), tuple(int(x) for x in s)


def preprocess_subject(subject: Subject, settings: PreprocessSettings, label_map: LabelMap) -> PreprocessedSubject:
    """Run steps 1-5 (module docstring) on one subject read by io; label may be None (prediction)."""
    image, raw_label, label_src = _subject_arrays(subject)
    canonical_shape = tuple(int(s) for s in image.shape[1:])
    spacing = tuple(float(s) for s in subject.spacing)
    image, raw_label, shape, new_spacing = resample_subject(image, raw_label, spacing, settings.target_spacing)
    slice_axis = resolve_slice_axis(settings.axis, new_spacing, settings.fallback_axis, settings.anisotropy_threshold)
    image01, ranges = scale_intensity(image, settings.intensity, subject.id)
    label = map_labels(raw_label, label_map, label_src)
    image01, mask, label, box = crop_to_foreground(image01, label, settings, subject.id, label_src)
    image01, mask, label, pad = pad_in_plane(image01, mask, label, settings.pad_size, slice_axis, subject.id)
    means, stds = normalisation_statistics(image01, mask)
    voxels, slice_voxels = label_statistics(label, label_map.num_classes, slice_axis)
    meta = PreprocessMeta(
        id=subject.id,
        settings=settings.to_dict(),
        version=PREPROCESS_VERSION,
        canonical_shape=canonical_shape,  # type: ignore[arg-type]
        canonical_spacing=spacing,  # type: ignore[arg-type]
        resampled_shape=shape,
        spacing=new_spacing,
        crop=tuple(box),
        pad=tuple(tuple(p) for p in pad),
        shape=tuple(int(s) for s in image01.shape[1:]),  # type: ignore[arg-type]
        modalities=int(image01.shape[0]),
        intensity_range=tuple(ranges),
        norm_mean=tuple(means),
        norm_std=tuple(stds),
        geometry=_geometry_dict(subject.geometry),
        image_paths=tuple(str(p) for p in subject.image_paths),
        label_path=None if subject.label_path is None else str(subject.label_path),
        num_classes=label_map.num_classes,
        class_voxels=voxels,
        class_slice_voxels=slice_voxels,
        slice_axis=slice_axis,
    )
    return PreprocessedSubject(
        id=subject.id, image=np.ascontiguousarray(image01, dtype=np.float32), label=label, meta=meta
    )


def resamples(meta: PreprocessMeta) -> bool:
    """Whether preprocessing changed the subject's grid (so that the way back needs interpolation)."""
    return tuple(meta.resampled_shape) != tuple(meta.canonical_shape)


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's linear interpolation along one axis (``align_corners=False``, output size given) as taps: for each
    output index the two source indices and the weight of the second, ``out = (1 - w) * in[i0] + w * in[i1]``."""
    scale = np.float32(n_in) / np.float32(n_out)  # in float32, as PyTorch's CPU kernel computes it
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def _resize_linear(block: torch.Tensor, taps: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> torch.Tensor:
    """Trilinear resize of ``block`` one axis at a time, each axis by its taps (indices relative to ``block``)."""
    out = block
    for axis, (i0, i1, w) in enumerate(taps):
        shape = [1, 1, 1]
        shape[axis] = len(w)
        low = out.index_select(axis, torch.from_numpy(i0))
        out = torch.lerp(low, out.index_select(axis, torch.from_numpy(i1)), torch.from_numpy(w).reshape(shape))
    return out


def invert_probabilities_to_canonical(probabilities: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """Class probabilities ``(K, *meta.shape)`` in the preprocessed grid -> arg-max labels in the canonical grid.

    Padding and cropping are undone (outside the crop box: background with probability 1), then each class is
    interpolated trilinearly to the canonical grid and the arg-max is kept as it goes. Ties go to the lower class
    index, as in ``argmax``. Use it for ``RESTORE_MODES`` ``linear``; without resampling it equals
    ``invert_to_canonical`` of the arg-max.

    Why it is fast: interpolated probabilities still sum to 1, so the winner at every voxel has at least 1/K, and a
    voxel whose coarse neighbours all give class k less than 1/K can never be k's. Each foreground class is
    therefore interpolated only inside the box around its coarse voxels with probability >= 1/K (a small
    structure's neighbourhood, not the whole head), and a class that never reaches 1/K costs nothing. The
    interpolation is PyTorch's trilinear one (same taps), done axis by axis on the box; memory stays at a few
    canonical-sized volumes.
    """
    probs = np.asarray(probabilities)
    if probs.ndim != 4 or tuple(probs.shape[1:]) != tuple(meta.shape):
        raise DataError(
            f"subject {meta.id}: probabilities of shape {tuple(probs.shape)}, expected (classes, "
            f"{', '.join(str(s) for s in meta.shape)})"
        )
    num_classes = probs.shape[0]
    label_dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
    unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, meta.shape, strict=True))
    inside = tuple(slice(a, b) for a, b in meta.crop)
    if not resamples(meta):
        full = np.zeros(tuple(meta.resampled_shape), dtype=label_dtype)
        full[inside] = probs[(slice(None), *unpad)].argmax(axis=0)
        return full
    coarse_shape = tuple(int(s) for s in meta.resampled_shape)
    size = tuple(int(s) for s in meta.canonical_shape)
    taps = [linear_taps(n_in, n_out) for n_in, n_out in zip(coarse_shape, size, strict=True)]
    background = torch.ones(coarse_shape, dtype=torch.float32)
    background[inside] = torch.from_numpy(np.ascontiguousarray(probs[(0, *unpad)], dtype=np.float32))
    best = _resize_linear(background, taps)
    labels = torch.zeros(size, dtype=torch.int16 if label_dtype == np.int16 else torch.int32)
    floor = 1.0 / num_classes
    for k in range(1, num_classes):
        class_probs = np.ascontiguousarray(probs[(k, *unpad)], dtype=np.float32)
        reach = np.nonzero(class_probs >= floor)
        if reach[0].size == 0:
            continue  # below 1/K everywhere: never the arg-max
        fine, coarse, box_taps = [], [], []
        for axis, (i0, i1, w) in enumerate(taps):
            lo = int(reach[axis].min()) + meta.crop[axis][0]  # the class's coarse box in the resampled grid
            hi = int(reach[axis].max()) + meta.crop[axis][0]
            start, stop = int(np.searchsorted(i1, lo, "left")), int(np.searchsorted(i0, hi, "right"))
            first, last = int(i0[start]), int(i1[stop - 1])  # the coarse voxels those fine voxels read
            fine.append(slice(start, stop))
            coarse.append(slice(first, last + 1))
            box_taps.append((i0[start:stop] - first, i1[start:stop] - first, w[start:stop]))
        grid = torch.zeros(coarse_shape, dtype=torch.float32)
        grid[inside] = torch.from_numpy(class_probs)
        up = _resize_linear(grid[tuple(coarse)], box_taps)
        best_box, labels_box = best[tuple(fine)], labels[tuple(fine)]
        better = up > best_box
        labels_box.masked_fill_(better, k)
        torch.maximum(best_box, up, out=best_box)
    return labels.numpy()


def invert_to_canonical(pred_volume: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """Undo padding, cropping and resampling (nearest) of a label volume in the preprocessed grid.

    Returns an array of the subject's canonical shape (background 0 outside the crop); pass it to
    `io.to_original(array, meta.to_geometry())` for the file's own grid.
    """
    pred = np.asarray(pred_volume)
    if tuple(pred.shape) != tuple(meta.shape):
        raise DataError(
            f"subject {meta.id}: prediction shape {tuple(pred.shape)} differs from the preprocessed shape "
            f"{tuple(meta.shape)}"
        )
    unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, pred.shape, strict=True))
    pred = pred[unpad]
    full = np.zeros(tuple(meta.resampled_shape), dtype=pred.dtype)
    full[tuple(slice(a, b) for a, b in meta.crop)] = pred
    if tuple(meta.resampled_shape) != tuple(meta.canonical_shape):
        full = resample_label(full, meta.canonical_shape)
    return full


def restore(stacked: np.ndarray, meta: PreprocessMeta, mode: str = "linear", grid: str = "file") -> np.ndarray:
    """The one way back from the preprocessed grid: arg-max labels in the subject's file grid (``grid="file"``,
    the input file's shape and voxel order) or its canonical RAS+ grid (``grid="canonical"``).

    ``stacked`` is either a label volume of ``meta.shape`` or class probabilities ``(K, *meta.shape)``. With
    probabilities and ``mode="linear"`` (``trainer.eval_resample``) every class is interpolated to the file's
    resolution before the arg-max (:func:`invert_probabilities_to_canonical`); ``"nearest"`` takes the arg-max on
    the preprocessed grid and copies labels (:func:`invert_to_canonical`).
    """
    if mode not in RESTORE_MODES:
        raise ValueError(f"resample={mode!r}: expected one of {', '.join(RESTORE_MODES)}")
    if grid not in ("file", "canonical"):
        raise ValueError(f"grid={grid!r}: expected 'file' or 'canonical'")
    stacked = np.asarray(stacked)
    if stacked.ndim == 4 and mode == "linear":
        canonical = invert_probabilities_to_canonical(stacked, meta)
    elif stacked.ndim == 4:
        dtype = np.int16 if stacked.shape[0] <= np.iinfo(np.int16).max else np.int32
        canonical = invert_to_canonical(stacked.argmax(axis=0).astype(dtype), meta)
    else:
        canonical = invert_to_canonical(stacked, meta)
    return canonical if grid == "canonical" else to_original(canonical, meta.to_geometry())


def wants_probabilities(meta: PreprocessMeta, mode: str) -> bool:
    """Whether :func:`restore` needs class probabilities (linear restore of a resampled subject), not labels."""
    return mode == "linear" and resamples(meta)
