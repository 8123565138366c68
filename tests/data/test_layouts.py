"""Layouts: pairing files into cases, split files, seeded by-subject splits, MALC rescans, nnU-Net, phantom."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from scseg.config import compose_data_config
from scseg.data.errors import DataError
from scseg.data.layouts import load_layout, split_validation
from scseg.data.types import Case
from scseg.paths import resolve_path


def _touch(root: Path, *names: str) -> None:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).touch()


def _folder(root: Path, **extra) -> dict:
    cfg = {
        "type": "folder",
        "root": str(root),
        "images": "imgs/*_img.nii.gz",
        "labels": "lbls/*_lbl.nii.gz",
        "case_id": r"^(.+?)_(?:img|lbl)\.",
    }
    cfg.update(extra)
    return cfg


def _pairs(root: Path, ids) -> None:
    for i in ids:
        _touch(root, f"imgs/{i}_img.nii.gz", f"lbls/{i}_lbl.nii.gz")


def test_folder_pairs_by_case_id(tmp_path):
    _pairs(tmp_path, ["s01", "s02", "s03"])
    splits = load_layout(_folder(tmp_path, test_fraction=0.0))
    assert set(splits) == {"train", "test"} and splits["test"] == []
    c = {x.id: x for x in splits["train"]}["s02"]
    assert c.image_paths == (tmp_path / "imgs" / "s02_img.nii.gz",)
    assert c.label_path == tmp_path / "lbls" / "s02_lbl.nii.gz"


def test_folder_multi_modality_globs(tmp_path):
    for i in ("a", "b"):
        _touch(tmp_path, f"{i}_t1.nii.gz", f"{i}_t2.nii.gz", f"{i}_seg.nii.gz")
    cfg = _folder(
        tmp_path, images=["*_t1.nii.gz", "*_t2.nii.gz"], labels="*_seg.nii.gz", case_id=r"^([a-z])_", test_fraction=0
    )
    (case,) = [c for c in load_layout(cfg)["train"] if c.id == "b"]
    assert [p.name for p in case.image_paths] == ["b_t1.nii.gz", "b_t2.nii.gz"]


def test_folder_without_labels(tmp_path):
    _touch(tmp_path, "imgs/x_img.nii.gz", "imgs/y_img.nii.gz")
    splits = load_layout(_folder(tmp_path, labels=None, test_fraction=0.5))
    assert all(c.label_path is None for v in splits.values() for c in v)
    assert len(splits["train"]) == len(splits["test"]) == 1


def test_test_fraction_is_seeded_and_deterministic(tmp_path):
    ids = [f"s{i:02d}" for i in range(10)]
    _pairs(tmp_path, ids)
    a = load_layout(_folder(tmp_path, test_fraction=0.3, split_seed=1))
    b = load_layout(_folder(tmp_path, test_fraction=0.3, split_seed=1))
    c = load_layout(_folder(tmp_path, test_fraction=0.3, split_seed=2))
    test_ids = [x.id for x in a["test"]]
    assert test_ids == [x.id for x in b["test"]] and len(test_ids) == 3
    assert {x.id for x in a["train"]} | set(test_ids) == set(ids)
    assert set(test_ids) != {x.id for x in c["test"]}


def test_split_file_relative_to_root_with_val(tmp_path):
    _pairs(tmp_path, ["a", "b", "c", "d"])
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d"]}))
    splits = load_layout(_folder(tmp_path, split_file="split.json"))
    assert {k: [c.id for c in v] for k, v in splits.items()} == {"train": ["a", "b"], "val": ["c"], "test": ["d"]}


def test_split_file_leaving_cases_out_warns(tmp_path):
    _pairs(tmp_path, ["a", "b", "c"])
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "test": ["b"]}))
    with pytest.warns(UserWarning, match=r"1 case\(s\) are in no split and are not used: \['c'\]"):
        load_layout(_folder(tmp_path, split_file="split.json"))


def test_split_validation_by_subject_and_deterministic():
    train = [Case(f"s{i}", (Path(f"s{i}.nii.gz"),), None) for i in range(6)]
    train.append(Case("r3", (Path("r3.nii.gz"),), None, subject="s3"))  # a rescan of s3
    for seed in range(8):
        tr, va = split_validation(train, 2, seed)
        assert (tr, va) == split_validation(train, 2, seed)
        assert len({c.subject_id for c in va}) == 2
        assert not {c.subject_id for c in tr} & {c.subject_id for c in va}
        assert len(tr) + len(va) == len(train)
    assert split_validation(train, 0, 0) == (train, [])


def test_resolve_path_relative_to_repo_root():
    assert resolve_path("configs") == Path(__file__).resolve().parents[2] / "configs"
    assert resolve_path("/abs/x") == Path("/abs/x")


def _malc_tree(root: Path, train, test, rescans) -> None:
    for i in [*train, *test, *rescans]:
        _touch(root, f"{i}_SS.nii.gz", f"{i}_glm.nii.gz")
    (root / "split.json").write_text(json.dumps({"train": train, "test": test, "rescans": rescans}))


def test_malc_rescans_stay_with_their_subject(tmp_path):
    _malc_tree(tmp_path, ["1000", "1001", "1002"], ["1003", "1004"], {"1023": "1003", "1030": "1001"})
    base = {"type": "malc", "root": str(tmp_path), "split_file": "split.json"}
    default = load_layout(base)
    assert [c.id for c in default["train"]] == ["1000", "1001", "1002"]
    assert [c.id for c in default["test"]] == ["1003", "1004"]
    both = load_layout({**base, "include_rescans_in_test": True, "include_rescans_in_train": True})
    assert [c.id for c in both["test"]] == ["1003", "1004", "1023"]
    assert [c.id for c in both["train"]] == ["1000", "1001", "1002", "1030"]
    rescan = both["train"][-1]
    assert rescan.subject_id == "1001"
    # validation carving keeps the rescan with its subject
    for seed in range(5):
        tr, va = split_validation(both["train"], 1, seed)
        assert ({"1001", "1030"} <= {c.id for c in va}) or ({"1001", "1030"} <= {c.id for c in tr})


def test_malc_rescan_listed_in_a_split_is_an_error(tmp_path):
    _malc_tree(tmp_path, ["1000", "1023"], ["1003"], {"1023": "1003"})
    with pytest.raises(DataError, match=r"split\.json: rescan '1023' is listed in a split"):
        load_layout({"type": "malc", "root": str(tmp_path)})


def test_chaos_layout(tmp_path):
    for i in ("1", "2", "10"):
        _touch(tmp_path, f"image_{i}.nii.gz", f"label_{i}.nii.gz")
    (tmp_path / "split.json").write_text(json.dumps({"note": "x", "train": ["1", "10"], "test": ["2"]}))
    splits = load_layout({"type": "chaos", "root": str(tmp_path)})
    assert [c.id for c in splits["train"]] == ["1", "10"]
    assert splits["test"][0].label_path == tmp_path / "label_2.nii.gz"


def test_nnunet_layout_channels(tmp_path):
    meta = {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "a": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for c in ("p1", "p2", "p3"):
        _touch(tmp_path, f"imagesTr/{c}_0000.nii.gz", f"imagesTr/{c}_0001.nii.gz", f"labelsTr/{c}.nii.gz")
    splits = load_layout({"type": "nnunet", "root": str(tmp_path), "test_fraction": 0.34, "split_seed": 0})
    cases = splits["train"] + splits["test"]
    assert len(splits["test"]) == 1 and sorted(c.id for c in cases) == ["p1", "p2", "p3"]
    p2 = next(c for c in cases if c.id == "p2")
    assert [p.name for p in p2.image_paths] == ["p2_0000.nii.gz", "p2_0001.nii.gz"]
    assert p2.label_path.name == "p2.nii.gz"


def test_nnunet_orphan_image_is_an_error(tmp_path):
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    _touch(tmp_path, "imagesTr/p1_0000.nii.gz", "labelsTr/p1.nii.gz", "imagesTr/p9_0000.nii.gz")
    with pytest.raises(DataError, match=r"imagesTr: image files without a label in labelsTr: \['p9_0000\.nii\.gz'\]"):
        load_layout({"type": "nnunet", "root": str(tmp_path), "test_fraction": 0})


def test_phantom_layout_generates_once_atomically(tmp_path):
    cfg = {"type": "phantom", "n_subjects": 3, "n_test": 1, "size": [16, 16, 16], "seed": 3, "cache_dir": str(tmp_path)}
    splits = load_layout(cfg)
    assert [c.id for c in splits["train"]] == ["phantom_000", "phantom_001"]
    assert [c.id for c in splits["test"]] == ["phantom_002"]
    folder = splits["train"][0].image_paths[0].parent
    assert folder.parent == tmp_path / "phantom"
    stamp = splits["train"][0].image_paths[0].stat().st_mtime_ns
    again = load_layout(cfg)
    assert again["train"][0].image_paths[0].stat().st_mtime_ns == stamp  # not regenerated
    assert [p.name for p in (tmp_path / "phantom").iterdir()] == [folder.name]  # no temporary folders left
    other = load_layout({**cfg, "generator": {"noise_std": 0.02}})
    assert other["train"][0].image_paths[0].parent != folder


def test_phantom_layout_rejects_unknown_generator_setting(tmp_path):
    with pytest.raises(DataError, match=r"data\.layout\.generator: unknown settings \['nosie_std'\]"):
        load_layout({"type": "phantom", "n_subjects": 2, "n_test": 1, "generator": {"nosie_std": 1}})


def test_data_configs_compose():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, axis in (("malc", "coronal"), ("chaos", "axial"), ("phantom", "axial")):
            cfg = compose_data_config(name)
            assert cfg.name == name and cfg.layout.type == name and cfg.slices.axis == axis
            assert "preprocess" in cfg and "loader" in cfg  # common.yaml composed underneath
            assert {"class_names", "classes"} & set(cfg.label_map)
        assert compose_data_config("malc").preprocess.target_spacing == [1.0, 1.0, 1.0]
        folder = compose_data_config("folder", ["layout.root=/somewhere"])
        assert folder.layout.root == "/somewhere" and folder.layout.test_fraction == 0.2
        nn = compose_data_config("nnunet", ["layout.root=/ds"])
        assert nn.label_map.from_dataset_json == "/ds/dataset.json"
