"""Preprocessing: settings, intensity scaling, crop / pad rules, class statistics, and the exact inverse."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from scseg.data.errors import DataError
from scseg.data.io import read_subject, to_original
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import (
    IntensitySettings,
    PreprocessSettings,
    class_statistics,
    crop_box,
    invert_to_canonical,
    preprocess_subject,
    scale_intensity,
)
from scseg.data.types import Case, Geometry, Subject

COMMON = Path(__file__).resolve().parents[2] / "configs" / "data" / "common.yaml"
IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _label_map() -> LabelMap:
    return LabelMap(class_names=("background", "a", "b"), raw_to_class={0: 0, 10: 1, 20: 2}, unknown="error")


def _subject(shape=(30, 28, 24), spacing=(1.0, 1.0, 2.0), with_label=True, sid="s1") -> Subject:
    """Body box with random intensities, label box with two raw ids inside it, zero background."""
    rng = np.random.default_rng(0)
    x, y, z = shape
    image = np.zeros((1, *shape), np.float32)
    image[0, 5:25, 6:20, 4:20] = rng.uniform(100, 200, (20, 14, 16))
    label = np.zeros(shape, np.int32)
    label[8:20, 8:15, 6:15] = 10
    label[10:12, 9:12, 7:9] = 20
    affine = np.diag([*spacing, 1.0])
    return Subject(
        id=sid,
        image=image,
        label=label if with_label else None,
        affine=affine,
        spacing=spacing,
        geometry=Geometry(affine=affine, shape=shape, ornt_to_canonical=IDENTITY_ORNT),
        image_paths=(Path(f"/nowhere/{sid}.nii.gz"),),
        label_path=Path(f"/nowhere/{sid}_seg.nii.gz") if with_label else None,
    )


def _mapped(raw: np.ndarray) -> np.ndarray:
    return np.asarray(_label_map().apply(raw, "test"))


def test_settings_from_common_yaml_and_overrides():
    cfg = yaml.safe_load(COMMON.read_text())
    s = PreprocessSettings.from_config(cfg)
    assert s.axis == cfg["slices"]["axis"]
    assert s.crop_margin == cfg["preprocess"]["crop_margin"]
    assert s.intensity.mode == cfg["preprocess"]["intensity"]["mode"]
    assert s.pad_size is None and s.target_spacing is None
    cfg["preprocess"]["pad_size"] = [64, 48]
    cfg["preprocess"]["target_spacing"] = 1.5
    cfg["slices"]["axis"] = "coronal"
    s2 = PreprocessSettings.from_config(cfg)
    assert s2.pad_size == (64, 48) and s2.target_spacing == (1.5, 1.5, 1.5) and s2.axis == "coronal"
    assert s2.to_dict() != s.to_dict()


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"preprocess": {"bogus": 1}}, "data.preprocess: unknown keys"),
        ({"preprocess": {"intensity": {"mode": "robust"}}}, "intensity.mode"),
        ({"preprocess": {"pad_size": [0, 4]}}, "pad_size"),
        ({"preprocess": {"target_spacing": [1, -1, 1]}}, "target_spacing"),
        ({"slices": {"axis": "oblique"}}, "data.slices.axis"),
    ],
)
def test_bad_settings_name_the_key(patch, needle):
    with pytest.raises(DataError, match=needle):
        PreprocessSettings.from_config(patch)


def test_scale_intensity_modes():
    x = np.arange(1000, dtype=np.float32).reshape(1, 10, 10, 10) - 200.0
    out, ranges = scale_intensity(x, IntensitySettings(mode="minmax"))
    assert out.min() == 0.0 and out.max() == 1.0 and ranges == [(-200.0, 799.0)]
    out, ranges = scale_intensity(x, IntensitySettings(mode="percentile", percentiles=(10.0, 90.0)))
    lo, hi = np.percentile(x, [10, 90])
    assert ranges[0] == pytest.approx((lo, hi))
    assert np.mean(out == 0.0) == pytest.approx(0.1, abs=0.002) and np.mean(out == 1.0) == pytest.approx(0.1, abs=0.002)
    out, ranges = scale_intensity(x, IntensitySettings(mode="ct_window", window=(0.0, 100.0)))
    assert ranges == [(0.0, 100.0)]
    assert out.flat[250] == pytest.approx(0.5)  # value 50 -> middle of the window
    with pytest.raises(DataError, match="subj7.*constant"):
        scale_intensity(np.ones((1, 4, 4, 4), np.float32), IntensitySettings(mode="minmax"), "subj7")


def test_crop_box_margin_clip_and_empty():
    mask = np.zeros((20, 20, 20), bool)
    mask[5:9, 2:3, 15:18] = True
    assert crop_box(mask, 3) == ((2, 12), (0, 6), (12, 20))
    assert crop_box(np.zeros((4, 5, 6), bool), 2) == ((0, 4), (0, 5), (0, 6))


def test_class_statistics_by_hand():
    label = np.zeros((2, 3, 4), np.uint8)  # axial: 4 slices of 2x3 = 6 voxels
    label[0, 0, 0] = 1
    label[1, 2, 0] = 1
    label[0, 1, 2] = 1
    label[1, 1, 3] = 2
    voxels, slice_voxels = class_statistics(label, 4, "axial")
    assert voxels.tolist() == [20, 3, 1, 0]
    # class 0 in all 4 slices, class 1 in slices 0 and 2, class 2 in slice 3, class 3 nowhere
    assert slice_voxels.tolist() == [24, 12, 6, 0]
    voxels, slice_voxels = class_statistics(label, 4, "sagittal")  # 2 slices of 3x4 = 12 voxels
    assert voxels.tolist() == [20, 3, 1, 0] and slice_voxels.tolist() == [24, 24, 12, 0]


def test_preprocess_crops_pads_maps_and_records():
    s = _subject()
    settings = PreprocessSettings(axis="axial", crop_margin=2, pad_size=(32, 32))
    p = preprocess_subject(s, settings, _label_map())
    assert p.image.dtype == np.float32 and p.image.min() >= 0.0 and p.image.max() <= 1.0
    assert p.label.dtype == np.uint8 and set(np.unique(p.label)) == {0, 1, 2}
    assert p.meta.crop == ((3, 27), (4, 22), (2, 22))  # body box 5:25, 6:20, 4:20 grown by 2
    assert p.image.shape == (1, 32, 32, 20) and p.label.shape == (32, 32, 20)
    assert p.meta.pad == ((4, 4), (7, 7), (0, 0))  # centred padding of the in-plane axes only
    assert p.meta.class_voxels[1] == np.count_nonzero(s.label == 10)
    assert p.meta.class_voxels[2] == np.count_nonzero(s.label == 20)
    assert sum(p.meta.class_voxels) == p.label.size
    assert len(p.meta.norm_mean) == 1 and p.meta.norm_std[0] > 0


def test_padding_follows_slice_axis():
    settings = PreprocessSettings(axis="sagittal", crop_margin=2, pad_size=(30, 30))
    p = preprocess_subject(_subject(), settings, _label_map())
    assert p.label.shape == (24, 30, 30)  # X keeps its crop length, Y and Z are padded


def test_pad_too_small_names_subject_and_needed_size():
    with pytest.raises(DataError, match=r"subject s9.*pad_size \[16, 32\].*at least \[24, 32\]"):
        preprocess_subject(_subject(sid="s9"), PreprocessSettings(crop_margin=2, pad_size=(16, 32)), _label_map())


def test_label_outside_image_crop_is_an_error():
    s = _subject()
    s.label[0, 0, 0] = 10  # labelled voxel where the image is background
    with pytest.raises(DataError, match=r"s1_seg\.nii\.gz.*1 labelled voxels.*foreground_threshold"):
        preprocess_subject(s, PreprocessSettings(crop_margin=1), _label_map())


def test_unlabelled_subject_is_preprocessed_for_prediction():
    p = preprocess_subject(_subject(with_label=False), PreprocessSettings(crop_margin=2), _label_map())
    assert p.label is None and not p.meta.has_label
    assert p.image.shape == (1, 24, 18, 20)


def test_invert_exact_without_resampling():
    s = _subject()
    p = preprocess_subject(s, PreprocessSettings(crop_margin=1, pad_size=(40, 36)), _label_map())
    back = invert_to_canonical(p.label, p.meta)
    assert back.shape == s.label.shape
    np.testing.assert_array_equal(back, _mapped(s.label))
    with pytest.raises(DataError, match="prediction shape"):
        invert_to_canonical(p.label[:-1], p.meta)


def test_resampling_shapes_spacing_and_approximate_inverse():
    s = _subject(spacing=(1.0, 1.0, 2.0))
    p = preprocess_subject(s, PreprocessSettings(crop_margin=2, target_spacing=(1.5, 1.5, 1.5)), _label_map())
    assert p.meta.resampled_shape == (20, 19, 32)
    assert p.meta.spacing == pytest.approx((1.5, 28 / 19, 1.5))
    back = invert_to_canonical(p.label, p.meta)
    assert back.shape == s.label.shape
    ref = _mapped(s.label)
    assert np.mean(back == ref) > 0.97
    for c in (1, 2):  # each structure is still found where it was
        overlap = np.count_nonzero((back == c) & (ref == c))
        assert 2 * overlap / (np.count_nonzero(back == c) + np.count_nonzero(ref == c)) > 0.6


def test_roundtrip_through_files_and_io(tmp_path):
    """Read a non-canonically oriented file, preprocess, invert, to_original: equals the mapped file labels."""
    s = _subject()
    # store as a (Z, Y, X)-ordered, x-flipped file: io must reorient to canonical and back
    img_file = np.flip(s.image[0], axis=0).transpose(2, 1, 0).copy()
    lab_file = np.flip(s.label, axis=0).transpose(2, 1, 0).astype(np.int16).copy()
    affine = np.array([[0, 0, -1.0, 29], [0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(img_file, affine), tmp_path / "c1_img.nii.gz")
    nib.save(nib.Nifti1Image(lab_file, affine), tmp_path / "c1_seg.nii.gz")
    case = Case(id="c1", image_paths=(tmp_path / "c1_img.nii.gz",), label_path=tmp_path / "c1_seg.nii.gz")
    subject = read_subject(case)
    p = preprocess_subject(subject, PreprocessSettings(crop_margin=1, pad_size=(40, 40), axis="coronal"), _label_map())
    back = to_original(invert_to_canonical(p.label, p.meta), p.meta.to_geometry())
    np.testing.assert_array_equal(back, _mapped(lab_file))


def test_target_spacing_with_a_null_axis_keeps_that_axis():
    from scseg.data.preprocess import PreprocessSettings

    settings = PreprocessSettings.from_config({"preprocess": {"target_spacing": [2.5, 2.5, None]}})
    assert settings.target_spacing == (2.5, 2.5, None)
    with pytest.raises(DataError, match="target_spacing"):
        PreprocessSettings(target_spacing=(2.0, -1.0, None))
    from scseg.data.preprocess import resample_subject

    image = np.zeros((1, 20, 20, 6), np.float32)
    _, _, shape, spacing = resample_subject(image, None, (1.25, 1.25, 7.7), (2.5, 2.5, None))
    assert shape == (10, 10, 6) and spacing == (2.5, 2.5, 7.7)
