"""Read image/label volumes into one canonical orientation, and write predictions back into the file's grid.

Why this module exists: datasets arrive as .nii, .nii.gz or .mgz in any voxel order (LPS, PIR, permuted
axes...). Everything downstream (slicing along "coronal", cropping, the cache) assumes RAS+ voxel order, so
every volume is reoriented here, once, with nibabel orientation transforms (a pure axis permutation/flip, no
interpolation). The original file geometry is kept in `Geometry` so that `to_original` is the exact inverse
and a prediction can be written with the original shape and affine, voxel for voxel.

All bad input (missing, unreadable or truncated files, 2D/4D volumes, non-integer labels, image/label
shape or affine mismatch) raises `DataError` naming the file(s) and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from scseg.data.errors import DataError
from scseg.data.types import Case, Geometry, Subject, label_dtype

# The image / label file types scseg reads and writes, in order of preference (a case's channel files are looked
# for in this order) and longest first (so that stripping a suffix takes ".nii.gz" whole).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz")
RAS_ORNT = axcodes2ornt(("R", "A", "S"))


def strip_image_suffix(name: str) -> str:
    """A file name without its image suffix (``case_0000.nii.gz`` -> ``case_0000``); other names unchanged."""
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def geometry_of(affine: np.ndarray, shape: tuple[int, ...], source: str = "affine") -> Geometry:
    """The Geometry of a file with this affine and spatial shape (canonical = RAS+); `source` names it in errors."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"{source}: expected a finite 4x4 affine, got {affine.tolist()}")
    ornt = io_orientation(affine)
    if np.isnan(ornt).any():
        raise DataError(
            f"{source}: degenerate affine (an axis has no direction), cannot orient the volume; "
            f"expected an invertible affine, got\n{np.array2string(affine, precision=4)}"
        )
    ornt = ornt_transform(ornt, RAS_ORNT)
    return Geometry(affine=affine, shape=(int(shape[0]), int(shape[1]), int(shape[2])), ornt_to_canonical=ornt)


def to_canonical(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Spatial (X, Y, Z[, ...]) array in the file's voxel order -> canonical RAS+ order (contiguous copy)."""
    array = np.asarray(array)
    if tuple(array.shape[:3]) != tuple(geometry.shape):
        raise DataError(f"to_canonical: expected an array of file shape {geometry.shape}, got {array.shape}")
    return np.ascontiguousarray(apply_orientation(array, geometry.ornt_to_canonical))


def to_original(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Canonical (X, Y, Z[, ...]) array -> the file's own voxel order; exact inverse of `to_canonical`."""
    array = np.asarray(array)
    if tuple(array.shape[:3]) != geometry.canonical_shape:
        raise DataError(
            f"to_original: expected an array of canonical shape {geometry.canonical_shape} "
            f"(file shape {geometry.shape}), got {array.shape}"
        )
    # the transform file -> RAS read as an orientation is the file's orientation; RAS -> it is the inverse
    back = ornt_transform(RAS_ORNT, np.asarray(geometry.ornt_to_canonical))
    return np.ascontiguousarray(apply_orientation(array, back))


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the norms of the affine's first three columns."""
    s = np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))
    return (float(s[0]), float(s[1]), float(s[2]))


