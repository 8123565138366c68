"""DataModule on the phantom dataset (and one real subject each when ../shared/data is present)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scseg.config import compose_data_config
from scseg.data.cache import median_frequency_weights
from scseg.data.datamodule import DataModule
from scseg.data.errors import DataError
from scseg.data.io import write_label
from scseg.data.preprocess import restore
from scseg.data.sampler import EpochSampler
from scseg.data.slices import SliceDataset

TINY = ["layout.n_subjects=5", "layout.n_test=1", "layout.size=[32,32,32]", "val_subjects=1"]


def _dm(*extra: str, seed: int = 0) -> DataModule:
    return DataModule(compose_data_config("phantom", [*TINY, *extra]), seed=seed)


def _predict_reference(dm: DataModule, subject) -> np.ndarray:
    """A 'perfect model': the evaluation view's labels, stacked back into the preprocessed volume."""
    view = dm.eval_slices(subject)
    return view.to_volume([view[i]["label"] for i in range(len(view))])


def test_identity_splits_and_channels():
    dm = _dm("slices.context=1")
    assert dm.num_classes == 11 and dm.class_names[0] == "background" and len(dm.class_names) == 11
    assert dm.in_channels == 3  # (2 * 1 + 1) * 1 modality
    assert dm.cache_dir == Path(os.environ["SCSEG_CACHE"]).resolve()
    ids = {s: [c.id for c in dm.cases(s)] for s in ("train", "val", "test")}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert len(set(sum(ids.values(), []))) == 5
    assert [s.id for s in dm.subjects("val")] == ids["val"]
    with pytest.raises(DataError, match="split 'dev'"):
        dm.cases("dev")


def test_prepare_is_idempotent(monkeypatch):
    dm = _dm()
    dm.prepare()
    entries = sorted((dm.cache_dir / "subjects").iterdir())
    assert len(entries) == 5

    import scseg.data.cache as cache_mod

    def boom(*a, **k):
        raise AssertionError("prepare() re-read a cached subject")

    monkeypatch.setattr(cache_mod, "read_subject", boom)  # the name the cache reads files with
    again = _dm()
    again.prepare()
    assert sorted((again.cache_dir / "subjects").iterdir()) == entries


def test_train_dataset_and_loader():
    dm = _dm("loader.batch_size=4", "slices.context=1")
    ds = dm.train_dataset()
    assert isinstance(ds, SliceDataset) and dm.augment_cfg is not None and ds.augment is not None
    batch = next(iter(dm.train_loader(ds, epoch=0)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and int(batch["label"].max()) < dm.num_classes
    again = next(iter(dm.train_loader(dm.train_dataset(), epoch=0)))
    assert torch.equal(batch["image"], again["image"])  # same seed and epoch: same order and draws
    other = next(iter(dm.train_loader(ds, epoch=1)))
    assert not torch.equal(batch["image"], other["image"])
    assert torch.isfinite(batch["image"]).all()


def test_train_loader_draws_the_epoch_samplers_order_over_ranks():
    """The loader the trainer trains on: EpochSampler's (seed, epoch) order, iters_per_epoch batches per rank, and
    under DDP every world_size-th sample of that same order (the ranks together see the epoch once)."""
    dm = _dm("loader.batch_size=4")
    ds = dm.train_dataset()
    single = dm.train_loader(ds, epoch=2, iters_per_epoch=3)
    assert isinstance(single.sampler, EpochSampler) and len(single) == 3
    expected = EpochSampler(len(ds), dm.seed, num_samples=12)
    expected.set_epoch(2)
    assert list(single.sampler) == list(expected)
    ranks = [dm.train_loader(ds, epoch=2, iters_per_epoch=3, rank=r, world_size=2) for r in (0, 1)]
    both = EpochSampler(len(ds), dm.seed, num_samples=24)
    both.set_epoch(2)
    order = list(both)
    assert [list(loader.sampler) for loader in ranks] == [order[0::2], order[1::2]]
    assert not single.pin_memory  # data.loader.pin_memory pins only on CUDA


def test_val_dataset_is_unaugmented():
    dm = _dm()
    val = dm.val_dataset()
    assert val is not None and val.augment is None
    assert len(val) == 32 and val.subjects[0].id == dm.cases("val")[0].id
    val.set_epoch(5)
    first = val[3]["image"]
    val.set_epoch(0)
    assert torch.equal(first, val[3]["image"])
    assert _dm("val_subjects=0").val_dataset() is None


def test_class_weights_match_labels():
    dm = _dm()
    w = dm.class_weights()
    assert w.dtype == torch.float32 and w.shape == (11,)
    labels = [np.asarray(s.label) for s in dm.subjects("train")]
    voxels = sum(np.bincount(lab.ravel(), minlength=11) for lab in labels)
    slice_voxels = np.zeros(11)
    for lab in labels:  # axial: slices along the last axis
        present = np.stack([np.bincount(lab[:, :, z].ravel(), minlength=11) > 0 for z in range(lab.shape[2])])
        slice_voxels += present.sum(0) * lab.shape[0] * lab.shape[1]
    expected = median_frequency_weights(voxels, slice_voxels)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert (w > 0).all()


def test_perfect_prediction_roundtrips_to_reference(tmp_path):
    dm = _dm("preprocess.crop_margin=1", "preprocess.pad_size=[40,40]", "slices.axis=coronal")
    subject = dm.subjects("test")[0]
    assert subject.image.shape[1] == 40 and subject.image.shape[3] == 40  # X and Z padded for coronal
    pred = _predict_reference(dm, subject)
    assert pred.shape == subject.label.shape
    back = restore(pred, subject.meta, "nearest")
    ref = dm.reference(subject)
    raw = np.asarray(nib.load(subject.meta.label_path).dataobj)
    assert back.shape == ref.shape == raw.shape
    np.testing.assert_array_equal(ref, dm.label_map.apply(raw.astype(np.int32), "test"))
    np.testing.assert_array_equal(back, ref)
    out = tmp_path / "pred.nii.gz"
    write_label(restore(pred, subject.meta, "nearest", grid="canonical"), subject.meta.to_geometry(), out)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), ref)


