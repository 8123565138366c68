"""Checkpoint I/O: atomic writes survive crashes, states load with weights_only=True, RNG and weights round-trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import scseg
from scseg.engine import checkpoint as ckpt
from scseg.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointNotFoundError,
    build_checkpoint_state,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
    strip_prefixes,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def _state(model: nn.Module | None = None, epoch: int = 1, **overrides) -> dict:
    model = model or _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    model(torch.randn(2, 1, 5, 5)).sum().backward()
    optimizer.step()
    scheduler.step()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    kwargs = dict(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        epoch=epoch,
        step=10 * epoch,
        best_metric=np.float64(0.5),
        history={"val_dice": [np.float32(0.25), 0.5], "epoch": [1, 2]},
        config_yaml="model:\n  arch: tiny\n",
        arch="tiny",
        num_classes=2,
        extra={"note": np.int64(3)},
    )
    kwargs.update(overrides)
    return build_checkpoint_state(**kwargs)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_state_round_trips_with_weights_only(tmp_path):
    model = _model()
    state = _state(model)
    path = save_checkpoint(tmp_path / "a" / "last.pt", state)
    plain = torch.load(path, weights_only=True)  # what load_checkpoint relies on
    loaded = load_checkpoint(path)
    assert plain.keys() == loaded.keys()
    assert loaded["scseg_version"] == scseg.__version__ and loaded["arch"] == "tiny" and loaded["num_classes"] == 2
    assert loaded["epoch"] == 1 and loaded["step"] == 10 and loaded["config_yaml"].startswith("model:")
    assert type(loaded["best_metric"]) is float and loaded["history"]["val_dice"] == [0.25, 0.5]
    assert loaded["extra"] == {"note": 3} and type(loaded["extra"]["note"]) is int
    assert loaded["rng"]["torch"].dtype == torch.uint8
    for key in ("optimizer", "scheduler", "scaler"):
        assert loaded[key], key
    fresh = _model()
    load_model_weights(fresh, loaded, "tiny", 2)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_unstorable_objects_are_refused_when_building(tmp_path):
    with pytest.raises(TypeError, match=r"extra\.bad"):
        _state(extra={"bad": object()})
    with pytest.raises(TypeError, match="config_yaml"):
        _state(config_yaml={"not": "yaml"})


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"garbage, half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert _leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_corrupt_and_unsafe_files_give_errors_naming_them(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": Path("x")}, unsafe)  # a custom class: weights_only refuses it
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(unsafe)


def test_strip_prefixes():
    stripped = strip_prefixes({"module._orig_mod.a": 1, "_orig_mod.module.b": 2, "c.module.d": 3})
    assert list(stripped) == ["a", "b", "c.module.d"]
    with pytest.raises(CheckpointError, match="both become"):
        strip_prefixes({"module.a": 1, "a": 2})


def test_load_model_weights_checks_arch_and_classes_first_then_loads_strictly():
    state = _state()
    state["model"] = {f"module.{k}": v for k, v in state["model"].items()}  # saved from a DDP model
    load_model_weights(_model(), state, "tiny", 2)
    with pytest.raises(CheckpointError, match=r"'tiny' with 2 classes.*'unet' with 2 classes"):
        load_model_weights(_model(), state, "unet", 2)
    with pytest.raises(CheckpointError, match=r"with 2 classes.*with 3 classes"):
        load_model_weights(_model(), state, "tiny", 3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model_weights(nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)), state, "tiny", 2)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    original = capture_rng_state()
    try:
        save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
        first = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002 (the global state is tested)
        restore_rng_state(load_checkpoint(tmp_path / "rng.pt"))
        second = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
        assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
        with pytest.raises(CheckpointError, match="capture_rng_state"):
            restore_rng_state({"python": {}})
    finally:
        restore_rng_state(original)


def test_manager_rotates_last_keeps_best_and_falls_back_to_the_spare(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert not manager.has_resumable() and manager.load_latest() is None
    manager.save({"epoch": 1}, is_best=True)
    manager.save({"epoch": 2})
    manager.save({"epoch": 3})
    assert load_checkpoint(manager.last_path)["epoch"] == 3
    assert load_checkpoint(manager.prev_path)["epoch"] == 2
    assert load_checkpoint(manager.best_path)["epoch"] == 1
    assert _leftovers(manager.folder) == []
    manager.last_path.unlink()  # replace, never write in place: best.pt may share its inode
    manager.last_path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="falling back"):
        path, state = manager.load_latest()
    assert path == manager.prev_path and state["epoch"] == 2
    manager.prev_path.unlink()
    manager.prev_path.write_bytes(b"also broken")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no loadable checkpoint"):
        manager.load_latest()


def test_manager_save_last_and_save_best_separately(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save_last({"epoch": 1})
    manager.save_best({"epoch": 1})
    manager.save_last({"epoch": 2})
    assert [load_checkpoint(p)["epoch"] for p in (manager.last_path, manager.prev_path, manager.best_path)] == [2, 1, 1]
    assert _leftovers(tmp_path) == []


def test_manager_falls_back_to_copies_without_hard_links(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError("links unsupported")

    monkeypatch.setattr(ckpt.os, "link", no_links)
    manager = CheckpointManager(tmp_path)
    manager.save({"epoch": 1}, is_best=True)
    manager.save({"epoch": 2})
    assert load_checkpoint(manager.prev_path)["epoch"] == 1 and load_checkpoint(manager.best_path)["epoch"] == 1
