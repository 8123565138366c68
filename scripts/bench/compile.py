"""Section compile: torch.compile on the CPU against eager ATen and the fused SE kernels.

Why: the fused C++ SE kernels (trainer.se_kernels=fused) are opt-in; whether they stay, or torch.compile does
their job without a hand-written kernel, is decided by this table. Two sizes: one scSE block forward + backward at
the small networks' width (C = 16, 256 x 256, batch 8) and a whole training step of U-Net width=cpu scSE at the MALC
preset's 96 x 96 (batch 8), each in the trainer's memory layout. Compile time is reported apart (the first calls),
the steady state is measured with the variants interleaved.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import MALC_NUM_CLASSES, Section, Table, interleaved, median
from bench.training import compose, fwd_bwd, seeded_model, synthetic_batch, training_step


def _compiled(module: Any) -> Any:
    """``torch.compile(module)`` with inductor, static shapes (the first call compiles: timed by the caller)."""
    import torch

    return torch.compile(module, dynamic=False)


def _first_call(run: Any) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def section_compile(args: argparse.Namespace) -> Section:
    import torch

    from scseg.engine.spec import RunSpec
    from scseg.models import create_se
    from scseg.models.se_fused import kernels_available

    section = Section("compile", "torch.compile on the CPU")
    size, batch = (32, 2) if args.quick else (256, 8)
    side, step_batch = (32, 2) if args.quick else (96, 8)
    section.sizes = (
        f"scSE block C = 16, {size} x {size}, batch {batch}; U-Net width=cpu scSE step at {side} x {side}, "
        f"batch {step_batch}"
    )
    fused_ok = kernels_available()[0]
    block_table = Table(
        "One scSE block, forward + backward (channels-last)",
        [
            ("variant", "variant", "s"),
            ("ms", "ms", ".2f"),
            ("vs_eager", "vs eager", ".2f"),
            ("compile_s", "first call s", ".1f"),
        ],
    )
    x = torch.randn(batch, 16, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    grad = torch.randn_like(x)
    runs: dict[str, Any] = {}
    first: dict[str, float] = {}
    for name, kernels in (("eager (ATen)", "eager"), ("fused kernels", "fused")):
        if kernels == "fused" and not fused_ok:
            continue
        torch.manual_seed(0)
        runs[name] = fwd_bwd(create_se("scse", 16, kernels=kernels), x, grad)
    torch.manual_seed(0)
    compiled = _compiled(create_se("scse", 16, kernels="eager"))
    runs["torch.compile"] = fwd_bwd(compiled, x, grad)
    for name, run in runs.items():
        first[name] = _first_call(run)
    times = interleaved(runs, args.repeats, warmup=1, inner=1 if args.quick else 5)
    eager = median(times["eager (ATen)"])
    for name in runs:
        ms = median(times[name])
        block_table.rows.append(
            {
                "variant": name,
                "ms": 1e3 * ms,
                "vs_eager": ms / eager,
                "compile_s": first[name] if name == "torch.compile" else None,
            }
        )
    section.tables.append(block_table)
    section.raw["block"] = times

    step_table = Table(
        "U-Net width=cpu scSE, one training step at 96 x 96 (trainer's layout)",
        [
            ("variant", "variant", "s"),
            ("step_s", "step s", ".3f"),
            ("vs_eager", "vs eager", ".2f"),
            ("compile_s", "first step s", ".1f"),
        ],
    )
    images, labels = synthetic_batch(step_batch, side, MALC_NUM_CLASSES)
    steps: dict[str, Any] = {}
    first_step: dict[str, float] = {}
    for name, extra in (("eager (ATen)", []), ("fused kernels", ["trainer.se_kernels=fused"]), ("torch.compile", [])):
        if name == "fused kernels" and not fused_ok:
            continue
        cfg = compose(["model=unet", "width=cpu", "se=scse", *extra])
        layout = RunSpec.from_config(cfg).memory_format
        model = seeded_model(cfg, layout)
        if name == "torch.compile":
            model = _compiled(model)
        step = training_step(cfg, model, MALC_NUM_CLASSES)
        xi = images.contiguous(memory_format=layout)
        steps[name] = lambda step=step, xi=xi: step(xi, labels)
        first_step[name] = _first_call(steps[name])
    times = interleaved(steps, args.repeats, warmup=1)
    eager = median(times["eager (ATen)"])
    for name in steps:
        seconds = median(times[name])
        step_table.rows.append(
            {
                "variant": name,
                "step_s": seconds,
                "vs_eager": seconds / eager,
                "compile_s": first_step[name] if name == "torch.compile" else None,
            }
        )
    section.tables.append(step_table)
    section.raw["step"] = times
    section.notes.append(
        "vs eager: median time over interleaved rounds divided by eager's (below 1: faster). The first call of the "
        "compiled module includes inductor's compilation (C++ code generation); every fresh process pays it again."
    )
    return section
