"""Bad input: every failure is a DataError whose message names the file (or setting) and the expectation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scseg.data.errors import DataError
from scseg.data.io import geometry_of, read_subject
from scseg.data.label_map import LabelMap
from scseg.data.layouts import load_layout, split_validation
from scseg.data.types import Case

SHAPE = (8, 9, 10)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _save(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _img(path: Path, shape: tuple[int, ...] = SHAPE, affine: np.ndarray = AFFINE) -> Path:
    return _save(np.random.default_rng(0).random(shape).astype(np.float32), path, affine)


def _lbl(path: Path, shape: tuple[int, ...] = SHAPE, affine: np.ndarray = AFFINE) -> Path:
    return _save(np.ones(shape, np.uint8), path, affine)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope_img.nii.gz"
    with pytest.raises(DataError, match="nope_img.nii.gz: file not found; expected an existing"):
        read_subject(Case("x", (missing,), None))


def test_truncated_gzip(tmp_path):
    path = _img(tmp_path / "trunc.nii.gz", shape=(30, 30, 30))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trunc\.nii\.gz: cannot read the voxel data .*truncated or corrupt"):
        read_subject(Case("x", (path,), None))


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"not a nifti at all")
    with pytest.raises(DataError, match=r"junk\.nii\.gz: cannot read"):
        read_subject(Case("x", (path,), None))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"image\.png: unsupported file type; expected one of \.nii"):
        read_subject(Case("x", (path,), None))


def test_image_label_shape_mismatch(tmp_path):
    img = _img(tmp_path / "a_img.nii.gz")
    lbl = _lbl(tmp_path / "a_lbl.nii.gz", shape=(8, 9, 11))
    with pytest.raises(DataError) as err:
        read_subject(Case("a", (img,), lbl))
    msg = str(err.value)
    assert "a_lbl.nii.gz" in msg and "a_img.nii.gz" in msg
    assert "(8, 9, 11)" in msg and "(8, 9, 10)" in msg and "expected the same shape and affine" in msg


def test_image_label_affine_mismatch(tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.5
    img = _img(tmp_path / "b_img.nii.gz")
    lbl = _lbl(tmp_path / "b_lbl.nii.gz", affine=shifted)
    with pytest.raises(DataError) as err:
        read_subject(Case("b", (img,), lbl))
    msg = str(err.value)
    assert "b_lbl.nii.gz" in msg and "b_img.nii.gz" in msg and "2.5" in msg and "affine" in msg


def test_affine_within_tolerance_is_accepted(tmp_path):
    close = AFFINE.copy()
    close[0, 3] = 5e-4
    s = read_subject(Case("c", (_img(tmp_path / "c_img.nii.gz"),), _lbl(tmp_path / "c_lbl.nii.gz", affine=close)))
    assert s.label is not None


def test_modalities_on_different_grids(tmp_path):
    a = _img(tmp_path / "m_0000.nii.gz")
    b = _img(tmp_path / "m_0001.nii.gz", shape=(8, 9, 9))
    with pytest.raises(DataError, match=r"m_0001\.nii\.gz: modality grid differs from .*m_0000\.nii\.gz"):
        read_subject(Case("m", (a, b), None))


def test_non_integer_labels(tmp_path):
    lbl = np.zeros(SHAPE, np.float32)
    lbl[2, 3, 4] = 1.5
    path = _save(lbl, tmp_path / "frac_lbl.nii.gz")
    with pytest.raises(DataError, match=r"frac_lbl\.nii\.gz: label contains non-integer values \(e\.g\. 1\.5"):
        read_subject(Case("f", (_img(tmp_path / "f_img.nii.gz"),), path))


def test_unknown_label_ids_error_names_file_and_ids():
    lm = LabelMap(("background", "liver"), {0: 0, 1: 1}, "error")
    raw = np.zeros(SHAPE, np.int32)
    raw[0, 0, :3] = 7
    with pytest.raises(DataError, match=r"case_07_lbl\.nii\.gz: raw label ids not in the label map: 7 \(3 voxels\)"):
        lm.apply(raw, "case_07_lbl.nii.gz")


def test_unknown_label_ids_background_mode_warns_with_voxel_count():
    lm = LabelMap(("background", "liver"), {0: 0, 1: 1}, "background")
    raw = np.ones(SHAPE, np.int32)
    raw[0, 0, :4] = 9
    with pytest.warns(UserWarning, match=r"x_lbl\.nii\.gz: 4 voxels with raw label ids not in the label map"):
        out = lm.apply(raw, "x_lbl.nii.gz")
    assert int((out == 0).sum()) == 4 and int((out == 1).sum()) == raw.size - 4


def test_2d_file(tmp_path):
    path = _save(np.zeros((8, 9), np.float32), tmp_path / "flat.nii.gz")
    with pytest.raises(DataError, match=r"flat\.nii\.gz: 2D volume of shape \(8, 9\); expected a 3D volume"):
        read_subject(Case("x", (path,), None))


def test_4d_file_rejected_unless_allowed(tmp_path):
    path = _save(np.zeros((*SHAPE, 2), np.float32), tmp_path / "four.nii.gz")
    with pytest.raises(DataError, match=r"four\.nii\.gz: 4D volume .* expected a 3D volume .*allow_4d_channels"):
        read_subject(Case("x", (path,), None))
    assert read_subject(Case("x", (path,), None), allow_4d_channels=True).image.shape[0] == 2


def test_nan_and_inf_intensities_name_the_file_and_count(tmp_path):
    from scseg.data.cache import SubjectCache
    from scseg.data.phantom import generate_phantom_subject
    from scseg.data.preprocess import PreprocessSettings

    image, label, affine = generate_phantom_subject(seed=3, size=(16, 16, 16))
    image[2, 3, 4] = image[5, 5, 5] = image[9, 1, 2] = np.nan
    image[8, 8, 8] = np.inf
    img = _save(image, tmp_path / "p1_img.nii.gz", affine)
    lbl = _save(label, tmp_path / "p1_lbl.nii.gz", affine)
    good = _save(np.nan_to_num(image, posinf=1.0), tmp_path / "p1_t2.nii.gz", affine)
    pattern = r"p1_img\.nii\.gz: 4 voxels are not finite \(3 NaN, 1 infinite\); expected finite intensities"
    with pytest.raises(DataError, match=pattern):
        read_subject(Case("p1", (good, img), lbl))  # the second modality is the bad file, and it is the one named
    names = ("background", *(f"s{k}" for k in range(1, 11)))
    label_map = LabelMap(class_names=names, raw_to_class={k: k for k in range(11)})
    with pytest.raises(DataError, match=pattern):  # the path a training run takes: cache -> read -> preprocess
        SubjectCache(tmp_path / "cache", PreprocessSettings(), label_map).get(Case("p1", (img,), lbl))

    four = _save(np.stack([np.nan_to_num(image, posinf=1.0), image], axis=-1), tmp_path / "p1_4d.nii.gz", affine)
    with pytest.raises(DataError, match=r"p1_4d\.nii\.gz: 4 voxels are not finite .* in channel\(s\) \[1\] of 2"):
        read_subject(Case("p1", (four,), None), allow_4d_channels=True)


def test_4d_label_rejected(tmp_path):
    lbl = _save(np.zeros((*SHAPE, 2), np.uint8), tmp_path / "four_lbl.nii.gz")
    with pytest.raises(DataError, match=r"four_lbl\.nii\.gz: 4D volume"):
        read_subject(Case("x", (_img(tmp_path / "i.nii.gz"),), lbl), allow_4d_channels=True)


def _folder_cfg(root: Path, **extra) -> dict:
    return {
        "type": "folder",
        "root": str(root),
        "images": "*_img.nii.gz",
        "labels": "*_lbl.nii.gz",
        "case_id": r"^(.+?)_(?:img|lbl)\.",
        **extra,
    }


def test_empty_dataset(tmp_path):
    with pytest.raises(DataError, match=r"no cases found under .*expected at least one image/label pair"):
        load_layout(_folder_cfg(tmp_path))


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"data\.layout\.root: .*nowhere is not a folder"):
        load_layout(_folder_cfg(tmp_path / "nowhere"))


def _touch_pairs(root: Path, ids: list[str]) -> None:
    for i in ids:
        (root / f"{i}_img.nii.gz").touch()
        (root / f"{i}_lbl.nii.gz").touch()


def test_split_naming_unknown_cases(tmp_path):
    _touch_pairs(tmp_path, ["a", "b", "c"])
    split = tmp_path / "my_split.json"
    split.write_text(json.dumps({"train": ["a", "b"], "test": ["zz"]}))
    with pytest.raises(DataError, match=r"my_split\.json: 'test' names cases not found in the dataset: \['zz'\]"):
        load_layout(_folder_cfg(tmp_path, split_file="my_split.json"))


def test_split_with_overlap(tmp_path):
    _touch_pairs(tmp_path, ["a", "b", "c"])
    split = tmp_path / "over.json"
    split.write_text(json.dumps({"train": ["a", "b"], "test": ["b", "c"]}))
    with pytest.raises(DataError, match=r"over\.json: case 'b' is listed in both 'train' and 'test'"):
        load_layout(_folder_cfg(tmp_path, split_file=str(split)))


def test_split_file_missing_and_malformed(tmp_path):
    _touch_pairs(tmp_path, ["a", "b"])
    with pytest.raises(DataError, match=r"absent\.json: split file not found"):
        load_layout(_folder_cfg(tmp_path, split_file="absent.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: cannot read the split file"):
        load_layout(_folder_cfg(tmp_path, split_file="bad.json"))
    (tmp_path / "typo.json").write_text(json.dumps({"train": ["a"], "tset": ["b"]}))
    with pytest.raises(DataError, match=r"typo\.json: unknown keys \['tset'\]"):
        load_layout(_folder_cfg(tmp_path, split_file="typo.json"))


def test_unpaired_files_are_listed(tmp_path):
    _touch_pairs(tmp_path, ["a", "b"])
    (tmp_path / "lonely_img.nii.gz").touch()
    (tmp_path / "orphan_lbl.nii.gz").touch()
    with pytest.raises(DataError) as err:
        load_layout(_folder_cfg(tmp_path))
    msg = str(err.value)
    assert "unpaired files" in msg and "lonely_img.nii.gz" in msg and "orphan_lbl.nii.gz" in msg


def test_case_id_regex_without_match(tmp_path):
    (tmp_path / "weird.nii.gz").touch()
    cfg = _folder_cfg(tmp_path, images="*.nii.gz", labels=None, case_id=r"^(\d+)_img")
    with pytest.raises(DataError, match=r"weird\.nii\.gz: .*case_id regex .* does not match the file name"):
        load_layout(cfg)


def test_unknown_layout_type():
    with pytest.raises(DataError, match=r"data\.layout\.type: got 'zip'; expected one of"):
        load_layout({"type": "zip"})


def test_validation_split_too_large():
    train = [Case(str(i), (Path(f"{i}.nii.gz"),), None) for i in range(3)]
    with pytest.raises(DataError, match=r"data\.val_subjects: 3 validation subjects need more than the 3"):
        split_validation(train, 3, 0)


def test_nnunet_missing_channel(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    (tmp_path / "labelsTr" / "case1.nii.gz").touch()
    (tmp_path / "imagesTr" / "case1_0000.nii.gz").touch()
    with pytest.raises(DataError, match=r"case1\.nii\.gz: missing image channel file\(s\) .*case1_0001\.nii\.gz"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_layout({"type": "nnunet", "root": str(tmp_path)})


def test_degenerate_affine():
    # nibabel refuses to write such a file, but a header may still decode to one
    with pytest.raises(DataError, match=r"broken\.nii\.gz: degenerate affine .*expected an invertible affine"):
        geometry_of(np.diag([1.0, 1.0, 0.0, 1.0]), SHAPE, "broken.nii.gz")
    with pytest.raises(DataError, match=r"nan\.nii\.gz: expected a finite 4x4 affine"):
        geometry_of(np.full((4, 4), np.nan), SHAPE, "nan.nii.gz")