def test_prepare_images_for_prediction():
    dm = _dm()
    labelled = dm.subjects("test")[0]
    image_path = Path(labelled.meta.image_paths[0])
    subject = dm.prepare_images([image_path])
    assert subject.label is None and subject.id == image_path.name.replace(".nii.gz", "")
    np.testing.assert_array_equal(subject.image, labelled.image)
    view = dm.eval_slices(subject)
    assert "label" not in view[0]
    pred = view.to_volume([torch.zeros(view[i]["image"].shape[1:], dtype=torch.int64) for i in range(len(view))])
    assert restore(pred, subject.meta, "nearest").shape == nib.load(image_path).shape
    with pytest.raises(DataError, match="no label file"):
        dm.reference(subject)
    with pytest.raises(DataError, match="missing.nii.gz"):
        dm.prepare_images([image_path.parent / "missing.nii.gz"])


def test_config_errors_are_data_errors():
    with pytest.raises(DataError, match="'nosuch' not found.*phantom"):
        compose_data_config("nosuch")
    with pytest.raises(DataError, match="phantom"):
        compose_data_config("phantom", ["no_such_key.deeper=1"])
    with pytest.raises(ValueError, match="data.augment.transforms\\[0\\].*Flip"):
        _dm("augment.transforms=[{name: Flip}]")


def test_compose_inside_an_active_hydra_restores_it():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from scseg.config import CONFIG_DIR as CONFIG_ROOT

    assert not GlobalHydra.instance().is_initialized()
    with initialize_config_dir(config_dir=str(CONFIG_ROOT / "data"), version_base=None):
        cfg = compose_data_config("phantom", TINY)
        assert cfg.name == "phantom" and cfg.label_map.class_names[0] == "background"
        # the caller's Hydra (search path configs/data) is back: its own config names still compose
        assert GlobalHydra.instance().is_initialized()
        assert compose(config_name="common").slices.axis == "axial"
    assert not GlobalHydra.instance().is_initialized()


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["chaos", "malc"])
def test_real_subject_roundtrip(name, request):
    """Default settings keep every labelled voxel and invert exactly on one real test subject."""
    request.getfixturevalue(f"{name}_root")
    dm = DataModule(compose_data_config(name), seed=0)
    case = dm.cases("test")[0]
    subject = dm.subject(case)
    assert subject.meta.has_label
    back = restore(np.asarray(subject.label), subject.meta, "nearest")
    np.testing.assert_array_equal(back, dm.reference(subject))


def test_validation_fraction_takes_a_share_of_training_subjects(capsys):
    base = ["layout.n_test=2", "layout.size=[32,32,32]", "val_subjects=null", "val_fraction=0.2"]
    dm = DataModule(compose_data_config("phantom", [*base, "layout.n_subjects=12"]))
    assert [len(dm.cases(s)) for s in ("train", "val", "test")] == [8, 2, 2]  # round(0.2 * 10) = 2
    explicit = DataModule(compose_data_config("phantom", [*base, "layout.n_subjects=12", "val_subjects=3"]))
    assert len(explicit.cases("val")) == 3  # an integer wins
    few = DataModule(compose_data_config("phantom", [*base, "layout.n_subjects=4"]))
    assert [len(few.cases(s)) for s in ("train", "val", "test")] == [2, 0, 2]
    assert "validation is off: 2 training subject(s)" in capsys.readouterr().err
    with pytest.raises(DataError, match="data.val_fraction"):
        DataModule(compose_data_config("phantom", [*base, "layout.n_subjects=12", "val_fraction=1.5"])).cases("val")
