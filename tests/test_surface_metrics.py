"""HD95 and normalised surface Dice (scseg.metrics.surface_metrics): shapes with known answers, anisotropic
spacing, agreement with an independent implementation (KD-tree over surface voxel centres), the empty policy."""

from __future__ import annotations

import numpy as np
import pytest

from scseg.metrics import _surface, surface_metrics


def _ball(shape, centre_mm, radius_mm, spacing):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2


def _reference_implementation(ref, pred, spacing, tolerance):
    """Brute force on surface voxel centres with a KD-tree: independent of the distance transform."""
    from scipy.spatial import cKDTree

    a = np.argwhere(_surface(ref)) * np.asarray(spacing)
    b = np.argwhere(_surface(pred)) * np.asarray(spacing)
    d_ab, d_ba = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    reach = tolerance + 1e-6  # ties with the tolerance count, whatever rounding did to them
    nsd = (np.count_nonzero(d_ab <= reach) + np.count_nonzero(d_ba <= reach)) / (len(a) + len(b))
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
