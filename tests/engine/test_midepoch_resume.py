"""Checkpoints inside an epoch: a run killed mid-epoch (or mid-write) resumes at the exact batch, bit for bit.

Settings: tiny phantom data, FC-DenseNet with dropout 0.2 (drawn from torch's global RNG), augmentation on,
5 batches per epoch, a checkpoint every 2 optimizer steps, CPU, ``deterministic=true``, one thread. Steps 1-5
are epoch 1 (mid-epoch checkpoints after steps 2 and 4, the epoch-end one after 5), steps 6-10 epoch 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scseg.config.check import ConfigError, validate_config
from scseg.data.sampler import EpochSampler
from scseg.data.slices import SliceDataset
from scseg.engine import checkpoint as ckpt
from scseg.engine import faults
from scseg.engine.run import run_folder, run_training
from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER

SETTINGS = (
    "model.dropout=0.2",  # width=small turns it off; here it checks that the global RNG continues exactly
    "trainer.deterministic=true",
    "data.augment.enabled=true",
    "trainer.max_epochs=2",
    "trainer.iters_per_epoch=5",
    "trainer.val_every=1",
    "trainer.checkpoint_every_n_steps=2",
)
BATCH_SIZE = 4  # TINY_DATA's data.loader.batch_size


@pytest.fixture
def injected():
    """``injected("after_step:7")`` arms the fault hook in this process (raising, not killing); cleared after."""
    yield lambda spec: faults.inject(spec, action="raise")
    faults.inject(None)
    torch.use_deterministic_algorithms(False)


def _last(run_dir: Path) -> dict:
    return ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")


def _assert_same_result(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 10
    assert "mid_epoch" not in a and "mid_epoch" not in b
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    timeless = [{k: v for k, v in r.items() if k not in ("epoch_time_s", "slices_per_s")} for r in a["history"]]
    assert timeless == [{k: v for k, v in r.items() if k not in ("epoch_time_s", "slices_per_s")} for r in b["history"]]


def test_epoch_sampler_start_skips_the_first_indices():
    full = EpochSampler(10, seed=3, num_samples=24, rank=1, world_size=2)
    full.set_epoch(4)
    order = list(full)
    tail = EpochSampler(10, seed=3, num_samples=24, rank=1, world_size=2)
    tail.set_epoch(4, start=8)
    assert list(tail) == order[8:] and len(tail) == len(order) - 8 == 4
    with pytest.raises(ValueError, match="start"):
        tail.set_epoch(4, start=13)


def test_mid_epoch_resume_is_bit_identical_and_loads_only_the_remaining_samples(
    tiny_config, tmp_path, injected, monkeypatch
):
    """Stopped right after step 7 (epoch 2) and resumed from the step-6 checkpoint == uninterrupted, bit for bit,
    including the epoch's mean loss; the resumed epoch fetches only its 4 remaining batches."""
    straight = run_training(tiny_config("fcdensenet", *SETTINGS, f"paths.runs_dir={tmp_path / 'a'}"))
    cfg = tiny_config("fcdensenet", *SETTINGS, f"paths.runs_dir={tmp_path / 'b'}")
    injected("after_step:7")
    with pytest.raises(faults.InjectedFault):
        run_training(cfg)
    injected(None)
    folder = run_folder(cfg)
    saved = _last(folder)
    assert saved["step"] == 6 and saved["epoch"] == 1
    assert saved["mid_epoch"]["batches_done"] == 1 and saved["mid_epoch"]["seen"] == BATCH_SIZE
    assert ckpt.load_checkpoint(folder / "checkpoints" / "best.pt")["epoch"] == 1  # never a mid-epoch best.pt

    fetched = []
    real_getitem = SliceDataset.__getitem__
    monkeypatch.setattr(SliceDataset, "__getitem__", lambda self, i: fetched.append(i) or real_getitem(self, i))
    resumed = run_training(cfg)
    assert resumed.state == "done" and resumed.run_dir == folder
    assert len(fetched) == 4 * BATCH_SIZE
    _assert_same_result(_last(straight.run_dir), _last(resumed.run_dir))


