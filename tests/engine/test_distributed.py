"""DDP on CPU with the gloo backend, 1 thread per rank: exact distributed evaluation, one run folder per run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counts_worker(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from scseg.config import compose_train_config
    from scseg.engine.distributed import cleanup, init_distributed
    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.spec import RunSpec
    from scseg.engine.trainer import distributed_counts

    cfg = compose_train_config(overrides)
    ctx = init_distributed("gloo", "cpu")
    dm = build_datamodule(RunSpec.from_config(cfg))
    dm.prepare()
    torch.manual_seed(0)
    model = build_model(RunSpec.from_config(cfg), dm.num_classes, dm.in_channels)
    counts = distributed_counts(model, dm, "test", 8, torch.device("cpu"), ctx)
    if rank == 0:
        np.savez(out, **counts)
    cleanup(ctx)


BUCKET_WARNING = "Grad strides do not match bucket view strides"


def _ddp_steps(rank: int, bucket_views: bool) -> dict:
    """Three SGD steps of a channels-last scSE U-Net (1x1 kernels: sSE, classifier) under DDP on gloo. The DDP
    module lives only in this frame, so its reducer is gone before the caller leaves the process group."""
    import warnings

    from scseg.engine.distributed import wrap_ddp
    from scseg.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, filters=4, depth=2, se="scse").to(memory_format=torch.channels_last)
    module = wrap_ddp(model, None) if bucket_views else torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            images = torch.randn(2, 1, 16, 16, generator=generator).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=not bucket_views)
            module(images).square().mean().backward()
            optimizer.step()
    warned = any(BUCKET_WARNING in str(w.message) for w in caught)
    return {"warned": warned, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def _ddp_steps_worker(rank: int, world: int, port: int, bucket_views: bool, out: str) -> None:
    """Leaves gloo the way scseg.engine.run does: the DDP module already freed (a live reducer torn down with its
    group aborted a rank in CI, "terminate called without an active exception"), then a barrier, then destroy."""
    import gc

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    result = _ddp_steps(rank, bucket_views)
    gc.collect()
    if rank == 0:
        torch.save(result, out)
    torch.distributed.barrier()  # no rank tears gloo down while the other still writes
    torch.distributed.destroy_process_group()


def test_ddp_gradients_as_bucket_views_change_no_number(tmp_path):
    """wrap_ddp (gradients kept as DDP's bucket views) trains to the same weights as plain DDP, bit for bit, and
    its reducer does not warn about gradient strides, which plain DDP does for channels-last 1x1 kernels."""
    results = {}
    for bucket_views in (False, True):
        out = str(tmp_path / f"steps_{bucket_views}.pt")
        mp.spawn(_ddp_steps_worker, args=(2, _free_port(), bucket_views, out), nprocs=2, join=True)
        results[bucket_views] = torch.load(out, weights_only=True)
    assert results[False]["warned"], "plain DDP no longer warns: the test no longer shows what wrap_ddp fixes"
    assert not results[True]["warned"]
    for name, value in results[False]["state"].items():
        assert torch.equal(results[True]["state"][name], value), name


def test_distributed_evaluation_equals_single_process(tmp_path, monkeypatch):
    from scseg.config import compose_train_config
    from scseg.engine.distributed import DistContext
    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.spec import RunSpec
    from scseg.engine.trainer import distributed_counts

    overrides = [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        "data.layout.n_test=3",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    cfg = compose_train_config(overrides)
    dm = build_datamodule(RunSpec.from_config(cfg))
    dm.prepare()
    torch.manual_seed(0)
    model = build_model(RunSpec.from_config(cfg), dm.num_classes, dm.in_channels)
    single = distributed_counts(model, dm, "test", 8, torch.device("cpu"), DistContext())

    out = str(tmp_path / "dist.npz")
    mp.spawn(_counts_worker, args=(2, _free_port(), overrides, out), nprocs=2, join=True)
    distributed = dict(np.load(out))
    assert sorted(distributed) == sorted(single)
    for sid, counts in single.items():
        np.testing.assert_array_equal(distributed[sid], counts)


def test_two_rank_run_writes_one_run_folder(tmp_path):
    runs = tmp_path / "runs"
    overrides = [
        *TINY_DATA,
        *TINY_TRAINER,
        *TINY_MODELS["unet"],
        "trainer=ddp",
        "trainer.device=cpu",
        "trainer.backend=gloo",
        "trainer.amp=false",
        "trainer.num_threads=1",
        "width=small",
        f"paths.runs_dir={runs}",
        "experiment_name=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "scseg.train",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Channels-last 1x1 kernels (the classifier) once made DDP's reducer warn and copy gradients (wrap_ddp).
    assert BUCKET_WARNING not in proc.stdout + proc.stderr
    folders = [p for p in (runs / "ddp").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1, folders
    folder = folders[0]
    assert {p.name for p in (folder / "checkpoints").iterdir()} <= {"best.pt", "last.pt", "last.prev.pt"}
    assert {"best.pt", "last.pt"} <= {p.name for p in (folder / "checkpoints").iterdir()}
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert (folder / "summary.json").is_file()
    # No Hydra output anywhere else: ranks > 0 write nothing, rank 0 writes .hydra/ only inside the run folder.
    assert not list(Path(tmp_path).glob("outputs")) and not list(Path(tmp_path).glob(".hydra"))


def test_device_and_backend_follow_what_the_machine_has(monkeypatch):
    """trainer=ddp on a machine without CUDA trains on CPU with gloo instead of dying in NCCL; asking for CUDA or
    NCCL where there is none stops in one line naming both keys."""
    import torch.distributed

    from scseg.engine.distributed import check_device_and_backend, pick_backend, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_backend("auto", "cpu") == "gloo"
    assert pick_device("cpu") == "cpu" and pick_backend("gloo", "cpu") == "gloo"
    with pytest.raises(ValueError, match="trainer.device is 'cuda' but this machine has no CUDA device"):
        check_device_and_backend("cuda", "nccl", True)
    with pytest.raises(ValueError, match="trainer.backend is 'nccl' but trainer.device is 'cpu'"):
        check_device_and_backend("cpu", "nccl", True)
    check_device_and_backend("cpu", "gloo", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_backend("auto", "cuda") == "nccl"


def test_collectives_use_the_device_their_backend_reduces_on(monkeypatch):
    """NCCL reduces CUDA tensors only: the count and loss sums of a `trainer=ddp` run on a GPU went to NCCL as CPU
    tensors and died with `No backend type associated with device type cpu` (seen on an H200 by make gpu-check)."""
    from scseg.engine.distributed import collective_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collective_device("nccl") == torch.device("cuda", 3)
    assert collective_device("gloo") == torch.device("cpu")


def test_the_ddp_preset_resolves_to_this_machine():
    from scseg.config.compose import compose_train_config
    from scseg.engine.spec import RunSpec

    spec = RunSpec.from_config(compose_train_config(["trainer=ddp"]))
    if not torch.cuda.is_available():
        assert (spec.trainer.device, spec.trainer.backend) == ("cpu", "gloo")


def test_a_finished_rank_waits_for_its_peers_and_a_failing_one_does_not(monkeypatch):
    """`cleanup` meets the other ranks at a barrier before leaving (no SIGABRT in a peer still writing), except on
    a failing rank: its peers sit in another collective and would never arrive, so it leaves at once."""
    import torch.distributed

    from scseg.engine.distributed import DistContext, cleanup

    calls: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    ctx = DistContext(group=True)
    cleanup(ctx)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    cleanup(ctx, together=False)
    assert calls == ["destroy"]
    calls.clear()
    cleanup(DistContext())  # one process, no group: nothing to leave
    assert calls == []


def test_a_failing_run_leaves_the_group_without_waiting(tiny_config, monkeypatch):
    """run_training tells `cleanup` whether this rank finished: a finished (or skipped) run waits for its peers, a
    run that raised does not (a barrier there would hang every rank until the collective times out)."""
    from scseg.engine import run as run_module
    from scseg.engine import trainer as trainer_module

    seen: list[bool] = []
    monkeypatch.setattr(run_module, "cleanup", lambda ctx, together=True: seen.append(together))
    run_module.run_training(tiny_config("unet"))
    run_module.run_training(tiny_config("unet"))  # the same config again: skipped
    assert seen == [True, True]

    def fail(*args, **kwargs):
        raise RuntimeError("a rank fails mid-training")

    monkeypatch.setattr(trainer_module.Trainer, "fit", fail)
    with pytest.raises(RuntimeError, match="mid-training"):
        run_module.run_training(tiny_config("sdnet"))
    assert seen == [True, True, False]
