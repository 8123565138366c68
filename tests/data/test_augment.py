"""Augmentation pipeline from config: joint image/label transforms, no NaN, no clipping pile-up, seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from scseg.data.augment import SUPPORTED_TRANSFORMS, apply_augmentation, build_augmentation, normalize_image

COMMON = Path(__file__).resolve().parents[2] / "configs" / "data" / "common.yaml"

STRONG = {
    "enabled": True,
    "transforms": [
        {"name": "Affine", "p": 1.0, "rotate": [-15, 15], "scale": [0.9, 1.1], "translate_percent": [-0.05, 0.05]},
        {"name": "ElasticTransform", "p": 1.0, "alpha": 20.0, "sigma": 5.0},
        {
            "name": "RandomBrightnessContrast",
            "p": 1.0,
            "brightness_limit": 0.1,
            "contrast_limit": 0.1,
            "ensure_safe_range": True,
        },
        {"name": "RandomGamma", "p": 1.0, "gamma_limit": [80, 120]},
        {"name": "GaussNoise", "p": 1.0, "std_range": [0.005, 0.02]},
    ],
}


def _phantom_slice(channels: int = 3, size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth disc image with intensities strictly inside (0, 1) and a 3-class label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    label = np.zeros((size, size), np.uint8)
    label[r < size * 0.35] = 1
    label[r < size * 0.2] = 2
    base = 0.2 + 0.3 * label + 0.05 * np.sin(xx / 3.0)
    image = np.stack([base + 0.02 * rng.standard_normal(base.shape) for _ in range(channels)], axis=-1)
    return np.clip(image, 0.01, 0.99).astype(np.float32), label


def test_common_yaml_defaults_build():
    cfg = yaml.safe_load(COMMON.read_text())["augment"]
    compose = build_augmentation(cfg)
    assert compose is not None
    assert len(compose.transforms) == len(cfg["transforms"])


def test_disabled_or_empty_gives_none():
    assert build_augmentation({"enabled": False, "transforms": STRONG["transforms"]}) is None
    assert build_augmentation({"enabled": True, "transforms": []}) is None
    assert build_augmentation(None) is None


def test_unknown_transform_names_setting_and_supported():
    with pytest.raises(ValueError) as err:
        build_augmentation({"enabled": True, "transforms": [{"name": "Affine"}, {"name": "HorizontalFlip"}]})
    msg = str(err.value)
    assert "data.augment.transforms[1]" in msg and "HorizontalFlip" in msg
    for name in SUPPORTED_TRANSFORMS:
        assert name in msg


def test_bad_arguments_name_setting():
    with pytest.raises(ValueError, match=r"transforms\[0\].*RandomGamma"):
        build_augmentation({"enabled": True, "transforms": [{"name": "RandomGamma", "bogus": 1}]})


def test_augmented_slices_valid_and_unclipped():
    compose = build_augmentation(STRONG)
    image, label = _phantom_slice(channels=9)  # > 4 channels: cv2 paths must handle it
    in_extreme = np.mean((image == 0) | (image == 1))
    changed = 0
    for i in range(8):
        aug, lab = apply_augmentation(compose, image, label, np.random.default_rng([0, 0, i]))
        assert aug.shape == image.shape and aug.dtype == np.float32
        assert lab.shape == label.shape and lab.dtype == label.dtype
        assert np.isfinite(aug).all()
        assert set(np.unique(lab)) <= {0, 1, 2}
        # no pile-up at the range ends: only the affine/elastic zero fill at the borders may add zeros
        assert np.mean(aug >= 1.0) <= in_extreme + 0.01
        assert np.mean(aug <= 0.0) <= in_extreme + 0.15
        inner = aug[(aug > 0) & (aug < 1)]
        assert inner.size > 0.8 * aug.size and inner.std() > 0.05
        changed += not np.allclose(aug, image)
    assert changed == 8


def test_label_follows_geometry():
    """A pure rotation moves the label with the image (nearest interpolation keeps it a label)."""
    compose = build_augmentation({"enabled": True, "transforms": [{"name": "Affine", "p": 1.0, "rotate": [30, 30]}]})
    image, label = _phantom_slice(channels=1)
    image = np.zeros_like(image)
    image[..., 0] = (label == 2).astype(np.float32) * 0.8 + 0.1
    label2 = label.copy()
    label2[:, : label.shape[1] // 2] = 0  # break the symmetry so the rotation is visible
    image[:, : label.shape[1] // 2, 0] = 0.1
    aug, lab = apply_augmentation(compose, image, label2, np.random.default_rng(1))
    assert not np.array_equal(lab, label2)
    bright = aug[..., 0] > 0.5
    assert (lab[bright] == 2).mean() > 0.9


def test_same_rng_same_result_different_rng_differs():
    compose = build_augmentation(STRONG)
    image, label = _phantom_slice()
    a = apply_augmentation(compose, image, label, np.random.default_rng([3, 1, 5]))
    b = apply_augmentation(compose, image, label, np.random.default_rng([3, 1, 5]))
    c = apply_augmentation(compose, image, label, np.random.default_rng([3, 2, 5]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_normalize_zscore_and_none():
    x = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.2)]).astype(np.float32)
    out = normalize_image(x, "zscore", [0.25, 0.2], [0.5, 0.1])
    assert np.allclose(out[0], 0.5) and np.allclose(out[1], 0.0)
    assert normalize_image(x, "none") is x
    with pytest.raises(ValueError, match="data.normalize"):
        normalize_image(x, "robust", [0.0], [1.0])
    with pytest.raises(ValueError, match="channels"):
        normalize_image(x, "zscore", [0.0], [1.0])


def test_importing_the_data_layer_keeps_albumentations_off_the_network():
    """No version check against PyPI at import (each DataLoader worker would wait on it; offline nodes time out).
    A user's own setting wins (``setdefault``); not tested here, as it would reach the network."""
    import os
    import subprocess
    import sys

    code = "import os, scseg.data.augment; print(os.environ['NO_ALBUMENTATIONS_UPDATE'])"
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert off.stdout.strip() == "1", off.stderr[-2000:]