def _check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not any(name.endswith(s) for s in IMAGE_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; expected one of {', '.join(IMAGE_SUFFIXES)}")


def _load(path: Path) -> nib.spatialimages.SpatialImage:
    """nib.load with every failure turned into a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an existing image/label file")
    _check_suffix(path)
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises many types for corrupt headers
        raise DataError(
            f"{path}: cannot read the file ({type(err).__name__}: {err}); expected a valid NIfTI/MGZ"
        ) from err


def _spatial_shape(img: nib.spatialimages.SpatialImage, path: Path, allow_4d_channels: bool) -> tuple[int, ...]:
    """Validate dimensionality; trailing singleton axes beyond the third are ignored."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise DataError(f"{path}: {len(shape)}D volume of shape {tuple(img.shape)}; expected a 3D volume")
    if len(shape) == 4 and not allow_4d_channels:
        raise DataError(
            f"{path}: 4D volume of shape {tuple(img.shape)}; expected a 3D volume "
            "(set data.allow_4d_channels: true to read the last axis as channels)"
        )
    if len(shape) > 4:
        raise DataError(f"{path}: {len(shape)}D volume of shape {tuple(img.shape)}; expected a 3D volume")
    return shape


def _read_data(img: nib.spatialimages.SpatialImage, path: Path, as_float: bool) -> np.ndarray:
    """Force the data read (truncated gzip files only fail here) and convert any failure to DataError."""
    try:
        if as_float:
            return np.asarray(img.get_fdata(dtype=np.float32))
        return np.asarray(img.dataobj)
    except Exception as err:
        raise DataError(
            f"{path}: cannot read the voxel data ({type(err).__name__}: {err}); the file is truncated or corrupt"
        ) from err


def read_image_file(path: Path, allow_4d_channels: bool = False) -> tuple[np.ndarray, Geometry]:
    """One image file -> (float32 (C, X, Y, Z) in the FILE's voxel order, its Geometry); C = 1 unless 4D."""
    path = Path(path)
    img = _load(path)
    shape = _spatial_shape(img, path, allow_4d_channels)
    data = _read_data(img, path, as_float=True).reshape(shape)
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    _check_finite(data, path)
    return data, geometry_of(img.affine, shape[:3], str(path))


def _check_finite(data: np.ndarray, path: Path) -> None:
    """NaN / Inf intensities would silently poison the intensity scaling and every loss after it; name the
    file, the number of bad voxels (values beyond the float32 range count as infinite) and, for 4D, the channels."""
    if np.isfinite(data).all():
        return
    nan = int(np.count_nonzero(np.isnan(data)))
    inf = int(np.count_nonzero(np.isinf(data)))
    where = ""
    if data.shape[0] > 1:
        channels = [c for c in range(data.shape[0]) if not np.isfinite(data[c]).all()]
        where = f" in channel(s) {channels} of {data.shape[0]}"
    raise DataError(
        f"{path}: {nan + inf} voxels are not finite ({nan} NaN, {inf} infinite){where}; expected finite "
        "intensities: fix or mask these voxels in the image file"
    )


def read_label_file(path: Path, integer_tolerance: float = 1e-3) -> tuple[np.ndarray, Geometry]:
    """One label file -> (int32 (X, Y, Z) raw ids in the FILE's voxel order, its Geometry).

    Float labels (CHAOS stores float64) are accepted when every value is within `integer_tolerance`
    of an integer, and rounded.
    """
    path = Path(path)
    img = _load(path)
    shape = _spatial_shape(img, path, allow_4d_channels=False)
    data = _read_data(img, path, as_float=False).reshape(shape)
    if data.dtype.kind == "b":
        data = data.astype(np.int32)
    elif data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise DataError(f"{path}: label contains NaN or infinite values; expected integer label ids")
        rounded = np.rint(data)
        bad = np.abs(data - rounded) > integer_tolerance
        if bad.any():
            example = float(data[bad].flat[0])
            raise DataError(
                f"{path}: label contains non-integer values (e.g. {example!r}, {int(bad.sum())} voxels); "
                f"expected integer label ids (tolerance {integer_tolerance})"
            )
        data = rounded
    elif data.dtype.kind not in "iu":
        raise DataError(f"{path}: label has data type {data.dtype}; expected integer label ids")
    if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
        raise DataError(f"{path}: label ids outside the int32 range; expected label ids < 2**31")
    return data.astype(np.int32), geometry_of(img.affine, shape, str(path))


def _same_grid(a: Geometry, b: Geometry, atol: float) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=atol)


def read_subject(case: Case, allow_4d_channels: bool = False, affine_atol: float = 1e-3) -> Subject:
    """Read a case's image files (stacked as modalities) and optional label into a canonical `Subject`.

    All image files and the label must share the first image's shape and affine (within `affine_atol`).
    """
    if not case.image_paths:
        raise DataError(f"case {case.id}: no image files; expected at least one image path")
    arrays: list[np.ndarray] = []
    geometry: Geometry | None = None
    first = Path(case.image_paths[0])
    for p in case.image_paths:
        data, geo = read_image_file(Path(p), allow_4d_channels)
        if geometry is None:
            geometry = geo
        elif not _same_grid(geometry, geo, affine_atol):
            raise DataError(
                f"{p}: modality grid differs from {first}: shape {geo.shape} vs {geometry.shape}, affine\n"
                f"{np.array2string(geo.affine, precision=4)}\nvs\n{np.array2string(geometry.affine, precision=4)}; "
                "expected all modalities of a case on the same grid"
            )
        arrays.append(data)
    assert geometry is not None
    image = np.concatenate(arrays, axis=0)
    image = np.stack([to_canonical(m, geometry) for m in image]).astype(np.float32, copy=False)

    label = None
    label_path = Path(case.label_path) if case.label_path is not None else None
    if label_path is not None:
        raw, lgeo = read_label_file(label_path)
        if not _same_grid(geometry, lgeo, affine_atol):
            raise DataError(
                f"{label_path}: label grid differs from image {first}: label shape {lgeo.shape} vs image shape "
                f"{geometry.shape}, label affine\n{np.array2string(lgeo.affine, precision=4)}\nvs image affine\n"
                f"{np.array2string(geometry.affine, precision=4)}; expected the same shape and affine "
                f"(atol {affine_atol})"
            )
        label = to_canonical(raw, geometry)

    affine = geometry.canonical_affine
    return Subject(
        id=case.id,
        image=image,
        label=label,
        affine=affine,
        spacing=spacing_of(affine),
        geometry=geometry,
        image_paths=tuple(Path(p) for p in case.image_paths),
        label_path=label_path,
    )


def write_label(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Canonical label array -> NIfTI/MGZ file in the file's own geometry (same shape and affine), integer dtype."""
    path = Path(path)
    _check_suffix(path)
    array = np.asarray(array)
    if array.dtype.kind not in "iub":
        raise DataError(f"{path}: write_label expects an integer label array, got dtype {array.dtype}")
    data = to_original(array, geometry)
    data = data.astype(label_dtype(int(data.min()), int(data.max())) if data.size else np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith(".mgz"):
        img = nib.MGHImage(data if data.dtype != np.int16 else data.astype(np.int32), geometry.affine)
    else:
        img = nib.Nifti1Image(data, geometry.affine)
        img.set_qform(geometry.affine, code=1)
        img.set_sform(geometry.affine, code=1)
        img.header.set_data_dtype(data.dtype)
    nib.save(img, str(path))


def write_image(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """A float32 3D volume -> NIfTI with this affine (used by the phantom generator and tests)."""
    path = Path(path)
    _check_suffix(path)
    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