def test_a_killed_loader_worker_fails_in_one_line_and_the_rerun_resumes_exactly(tiny_config, tmp_path, monkeypatch):
    """A DataLoader worker SIGKILLed mid-epoch (as by the out-of-memory killer; ``loader_worker:5``, see
    scseg.engine.faults) stops the run with one LoaderWorkerError naming data.loader.num_workers, recorded in
    status.json; the rerun resumes from the mid-epoch checkpoint and ends with the very weights of an uninterrupted
    run without workers. Exact because every sample's draws come from (seed, epoch, index), never from a worker.

    One worker, two batches prefetched: the worker is asked for batch 5 when the training process takes batch 3,
    that is after the step-2 checkpoint, and dies before step 5; the training process learns of it in step 3 or 4.
    """
    from scseg.data.errors import LoaderWorkerError
    from scseg.engine import run_dir as rd

    straight = run_training(tiny_config("fcdensenet", *SETTINGS, f"paths.runs_dir={tmp_path / 'a'}"))
    cfg = tiny_config("fcdensenet", *SETTINGS, "data.loader.num_workers=1", f"paths.runs_dir={tmp_path / 'b'}")
    monkeypatch.setenv(faults.ENV, "loader_worker:5")  # workers started by spawn / forkserver read it at import
    faults.inject("loader_worker:5")  # forked workers inherit it
    try:
        with pytest.raises(LoaderWorkerError) as caught:
            run_training(cfg)
    finally:
        faults.inject(None)
        monkeypatch.delenv(faults.ENV)
    message = str(caught.value)
    # PyTorch says "is killed by signal: Killed" or "exited unexpectedly", whichever of its checks sees it first
    assert "\n" not in message and message.startswith("DataLoader worker (pid") and " (epoch 1, " in message
    assert "data.loader.num_workers=1" in message and "data.loader.num_workers=0" in message and "memory" in message
    folder = run_folder(cfg)
    status = rd.read_status(folder)
    assert status["state"] == "failed" and status["error"] == f"LoaderWorkerError: {message}"
    saved = _last(folder)
    assert saved["epoch"] == 0 and saved["step"] in (2, 4) and saved["mid_epoch"]["batches_done"] == saved["step"]

    resumed = run_training(cfg)
    assert resumed.state == "done" and resumed.run_dir == folder
    _assert_same_result(_last(straight.run_dir), _last(resumed.run_dir))


def test_other_errors_are_not_taken_for_a_dead_loader_worker():
    from scseg.data.errors import worker_died

    assert worker_died(RuntimeError("CUDA out of memory"), 2, "epoch 1, 0 steps done") is None
    assert worker_died(ValueError("DataLoader worker (pid 1) is killed by signal: Killed."), 2, "x") is None
    died = worker_died(RuntimeError("DataLoader worker (pid(s) 77) exited unexpectedly"), 3, "epoch 2, 9 steps done")
    assert str(died).startswith("DataLoader worker (pid(s) 77) exited unexpectedly (epoch 2, 9 steps done, ")


def test_checkpoint_every_minutes_writes_inside_the_epoch(tiny_config, injected):
    cfg = tiny_config("unet", "trainer.iters_per_epoch=5", "trainer.checkpoint_every_minutes=1e-9")
    injected("after_step:3")
    with pytest.raises(faults.InjectedFault):
        run_training(cfg)
    saved = _last(run_folder(cfg))
    assert saved["step"] == 3 and saved["epoch"] == 0 and saved["mid_epoch"]["batches_done"] == 3


