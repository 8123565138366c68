"""Slice datasets: shapes, 2.5D context, foreground selection, per-(seed, epoch, index) reproducibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scseg.data.augment import build_augmentation
from scseg.data.cache import SubjectCache, load_entry, write_entry
from scseg.data.errors import DataError
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import PreprocessSettings, preprocess_subject
from scseg.data.slices import SliceDataset, SubjectSlices, extract_slice, stack_slices
from scseg.data.types import Geometry, Subject

AUG = {
    "enabled": True,
    "transforms": [
        {"name": "Affine", "p": 1.0, "rotate": [-15, 15]},
        {"name": "RandomGamma", "p": 1.0, "gamma_limit": [80, 120]},
    ],
}


def _label_map() -> LabelMap:
    return LabelMap(class_names=("background", "a", "b"), raw_to_class={0: 0, 1: 1, 2: 2}, unknown="error")


def _subject(sid: str, shape=(24, 20, 16), modalities: int = 2, seed: int = 0) -> Subject:
    rng = np.random.default_rng(seed)
    image = np.zeros((modalities, *shape), np.float32)
    image[:, 3:-3, 3:-3, 2:-2] = rng.uniform(10, 100, (modalities, shape[0] - 6, shape[1] - 6, shape[2] - 4))
    label = np.zeros(shape, np.int32)
    label[6:14, 6:12, 5:9] = 1  # foreground only in axial slices 5..8
    label[8:10, 8:10, 6:8] = 2
    ornt = np.array([[0, 1], [1, 1], [2, 1]], float)
    return Subject(
        id=sid,
        image=image,
        label=label,
        affine=np.eye(4),
        spacing=(1.0, 1.0, 1.0),
        geometry=Geometry(np.eye(4), shape, ornt),
        image_paths=(Path(f"/x/{sid}.nii.gz"),),
        label_path=None,
    )


def _prepared(n: int = 2, pad=None, shapes=None, axis="axial"):
    settings = PreprocessSettings(axis=axis, crop_margin=1, pad_size=pad)
    shapes = shapes or [(24, 20, 16)] * n
    return [preprocess_subject(_subject(f"s{i}", shapes[i], seed=i), settings, _label_map()) for i in range(n)]


def test_items_shapes_dtypes_and_context_channels():
    subjects = _prepared()
    ds = SliceDataset(subjects, context=1, normalize="none")
    depth = subjects[0].image.shape[3]
    assert len(ds) == 2 * depth
    assert ds.in_channels == 3 * 2
    item = ds[0]
    h, w = subjects[0].image.shape[1:3]
    assert item["image"].shape == (6, h, w) and item["image"].dtype == torch.float32
    assert item["label"].shape == (h, w) and item["label"].dtype == torch.int64
    # first slice: the "previous" neighbour is replicated, channels ordered neighbour-major
    assert torch.equal(item["image"][0:2], item["image"][2:4])
    assert not torch.equal(item["image"][2:4], item["image"][4:6])
    np.testing.assert_array_equal(item["image"][2:4].numpy(), subjects[0].image[:, :, :, 0])


def test_extract_slice_along_each_axis():
    s = _prepared(1)[0]
    for axis in (0, 1, 2):
        img, lab = extract_slice(s, axis, 3, context=0)
        np.testing.assert_array_equal(img, np.take(s.image, 3, axis=axis + 1))
        np.testing.assert_array_equal(lab, np.take(s.label, 3, axis=axis))


def test_zscore_uses_subject_statistics():
    s = _prepared(1)[0]
    ds = SliceDataset([s], context=0, normalize="zscore")
    item = ds[len(ds) // 2]
    raw = extract_slice(s, 2, len(ds) // 2)[0]
    expected = (raw - np.array(s.meta.norm_mean)[:, None, None]) / np.array(s.meta.norm_std)[:, None, None]
    np.testing.assert_allclose(item["image"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_min_foreground_skips_empty_slices():
    subjects = _prepared()
    ds = SliceDataset(subjects, min_foreground=0.01, normalize="none")
    assert len(ds) == 2 * 4  # only axial slices 5..8 of each subject hold labels
    assert all(ds[i]["label"].sum() > 0 for i in range(len(ds)))
    with pytest.raises(DataError, match="min_foreground"):
        SliceDataset(subjects, min_foreground=1.0)


def test_foreground_oversampling():
    subjects = _prepared()
    ds_all = SliceDataset(subjects, foreground_oversample=1.0, normalize="none")
    assert len(ds_all) == 2 * subjects[0].image.shape[3]
    assert all(ds_all[i]["label"].sum() > 0 for i in range(len(ds_all)))
    ds_none = SliceDataset(subjects, foreground_oversample=0.0, normalize="none")
    assert sum(int(ds_none[i]["label"].sum() > 0) for i in range(len(ds_none))) == 8


def test_reproducible_per_seed_epoch_index():
    subjects = _prepared()
    ds = SliceDataset(subjects, augment=build_augmentation(AUG), seed=3, foreground_oversample=0.5)
    a = [ds[i]["image"] for i in range(len(ds))]
    b = [ds[i]["image"] for i in reversed(range(len(ds)))][::-1]  # order of access does not matter
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    c = [ds[i]["image"] for i in range(len(ds))]
    assert sum(not torch.equal(x, y) for x, y in zip(a, c, strict=True)) > len(ds) // 2
    other_seed = SliceDataset(subjects, augment=build_augmentation(AUG), seed=4, foreground_oversample=0.5)
    assert not torch.equal(other_seed[5]["image"], a[5])
    ds.set_epoch(0)
    assert torch.equal(ds[5]["image"], a[5])  # a resumed epoch sees the same samples


def test_workers_do_not_change_samples(tmp_path):
    cache = SubjectCache(tmp_path, PreprocessSettings(crop_margin=1), _label_map())
    subjects = [load_entry(write_entry(p, cache.root / "subjects" / p.id)) for p in _prepared()]
    ds = SliceDataset(subjects, augment=build_augmentation(AUG), seed=1, foreground_oversample=0.3)
    ds.set_epoch(2)
    plain = torch.cat([b["image"] for b in DataLoader(ds, batch_size=8, num_workers=0)])
    workers = torch.cat([b["image"] for b in DataLoader(ds, batch_size=8, num_workers=2)])
    assert torch.equal(plain, workers)


def test_subjects_of_different_sizes_batch_together():
    subjects = _prepared(2, shapes=[(24, 20, 16), (20, 22, 16)])
    ds = SliceDataset(subjects, normalize="none")
    assert ds.canvas == (max(s.image.shape[1] for s in subjects), max(s.image.shape[2] for s in subjects))
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert batch["image"].shape[2:] == ds.canvas


def test_subject_slices_and_stack_roundtrip():
    s = _prepared(1, pad=(24, 24), axis="coronal")[0]
    assert s.meta.slice_axis == 1
    view = SubjectSlices(s, context=2)
    assert len(view) == s.image.shape[2]
    item = view[0]
    assert item["image"].shape == (5 * 2, 24, 24) and item["index"] == 0
    vol = stack_slices([view[i]["label"] for i in range(len(view))], "coronal")
    np.testing.assert_array_equal(vol, s.label)
    vol2 = stack_slices(torch.stack([view[i]["label"] for i in range(len(view))]), "coronal")
    np.testing.assert_array_equal(vol2, s.label)
    np.testing.assert_array_equal(view.to_volume([view[i]["label"] for i in range(len(view))]), s.label)


def test_training_and_evaluation_feed_the_network_the_same_tensors():
    """One canvas: for every slice of every subject (different in-plane sizes), the training dataset (augmentation
    off) and the evaluation view give identical network inputs; predictions on the canvas map back exactly."""
    subjects = _prepared(3, shapes=[(24, 20, 16), (18, 26, 16), (22, 17, 12)])
    train = SliceDataset(subjects, context=1, normalize="zscore")
    sizes = [s.meta.in_plane_shape for s in subjects]
    assert len(set(sizes)) == 3 and train.canvas == (max(h for h, _ in sizes), max(w for _, w in sizes))
    position = {pair: i for i, pair in enumerate(train.index)}
    for si, s in enumerate(subjects):
        view = SubjectSlices(s, context=1, normalize="zscore", canvas=train.canvas)
        for j in range(len(view)):
            item = view[j]
            torch.testing.assert_close(item["image"], train[position[(si, j)]]["image"], rtol=0, atol=0)
            assert torch.equal(item["label"], train[position[(si, j)]]["label"])
        labels_on_canvas = [view[j]["label"] for j in range(len(view))]
        np.testing.assert_array_equal(view.to_volume(labels_on_canvas), s.label)


def test_a_subject_larger_than_the_canvas_is_evaluated_on_a_grown_canvas_with_a_warning():
    s = _prepared(1, shapes=[(24, 20, 16)])[0]
    small = (s.meta.in_plane_shape[0] - 4, s.meta.in_plane_shape[1] + 6)
    with pytest.warns(UserWarning, match=r"subject s0: in-plane size .* exceeds the training canvas"):
        view = SubjectSlices(s, canvas=small)
    assert view.canvas == (s.meta.in_plane_shape[0], small[1])
    np.testing.assert_array_equal(view.to_volume([view[j]["label"] for j in range(len(view))]), s.label)


def test_acquisition_axis_follows_each_subjects_coarsest_axis():
    from scseg.data.preprocess import resolve_slice_axis

    assert resolve_slice_axis("acquisition", (1.25, 8.0, 1.25)) == 1
    assert resolve_slice_axis("acquisition", (7.7, 1.2, 1.2)) == 0
    assert resolve_slice_axis("acquisition", (1.0, 1.0, 1.2)) == 2  # isotropic enough: the fallback (axial)
    assert resolve_slice_axis("acquisition", (1.0, 1.0, 1.2), fallback_axis="coronal") == 1
    assert resolve_slice_axis("sagittal", (1.0, 1.0, 9.0)) == 0  # a named axis is taken as is
    with pytest.raises(DataError, match="data.slices.axis"):
        resolve_slice_axis("oblique", (1.0, 1.0, 1.0))


def test_training_needs_labels():
    s = _prepared(1)[0]
    s.label = None
    with pytest.raises(DataError, match="s0.*label"):
        SliceDataset([s])
