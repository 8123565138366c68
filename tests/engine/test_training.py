"""End-to-end runs on tiny phantom data: run folder, resume, skip, lock, NaN stop, evaluate and predict faces."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from scseg.engine import checkpoint as ckpt
from scseg.engine import run_dir as rd
from scseg.engine import trainer as trainer_module
from scseg.engine.run import PER_CASE_COLUMNS, identity, run_folder, run_training
from scseg.engine.trainer import NonFiniteLossError


def test_run_identity_is_stable_and_normalised(tiny_config):
    a, b = tiny_config("unet"), tiny_config("unet")
    assert identity(a) == identity(b)
    assert identity(tiny_config("unet", "seed=1")) != identity(a)
    # Only scSE uses the aggregation: sweeping it over cSE maps to one run.
    assert identity(tiny_config("unet", "se=cse", "se.aggregation=max")) == identity(tiny_config("unet", "se=cse"))
    assert identity(tiny_config("unet", "se=scse", "se.aggregation=max")) != identity(tiny_config("unet", "se=scse"))
    # Execution details do not change the identity.
    assert identity(tiny_config("unet", "data.loader.num_workers=1", "logger.image_slices=0")) == identity(a)
    name = run_folder(tiny_config("unet", "se=scse", "se.aggregation=max")).name
    assert name.startswith("unet-scse-max-seed0-") and len(name.split("-")[-1]) == 8


def test_run_writes_complete_folder_and_rerun_skips(tiny_config):
    cfg = tiny_config("unet", "se=scse")
    result = run_training(cfg)
    folder = result.run_dir
    assert result.state == "done"
    assert (folder / ".hydra" / "config.yaml").is_file()
    assert {p.name for p in (folder / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
    assert list(folder.glob("events.out.tfevents.*")), "TensorBoard events belong in the run folder"
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "done" and status["config_hash"] == identity(cfg)[0]
    with (folder / "per_case.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == PER_CASE_COLUMNS
    summary = json.loads((folder / "summary.json").read_text())
    for key in (
        "split",
        "subjects",
        "per_class",
        "fg_dice_per_subject",
        "fg_mean",
        "fg_std",
        "averaging",
        "arch",
        "se",
        "aggregation",
        "seed",
        "config_hash",
        "n_params",
        "checkpoint",
        "scseg_version",
        "torch_version",
        "device",
        "threads",
        "wall_time_s",
    ):
        assert key in summary, key
    assert summary["split"] == "test" and len(summary["subjects"]) == 2
    assert summary["se"] == "scse" and summary["aggregation"] == "add"
    # Same config again: skipped, nothing retrained.
    mtime = (folder / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = run_training(tiny_config("unet", "se=scse"))
    assert again.state == "skipped" and again.run_dir == folder
    assert (folder / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("arch", ["unet", "sdnet", "fcdensenet"])
def test_resume_gives_identical_weights(tiny_config, tmp_path, arch):
    """Stopped after epoch 1 and resumed == uninterrupted, bit for bit (CPU, deterministic, 1 thread)."""
    extra = ("trainer.deterministic=true", "trainer.max_epochs=3", "data.augment.enabled=true", "trainer.val_every=1")
    straight = run_training(tiny_config(arch, *extra, f"paths.runs_dir={tmp_path / 'a'}"))
    interrupted_cfg = tiny_config(arch, *extra, f"paths.runs_dir={tmp_path / 'b'}")
    first = run_training(interrupted_cfg, stop_after_epoch=1)
    assert first.state == "interrupted"
    assert ckpt.load_checkpoint(first.run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    status = json.loads((first.run_dir / "status.json").read_text())  # the progress `scseg-study status` reads
    assert (status["state"], status["epoch"], status["epochs"]) == ("running", 1, 3) and status["started_at"]
    resumed = run_training(interrupted_cfg)
    assert resumed.state == "done"
    a = ckpt.load_checkpoint(straight.run_dir / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    torch.use_deterministic_algorithms(False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, monkeypatch):
    real_create_loss = trainer_module.create_loss_from_config
    calls = {"n": 0}

    class NaNOnThirdCall(torch.nn.Module):
        def __init__(self, loss):
            super().__init__()
            self.loss = loss

        def forward(self, logits, labels):
            calls["n"] += 1
            value = self.loss(logits, labels)
            return value * float("nan") if calls["n"] == 3 else value

    def poisoned(*args, **kwargs):
        return NaNOnThirdCall(real_create_loss(*args, **kwargs))

    monkeypatch.setattr(trainer_module, "create_loss_from_config", poisoned)
    cfg = tiny_config("unet")
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 3"):
        run_training(cfg)
    folder = run_folder(cfg)
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "failed" and "NonFiniteLossError" in status["traceback"]
    assert ckpt.load_checkpoint(folder / "checkpoints" / "last.pt")["epoch"] == 1


def test_second_process_on_same_run_is_refused(tiny_config):
    cfg = tiny_config("unet")
    folder = run_folder(cfg)
    folder.mkdir(parents=True)
    with rd.RunLock(folder):
        with pytest.raises(rd.RunLockedError, match=str(folder)):
            run_training(cfg)


def test_mismatched_checkpoint_is_refused_by_name(tiny_config):
    result = run_training(tiny_config("unet"))
    state = ckpt.load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    from scseg.models import create_model

    other = create_model("sdnet", 4, filters=4, depth=2)
    with pytest.raises(Exception, match="unet.*sdnet|sdnet.*unet"):
        ckpt.load_model_weights(other, state, "sdnet", 4)


def test_evaluate_and_predict_faces(tiny_config, tmp_path, capsys):
    from scseg.cli.evaluate import main as evaluate_main
    from scseg.cli.predict import main as predict_main

    result = run_training(tiny_config("unet"))
    before = json.loads((result.run_dir / "summary.json").read_text())
    assert evaluate_main([str(result.run_dir), "--split", "test"]) == 0
    after = json.loads((result.run_dir / "summary.json").read_text())
    assert after["fg_dice_per_subject"] == before["fg_dice_per_subject"]

    # Predict the test images: one label volume each, in the input's own geometry.
    from scseg.engine.loading import load_run

    _, dm, _, _ = load_run(result.run_dir)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = dm.cases("test")
    for case in cases:
        src = nib.load(str(case.image_paths[0]))
        # The same image stored with its first axis reversed: predictions must come back in that geometry.
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1.0, src.shape[0] - 1
        flipped = nib.Nifti1Image(np.asarray(src.dataobj)[::-1].copy(), src.affine @ flip)
        nib.save(flipped, str(inputs / f"{case.id}.nii.gz"))
    out = tmp_path / "predictions"
    assert predict_main([str(result.run_dir), str(inputs), str(out)]) == 0
    for case in cases:
        source = nib.load(str(inputs / f"{case.id}.nii.gz"))
        predicted = nib.load(str(out / f"{case.id}.nii.gz"))
        assert predicted.shape == source.shape
        np.testing.assert_allclose(predicted.affine, source.affine)
        assert np.issubdtype(predicted.get_data_dtype(), np.integer)


def test_tensorboard_scalars_images_and_hparams(tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_training(tiny_config("unet", "logger.log_every_n_steps=1"))
    events = EventAccumulator(str(result.run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    class_names = json.loads((result.run_dir / "summary.json").read_text())["per_class"]
    expected = {
        "train/loss",
        "train/lr",
        "train/epoch_loss",
        "train/epoch_time_s",
        "train/slices_per_s",
        "val/dice_mean",
        "hparam/test_fg_dice",
    } | {f"val/dice/{name}" for name in class_names if name != "background"}
    assert expected <= scalars, expected - scalars
    assert "val/overlay" in events.Tags()["images"]
    image = events.Images("val/overlay")[-1]
    assert image.width == 3 * 32 and image.height >= 32  # input | reference | prediction, one row per slice
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = [
        plugin_data_pb2.HParamsPluginData.FromString(content)
        for content in events.PluginTagToContent("hparams").values()
    ]
    session = next(h.session_start_info for h in hparams if h.HasField("session_start_info"))
    assert session.hparams["arch"].string_value == "unet"
    # the test metrics per structure: scalars and a table in the TEXT tab (Dice, HD95, NSD)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    structures = [name for name in class_names if name != "background"]
    tests = {f"test/{m}/{n}" for m in ("dice", "hd95", "nsd") for n in structures if summary["per_class_hd95"].get(n)}
    assert {"test/dice_mean", "test/hd95_mean", "test/nsd_mean"} <= scalars and tests <= scalars, tests - scalars
    logged = events.Scalars("test/dice_mean")[-1].value
    assert logged == pytest.approx(summary["fg_mean"], rel=1e-6)
    text_tags = events.Tags()["tensors"]
    assert "test/per_structure/text_summary" in text_tags
    table = events.Tensors("test/per_structure/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| structure | Dice | HD95 (mm) | NSD |" in table and all(f"| {n} |" in table for n in structures)


def test_early_stopping_with_patience(tiny_config):
    # With lr = 0 the validation Dice never improves after the first validation: stop after patience (1) more.
    cfg = tiny_config(
        "unet", "optimizer.lr=0", "trainer.max_epochs=6", "trainer.val_every=1", "trainer.early_stopping_patience=1"
    )
    result = run_training(cfg)
    history = ckpt.load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["history"]
    assert len(history) == 2 and result.state == "done"


@pytest.mark.parametrize("scheduler", ["step", "cosine", "poly", "plateau", "none"])
def test_schedulers_and_clipping_run(tiny_config, scheduler):
    cfg = tiny_config(
        "unet",
        f"scheduler={scheduler}",
        "trainer.max_epochs=3",
        "trainer.grad_clip_norm=0.5",
        "optimizer=sgd",
        "optimizer.lr=0.01",
    )
    result = run_training(cfg)
    lrs = [r["lr"] for r in ckpt.load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["history"]]
    assert result.state == "done" and len(lrs) == 3
    if scheduler in ("cosine", "poly"):
        assert lrs[-1] < lrs[0]
    if scheduler == "none":
        assert lrs == [0.01] * 3


def test_resume_falls_back_to_spare_when_last_is_corrupt(tiny_config):
    cfg = tiny_config("unet", "trainer.max_epochs=3")
    first = run_training(cfg, stop_after_epoch=2)
    checkpoints = first.run_dir / "checkpoints"
    assert (checkpoints / "last.prev.pt").is_file()
    (checkpoints / "last.pt").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="falling back"):
        resumed = run_training(cfg)
    assert resumed.state == "done"
    assert ckpt.load_checkpoint(checkpoints / "last.pt")["epoch"] == 3


def test_cli_reports_a_diverged_run_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER

    args = [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "trainer.iters_per_epoch=5",
        f"paths.runs_dir={tmp_path / 'runs'}",
    ]
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("scseg-train")), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "non-finite loss" in proc.stderr and "Traceback" not in proc.stderr


def test_a_build_lock_never_hangs_a_run(tiny_config, tmp_path, monkeypatch):
    """A lock in the fused kernels' build folder (a build killed at the wrong moment) once froze every SE run for
    ever. With the kernels asked for, the build waits at most its deadline and the run trains on the ATen gates,
    and summary.json records which gates ran; the same identity as an eager run (the setting is not hashed)."""
    from scseg.models import se_fused

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(se_fused, "_build", {})
    folder = se_fused.build_directory()
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    cfg = tiny_config("unet", "se=scse", "trainer.se_kernels=auto", "trainer.se_kernels_build_timeout_s=3")
    assert identity(cfg) == identity(tiny_config("unet", "se=scse"))
    result = run_training(cfg)
    assert result.state == "done"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["se_kernels"] == "aten"
    assert "longer than 3 s" in se_fused._build["why"]
    assert isinstance(summary["git_dirty"], (bool, type(None))) and summary["numpy_version"] == np.__version__


def test_the_test_split_gets_boundary_metrics_and_reevaluation_keeps_them(tiny_config):
    """per_case.csv carries HD95 (mm) and NSD per structure, summary.json their means; eval.* is not hashed."""
    cfg = tiny_config("unet", "eval.nsd_tolerance_mm=2.0")
    assert identity(cfg) == identity(tiny_config("unet"))
    result = run_training(cfg)
    with (result.run_dir / "per_case.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["class_id"] != "0" and r["dice"]]
    assert rows and all(r["hd95"] != "" and 0.0 <= float(r["nsd"]) <= 1.0 for r in rows)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["fg_hd95_mean"] >= 0 and 0 <= summary["fg_nsd_mean"] <= 1
    from scseg.engine.reevaluate import reevaluate

    again = reevaluate(result.run_dir, split="test").summary
    assert again["fg_nsd_mean"] == pytest.approx(summary["fg_nsd_mean"])


@pytest.mark.parametrize(("code", "reason"), [(30, "read-only file system"), (13, "permission denied")])
def test_a_run_folder_that_cannot_be_written_is_one_line_before_training(tiny_config, monkeypatch, code, reason):
    """A runs folder on a read-only file system (EROFS) or without write permission (EACCES; root ignores modes, so
    both are produced at the write itself): one error naming the folder and paths.runs_dir, nothing trained."""
    import errno
    import pathlib

    from scseg.config.check import ConfigError

    real = pathlib.Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".write-test-"):
            raise OSError(code, errno.errorcode[code].lower(), str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    monkeypatch.setattr(trainer_module.Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(ConfigError, match=f"paths.runs_dir: cannot write the run folder .* \\({reason}\\)"):
        run_training(tiny_config("unet"))
