"""k-fold cross-validation (scseg/data/folds.py and DataModule): every subject tested exactly once, stable for a
seed, rescans kept with their subject, nnU-Net's splits_final.json read and written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scseg.config import compose_data_config
from scseg.data.datamodule import DataModule
from scseg.data.errors import DataError
from scseg.data.folds import apply_fold, check_folds, kfold_subjects, make_folds, read_splits_final, write_splits_final
from scseg.data.types import Case

TINY = ["layout.n_subjects=10", "layout.n_test=3", "layout.size=[24,24,24]", "augment.enabled=false"]


def _cases(n: int, rescans: dict[str, str] | None = None) -> list[Case]:
    cases = [Case(id=f"c{i:02d}", image_paths=(Path(f"c{i:02d}.nii.gz"),), label_path=Path("l")) for i in range(n)]
    for rescan, original in (rescans or {}).items():
        cases.append(Case(id=rescan, image_paths=(Path(rescan),), label_path=Path("l"), subject=original))
    return cases


@pytest.mark.parametrize(("n", "k"), [(20, 5), (17, 5), (6, 2), (35, 10)])
def test_every_subject_is_tested_exactly_once_and_stable_for_a_seed(n, k):
    subjects = [f"s{i}" for i in range(n)]
    groups = kfold_subjects(subjects, k, seed=0)
    assert sorted(s for g in groups for s in g) == sorted(subjects)
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert kfold_subjects(list(reversed(subjects)), k, seed=0) == groups  # order of discovery does not matter
    assert kfold_subjects(subjects, k, seed=1) != groups


def test_rescans_stay_with_their_subject():
    cases = _cases(10, {"r03": "c03", "r07": "c07"})
    folds = make_folds(cases, 3, seed=0)
    for fold in folds:
        for rescan, original in (("r03", "c03"), ("r07", "c07")):
            assert (rescan in fold["val"]) == (original in fold["val"])
    held_out = sorted(c for f in folds for c in f["val"])
    assert held_out == sorted(c.id for c in cases)


def test_splits_final_round_trips(tmp_path):
    cases = _cases(12)
    folds = make_folds(cases, 4, seed=3)
    path = tmp_path / "splits_final.json"
    write_splits_final(folds, path)
    data = json.loads(path.read_text())
    assert isinstance(data, list) and set(data[0]) == {"train", "val"}  # nnU-Net's layout
    assert read_splits_final(path, [c.id for c in cases]) == folds
    split = apply_fold(cases, folds, 2)
    assert {c.id for c in split["test"]} == set(folds[2]["val"])
    assert not {c.id for c in split["train"]} & {c.id for c in split["test"]}


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        ([{"train": ["c00"], "val": ["c01", "c02"]}, {"train": ["c02"], "val": ["c00", "c01"]}], "held out in folds"),
        ([{"train": ["c00"], "val": ["c00", "c01", "c02"]}], "both 'train' and 'val'"),
        ([{"train": ["c00"], "val": ["c01"]}], "never held out"),
        ([{"train": ["x9"], "val": ["c00", "c01", "c02"]}], "not in the dataset"),
        ({"train": []}, "non-empty list"),
    ],
)
def test_bad_splits_files_are_refused_by_name(folds, message):
    with pytest.raises(DataError, match=message):
        check_folds(folds, ["c00", "c01", "c02"], "splits_final.json")


def test_datamodule_folds_partition_the_dataset(tmp_path):
    """Four folds of the 10 phantom subjects: each fold's test split is its held-out group, training carves its
    validation subjects from the rest, and the test splits together cover every subject once."""
    tested = []
    for fold in range(4):
        dm = DataModule(compose_data_config("phantom", [*TINY, "folds=4", f"fold={fold}"]), seed=0)
        test = {c.id for c in dm.cases("test")}
        train_val = {c.id for c in dm.cases("train")} | {c.id for c in dm.cases("val")}
        assert not test & train_val and len(test | train_val) == 10
        assert len(dm.cases("val")) == 3
        tested.extend(test)
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 10
    # the folds written by one run are read back by another (an nnU-Net user's splits_final.json works the same)
    path = tmp_path / "splits_final.json"
    write_splits_final(dm.folds(), path)
    again = DataModule(compose_data_config("phantom", [*TINY, f"splits_file={path}", "fold=3"]), seed=0)
    assert {c.id for c in again.cases("test")} == test
    with pytest.raises(DataError, match="data.fold: 4 is not a fold of 4"):
        DataModule(compose_data_config("phantom", [*TINY, "folds=4", "fold=4"]), seed=0).cases("test")
