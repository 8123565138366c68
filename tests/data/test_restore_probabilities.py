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


@pytest.mark.parametrize("n_in, n_out", [(5, 11), (41, 83), (24, 48), (30, 17), (7, 7)])
def test_linear_taps_reproduce_torch_trilinear(n_in, n_out):
    """The axis-by-axis interpolation uses PyTorch's taps (align_corners=False), up- and downsampling alike."""
    import torch
    import torch.nn.functional as F

    from scseg.data.preprocess import _resize_linear, linear_taps

    block = torch.rand(n_in, 6, 4, generator=torch.Generator().manual_seed(n_in))
    sizes = (n_out, 9, 3)
    expected = F.interpolate(block[None, None], size=sizes, mode="trilinear", align_corners=False)[0, 0]
    got = _resize_linear(block, [linear_taps(a, b) for a, b in zip(block.shape, sizes)])
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)


def _dense_restore(probs: np.ndarray, meta):
    """The arg-max of every class interpolated over the whole canonical grid (what the box-wise restore must equal),
    and the interpolated probabilities themselves."""
    import torch
    import torch.nn.functional as F

    unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, meta.shape))
    inside = tuple(slice(a, b) for a, b in meta.crop)
    up = []
    for k in range(probs.shape[0]):
        grid = torch.full(tuple(meta.resampled_shape), 1.0 if k == 0 else 0.0)
        grid[inside] = torch.from_numpy(np.ascontiguousarray(probs[(k, *unpad)], dtype=np.float32))
        up.append(F.interpolate(grid[None, None], size=tuple(meta.canonical_shape), mode="trilinear")[0, 0])
    up = torch.stack(up).numpy()
    return up.argmax(0), up


def test_boxwise_restore_equals_interpolating_every_class_everywhere():
    """Interpolating each class only around where it reaches 1/K gives the dense arg-max: the only voxels allowed to
    differ are exact ties, where the two classes' interpolated probabilities agree to rounding."""
    subject = _balls((50, 46, 42))
    p = preprocess_subject(
        subject, PreprocessSettings(crop_margin=0, target_spacing=(2.0, 2.5, 1.5), pad_size=(40, 32)), LABEL_MAP
    )
    meta = p.meta
    assert resamples(meta) and any(a > 0 for a, _ in meta.pad) and any(a > 0 for a, _ in meta.crop)
    # Smooth bumps on a flat background: at a bump's edge its class wins with little more than 1/K, so a box cut
    # too tight (or a floor above 1/K) changes labels there; the last class stays below 1/K and is skipped.
    k = 9
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in meta.shape], indexing="ij")).astype(np.float32)
    logits = np.zeros((k, *meta.shape), np.float32)
    logits[0] = 0.3
    logits[k - 1] = -1.0
    for c in range(1, k - 1):
        centre = np.array([rng.uniform(4, s - 4) for s in meta.shape], np.float32)
        logits[c] = 4.0 * np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / (2 * 3.0**2))
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    got = invert_probabilities_to_canonical(probs, meta)
    expected, up = _dense_restore(probs, meta)
    assert got.shape == tuple(meta.canonical_shape)
    assert set(np.unique(got)) == set(range(k - 1))
    differ = np.argwhere(got != expected)
    assert len(differ) <= 3, len(differ)
    for v in differ:
        a, b = int(got[tuple(v)]), int(expected[tuple(v)])
        assert abs(up[(a, *v)] - up[(b, *v)]) < 1e-6


def test_a_class_winning_with_just_over_one_kth_keeps_its_edges():
    """Three classes near 1/3 each: a cube where class 1 has 0.40 (0.32 outside, below 1/3), so it wins with little
    more than 1/K. The fine voxels along the cube's faces interpolate with coarse voxels outside it and class 1
    still wins there (0.38 vs 0.315), so its box must reach past the cube; a box cut one tap short, or a floor
    above 1/K, loses them."""
    subject = _balls()
    p = preprocess_subject(subject, PreprocessSettings(crop_margin=1, target_spacing=(2.0, 2.0, 2.0)), LABEL_MAP)
    meta = p.meta
    probs = np.empty((3, *meta.shape), np.float32)
    probs[0], probs[1], probs[2] = 0.36, 0.32, 0.32
    cube = (slice(None), *(slice(n // 2 - 3, n // 2 + 3) for n in meta.shape))
    probs[cube] = np.array([0.30, 0.40, 0.30], np.float32)[:, None, None, None]
    got = invert_probabilities_to_canonical(probs, meta)
    expected, _ = _dense_restore(probs, meta)
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(got == 1) == (2 * 6) ** 3  # every fine voxel of the cube, the face ones included
