"""Section se_blocks: SE blocks forward + backward time and bytes kept, against a common-library reference."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

from bench.common import Section, Table, interleaved, median, paired_ratio
from bench.training import fwd_bwd


def reference_block(block: Any) -> Any:
    """The same block written the way common libraries do (segmentation_models_pytorch's ``SCSEModule``):
    pooling and 1x1 convolutions in ``nn.Sequential``, each recalibrated map its own full-size product, combined
    afterwards. Weights are copied from ``block`` so both compute the same function."""
    import torch
    from torch import nn

    from scseg.models.se import ChannelSE, ConcurrentSE, SpatialSE

    cse = block.cse if isinstance(block, ConcurrentSE) else block if isinstance(block, ChannelSE) else None
    sse = block.sse if isinstance(block, ConcurrentSE) else block if isinstance(block, SpatialSE) else None

    def conv_from(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1)
        with torch.no_grad():
            conv.weight.copy_(weight.reshape(conv.weight.shape))
            conv.bias.copy_(bias)
        return conv

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aggregation = getattr(block, "aggregation", None)
            if cse is not None:
                self.cse = nn.Sequential(
                    nn.AdaptiveAvgPool2d(1),
                    conv_from(cse.fc1.weight, cse.fc1.bias),
                    nn.ReLU(inplace=True),
                    conv_from(cse.fc2.weight, cse.fc2.bias),
                    nn.Sigmoid(),
                )
            if sse is not None:
                self.sse = nn.Sequential(conv_from(sse.conv.weight, sse.conv.bias), nn.Sigmoid())
            if self.aggregation == "concat":
                self.fuse = copy.deepcopy(block.fuse)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if sse is None:
                return x * self.cse(x)
            if cse is None:
                return x * self.sse(x)
            xc, xs = x * self.cse(x), x * self.sse(x)
            if self.aggregation == "add":
                return xc + xs
            if self.aggregation == "max":
                return torch.maximum(xc, xs)
            if self.aggregation == "mul":
                return xc * xs
            return self.fuse(torch.cat([xc, xs], dim=1))

    return Reference()


def section_se_blocks(args: argparse.Namespace) -> Section:
    import torch
    from bench_se_memory import saved_bytes  # scripts/ is on sys.path when this script runs: one byte counter

    from scseg.models import create_se
    from scseg.models.se_fused import kernels_available

    fused_ok, fused_why = kernels_available()
    batch = 2 if args.quick else 8
    channels = (8,) if args.quick else (16, 64, 128)
    sizes = (16, 24) if args.quick else (96, 256)
    blocks = [("cse", "add"), ("sse", "add"), ("scse", "add"), ("scse", "max"), ("scse", "mul"), ("scse", "concat")]
    section = Section(
        "se_blocks",
        "SE blocks: forward + backward, scseg vs a library-style reference",
        sizes=f"batch {batch}, C in {list(channels)}, H = W in {list(sizes)}, float32, channels-last (the "
        "trainer's layout, trainer.channels_last), input = ReLU(randn) as in the networks (SE follows "
        "conv-norm-ReLU), reduction 2; concat timed at the smallest size only",
    )
    table = Table(
        "Time per forward + backward (median) and bytes kept for backward (in units of the input's size)",
        [
            ("block", "block", "s"),
            ("channels", "C", "d"),
            ("size", "H x W", "s"),
            ("scseg_ms", "scseg ms", ".2f"),
            ("reference_ms", "reference ms", ".2f"),
            ("time_ratio", "scseg / reference", ".2f"),
            ("fused_ms", "fused ms", ".2f"),
            ("fused_ratio", "fused / reference", ".2f"),
            ("scseg_kept", "kept, scseg", ".2f"),
            ("reference_kept", "kept, reference", ".2f"),
        ],
    )
    agree = True
    for size in sizes:
        for ch in channels:
            torch.manual_seed(0)
            x = torch.relu(torch.randn(batch, ch, size, size)).contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            grad = torch.randn_like(x)
            full = x.numel() * x.element_size()
            runs: dict[str, Callable[[], None]] = {}
            kept: dict[str, float] = {}
            for name, aggregation in blocks:
                if aggregation == "concat" and size != sizes[0]:
                    continue
                label = name if name != "scse" else f"scse-{aggregation}"
                ours = create_se(name, ch, aggregation=aggregation)
                theirs = reference_block(ours)
                with torch.no_grad():
                    agree &= torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
                implementations = [("scseg", ours), ("reference", theirs)]
                if fused_ok and aggregation == "add":
                    torch.manual_seed(0)
                    fused = create_se(name, ch, aggregation=aggregation, kernels="fused")
                    fused.load_state_dict(ours.state_dict())
                    with torch.no_grad():
                        agree &= torch.allclose(fused(x), theirs(x), rtol=1e-4, atol=1e-5)
                    implementations.append(("fused", fused))
                for impl, module in implementations:
                    kept[f"{label}/{impl}"] = saved_bytes(module, x) / full
                    runs[f"{label}/{impl}"] = fwd_bwd(module, x, grad)
            times = interleaved(runs, args.repeats, warmup=1)
            section.raw[f"C{ch}_{size}"] = times
            for label in dict.fromkeys(k.split("/")[0] for k in runs):
                table.rows.append(
                    {
                        "block": label,
                        "channels": ch,
                        "size": f"{size} x {size}",
                        "scseg_ms": 1e3 * median(times[f"{label}/scseg"]),
                        "reference_ms": 1e3 * median(times[f"{label}/reference"]),
                        "time_ratio": paired_ratio(times, f"{label}/scseg", f"{label}/reference"),
                        "fused_ms": 1e3 * median(times[f"{label}/fused"]) if f"{label}/fused" in times else None,
                        "fused_ratio": paired_ratio(times, f"{label}/fused", f"{label}/reference")
                        if f"{label}/fused" in times
                        else None,
                        "scseg_kept": kept[f"{label}/scseg"],
                        "reference_kept": kept[f"{label}/reference"],
                    }
                )
            del x, grad, runs
    section.tables.append(table)
    section.extra["outputs_agree"] = bool(agree)
    section.notes.append(
        "reference: cSE as AdaptiveAvgPool2d + 1x1 convolutions + Sigmoid, sSE as a 1x1 convolution + Sigmoid, "
        "then `x * c + x * s` (max: `maximum(x * c, x * s)`, mul: `(x * c) * (x * s)`, concat: 1x1 convolution "
        "of `cat([x * c, x * s])`), weights copied from scseg's block; outputs agree: "
        f"{'yes' if agree else 'NO'}. Kept = bytes autograd saves for backward / bytes of x (x itself counts 1). "
        "scseg: the blocks built from ATen operations (trainer.se_kernels=eager); fused: the C++ kernels of "
        "scseg/models/se_fused.py (trainer.se_kernels=auto, the default), for cSE, sSE and scSE add"
        + ("" if fused_ok else f" (not built here: {fused_why})")
        + "."
    )
    return section
