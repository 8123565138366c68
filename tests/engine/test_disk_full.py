"""A full disk (ENOSPC) while writing any result file: one clear error naming the file, the previous version
intact, no temporary file left, and a rerun once there is space again completes.

The disk is simulated at the one place every file is written (``scseg.atomic._open_temp``): files with the
chosen names get a few bytes of room, then every write raises ``OSError(ENOSPC)``, as a real full disk does
mid-file. Covered writers: ``status.json``, ``summary.json`` and ``per_case.csv`` (training and
``scseg-evaluate``), cache entries, sweep records.
"""

from __future__ import annotations

import errno
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

import scseg.atomic
from scseg.atomic import DiskFullError, atomic_write, atomic_write_text
from scseg.data.cache import SubjectCache, load_entry
from scseg.data.label_map import LabelMap
from scseg.data.preprocess import PreprocessSettings
from scseg.data.types import Case
from scseg.engine import run_dir as rd
from scseg.engine.checkpoint import load_checkpoint
from scseg.engine.sweep import RECORD, write_job_record
from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER

_REAL_OPEN_TEMP = scseg.atomic._open_temp


class _ShortFile:
    """A temporary file with ``room`` bytes left on its disk: the bytes that fit are written, then ENOSPC."""

    def __init__(self, real, room: int) -> None:
        self._real = real
        self._room = room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        fits = min(len(data), self._room)
        if fits:
            self._real.write(data[:fits])
            self._room -= fits
        if fits < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fits

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def __enter__(self) -> _ShortFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self._real.__exit__(*exc_info)


