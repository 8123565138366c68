"""A synthetic, learnable segmentation dataset written as NIfTI: smoke tests and demos without real data.

Why this module exists: the real datasets are licensed and large; a deterministic phantom lets every test,
the demo experiment and CI train a small network end to end in minutes. It is built to exercise what the
paper studies: ten structures of very different sizes (a large "body", organ-sized ellipsoids, left/right
pairs, and small structures of a few hundred voxels or less, where cSE is reported to struggle), smooth
random deformations, a smooth multiplicative bias field, texture and Gaussian noise. Structure intensity
distributions overlap on purpose (left/right pairs share a mean), so a network needs position and shape,
not a threshold. Outside the body the image is near zero, so the image-based foreground crop works.

Everything is vectorised numpy/scipy: `python scripts/bench_phantom.py` prints seconds per subject.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from scseg.data.errors import DataError
from scseg.data.io import geometry_of, write_image, write_label
from scseg.paths import cache_root

# Bump when the generator's output changes for the same settings (invalidates cached phantom datasets).
PHANTOM_VERSION = 1
PHANTOM_IMAGE_GLOB = "phantom_*_img.nii.gz"
PHANTOM_LABEL_GLOB = "phantom_*_lbl.nii.gz"
PHANTOM_CASE_ID = r"^(phantom_\d+)_(?:img|lbl)\.nii\.gz$"


@dataclass(frozen=True)
class Structure:
    """An ellipsoid in normalised coordinates ([-1, 1] per axis, canonical RAS order) with a mean intensity."""

    name: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    intensity: float


# Label id = position + 1; painted in this order (later structures overwrite earlier ones).
# Means overlap on purpose: 2/3, 4/5 and 8/9 are identical pairs told apart only by position (x < 0 = left);
# the nodes overlap the spine and "tiny" the cavity in intensity.
PHANTOM_STRUCTURES: tuple[Structure, ...] = (
    Structure("body", (0.0, 0.0, 0.0), (0.82, 0.68, 0.85), 0.35),
    Structure("right_organ", (0.34, 0.12, 0.22), (0.4, 0.35, 0.38), 0.55),
    Structure("left_organ", (-0.42, 0.15, 0.25), (0.25, 0.22, 0.28), 0.55),
    Structure("right_kidney", (0.38, -0.3, -0.25), (0.15, 0.12, 0.22), 0.7),
    Structure("left_kidney", (-0.38, -0.3, -0.25), (0.15, 0.12, 0.22), 0.7),
    Structure("spine", (0.0, -0.5, 0.0), (0.1, 0.1, 0.8), 0.85),
    Structure("cavity", (0.0, 0.25, -0.5), (0.2, 0.18, 0.15), 0.2),
    Structure("right_node", (0.16, -0.05, 0.55), (0.14, 0.14, 0.14), 0.95),
    Structure("left_node", (-0.16, -0.05, 0.55), (0.14, 0.14, 0.14), 0.95),
    Structure("tiny", (0.0, 0.32, 0.1), (0.11, 0.11, 0.11), 0.15),
)
PHANTOM_CLASS_NAMES: tuple[str, ...] = ("background", *(s.name for s in PHANTOM_STRUCTURES))


def _interp_matrix(n: int, grid: int) -> np.ndarray:
    """(n, grid) Gaussian interpolation weights from a `grid`-point lattice on [-1, 1] to n voxel centres."""
    x = np.linspace(-1.0, 1.0, n)[:, None]
    c = np.linspace(-1.0, 1.0, grid)[None, :]
    w = np.exp(-0.5 * ((x - c) / (2.0 / max(grid - 1, 1))) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, size: tuple[int, int, int], grid: int) -> np.ndarray:
    """Smooth random field with unit standard deviation: a `grid`^3 normal lattice, separably interpolated."""
    coarse = rng.standard_normal((grid, grid, grid)).astype(np.float32)
    wx, wy, wz = (_interp_matrix(n, grid) for n in size)
    field = np.einsum("ia,jb,kc,abc->ijk", wx, wy, wz, coarse, optimize=True)
    return (field / (field.std() + 1e-6)).astype(np.float32)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def generate_phantom_subject(
    seed: int,
    size: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    deform_strength: float = 0.06,
    deform_grid: int = 5,
    centre_jitter: float = 0.04,
    radius_jitter: float = 0.1,
    rotation_deg: float = 15.0,
    intensity_jitter: float = 0.03,
    texture_std: float = 0.05,
    bias_strength: float = 0.15,
    noise_std: float = 0.05,
    background_noise_std: float = 0.005,
    partial_volume_sigma: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom subject -> (image float32 (X, Y, Z), label uint8 (X, Y, Z) ids 0..10, 4x4 RAS affine).

    Lengths (deform_strength, centre_jitter) are in normalised units (1 = half the volume's side);
    intensities are on the scale of the structure means (0.15-0.95). Deterministic per seed.
    """
    size = (int(size[0]), int(size[1]), int(size[2]))
    if len(size) != 3 or min(size) < 8:
        raise DataError(f"phantom size: expected three sides >= 8 voxels, got {size}")
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in size]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))  # (3, X, Y, Z)
    if deform_strength > 0:
        grid = grid + deform_strength * np.stack([_smooth_field(rng, size, deform_grid) for _ in range(3)])

    label = np.zeros(size, dtype=np.uint8)
    means = np.zeros(len(PHANTOM_STRUCTURES) + 1, dtype=np.float32)
    for k, s in enumerate(PHANTOM_STRUCTURES, start=1):
        centre = np.asarray(s.centre, np.float32) + rng.uniform(-centre_jitter, centre_jitter, 3).astype(np.float32)
        radii = np.asarray(s.radii, np.float32) * rng.uniform(1 - radius_jitter, 1 + radius_jitter, 3).astype(
            np.float32
        )
        rot = _rotation(rng, rotation_deg)
        # ellipsoid test in the structure's rotated frame: sum(((R^T (x - c)) / r)^2) <= 1
        local = np.tensordot(rot.T, grid - centre[:, None, None, None], axes=1)
        inside = np.sum((local / radii[:, None, None, None]) ** 2, axis=0) <= 1.0
        label[inside] = k
        means[k] = s.intensity + rng.uniform(-intensity_jitter, intensity_jitter)

    body = label > 0
    image = means[label]
    if texture_std > 0:
        image = image + body * (texture_std * _smooth_field(rng, size, 8))
    if partial_volume_sigma > 0:
        image = ndimage.gaussian_filter(image, partial_volume_sigma)
    if bias_strength > 0:
        image = image * np.exp(bias_strength * _smooth_field(rng, size, 3))
    noise_scale = np.where(body, noise_std, background_noise_std).astype(np.float32)
    if partial_volume_sigma > 0:
        noise_scale = ndimage.gaussian_filter(noise_scale, partial_volume_sigma)
    image = np.abs(image + noise_scale * rng.standard_normal(size, dtype=np.float32))

    affine = np.diag([*(float(s) for s in spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(size) - 1) * np.asarray(spacing, dtype=np.float64)
    return image.astype(np.float32), label, affine


def _subject_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_generator_settings(generator: Mapping[str, Any]) -> dict[str, Any]:
    """Generator keyword arguments with defaults filled in; unknown keys are a DataError."""
    params = inspect.signature(generate_phantom_subject).parameters
    allowed = {k for k in params if k not in ("seed", "size")}
    unknown = sorted(set(generator) - allowed)
    if unknown:
        raise DataError(f"data.layout.generator: unknown settings {unknown}; expected some of {sorted(allowed)}")
    full = {k: params[k].default for k in sorted(allowed)}
    full.update(generator)
    return {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in full.items()}


def write_phantom_dataset(
    out_dir: Path,
    n_subjects: int,
    seed: int,
    size: tuple[int, int, int] = (64, 64, 64),
    n_test: int = 0,
    **generator: Any,
) -> list[str]:
    """Write `n_subjects` phantoms as phantom_XXX_img/lbl.nii.gz and split.json (last `n_test` are test)."""
    if n_subjects < 1 or not 0 <= n_test < n_subjects:
        raise DataError(
            f"phantom: expected n_subjects >= 1 and 0 <= n_test < n_subjects, got n_subjects={n_subjects}, "
            f"n_test={n_test}"
        )
    check_generator_settings(generator)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n_subjects):
        image, label, affine = generate_phantom_subject(_subject_seed(seed, i), size=size, **generator)
        cid = f"phantom_{i:03d}"
        write_image(image, affine, out_dir / f"{cid}_img.nii.gz")
        write_label(label, geometry_of(affine, label.shape), out_dir / f"{cid}_lbl.nii.gz")
        ids.append(cid)
    n_train = n_subjects - n_test
    split = {"note": "generated by scseg.data.phantom", "train": ids[:n_train], "test": ids[n_train:]}
    (out_dir / "split.json").write_text(json.dumps(split, indent=1))
    return ids


def ensure_phantom_dataset(
    n_subjects: int = 20,
    n_test: int = 5,
    size: tuple[int, int, int] = (64, 64, 64),
    seed: int = 0,
    generator: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The folder of this phantom dataset under <cache>/phantom/<settings hash>/, generated once, atomically."""
    settings = {
        "version": PHANTOM_VERSION,
        "n_subjects": int(n_subjects),
        "n_test": int(n_test),
        "size": [int(s) for s in size],
        "seed": int(seed),
        "generator": check_generator_settings(dict(generator or {})),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_root(cache_dir) / "phantom" / key
    if (target / "split.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    try:
        write_phantom_dataset(
            tmp,
            settings["n_subjects"],
            settings["seed"],
            tuple(settings["size"]),
            n_test=settings["n_test"],
            **dict(generator or {}),
        )
        (tmp / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "split.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
