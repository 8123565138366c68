"""Cache: location, content keys, atomic entries under races, memory-mapping; class statistics and weights."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import threading
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import scseg.data.cache as cache_mod
from scseg.data.cache import (
    SubjectCache,
    cache_key,
    class_statistics_of,
    load_entry,
    median_frequency_weights,
    write_entry,
)
from scseg.data.errors import DataError
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import PreprocessSettings
from scseg.data.types import Case
from scseg.paths import cache_root


def _label_map(names=("background", "a", "b"), extra: dict | None = None) -> LabelMap:
    return LabelMap(class_names=names, raw_to_class={0: 0, 10: 1, 20: 2, **(extra or {})}, unknown="error")


def _write_case(folder: Path, cid: str = "c1", shift: int = 0) -> Case:
    rng = np.random.default_rng(shift)
    shape = (24, 24, 20)
    image = np.zeros(shape, np.float32)
    image[4:20, 4:20, 3:17] = rng.uniform(50, 100, (16, 16, 14))
    label = np.zeros(shape, np.int16)
    label[6 + shift : 14 + shift, 6:14, 5:12] = 10
    label[8:10, 8:10, 5:7] = 20
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"{cid}_img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / f"{cid}_seg.nii.gz")
    return Case(id=cid, image_paths=(folder / f"{cid}_img.nii.gz",), label_path=folder / f"{cid}_seg.nii.gz")


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SCSEG_CACHE", str(tmp_path / "env"))
    assert cache_root(None) == (tmp_path / "env").resolve()
    assert cache_root(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    monkeypatch.delenv("SCSEG_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(None) == (tmp_path / "home" / ".cache" / "scseg").resolve()


def test_key_changes_with_settings_label_map_file_and_version(tmp_path, monkeypatch):
    case = _write_case(tmp_path)
    s = PreprocessSettings()
    base = cache_key(case, s, _label_map())
    assert base == cache_key(case, PreprocessSettings(), _label_map())
    assert cache_key(case, PreprocessSettings(crop_margin=3), _label_map()) != base
    assert cache_key(case, PreprocessSettings(axis="coronal"), _label_map()) != base
    assert cache_key(case, s, _label_map(("background", "a", "c"))) != base
    assert cache_key(case, s, _label_map(extra={30: 2})) != base
    assert cache_key(case, s, _label_map(), allow_4d_channels=True) != base
    st = case.label_path.stat()
    os.utime(case.label_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = cache_key(case, s, _label_map())
    assert touched != base
    monkeypatch.setattr(cache_mod, "PREPROCESS_VERSION", cache_mod.PREPROCESS_VERSION + 1)
    assert cache_key(case, s, _label_map()) != touched


def test_missing_file_names_it(tmp_path):
    case = Case(id="x", image_paths=(tmp_path / "missing.nii.gz",), label_path=None)
    with pytest.raises(DataError, match="missing.nii.gz"):
        cache_key(case, PreprocessSettings(), _label_map())


def test_get_prepares_once_then_memory_maps(tmp_path, monkeypatch):
    case = _write_case(tmp_path)
    cache = SubjectCache(None, PreprocessSettings(crop_margin=2), _label_map())
    assert cache.root == Path(os.environ["SCSEG_CACHE"]).resolve()
    first = cache.get(case)
    assert first.path is not None and first.path.parent.parent == cache.root
    assert isinstance(first.image, np.memmap) and isinstance(first.label, np.memmap)
    assert first.label.dtype == np.uint8 and first.image.dtype == np.float32

    def boom(*a, **k):
        raise AssertionError("read_subject must not run for a cached subject")

    monkeypatch.setattr(cache_mod, "read_subject", boom)  # the name the cache reads files with
    second = cache.get(case)
    np.testing.assert_array_equal(second.label, first.label)
    assert second.meta == first.meta
    # pickling (DataLoader workers) carries the path, not the arrays
    blob = pickle.dumps(second)
    assert len(blob) < second.image.nbytes / 4
    again = pickle.loads(blob)
    assert isinstance(again.image, np.memmap)
    np.testing.assert_array_equal(again.image, first.image)
    assert not [p for p in (cache.root / "subjects").iterdir() if p.name.startswith(".tmp")]


def test_changed_setting_makes_a_new_entry(tmp_path):
    case = _write_case(tmp_path)
    a = SubjectCache(None, PreprocessSettings(crop_margin=2), _label_map()).get(case)
    b = SubjectCache(None, PreprocessSettings(crop_margin=4), _label_map()).get(case)
    assert a.path != b.path and b.image.shape != a.image.shape


def test_thread_race_leaves_one_complete_entry(tmp_path):
    case = _write_case(tmp_path)
    cache = SubjectCache(None, PreprocessSettings(crop_margin=2), _label_map())
    barrier = threading.Barrier(4)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(cache.get(case))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    entries = list((cache.root / "subjects").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    for r in results:
        np.testing.assert_array_equal(r.label, results[0].label)


def _race_writer(subject, target, barrier, queue):
    barrier.wait()
    write_entry(subject, target)
    queue.put(load_entry(target).meta.id)


def test_process_race_on_write_entry(tmp_path):
    case = _write_case(tmp_path)
    subject = SubjectCache(tmp_path / "first", PreprocessSettings(crop_margin=2), _label_map()).get(case)
    subject = load_entry(subject.path)
    subject.image, subject.label, subject.path = np.array(subject.image), np.array(subject.label), None
    target = tmp_path / "race" / "subjects" / "c1-key"
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_writer, args=(subject, target, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted([queue.get(timeout=5), queue.get(timeout=5)]) == ["c1", "c1"]
    assert [p.name for p in target.parent.iterdir()] == ["c1-key"]
    np.testing.assert_array_equal(load_entry(target).label, subject.label)


def test_corrupt_entry_names_the_folder(tmp_path):
    bad = tmp_path / "entry"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="entry.*delete this folder"):
        load_entry(bad)


def test_median_frequency_weights_by_hand():
    # f = voxels / slice voxels = [0.9, 0.05, 0.2, -]; median over present = 0.2
    voxels = [900, 5, 40, 0]
    slice_voxels = [1000, 100, 200, 0]
    with pytest.warns(UserWarning, match="weight 0: d"):
        w = median_frequency_weights(voxels, slice_voxels, ["a", "b", "c", "d"])
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [0.2 / 0.9, 0.2 / 0.05, 1.0, 0.0])
    # integer inputs whose integer division would give zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = median_frequency_weights(np.array([3, 1, 2]), np.array([7, 7, 7]), ["a", "b", "c"])
    np.testing.assert_allclose(w, [2 / 3, 2.0, 1.0])


def test_class_statistics_sum_of_subjects_and_weights(tmp_path):
    cache = SubjectCache(None, PreprocessSettings(crop_margin=2), _label_map())
    subjects = [cache.get(_write_case(tmp_path, f"c{i}", shift=i)) for i in range(2)]
    stats = class_statistics_of(subjects, _label_map().class_names)
    expected = sum(np.bincount(np.asarray(s.label).ravel(), minlength=3) for s in subjects)
    np.testing.assert_array_equal(stats.voxels, expected)
    # by hand: axial slice area times the number of slices containing each class, summed over subjects
    by_hand = np.zeros(3, np.int64)
    for s in subjects:
        lab = np.asarray(s.label)
        area = lab.shape[0] * lab.shape[1]
        for c in range(3):
            by_hand[c] += area * sum((lab[:, :, z] == c).any() for z in range(lab.shape[2]))
    np.testing.assert_array_equal(stats.slice_voxels, by_hand)
    f = stats.voxels / stats.slice_voxels
    np.testing.assert_allclose(stats.weights(), np.median(f) / f)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_corrupted_entry_is_detected_and_rebuilt_naming_the_subject(tmp_path, damage):
    """A cache file changed after it was written (bit rot, a copy cut short, a stray write) is caught by its
    recorded size and checksum: a warning names the subject, the entry is rebuilt from the files."""
    case = _write_case(tmp_path, cid="subj7")
    cache = SubjectCache(None, PreprocessSettings(crop_margin=2), _label_map())
    first = cache.get(case)
    image = np.array(first.image)
    target = first.path / "image.npy"
    del first
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[-5] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-64])
    else:
        target.unlink()
    with pytest.warns(UserWarning, match=r"subject subj7: its cache entry .* is corrupted \(image\.npy"):
        again = cache.get(case)
    np.testing.assert_array_equal(np.array(again.image), image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry passes its checks silently
        cache.get(case)
