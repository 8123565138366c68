"""Label maps: config forms, lookup, validation, and the decisions written in configs/label_map/*.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from scseg.data.errors import DataError
from scseg.data.label_map import LabelMap, audit_label_map, load_label_map, nnunet_label_map
from scseg.data.phantom import PHANTOM_CLASS_NAMES

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "label_map"


def _yaml(name: str) -> LabelMap:
    return load_label_map(OmegaConf.load(CONFIGS / f"{name}.yaml"))


def test_explicit_form_and_apply():
    lm = load_label_map({"class_names": ["background", "a", "b"], "raw_to_class": {0: 0, 10: 1, 20: 2, 21: 2}})
    raw = np.array([[0, 10], [20, 21]], dtype=np.int16)
    out = lm.apply(raw, "f")
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1], [2, 2]]
    assert lm.num_classes == 3


def test_grouped_form_indices_follow_order():
    cfg = OmegaConf.create(
        {"background_ids": [0, 5], "classes": [{"name": "x", "raw_ids": [3]}, {"name": "y", "raw_ids": [1, 2]}]}
    )
    lm = load_label_map(cfg)
    assert lm.class_names == ("background", "x", "y")
    assert lm.raw_to_class == {0: 0, 5: 0, 3: 1, 1: 2, 2: 2}


def test_negative_and_large_ids_use_the_slow_path():
    lm = LabelMap(("background", "a", "b"), {0: 0, -3: 1, 100_000: 2})
    out = lm.apply(np.array([0, -3, 100_000, 0]), "f")
    assert out.tolist() == [0, 1, 2, 0]


def test_many_classes_use_int16():
    names = ("background", *(f"c{i}" for i in range(1, 300)))
    lm = LabelMap(names, {i: i for i in range(300)})
    out = lm.apply(np.array([0, 299]), "f")
    assert out.dtype == np.int16 and out.tolist() == [0, 299]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"class_names": ["bg", "a"], "raw_to_class": {0: 0, 1: 1}}, "index 0 to be 'background'"),
        ({"class_names": ["background", "a"], "raw_to_class": {0: 0, 1: 2}}, r"class indices \{1: 2\} outside"),
        ({"class_names": ["background", "a", "b"], "raw_to_class": {0: 0, 1: 1}}, r"classes \['b'\] have no raw"),
        ({"class_names": ["background", "a", "a"], "raw_to_class": {0: 0, 1: 1, 2: 2}}, "duplicate names"),
        ({"class_names": ["background", "a"], "raw_to_class": {0: 0, 1: 1}, "unknown": "drop"}, "label_map.unknown"),
        ({"classes": [{"name": "a", "raw_ids": [1]}, {"name": "b", "raw_ids": [1]}]}, "raw id 1 is listed for both"),
        ({"classes": [{"name": "a", "raw_ids": [1.5]}]}, "expected an integer label id"),
        ({"class_names": ["background"]}, "expected exactly one of"),
    ],
)
def test_invalid_configs(cfg, message):
    with pytest.raises(DataError, match=message):
        load_label_map(cfg)


def test_nnunet_dataset_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "tumour": 2, "kidney": 1}}))
    lm = nnunet_label_map(path)
    assert lm.class_names == ("background", "kidney", "tumour")
    assert lm.apply(np.array([0, 1, 2]), "f").tolist() == [0, 1, 2]
    lm2 = load_label_map({"from_dataset_json": str(path), "unknown": "background"})
    assert lm2.unknown == "background" and lm2.num_classes == 3


def test_nnunet_dataset_json_regions_rejected(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2], "core": 2}}))
    with pytest.raises(DataError, match=r"dataset\.json: label 'whole' is a region"):
        nnunet_label_map(path)


def test_nnunet_label_map_config_interpolates_layout_root(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    node = OmegaConf.create({"layout": {"root": str(tmp_path)}, "label_map": OmegaConf.load(CONFIGS / "nnunet.yaml")})
    assert load_label_map(node.label_map).class_names == ("background", "a")


def test_malc_map_has_the_papers_27_structures():
    lm = _yaml("malc")
    assert lm.num_classes == 28 and lm.unknown == "error"
    names = lm.class_names
    for side in ("left", "right"):
        for s in (
            "cerebral_white_matter",
            "cerebral_cortex",
            "lateral_ventricle",
            "cerebellar_white_matter",
            "cerebellar_cortex",
            "thalamus",
            "caudate",
            "putamen",
            "pallidum",
            "hippocampus",
            "amygdala",
            "ventral_dc",
        ):
            assert f"{side}_{s}" in names
    assert {"third_ventricle", "fourth_ventricle", "brain_stem"} <= set(names)


def test_malc_map_parity_rules_and_documented_fates():
    lm = _yaml("malc")
    name = {i: lm.class_names[k] for i, k in lm.raw_to_class.items()}
    for raw in range(100, 208):
        assert name[raw] == ("right_cerebral_cortex" if raw % 2 == 0 else "left_cerebral_cortex"), raw
    assert name[65] == "left_cerebral_cortex" and name[66] == "right_cerebral_cortex"  # insula: opposite parity
    assert name[49] == "right_lateral_ventricle" and name[50] == "left_lateral_ventricle"  # inf-lat-vent merged
    for raw in (0, 71, 72, 73, 23, 30, 75, 76, 46, 15, 63, 64, 69, 74):
        assert name[raw] == "background", raw
    # every raw id occurring in MALC besides the cortex (from labels.csv + the measured histogram) is listed
    occurring = {
        0,
        4,
        11,
        15,
        23,
        30,
        31,
        32,
        35,
        36,
        37,
        38,
        39,
        40,
        41,
        42,
        43,
        44,
        45,
        46,
        47,
        48,
        49,
        50,
        51,
        52,
        55,
        56,
        57,
        58,
        59,
        60,
        61,
        62,
        63,
        64,
        65,
        66,
        69,
        71,
        72,
        73,
        74,
        75,
        76,
    }
    assert occurring <= set(lm.raw_to_class)


def test_chaos_and_phantom_maps():
    chaos = _yaml("chaos")
    assert chaos.class_names == ("background", "liver", "right_kidney", "left_kidney", "spleen")
    assert chaos.apply(np.arange(5), "f").tolist() == [0, 1, 2, 3, 4]
    phantom = _yaml("phantom")
    assert phantom.class_names == PHANTOM_CLASS_NAMES
    assert phantom.raw_to_class == {i: i for i in range(len(PHANTOM_CLASS_NAMES))}
    assert _yaml("binary").num_classes == 2


def test_audit_counts_background_share(tmp_path):
    import nibabel as nib

    raw = np.zeros((4, 4, 4), np.int16)
    raw[0] = 1  # 16 voxels kept
    raw[1, :2] = 7  # 8 voxels sent to background on purpose
    raw[2, 0, 0] = 9  # 1 unknown voxel
    path = tmp_path / "l.nii.gz"
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(path))
    lm = LabelMap(("background", "a"), {0: 0, 1: 1, 7: 0})
    audit = audit_label_map(lm, [path])
    assert audit.unknown_ids == (9,)
    assert audit.lost_counts == {7: 8, 9: 1}
    assert audit.labelled_to_background == pytest.approx(9 / 25)
    assert audit.class_counts.tolist() == [64 - 16, 16]
