"""HD95 and normalised surface Dice (scseg.metrics.surface_metrics): shapes with known answers, anisotropic
spacing, agreement with an independent implementation (scipy's exact distance transform per structure, where the
metric itself uses a KD-tree over surface voxels), the one-pass surfaces, the empty and background policies."""

from __future__ import annotations

import numpy as np
import pytest

from scseg.metrics import _label_surfaces, _surface, surface_metrics


def _ball(shape, centre_mm, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2


def _reference_implementation(ref, pred, spacing, tolerance):
    """Per structure, with exact Euclidean distance transforms over the whole grid: independent of the KD-tree."""
    from scipy import ndimage

    ref_surface, pred_surface = _surface(ref), _surface(pred)
    d_ab = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    d_ba = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    reach = tolerance + 1e-6  # ties with the tolerance count, whatever rounding did to them
    nsd = (np.count_nonzero(d_ab <= reach) + np.count_nonzero(d_ba <= reach)) / (d_ab.size + d_ba.size)
    return hd95, nsd


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 3.0)])
@pytest.mark.parametrize("shift_mm", [0.0, 2.0, 5.0])
def test_a_shifted_ball_against_an_independent_implementation(spacing, shift_mm):
    shape = (40, 36, 24)
    centre = np.array([16.0, 18.0, 30.0])
    ref = _ball(shape, centre, 9.0, spacing)
    pred = _ball(shape, centre + [shift_mm, 0, 0], 9.0, spacing)
    labels_ref, labels_pred = ref.astype(np.int16), pred.astype(np.int16)
    hd95, nsd = surface_metrics(labels_ref, labels_pred, 2, spacing, tolerance_mm=2.0)[:, 1]
    expected = _reference_implementation(ref, pred, spacing, 2.0)
    assert hd95 == pytest.approx(expected[0], abs=1e-9) and nsd == pytest.approx(expected[1], abs=1e-12)
    # known answer: no surface point moves further than the shift (plus one voxel of discretisation)
    assert hd95 <= shift_mm + max(spacing)
    if shift_mm == 0:
        assert hd95 == 0 and nsd == 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.5)])
def test_concentric_balls_are_their_radius_difference_apart(spacing):
    """Every surface point of a ball of radius r lies k mm from the surface of the ball of radius r + k."""
    shape = (48, 48, 40)
    centre = tuple(n * s / 2 for n, s in zip(shape, spacing, strict=True))  # well inside the grid
    inner, outer = _ball(shape, centre, 10.0, spacing), _ball(shape, centre, 14.0, spacing)
    metrics = surface_metrics(outer.astype(np.int16), inner.astype(np.int16), 2, spacing, tolerance_mm=[0.0, 2.0])
    hd95, nsd = metrics[:, 1]
    assert 4.0 - max(spacing) <= hd95 <= 4.0 + max(spacing)
    assert nsd < 0.1  # 4 mm apart, 2 mm tolerance
    relaxed = surface_metrics(outer.astype(np.int16), inner.astype(np.int16), 2, spacing, tolerance_mm=6.0)
    assert relaxed[1, 1] == 1.0


def test_the_empty_policy():
    spacing = (1.0, 2.0, 3.0)
    ref = np.zeros((10, 10, 10), np.int16)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5, 2:5] = 1
    pred[6:8, 6:8, 6:8] = 2
    hd95, nsd = surface_metrics(ref, pred, 4, spacing)
    diagonal = np.sqrt(10**2 + 20**2 + 30**2)
    assert np.isnan(hd95[3]) and np.isnan(nsd[3])  # absent from both: undefined, left out of means like Dice
    assert hd95[1] == pytest.approx(diagonal) and nsd[1] == 0  # missed: the worst distance the grid holds
    assert hd95[2] == pytest.approx(diagonal) and nsd[2] == 0  # predicted where the reference has none


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(np.zeros((4, 4, 4), np.int16), np.zeros((4, 4, 4), np.int16), 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(np.zeros((4, 4, 4), np.int16), np.zeros((4, 4, 5), np.int16), 2, (1.0, 1.0, 1.0))


def _noisy_labels(shape, k, seed):
    """Overlapping boxes of k-1 labels plus 3 % of voxels relabelled: islands far from every structure's body."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int16)
    for c in range(1, k):
        lo = [int(rng.integers(0, n - 4)) for n in shape]
        hi = [int(rng.integers(a + 2, n + 1)) for a, n in zip(lo, shape, strict=True)]
        labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = c
    noise = rng.random(shape) < 0.03
    labels[noise] = rng.integers(0, k, int(noise.sum()))
    return labels


def test_one_pass_surfaces_are_each_label_s_mask_surface():
    labels = _noisy_labels((14, 17, 11), 6, seed=3)
    indices, starts = _label_surfaces(labels, 6)
    for k in range(6):
        expected = np.flatnonzero(_surface(labels == k))
        np.testing.assert_array_equal(indices[starts[k] : starts[k + 1]], expected)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.1, 2.9)])
def test_many_noisy_labels_against_the_distance_transform(spacing):
    k = 7
    ref, pred = _noisy_labels((20, 24, 16), k, seed=0), _noisy_labels((20, 24, 16), k, seed=1)
    pred[:10] = ref[:10]  # half the grid agrees: small and large distances both occur
    tolerances = np.linspace(0.5, 3.0, k)
    metrics = surface_metrics(ref, pred, k, spacing, tolerances, include_background=True)
    for c in range(k):
        expected = _reference_implementation(ref == c, pred == c, spacing, tolerances[c])
        assert metrics[0, c] == pytest.approx(expected[0], abs=1e-9)
        assert metrics[1, c] == pytest.approx(expected[1], abs=1e-12)


def test_background_is_left_out_unless_asked():
    spacing = (1.0, 1.0, 1.0)
    ref = np.zeros((12, 12, 12), np.int16)
    ref[3:8, 3:8, 3:8] = 1
    pred = np.roll(ref, 1, axis=0)
    default = surface_metrics(ref, pred, 2, spacing)
    assert np.isnan(default[:, 0]).all() and np.isfinite(default[:, 1]).all()
    with_background = surface_metrics(ref, pred, 2, spacing, include_background=True)
    np.testing.assert_array_equal(with_background[:, 1], default[:, 1])
    assert with_background[0, 0] == pytest.approx(_reference_implementation(ref == 0, pred == 0, spacing, 1.0)[0])