def test_checkpoint_interval_settings_are_checked(tiny_config):
    for bad in ("trainer.checkpoint_every_n_steps=0", "trainer.checkpoint_every_minutes=-1"):
        with pytest.raises(ConfigError, match="must be positive or null"):
            validate_config(tiny_config("unet", bad))
    # Runtime knobs: the run folder (config hash) stays the same.
    assert run_folder(tiny_config("unet", "trainer.checkpoint_every_n_steps=7")) == run_folder(tiny_config("unet"))


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    manager = ckpt.CheckpointManager(tmp_path)
    names = [".last.pt.abc123.tmp", ".last.prev.pt.link.tmp", ".best.pt.x.tmp", ".status.json.tmp", "last.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in manager.remove_stale_temp_files()) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".status.json.tmp", "last.pt"]


def test_fault_spec_is_checked():
    assert faults.parse("checkpoint_write:2") == ("checkpoint_write", 2)
    assert faults.parse("") is None
    assert faults.parse("loader_worker:5") == ("loader_worker", 5)
    for bad in ("after_step", "after_step:0", "somewhere:3", "after_step:x"):
        with pytest.raises(ValueError, match=faults.ENV):
            faults.parse(bad)


# ------------------------------------------------------------------------------------------- real processes
def _train(runs: Path, cwd: Path, cache: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    args = [*TINY_DATA, *TINY_TRAINER, *TINY_MODELS["fcdensenet"], *SETTINGS, f"paths.runs_dir={runs}", *extra]
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    env.update(SCSEG_CACHE=str(cache), OMP_NUM_THREADS="1")
    if fault is not None:
        env[faults.ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "scseg.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _run_dir(runs: Path) -> Path:
    (folder,) = [p for p in (runs / "default").iterdir() if not p.name.startswith(".")]
    return folder


@pytest.mark.slow
def test_killed_processes_resume_bit_identical(tmp_path):
    """SIGKILL inside an epoch, during a checkpoint write, and of a DataLoader worker, then the same command
    again == uninterrupted.

    Seven `scseg-train` processes of a few seconds each; budget 150 s on one loaded CPU core.
    """
    cache = tmp_path / "cache"
    reference = _train(tmp_path / "a", tmp_path, cache)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _last(_run_dir(tmp_path / "a"))

    # Killed right after step 7: the step-6 checkpoint holds one batch of epoch 2.
    killed = _train(tmp_path / "b", tmp_path, cache, "after_step:7")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert _last(_run_dir(tmp_path / "b"))["mid_epoch"]["batches_done"] == 1
    rerun = _train(tmp_path / "b", tmp_path, cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "from last.pt after epoch 1, batch 1/5 of epoch 2" in rerun.stdout
    _assert_same_result(expected, _last(_run_dir(tmp_path / "b")))

    # Killed halfway through writing file 6 (last.pt after step 8; files 1-5: steps 2, 4, 5 (+ best.pt), 6),
    # with a loader worker process: the half-written temporary file stays, last.pt / last.prev.pt hold step 6.
    workers = "data.loader.num_workers=1"  # not in the config hash: same run, same weights
    killed = _train(tmp_path / "c", tmp_path, cache, "checkpoint_write:6", workers)
    assert killed.returncode == -9, killed.stderr[-3000:]
    checkpoints = _run_dir(tmp_path / "c") / "checkpoints"
    (partial,) = checkpoints.glob(".last.pt.*.tmp")
    assert partial.stat().st_size > 0
    assert _last(_run_dir(tmp_path / "c"))["step"] == 6
    assert ckpt.load_checkpoint(checkpoints / "last.prev.pt")["step"] == 6
    rerun = _train(tmp_path / "c", tmp_path, cache, None, workers)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "batch 1/5 of epoch 2" in rerun.stdout
    assert not list(checkpoints.glob(".*.tmp"))
    _assert_same_result(expected, _last(_run_dir(tmp_path / "c")))

    # A loader worker killed (two workers; worker 0 loads batches 1, 3, 5 and dies asked for batch 5): the command
    # ends with one line naming data.loader.num_workers instead of PyTorch's traceback, and exit code 2.
    workers = "data.loader.num_workers=2"
    killed = _train(tmp_path / "d", tmp_path, cache, "loader_worker:3", workers)
    assert killed.returncode == 2, killed.stderr[-3000:]
    assert "Traceback" not in killed.stderr, killed.stderr[-3000:]
    (line,) = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: DataLoader worker (pid") and "data.loader.num_workers=2" in line
    rerun = _train(tmp_path / "d", tmp_path, cache, None, workers)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_same_result(expected, _last(_run_dir(tmp_path / "d")))


def test_a_worker_killed_while_handing_over_a_batch_is_still_one_line():
    """The race of the test above: the worker dies while the training process receives a batch's shared memory,
    which surfaces as ConnectionResetError before PyTorch's own report. PyTorch's check of its workers then names
    the dead one; a broken connection with every worker alive (or without workers) stays what it was."""
    import multiprocessing
    import os
    import signal

    from torch.utils.data._utils.signal_handling import _remove_worker_pids, _set_worker_pids

    from scseg.data.errors import LoaderWorkerError
    from scseg.engine.trainer import loader_worker_error

    assert loader_worker_error(ConnectionResetError(104, "reset"), 0, "epoch 1") is None
    worker = multiprocessing.get_context("fork").Process(target=signal.pause, daemon=True)
    worker.start()
    key = id(worker)
    _set_worker_pids(key, (worker.pid,))
    try:
        assert loader_worker_error(ConnectionResetError(104, "reset"), 1, "epoch 1", wait_s=0.3) is None  # alive
        os.kill(worker.pid, signal.SIGKILL)
        died = loader_worker_error(ConnectionResetError(104, "reset"), 1, "epoch 1, 3 steps done")
    finally:
        _remove_worker_pids(key)
        worker.join(5)
    assert isinstance(died, LoaderWorkerError)
    message = str(died)
    assert message.startswith(f"DataLoader worker (pid {worker.pid}) is killed by signal")
    assert "epoch 1, 3 steps done" in message and "data.loader.num_workers=1" in message
