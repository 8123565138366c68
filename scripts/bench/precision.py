"""Section precision: bf16 autocast against fp32 for a U-Net training step on this CPU.

Why: bf16 autocast is 3-4x faster on CPUs with AMX and slower where it is emulated; ``trainer.amp: auto`` turns it
on only with AMX (scseg/engine/precision.py). This table is the measurement behind that rule on the machine that
runs it (the page names the CPU and its AVX-512 / AVX512-BF16 / AMX flags): U-Net width=cpu (the MALC preset) and
the paper U-Net, 96 x 96, batch 8, channels-last, variants interleaved.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import MALC_NUM_CLASSES, Section, Table, cpu_features, interleaved, median
from bench.training import compose, seeded_model, synthetic_batch, training_step


def section_precision(args: argparse.Namespace) -> Section:
    import torch

    from scseg.engine.spec import RunSpec

    section = Section("precision", "bf16 autocast against fp32 on this CPU")
    side, batch = (32, 2) if args.quick else (96, 8)
    features = cpu_features()
    section.sizes = f"{side} x {side}, batch {batch}; CPU flags: {' '.join(features) or 'none known'}"
    table = Table(
        "U-Net training step, fp32 vs bf16 autocast (loss in fp32)",
        [
            ("width", "width", "s"),
            ("fp32_s", "fp32 step s", ".3f"),
            ("bf16_s", "bf16 step s", ".3f"),
            ("speedup", "bf16 speed-up", ".2f"),
        ],
    )
    images, labels = synthetic_batch(batch, side, MALC_NUM_CLASSES)
    for width in ("cpu", "paper"):
        cfg = compose(["model=unet", f"width={width}", "se=none"])
        spec = RunSpec.from_config(cfg)
        x = images.contiguous(memory_format=spec.memory_format)
        steps: dict[str, Any] = {}
        for name, enabled in (("fp32", False), ("bf16", True)):
            model = seeded_model(cfg)
            plain = training_step(cfg, model, MALC_NUM_CLASSES)

            def step(plain=plain, enabled=enabled, x=x) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                    plain(x, labels)

            steps[name] = step
        times = interleaved(steps, args.repeats, warmup=1)
        fp32, bf16 = median(times["fp32"]), median(times["bf16"])
        table.rows.append({"width": width, "fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16})
        section.raw[width] = times
    section.tables.append(table)
    section.notes.append(
        "bf16 speed-up above 1: autocast pays on this CPU (trainer.amp: auto turns it on only where the CPU lists "
        "amx_bf16); below 1: it is emulated here and auto keeps fp32. The autocast covers the loss too in this "
        "micro-benchmark; the trainer computes the loss in fp32 (a small difference in time)."
    )
    return section
