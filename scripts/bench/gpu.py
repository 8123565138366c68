"""Section gpu (CUDA only): slices/s with channels-last, bf16 autocast and torch.compile."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench.common import MALC_NUM_CLASSES, Section, Table, interleaved, median, paired_ratio
from bench.training import compose, synthetic_batch

GPU_MODES = {  # (channels-last, bf16 autocast, torch.compile)
    "fp32": (False, False, False),
    "fp32 channels-last": (True, False, False),
    "bf16": (False, True, False),
    "bf16 channels-last": (True, True, False),
    "bf16 channels-last compile": (True, True, True),
}


def gpu_step(cfg: Any, device: Any, images: Any, labels: Any, mode: tuple[bool, bool, bool]) -> Callable[[], None]:
    """One training step of a fresh paper-width model in a mode (channels-last, bf16 autocast, compile)."""
    import torch

    from bench.training import seeded_model

    channels_last, bf16, compiled = mode
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = seeded_model(cfg, memory_format).to(device)
    module = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = images.contiguous(memory_format=memory_format)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = module(x)
        loss_fn(logits.float(), labels).backward()
        optimizer.step()

    return step


def synchronized(step: Callable[[], None], device: Any) -> Callable[[], None]:
    """``step`` followed by a wait for the device, so a timer around it sees the work and not just its launch."""
    import torch

    def run() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


UNET_MODES = tuple(GPU_MODES)  # the paper U-Net: every mode (the targets are on it)
# SD-Net and FC-DenseNet without compile here: each compile costs a minute of a short GPU lease, and make gpu-check's
# training check compiles both anyway
OTHER_MODES = ("fp32", "bf16 channels-last")
SLICES_TARGET = 1000.0  # paper U-Net, training slices/s on an H100/H200 (the figure is at 256 x 256)
SCSE_OVERHEAD_TARGET = 3.0  # %, paper U-Net scSE step time over none


def section_gpu(args: argparse.Namespace) -> Section:
    """Every (SE, mode) of one architecture is timed interleaved in the same rounds, so the scSE overhead is a
    ratio of neighbouring rounds (as on the CPU pages), never of two separate runs. A mode that fails (a compiler
    missing on the machine, say) is noted and left out, and the rest of the section still runs."""
    import torch

    section = Section("gpu", "GPU: channels-last, bf16 autocast, torch.compile")
    device = torch.device(args.gpu_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        section.skipped = "no CUDA device (the GPU figures: `make gpu-check` on a CUDA machine, benchmarks_gpu.md)"
        return section
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (code-path check only)"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: what the trainer does unless deterministic
    size = 32 if args.quick else args.gpu_size
    batch = 2 if args.quick else args.gpu_batch
    steps = 2 if args.quick else args.gpu_steps
    archs = ("unet",) if args.quick else tuple(args.gpu_archs.split(","))
    section.sizes = (
        f"{name}; paper widths, batch {batch}, {size} x {size}, CE loss, Adam, {steps} steps per round, "
        f"{args.repeats} interleaved rounds"
        + ("; fp32 = PyTorch's defaults (TF32 convolutions); cudnn.benchmark on" if device.type == "cuda" else "")
    )
    table = Table(
        f"Training slices/s on {name}",
        [
            ("arch", "arch", "s"),
            ("se", "SE", "s"),
            ("mode", "mode", "s"),
            ("slices", "slices/s", ".0f"),
            ("vs_fp32", "speed vs fp32", ".2f"),
            ("overhead", "scSE step time vs none (%)", "+.1f"),
            ("first_s", "first step s (compile)", ".1f"),
        ],
    )
    images, labels = synthetic_batch(batch, size, MALC_NUM_CLASSES)
    images, labels = images.to(device), labels.to(device)

    for arch in archs:
        modes = UNET_MODES if arch == "unet" else OTHER_MODES
        runs: dict[str, Callable[[], None]] = {}
        first: dict[str, float] = {}
        for se in ("none", "scse"):
            cfg = compose([f"model={arch}", "width=paper", f"se={se}"])
            for mode in modes:
                key = f"{se}|{mode}"
                try:
                    run = synchronized(gpu_step(cfg, device, images, labels, GPU_MODES[mode]), device)
                    started = time.perf_counter()
                    run()
                    first[key] = time.perf_counter() - started
                    runs[key] = run
                except Exception as error:  # noqa: BLE001 - a failing mode is reported, the others still count
                    section.notes.append(f"{arch} {se} {mode}: failed ({type(error).__name__}: {str(error)[:200]})")
        times = interleaved(runs, args.repeats, warmup=1, inner=steps)
        section.raw[arch] = times
        for key in runs:
            se, mode = key.split("|")
            base, twin = f"{se}|fp32", f"none|{mode}"
            overhead = 100 * (paired_ratio(times, key, twin) - 1) if se == "scse" and twin in times else None
            table.rows.append(
                {
                    "arch": arch,
                    "se": se,
                    "mode": mode,
                    "slices": batch / median(times[key]),
                    "vs_fp32": 1.0 / paired_ratio(times, key, base) if base in times else None,
                    "overhead": overhead,
                    "first_s": first[key],
                }
            )
        if arch == "unet" and device.type == "cuda" and not args.quick:
            gpu_targets(section, table.rows, size)
        del runs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    section.tables.append(table)
    return section


def gpu_targets(section: Section, rows: list[dict[str, Any]], size: int) -> None:
    """The paper U-Net's targets in its fastest mode: slices/s of none, and scSE's step time over none there."""
    unet = [r for r in rows if r["arch"] == "unet"]
    fastest = max((r for r in unet if r["se"] == "none"), key=lambda r: r["slices"], default=None)
    if fastest is None:
        return
    label = f"paper U-Net none slices/s, {size} x {size} ({fastest['mode']})"
    section.target(label, fastest["slices"], SLICES_TARGET, True)
    scse = next((r for r in unet if r["se"] == "scse" and r["mode"] == fastest["mode"]), None)
    if scse is not None and scse["overhead"] is not None:
        label = f"paper U-Net scSE step overhead (%) ({fastest['mode']})"
        section.target(label, scse["overhead"], SCSE_OVERHEAD_TARGET, False)


# ---------------------------------------------------------------------------------------------- report
