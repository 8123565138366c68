"""The way back to the file's grid (trainer.eval_resample): probabilities interpolated linearly vs labels copied.

On a resampled subject, restoring by nearest neighbour copies each coarse voxel's label into a block of fine
voxels; interpolating every class's probability and taking the arg-max at the fine grid follows the boundary. A
ball labelled on a 1 mm grid and preprocessed to 2 mm must come back closer to itself the linear way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scseg.data.errors import DataError
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import (
    PreprocessSettings,
    invert_probabilities_to_canonical,
    invert_to_canonical,
    preprocess_subject,
    resample_image,
    resamples,
)
from scseg.data.types import Geometry, Subject

IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
LABEL_MAP = LabelMap(class_names=("background", "ball", "core"), raw_to_class={0: 0, 1: 1, 2: 2}, unknown="error")


def _balls(shape=(48, 44, 40)) -> Subject:
    """A body box with two nested balls (radius 11 and 4 voxels) on a 1 mm grid, off the coarse grid's centres."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid - np.array([23.3, 21.6, 19.5])[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, np.int16)
    label[r < 11.2] = 1
    label[r < 4.3] = 2
    image = np.zeros((1, *shape), np.float32)
    image[0, 3:-3, 3:-3, 3:-3] = 100.0 + 50.0 * label[3:-3, 3:-3, 3:-3]
    affine = np.eye(4)
    return Subject(
        id="balls",
        image=image,
        label=label,
        affine=affine,
        spacing=(1.0, 1.0, 1.0),
        geometry=Geometry(affine=affine, shape=shape, ornt_to_canonical=IDENTITY_ORNT),
        image_paths=(Path("/nowhere/balls.nii.gz"),),
        label_path=Path("/nowhere/balls_seg.nii.gz"),
    )


def _one_hot(label: np.ndarray, k: int) -> np.ndarray:
    return (label[None] == np.arange(k)[:, None, None, None]).astype(np.float32)


def _dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    return 2 * np.count_nonzero((a == c) & (b == c)) / (np.count_nonzero(a == c) + np.count_nonzero(b == c))


def _coarse_probabilities(subject: Subject, meta) -> np.ndarray:
    """What a good network predicts on the coarse grid: each class's volume fraction per coarse voxel (the fine
    one-hot averaged down), cropped and padded like the preprocessed subject."""
    fractions = resample_image(_one_hot(subject.label, 3), meta.resampled_shape)
    fractions = fractions[(slice(None), *(slice(a, b) for a, b in meta.crop))]
    return np.pad(fractions, ((0, 0), *meta.pad))


def test_linear_restores_a_resampled_subject_closer_than_nearest():
    subject = _balls()
    p = preprocess_subject(subject, PreprocessSettings(crop_margin=1, target_spacing=(2.0, 2.0, 2.0)), LABEL_MAP)
    assert resamples(p.meta)
    probs = _coarse_probabilities(subject, p.meta)
    nearest = invert_to_canonical(probs.argmax(0).astype(np.int16), p.meta)
    linear = invert_probabilities_to_canonical(probs, p.meta)
    assert linear.shape == nearest.shape == subject.label.shape
    for c in (1, 2):
        d_near, d_lin = _dice(nearest, subject.label, c), _dice(linear, subject.label, c)
        assert d_lin > d_near + 0.03, (c, d_near, d_lin)
    # background outside the crop box, and nothing but known classes
    assert set(np.unique(linear)) <= {0, 1, 2}
    assert linear[0].max() == 0 and linear[:, :, -1].max() == 0


def test_without_resampling_linear_equals_the_argmax_of_labels():
    subject = _balls()
    p = preprocess_subject(subject, PreprocessSettings(crop_margin=1, pad_size=(56, 56)), LABEL_MAP)
    assert not resamples(p.meta)
    rng = np.random.default_rng(0)
    probs = rng.random((3, *p.meta.shape)).astype(np.float32)
    expected = invert_to_canonical(probs.argmax(0).astype(np.int16), p.meta)
    np.testing.assert_array_equal(invert_probabilities_to_canonical(probs, p.meta), expected)


def test_probabilities_of_the_wrong_shape_name_the_subject():
    p = preprocess_subject(_balls(), PreprocessSettings(crop_margin=1, target_spacing=(2.0, 2.0, 2.0)), LABEL_MAP)
    with pytest.raises(DataError, match="subject balls: probabilities of shape"):
        invert_probabilities_to_canonical(np.zeros((3, 2, 2, 2), np.float32), p.meta)