class FullDisk:
    """Makes writes of files named in ``names`` run out of space after ``room`` bytes while ``full`` is True."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *names: str, room: int = 10, code: int = errno.ENOSPC):
        self.names, self.room, self.code, self.full, self.hits = set(names), room, code, True, []
        monkeypatch.setattr(scseg.atomic, "_open_temp", self._open)

    def _open(self, path: Path):
        real = _REAL_OPEN_TEMP(path)
        if not self.full or path.name not in self.names:
            return real
        self.hits.append(path)
        short = _ShortFile(real, self.room)
        if self.code != errno.ENOSPC:
            short.write = lambda data: (_ for _ in ()).throw(OSError(self.code, "Disk quota exceeded"))
        return short


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_atomic_write_out_of_space_mid_file_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "table.txt"
    atomic_write_text(path, "old version\n")
    disk = FullDisk(monkeypatch, "table.txt", room=5)
    with pytest.raises(DiskFullError) as caught:
        atomic_write_text(path, "a much longer new version\n" * 100)
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC and error.filename == str(path)
    assert str(path) in str(error) and "disk is full" in str(error) and "intact" in str(error)
    assert pickle.loads(pickle.dumps(error)).args == error.args  # crosses joblib / multiprocessing unchanged
    assert disk.hits == [path] and path.read_text() == "old version\n" and _temp_files(tmp_path) == []
    disk.full = False
    atomic_write(path, lambda f: f.write(b"new\n"))
    assert path.read_text() == "new\n"


def test_quota_and_temp_file_creation_failures_name_the_file(tmp_path, monkeypatch):
    FullDisk(monkeypatch, "q.json", code=errno.EDQUOT)
    with pytest.raises(DiskFullError, match=r"cannot write .*q\.json: disk quota exceeded"):
        atomic_write_text(tmp_path / "q.json", "{}")

    def no_inode(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path.parent / ".x.tmp"))

    monkeypatch.setattr(scseg.atomic, "_open_temp", no_inode)
    with pytest.raises(DiskFullError, match=r"cannot write .*new\.json: no space left on device \(the disk is full\)"):
        atomic_write_text(tmp_path / "new.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_status_json_out_of_space(tmp_path, monkeypatch):
    rd.write_status(tmp_path, "running", "abc")
    disk = FullDisk(monkeypatch, rd.STATUS_FILE)
    with pytest.raises(DiskFullError, match=r"status\.json.*disk is full"):
        rd.write_status(tmp_path, "done", "abc")
    assert rd.read_status(tmp_path)["state"] == "running" and _temp_files(tmp_path) == []
    disk.full = False
    rd.write_status(tmp_path, "done", "abc")
    assert rd.read_status(tmp_path)["state"] == "done"


def test_sweep_record_out_of_space(tmp_path, monkeypatch):
    write_job_record(tmp_path, {"job": 0, "state": "started"})
    disk = FullDisk(monkeypatch, RECORD)
    with pytest.raises(DiskFullError, match=r"result\.json"):
        write_job_record(tmp_path, {"job": 0, "state": "done", "note": "x" * 100})
    assert json.loads((tmp_path / RECORD).read_text())["state"] == "started" and _temp_files(tmp_path) == []
    disk.full = False
    write_job_record(tmp_path, {"job": 0, "state": "done"})
    assert json.loads((tmp_path / RECORD).read_text())["state"] == "done"


def _case(folder: Path, cid: str) -> Case:
    import nibabel as nib

    image = np.zeros((16, 16, 12), np.float32)
    image[3:13, 3:13, 2:10] = np.random.default_rng(len(cid)).uniform(50, 100, (10, 10, 8))
    label = np.zeros(image.shape, np.int16)
    label[5:10, 5:10, 3:8] = 1
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"{cid}_img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), folder / f"{cid}_seg.nii.gz")
    return Case(id=cid, image_paths=(folder / f"{cid}_img.nii.gz",), label_path=folder / f"{cid}_seg.nii.gz")


@pytest.mark.parametrize("name", ["image.npy", "label.npy", "meta.json"])
def test_cache_entry_out_of_space(tmp_path, monkeypatch, name):
    cache = SubjectCache(
        tmp_path / "cache",
        PreprocessSettings(),
        LabelMap(class_names=("background", "fg"), raw_to_class={0: 0, 1: 1}, unknown="error"),
    )
    earlier = cache.get(_case(tmp_path, "a"))
    case = _case(tmp_path, "b")
    disk = FullDisk(monkeypatch, name, room=64)
    with pytest.raises(DiskFullError) as caught:
        cache.get(case)
    message = str(caught.value)
    assert str(cache.entry_path(case) / name) in message and "disk is full" in message and "SCSEG_CACHE" in message
    subjects = tmp_path / "cache" / "subjects"
    assert not cache.entry_path(case).exists() and _temp_files(subjects) == []  # no entry, no half entry
    assert load_entry(earlier.path).id == "a"  # the entries already there are intact
    disk.full = False
    assert cache.get(case).id == "b"


def _train_cli(monkeypatch, runs: Path, *extra: str) -> None:
    """``scseg-train`` in this process (so the simulated disk applies), tiny settings."""
    from scseg.train import main

    argv = ["scseg-train", *TINY_DATA, *TINY_TRAINER, *TINY_MODELS["unet"], f"paths.runs_dir={runs}", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    main()


def test_training_and_evaluate_out_of_space_end_in_one_line_and_rerun_completes(tmp_path, monkeypatch, capsys):
    """About 5-10 s: one tiny training run (stopped at its summary.json, then resumed) and four evaluations."""
    from scseg.cli import evaluate

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    disk = FullDisk(monkeypatch, "summary.json")
    with pytest.raises(SystemExit) as caught:
        _train_cli(monkeypatch, runs, "experiment_name=full")
    assert caught.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "summary.json" in line and "disk is full" in line
    (folder,) = [p for p in (runs / "full").iterdir() if not p.name.startswith(".")]
    assert rd.read_status(folder)["state"] == "failed" and not (folder / "summary.json").exists()
    assert _temp_files(folder) == []

    disk.full = False
    _train_cli(monkeypatch, runs, "experiment_name=full")  # space is back: the rerun resumes and finishes
    assert rd.read_status(folder)["state"] == "done" and load_checkpoint(folder / "checkpoints" / "best.pt")
    summary = (folder / "summary.json").read_bytes()
    per_case = (folder / "per_case.csv").read_bytes()
    assert json.loads(summary)["fg_mean"] is not None and per_case.startswith(b"subject,class_id")
    capsys.readouterr()

    for name in ("per_case.csv", "summary.json"):
        disk.names, disk.full = {name}, True
        assert evaluate.main([str(folder), "--device", "cpu"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert str(folder / name) in line and "disk is full" in line
        assert (folder / name).read_bytes() == (summary if name == "summary.json" else per_case)  # previous intact
        assert _temp_files(folder) == []
    disk.full = False
    assert evaluate.main([str(folder), "--device", "cpu"]) == 0
    assert json.loads((folder / "summary.json").read_text())["fg_mean"] == pytest.approx(json.loads(summary)["fg_mean"])


def test_train_cli_reports_any_out_of_space_error_in_one_line(tmp_path, monkeypatch, capsys):
    """Writers outside scseg.atomic (TensorBoard, the phantom's NIfTI files) raise a plain OSError(ENOSPC)."""
    import scseg.cli.train

    def out_of_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "events.out.tfevents"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scseg.cli.train, "run_training", out_of_space)
    with pytest.raises(SystemExit) as caught:
        _train_cli(monkeypatch, tmp_path / "runs", "experiment_name=plain")
    assert caught.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "events.out.tfevents" in line and "the disk is full" in line
