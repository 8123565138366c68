"""io: canonical orientation, exact inverse, multi-modality stacking, label reading and writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

from scseg.data.io import (
    geometry_of,
    read_image_file,
    read_label_file,
    read_subject,
    to_canonical,
    to_original,
    write_label,
)
from scseg.data.types import Case

SHAPE = (6, 7, 8)
# LPS with anisotropic spacing, and a permuted (PIR-like) affine: neither is RAS voxel order.
LPS = np.array([[-1.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
PERMUTED = np.array([[0, 0, -3.0, 4], [-1.0, 0, 0, 2], [0, 2.0, 0, 7], [0, 0, 0, 1]])


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _volume(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["LPS", "permuted"])
def test_canonical_round_trip_is_exact(affine):
    geo = geometry_of(affine, SHAPE)
    x = _volume()
    canonical = to_canonical(x, geo)
    assert canonical.shape == geo.canonical_shape
    assert aff2axcodes(geo.canonical_affine) == ("R", "A", "S")
    assert np.array_equal(to_original(canonical, geo), x)


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["LPS", "permuted"])
def test_canonical_affine_points_to_the_same_world_positions(affine):
    geo = geometry_of(affine, SHAPE)
    x = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    canonical = to_canonical(x, geo)
    # the voxel holding value v must sit at the same world coordinate in both grids
    for v in (0, 17, 200):
        i_file = np.argwhere(x == v)[0]
        i_can = np.argwhere(canonical == v)[0]
        w_file = affine @ np.r_[i_file, 1]
        w_can = geo.canonical_affine @ np.r_[i_can, 1]
        assert np.allclose(w_file, w_can)


def test_read_subject_canonical_with_spacing_and_label(tmp_path):
    img = _volume(1)
    lbl = (img > 0.5).astype(np.int16) * 3
    case = Case("s1", (_save(img, PERMUTED, tmp_path / "a.nii.gz"),), _save(lbl, PERMUTED, tmp_path / "a_lbl.nii.gz"))
    s = read_subject(case)
    assert s.image.dtype == np.float32 and s.image.shape == (1, *s.geometry.canonical_shape)
    assert s.label is not None and s.label.dtype == np.int32
    assert aff2axcodes(s.affine) == ("R", "A", "S")
    # PERMUTED: file axis 0 (1 mm) runs along world A (-y), axis 1 (2 mm) along S, axis 2 (3 mm) along R (-x)
    assert s.spacing == pytest.approx((3.0, 1.0, 2.0))
    assert s.image.shape[1:] == (SHAPE[2], SHAPE[0], SHAPE[1])
    assert np.array_equal(to_original(s.label, s.geometry), lbl)
    assert np.allclose(to_original(s.image[0], s.geometry), img)
    assert s.geometry.shape == SHAPE and np.allclose(s.geometry.affine, PERMUTED)


def test_write_label_restores_file_geometry(tmp_path):
    lbl = np.random.default_rng(2).integers(0, 5, SHAPE).astype(np.int16)
    path = _save(lbl, LPS, tmp_path / "ref.nii.gz")
    raw, geo = read_label_file(path)
    out = tmp_path / "pred" / "p.nii.gz"
    write_label(to_canonical(raw, geo), geo, out)
    back = nib.load(str(out))
    assert back.shape == SHAPE
    assert np.allclose(back.affine, LPS)
    assert np.issubdtype(back.get_data_dtype(), np.integer)
    assert np.array_equal(np.asarray(back.dataobj), lbl)


def test_write_label_mgz(tmp_path):
    lbl = np.random.default_rng(3).integers(0, 300, SHAPE).astype(np.int32)
    geo = geometry_of(PERMUTED, SHAPE)
    out = tmp_path / "p.mgz"
    write_label(to_canonical(lbl, geo), geo, out)
    data, geo2 = read_label_file(out)
    assert np.array_equal(data, lbl) and np.allclose(geo2.affine, PERMUTED)


def test_multi_modality_stacked_in_order(tmp_path):
    a, b = _volume(4), _volume(5)
    paths = (_save(a, LPS, tmp_path / "c_0000.nii.gz"), _save(b, LPS, tmp_path / "c_0001.nii"))
    s = read_subject(Case("c", paths, None))
    assert s.image.shape[0] == 2 and s.label is None
    assert np.allclose(to_original(s.image[0], s.geometry), a)
    assert np.allclose(to_original(s.image[1], s.geometry), b)


def test_4d_file_as_channels_when_allowed(tmp_path):
    x = np.random.default_rng(6).random((*SHAPE, 3)).astype(np.float32)
    path = _save(x, LPS, tmp_path / "four.nii.gz")
    s = read_subject(Case("f", (path,), None), allow_4d_channels=True)
    assert s.image.shape[0] == 3
    assert np.allclose(to_original(s.image[2], s.geometry), x[..., 2])


def test_trailing_singleton_axis_reads_as_3d(tmp_path):
    x = _volume(7)[..., None]
    data, geo = read_image_file(_save(x, LPS, tmp_path / "s.nii.gz"))
    assert data.shape == (1, *SHAPE) and geo.shape == SHAPE


def test_float_labels_within_tolerance_are_rounded(tmp_path):
    lbl = np.random.default_rng(8).integers(0, 5, SHAPE).astype(np.float64) + 1e-5
    data, _ = read_label_file(_save(lbl, LPS, tmp_path / "f.nii.gz"))
    assert data.dtype == np.int32 and np.array_equal(data, np.rint(lbl).astype(np.int32))


def test_mgz_image_reads(tmp_path):
    x = _volume(9)
    path = tmp_path / "x.mgz"
    nib.save(nib.MGHImage(x, PERMUTED), str(path))
    data, geo = read_image_file(path)
    assert np.allclose(data[0], x) and np.allclose(geo.affine, PERMUTED)
