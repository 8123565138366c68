"""Phantom generator: deterministic, varied structure sizes, overlapping intensities, clean background, NIfTI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from scseg.data.errors import DataError
from scseg.data.io import read_subject
from scseg.data.phantom import (
    PHANTOM_CLASS_NAMES,
    PHANTOM_STRUCTURES,
    generate_phantom_subject,
    write_phantom_dataset,
)
from scseg.data.types import Case


@pytest.fixture(scope="module")
def subject64():
    return generate_phantom_subject(11)


def test_deterministic_per_seed():
    a = generate_phantom_subject(5, size=(24, 28, 32))
    b = generate_phantom_subject(5, size=(24, 28, 32))
    c = generate_phantom_subject(6, size=(24, 28, 32))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1]) and not np.allclose(a[0], c[0])
    assert a[0].dtype == np.float32 and a[0].shape == (24, 28, 32) and a[1].dtype == np.uint8


def test_structure_sizes_span_large_to_small(subject64):
    _, label, affine = subject64
    counts = np.bincount(label.ravel(), minlength=len(PHANTOM_CLASS_NAMES))
    assert len(PHANTOM_STRUCTURES) >= 8 and np.all(counts[1:] > 0)  # every structure present
    assert counts[1] > 20_000  # the large "body"
    assert counts[1:].min() <= 300  # small structures of a few hundred voxels or less
    assert counts[1:].max() / counts[1:].min() > 100
    assert np.allclose(np.diag(affine)[:3], 1.0)


def test_left_right_pairs_lie_on_their_side(subject64):
    _, label, _ = subject64
    x_centre = (label.shape[0] - 1) / 2
    for k, s in enumerate(PHANTOM_STRUCTURES, start=1):
        if s.name.startswith(("left_", "right_")):
            x_mean = np.argwhere(label == k)[:, 0].mean()
            # canonical RAS: x grows to the right
            assert (x_mean > x_centre) == s.name.startswith("right_"), s.name


def test_intensities_overlap_between_structures(subject64):
    image, label, _ = subject64
    ranges = {k: np.percentile(image[label == k], [5, 95]) for k in range(1, len(PHANTOM_CLASS_NAMES))}
    # every structure's central 90 % intensity range overlaps that of at least one other structure
    for k, (lo, hi) in ranges.items():
        others = [(a, b) for j, (a, b) in ranges.items() if j != k]
        assert any(a < hi and lo < b for a, b in others), PHANTOM_CLASS_NAMES[k]
    # left/right pairs share a mean: their interquartile ranges overlap, only position tells them apart
    names = list(PHANTOM_CLASS_NAMES)
    for part in ("organ", "kidney", "node"):
        left, right = image[label == names.index(f"left_{part}")], image[label == names.index(f"right_{part}")]
        assert np.percentile(left, 25) < np.percentile(right, 75) and np.percentile(right, 25) < np.percentile(left, 75)


def test_background_is_near_zero_so_the_foreground_crop_works(subject64):
    image, label, _ = subject64
    outside = ~ndimage.binary_dilation(label > 0, iterations=2)
    assert outside.sum() > 0.3 * label.size
    assert np.percentile(image[outside], 99.9) < 0.05 * np.percentile(image[label > 0], 99.5)
    bright = image > 0.1 * np.percentile(image, 99.5)
    assert bright[label > 0].mean() > 0.99 and bright[outside].mean() < 0.001


def test_write_phantom_dataset_reads_back(tmp_path):
    ids = write_phantom_dataset(tmp_path, n_subjects=3, seed=1, size=(16, 16, 16), n_test=1, noise_std=0.02)
    assert ids == ["phantom_000", "phantom_001", "phantom_002"]
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["train"] == ids[:2] and split["test"] == ids[2:]
    s = read_subject(Case("p", (tmp_path / "phantom_001_img.nii.gz",), tmp_path / "phantom_001_lbl.nii.gz"))
    assert s.image.shape == (1, 16, 16, 16) and s.label is not None and s.label.max() <= 10
    assert np.array_equal(s.label, generate_phantom_subject(_seed(1, 1), size=(16, 16, 16), noise_std=0.02)[1])


def _seed(seed: int, index: int) -> int:
    from scseg.data.phantom import _subject_seed

    return _subject_seed(seed, index)


def test_bad_phantom_settings(tmp_path):
    with pytest.raises(DataError, match="n_test < n_subjects"):
        write_phantom_dataset(tmp_path, n_subjects=2, seed=0, n_test=2)
    with pytest.raises(DataError, match=r"unknown settings \['colour'\]"):
        write_phantom_dataset(tmp_path, n_subjects=2, seed=0, colour=1)
    with pytest.raises(DataError, match="phantom size"):
        generate_phantom_subject(0, size=(4, 16, 16))
