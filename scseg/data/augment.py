"""Slice augmentation from config, and the intensity normalisation applied after it.

Why this module exists: augmentation must be (a) declared in config as a list of albumentations
transforms, (b) applied jointly to image and label (labels with nearest interpolation), (c) reproducible
from an explicit random generator rather than global state, and (d) run on images scaled to [0, 1]
(albumentations' intensity transforms assume that range; RandomGamma gives NaN on negative input and
noise / brightness clip to [0, 1]). Normalisation (z-score) therefore happens here, AFTER augmentation.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from scseg.plain import to_plain

# Transforms a config may name. Flips are deliberately absent: brain labels are lateralised
# (left / right structures are different classes), so a mirror would produce wrong labels.
SUPPORTED_TRANSFORMS: dict[str, type] = {
    "Affine": A.Affine,
    "ElasticTransform": A.ElasticTransform,
    "GridDistortion": A.GridDistortion,
    "RandomBrightnessContrast": A.RandomBrightnessContrast,
    "RandomGamma": A.RandomGamma,
    "GaussNoise": A.GaussNoise,
    "GaussianBlur": A.GaussianBlur,
}

NORMALIZE_MODES = ("zscore", "none")


def _with_tuples(value: Any) -> Any:
    """Config nodes -> plain Python (`to_plain`), lists -> tuples (albumentations wants ranges as tuples)."""
    value = to_plain(value)
    if isinstance(value, Mapping):
        return {k: _with_tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_with_tuples(v) for v in value)
    return value


def build_augmentation(cfg: Mapping | None, setting: str = "data.augment") -> A.Compose | None:
    """Build the training augmentation from the `augment` config node; None when disabled or empty.

    `cfg` = {enabled: bool, transforms: [{name: <albumentations class>, **kwargs}, ...]}. The Compose
    forces nearest-neighbour interpolation for the label mask. Bad entries raise ValueError naming
    `setting` (e.g. ``data.augment.transforms[1]``).
    """
    if cfg is None:
        return None
    cfg = _with_tuples(cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{setting}: expected a mapping with 'enabled' and 'transforms', got {cfg!r}")
    unknown_keys = set(cfg) - {"enabled", "transforms"}
    if unknown_keys:
        raise ValueError(f"{setting}: unknown keys {sorted(unknown_keys)}; expected 'enabled' and 'transforms'")
    if not cfg.get("enabled", True):
        return None
    items = cfg.get("transforms") or ()
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError(f"{setting}.transforms: expected a list of {{name: ..., ...}}, got {items!r}")
    transforms = [_build_one(item, f"{setting}.transforms[{i}]") for i, item in enumerate(items)]
    if not transforms:
        return None
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST, seed=0)


def _build_one(item: Any, setting: str) -> A.BasicTransform:
    if not isinstance(item, Mapping) or "name" not in item:
        raise ValueError(f"{setting}: expected a mapping with a 'name' key, got {item!r}")
    kwargs = dict(item)
    name = kwargs.pop("name")
    if name not in SUPPORTED_TRANSFORMS:
        raise ValueError(f"{setting}: unknown transform {name!r}; supported: {', '.join(sorted(SUPPORTED_TRANSFORMS))}")
    cls = SUPPORTED_TRANSFORMS[name]
    accepted = {k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "args", "kwargs")}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{setting}: {name} has no argument(s) {unknown}; it accepts {sorted(accepted)}")
    try:
        return cls(**kwargs)
    except Exception as err:  # albumentations validates with pydantic / TypeError
        raise ValueError(f"{setting}: invalid arguments for {name}: {err}") from err


def apply_augmentation(
    compose: A.Compose | None, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment one slice with randomness drawn only from `rng` (never global state).

    `image` is (H, W, C) float32 in [0, 1]; `label` (H, W) integer (uint8 / int16) or None.
    Returns arrays of the same shapes and dtypes.
    """
    if compose is None:
        return image, label
    seed = int(rng.integers(0, 2**63 - 1))
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    data: dict[str, np.ndarray] = {"image": np.ascontiguousarray(image, dtype=np.float32)}
    if label is not None:
        data["mask"] = np.ascontiguousarray(label)
    out = compose(**data)
    aug_image = np.asarray(out["image"], dtype=np.float32)
    if aug_image.ndim == 2:  # some cv2 paths drop a single channel axis
        aug_image = aug_image[..., None]
    aug_label = None if label is None else np.asarray(out["mask"]).astype(label.dtype, copy=False)
    return aug_image, aug_label


def normalize_image(
    image: np.ndarray, mode: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """Normalise a (C, H, W) slice after augmentation.

    `zscore`: subtract the per-channel `mean` and divide by `std` (the subject's statistics inside its
    image-derived foreground mask, computed at preprocessing; per subject rather than per slice so that
    brightness / contrast augmentation is not undone). `none`: unchanged.
    """
    if mode == "none":
        return image
    if mode != "zscore":
        raise ValueError(f"data.normalize: unknown mode {mode!r}; expected one of {NORMALIZE_MODES}")
    if mean is None or std is None:
        raise ValueError("data.normalize=zscore needs per-channel mean and std")
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    if m.shape[0] != image.shape[0] or s.shape[0] != image.shape[0]:
        raise ValueError(f"normalize: {image.shape[0]} channels but {m.shape[0]} means / {s.shape[0]} stds")
    return ((image - m) / s).astype(np.float32, copy=False)
