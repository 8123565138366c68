"""Distributed data parallel helpers: process-group setup under torchrun, rank checks, count reduction.

Everything degrades to a single process when ``WORLD_SIZE`` is unset, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False  # a process group was joined (torchrun, any world size: 1 too, to check a backend)

    @property
    def enabled(self) -> bool:
        return self.group or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """torchrun (or another launcher) set ``WORLD_SIZE``: join its process group, even of one process."""
    return "WORLD_SIZE" in os.environ


def pick_device(device: str) -> str:
    """``trainer.device``: ``auto`` is ``cuda`` where a CUDA device exists, else ``cpu``; other values stay."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_backend(backend: str, device: str) -> str:
    """``trainer.backend``: ``auto`` is NCCL for CUDA devices when torch has it, else gloo; other values stay."""
    if backend == "auto":
        return "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"
    return backend


def check_device_and_backend(device: str, backend: str, distributed: bool) -> None:
    """One ``ValueError`` line naming both keys when the machine cannot run what they ask for (before training)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.device is {device!r} but this machine has no CUDA device; "
            "use trainer.device=cpu (or auto, which picks what exists)"
        )
    if distributed and backend == "nccl" and (not device.startswith("cuda") or not dist.is_nccl_available()):
        raise ValueError(
            f"trainer.backend is 'nccl' but trainer.device is {device!r}"
            + ("" if dist.is_nccl_available() else " and this torch has no NCCL")
            + "; use trainer.backend=gloo (or auto with trainer.device=auto)"
        )


def init_distributed(backend: str, device: str) -> DistContext:
    """Join the process group torchrun describes in the environment; a no-op without one."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), group=True)
    if device.startswith("cuda"):
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def wrap_ddp(model: nn.Module, device_ids: list[int] | None) -> nn.Module:
    """``model`` in DistributedDataParallel with its gradients living in DDP's all-reduce buckets, so no step
    copies them and DDP's reducer never warns ``Grad strides do not match bucket view strides``.

    Why the warning came: ``trainer.channels_last`` gives a 1x1 kernel (the sSE convolution, the classifier) the
    strides ``(C, 1, C, C)``; its gradient comes back from the convolution as ``(C, 1, 1, 1)``. Both describe the
    same memory, and autograd's layout contract ignores the strides of size-1 dimensions, but the reducer compares
    strides literally. Converting to channels-last before wrapping (the trainer does) is not enough, and
    ``gradient_as_bucket_view=True`` alone is not either: the first step's gradients are fresh tensors. Giving every
    parameter a zero gradient before wrapping lets DDP make each gradient its bucket view at construction; from then
    on autograd adds into that view in place (the trainer keeps the gradients between steps, zeroing them, under
    DDP), so the reducer compares a tensor with itself, whatever strides the device's convolution returns.
    Numbers are unchanged: the bucket holds 0 + g = g.
    """
    for param in model.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)  # same strides as the parameter: the bucket view's
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)


def barrier(ctx: DistContext) -> None:
    """Wait for every process of a distributed run (a no-op in a single process)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def collective_device(backend: str) -> torch.device:
    """Where a tensor must live for a collective of ``backend``: NCCL reduces CUDA tensors only (a CPU tensor
    fails with ``No backend type associated with device type cpu``), gloo CPU tensors."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(array: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Element-wise sum over ranks of an integer or float array (exact for integer counts)."""
    if not ctx.enabled:
        return array
    dtype = torch.float64 if array.dtype.kind == "f" else torch.int64
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(collective_device(dist.get_backend()), dtype)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy().astype(array.dtype)


def shard(items: list, ctx: DistContext) -> list:
    """This rank's share of ``items`` (round robin), used to split evaluation subjects."""
    return items[ctx.rank :: ctx.world_size]


def cleanup(ctx: DistContext, together: bool = True) -> None:
    """Leave the process group. ``together`` (a rank that finished normally): wait at a barrier first, because a
    rank that destroys gloo's pairs while a peer still works on its last step (rank 0 writing files) can take that
    peer down with SIGABRT. A failing rank passes ``together=False`` and leaves at once: its peers sit in another
    collective and would never reach the barrier, and torchrun ends them when this rank exits."""
    if ctx.enabled and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()
