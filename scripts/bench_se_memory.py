"""Bytes an scSE block keeps for backward, per aggregation, against the textbook formulation (same process).

`python scripts/bench_se_memory.py [--channels 64] [--size 128] [--batch 8]` counts the tensors autograd saves
(torch.autograd.graph.saved_tensors_hooks, deduplicated by storage) for scseg's ConcurrentSE and for a naive
module that builds both recalibrated maps explicitly, and prints the ratio. Saved bytes are deterministic, so
this is a measurement, not a timing; it shows that scseg keeps only `x` and the two small gates (a custom autograd
function recomputes the rest in backward) where the textbook form keeps full-size products.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from scseg.models.se import AGGREGATIONS, ConcurrentSE


class NaiveSCSE(nn.Module):
    """The textbook scSE: x*c and x*s materialised, then combined."""

    def __init__(self, block: ConcurrentSE) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, xs = x * self.block.cse.gate(x), x * self.block.sse.gate(x)
        if self.block.aggregation == "add":
            return xc + xs
        if self.block.aggregation == "max":
            return torch.maximum(xc, xs)
        if self.block.aggregation == "mul":
            return xc * xs
        return self.block.fuse(torch.cat([xc, xs], dim=1))


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward (deduplicated by storage): deterministic, not a timing."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x).sum()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    x = torch.randn(args.batch, args.channels, args.size, args.size, requires_grad=True)
    full = x.numel() * x.element_size()
    print(f"input {tuple(x.shape)} float32 = {full / 2**20:.1f} MiB; saved-for-backward in MiB (and in inputs)")
    print(f"{'aggregation':<12} {'scseg':>10} {'naive':>10} {'ratio':>7}")
    for aggregation in AGGREGATIONS:
        block = ConcurrentSE(args.channels, aggregation=aggregation)
        ours, naive = saved_bytes(block, x), saved_bytes(NaiveSCSE(block), x)
        print(
            f"{aggregation:<12} {ours / 2**20:>7.1f} ({ours / full:.1f}) {naive / 2**20:>6.1f} ({naive / full:.1f}) "
            f"{ours / naive:>6.2f}"
        )


if __name__ == "__main__":
    main()
