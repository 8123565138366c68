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


def section_gpu(args: argparse.Namespace) -> Section:
    import torch

    section = Section("gpu", "GPU: channels-last, bf16 autocast, torch.compile")
    device = torch.device(args.gpu_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        section.skipped = "no CUDA device"
        return section
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (code-path check only)"
    size, steps = (32, 2) if args.quick else (256, 10)
    batch = 8
    archs = ("unet",) if args.quick else ("unet", "sdnet", "fcdensenet")
    modes = {"fp32": GPU_MODES["fp32"], "bf16 channels-last compile": GPU_MODES["bf16 channels-last compile"]}
    modes = modes if args.quick else GPU_MODES
    section.sizes = f"{name}; paper widths, batch {batch}, {size} x {size}, CE loss, Adam, {steps} steps per round"
    table = Table(
        f"Slices/s on {name}",
        [
            ("arch", "arch", "s"),
            ("se", "SE", "s"),
            ("mode", "mode", "s"),
            ("slices", "slices/s", ".0f"),
            ("vs_fp32", "speed vs fp32", ".2f"),
            ("first_s", "first step s (compile)", ".1f"),
        ],
    )
    images, labels = synthetic_batch(batch, size, MALC_NUM_CLASSES)
    images, labels = images.to(device), labels.to(device)

    def synchronized(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return run

    for arch in archs:
        for se in ("none", "scse"):
            cfg = compose([f"model={arch}", "width=paper", f"se={se}"])
            runs, first = {}, {}
            for mode, flags in modes.items():
                run = synchronized(gpu_step(cfg, device, images, labels, flags))
                started = time.perf_counter()
                run()
                first[mode] = time.perf_counter() - started
                runs[mode] = run
            times = interleaved(runs, args.repeats, warmup=1, inner=steps)
            section.raw[f"{arch}_{se}"] = times
            for mode in modes:
                table.rows.append(
                    {
                        "arch": arch,
                        "se": se,
                        "mode": mode,
                        "slices": batch / median(times[mode]),
                        "vs_fp32": 1.0 / paired_ratio(times, mode, "fp32"),
                        "first_s": first[mode],
                    }
                )
            del runs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    section.tables.append(table)
    return section


# ---------------------------------------------------------------------------------------------- report
