"""Oblique, anisotropic data of mixed orientation: each subject is sliced along its own acquired plane, training
and evaluation share one canvas, and predictions go back to each file's own grid exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from scseg.config import compose_data_config
from scseg.data.datamodule import DataModule
from scseg.data.preprocess import restore
from tests.data.oblique import write_oblique_dataset


@pytest.fixture
def oblique_dm(tmp_path) -> DataModule:
    root = write_oblique_dataset(tmp_path / "Dataset001_Oblique")
    return DataModule(compose_data_config("nnunet", [f"layout.root={root}", "augment.enabled=false"]), seed=0)


def _acquired_canonical_axis(path: str) -> int:
    img = nib.load(path)
    thick_voxel_axis = int(np.argmax(img.header.get_zooms()[:3]))
    return int(nib.io_orientation(img.affine)[thick_voxel_axis, 0])


def test_each_subject_is_sliced_along_its_thick_axis(oblique_dm):
    subjects = [s for split in ("train", "val", "test") for s in oblique_dm.subjects(split)]
    codes = {nib.aff2axcodes(nib.load(s.meta.image_paths[0]).affine) for s in subjects}
    assert len(codes) >= 2  # mixed orientation in one dataset
    axes = [s.meta.slice_axis for s in subjects]
    assert axes == [_acquired_canonical_axis(s.meta.image_paths[0]) for s in subjects]
    assert len(set(axes)) >= 2  # the acquired plane is a different canonical axis from subject to subject
    for s in subjects:  # slices are thin in-plane images, never strips across the 8 mm axis
        assert s.image.shape[1 + s.meta.slice_axis] <= 10


def test_validation_is_on_by_default_for_nnunet_and_folder(oblique_dm):
    sizes = {split: len(oblique_dm.cases(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 1, "test": 1}


def test_perfect_prediction_returns_to_every_files_grid(oblique_dm):
    canvas = oblique_dm.canvas
    train = oblique_dm.train_dataset()
    assert train[0]["image"].shape[1:] == canvas
    for split in ("train", "val", "test"):
        for subject in oblique_dm.subjects(split):
            view = oblique_dm.eval_slices(subject)
            assert view[0]["image"].shape[1:] == view.canvas
            volume = view.to_volume([view[i]["label"] for i in range(len(view))])
            back = restore(volume, subject.meta, "nearest")
            raw = np.asarray(nib.load(subject.meta.label_path).dataobj)
            assert back.shape == raw.shape
            np.testing.assert_array_equal(back, raw)
