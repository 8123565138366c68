"""Section gpu_profile (CUDA; ``--gpu-device cpu`` checks the code path): where scSE's extra step time goes, and the
least time any scSE implementation could add on this device.

The GPU page measured the paper U-Net's scSE step at +13 to +24 % over ``none`` (eager), against a target of 3 %.
Whether a fused kernel could meet that target is a question of memory traffic, not of arithmetic: the gates are
tiny, and every SE block passes over the full-size feature map it recalibrates. Two answers, per mode:

1. **Profile.** ``torch.profiler`` over a few training steps of ``none`` and of ``scse`` (the same seeded backbone,
   the benchmark's batch and size): device time per CUDA kernel (compiled: the generated ones), per step. The table
   lists the kernels whose time scSE adds, largest first, so a session with a lease sees what to fuse.
2. **Floor.** The full-size passes a perfectly fused scSE block cannot avoid at each site: forward, one read of
   ``x`` for both squeezes (the channel mean and the spatial projection) and one read of ``x`` plus one write of
   the output for the recalibration; backward, one read each of the incoming gradient and of ``x`` for the gates'
   gradients, then one read of the gradient and one write of ``x``'s gradient. Seven passes over the bytes of the
   feature maps entering the SE blocks (measured by hooks, in the dtype autocast leaves them in), at the copy
   bandwidth measured on this device, against the ``none`` step measured here. When that floor is above the target,
   no kernel work outside the convolutions meets it; when it is far below, the gap is launch and pass overhead a
   fused kernel can remove.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench.common import MALC_NUM_CLASSES, Section, Table, interleaved, median
from bench.gpu import GPU_MODES, SCSE_OVERHEAD_TARGET, gpu_step, synchronized
from bench.training import compose, seeded_model, synthetic_batch

FLOOR_PASSES = 7  # forward: read x (squeezes), read x + write out; backward: read grad + x, read grad + write grad_x
PROFILE_MODES = ("bf16 channels-last", "bf16 channels-last compile")
TOP_OPS = 12
NAME_CHARS = 90  # CUDA kernel names are whole template signatures


def se_site_bytes(cfg: Any, device: Any, images: Any, mode: tuple[bool, bool, bool]) -> int:
    """Bytes of the feature maps entering the outermost recalibration blocks in one forward pass of ``images``,
    in the dtype and layout the mode runs them in (hooks on the eager model: compiling changes no shape)."""
    import torch

    from scseg.models.se import is_recalibration, outermost_blocks

    channels_last, bf16, _ = mode
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = seeded_model(cfg, memory_format).to(device)
    total = 0

    def count(_module: Any, inputs: tuple[Any, ...]) -> None:
        nonlocal total
        total += inputs[0].numel() * inputs[0].element_size()

    handles = [block.register_forward_pre_hook(count) for block in outermost_blocks(model, is_recalibration)]
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(images.contiguous(memory_format=memory_format))
    for handle in handles:
        handle.remove()
    return total


def copy_bandwidth(device: Any, nbytes: int, repeats: int = 5) -> float:
    """Bytes per second a device-to-device copy of ``nbytes`` moves (read plus write), median of ``repeats``."""
    import torch

    source = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    times = []
    for _ in range(repeats + 1):  # the first copy warms the allocator and the caches
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * source.numel() * source.element_size() / median(times[1:])


def op_times(step: Callable[[], None], device: Any, steps: int) -> dict[str, float]:
    """Milliseconds per step over ``steps`` profiled steps after one warm-up step: on CUDA the device time of each
    kernel (names cut to ``NAME_CHARS``; an operator's own row would count its kernels a second time), elsewhere
    each operator's self CPU time."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    times: dict[str, float] = {}
    for event in prof.key_averages():
        if device.type == "cuda" and event.device_type != DeviceType.CUDA:
            continue
        micros = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if micros > 0:
            name = event.key[:NAME_CHARS].replace("|", "/")
            times[name] = times.get(name, 0.0) + micros / 1000.0 / steps
    return times


def added_ops(none: dict[str, float], scse: dict[str, float], top: int = TOP_OPS) -> list[dict[str, Any]]:
    """The operators whose per-step time scSE adds over none, largest first, each with its share of the whole
    difference; the rest summed in one row."""
    names = set(none) | set(scse)
    deltas = sorted(((scse.get(n, 0.0) - none.get(n, 0.0), n) for n in names), reverse=True)
    total = sum(scse.values()) - sum(none.values())
    rows = []
    for delta, name in deltas[:top]:
        if delta <= 0:
            break
        rows.append({"op": name, "none_ms": none.get(name, 0.0), "scse_ms": scse.get(name, 0.0), "delta_ms": delta})
    rest = total - sum(r["delta_ms"] for r in rows)
    rows.append({"op": "(all other operators, net)", "none_ms": None, "scse_ms": None, "delta_ms": rest})
    for row in rows:
        row["share"] = 100 * row["delta_ms"] / total if total > 0 else None
    return rows


def floor_row(mode: str, site_bytes: int, bandwidth: float, times: dict[str, list[float]], batch: int) -> dict:
    """The least scSE could add per step at ``bandwidth`` against the measured none step, and what it added."""
    none_s, scse_s = median(times[f"none|{mode}"]), median(times[f"scse|{mode}"])
    floor_s = FLOOR_PASSES * site_bytes / bandwidth
    return {
        "mode": mode,
        "site_mib": site_bytes / 2**20,
        "bandwidth": bandwidth / 1e9,
        "floor_ms": 1000 * floor_s,
        "none_ms": 1000 * none_s,
        "scse_ms": 1000 * scse_s,
        "floor_pct": 100 * floor_s / none_s,
        "measured_pct": 100 * (scse_s / none_s - 1),
        "slices": batch / none_s,
    }


def section_gpu_profile(args: argparse.Namespace) -> Section:
    """The paper U-Net's none and scSE in each profiled mode: interleaved step times, operator profile, floor."""
    import torch

    section = Section("gpu_profile", "GPU: where scSE's step time goes, and its floor")
    device = torch.device(args.gpu_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        section.skipped = "no CUDA device (`make gpu-check` on a CUDA machine writes this section)"
        return section
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (code-path check only)"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = 32 if args.quick else args.gpu_size
    batch = 2 if args.quick else args.gpu_batch
    steps = 2 if args.quick else args.gpu_steps
    modes = PROFILE_MODES[:1] if args.quick else PROFILE_MODES
    nbytes = (16 if args.quick else 1024) * 2**20
    bandwidth = copy_bandwidth(device, nbytes)
    section.sizes = (
        f"{name}; paper U-Net, batch {batch}, {size} x {size}, CE loss, Adam; {steps} profiled steps per variant; "
        f"floor: {FLOOR_PASSES} passes over the SE sites' input at the copy bandwidth of a {nbytes >> 20} MiB "
        f"tensor ({bandwidth / 1e9:.0f} GB/s)"
    )
    images, labels = synthetic_batch(batch, size, MALC_NUM_CLASSES)
    images, labels = images.to(device), labels.to(device)
    floors = Table(
        f"scSE's floor against what it adds, paper U-Net on {name}",
        [
            ("mode", "mode", "s"),
            ("site_mib", "SE sites' input per step (MiB)", ".0f"),
            ("bandwidth", "copy GB/s", ".0f"),
            ("floor_ms", f"floor ms ({FLOOR_PASSES} passes)", ".2f"),
            ("none_ms", "none step ms", ".2f"),
            ("scse_ms", "scSE step ms", ".2f"),
            ("floor_pct", "floor vs none (%)", "+.1f"),
            ("measured_pct", "measured vs none (%)", "+.1f"),
        ],
    )
    cfgs = {se: compose(["model=unet", "width=paper", f"se={se}"]) for se in ("none", "scse")}
    for mode in modes:
        try:
            runs = {f"{se}|{mode}": gpu_step(cfg, device, images, labels, GPU_MODES[mode]) for se, cfg in cfgs.items()}
            synced = {key: synchronized(run, device) for key, run in runs.items()}
            profiles = {key.split("|")[0]: op_times(run, device, steps) for key, run in synced.items()}
            times = interleaved(synced, args.repeats, warmup=1, inner=steps)
            site_bytes = se_site_bytes(cfgs["scse"], device, images, GPU_MODES[mode])
        except Exception as error:  # noqa: BLE001 - a mode that fails (no compiler here, say) is noted
            section.notes.append(f"{mode}: failed ({type(error).__name__}: {str(error)[:200]})")
            continue
        row = floor_row(mode, site_bytes, bandwidth, times, batch)
        floors.rows.append(row)
        section.raw[mode] = {"times": times, "ops": profiles}
        ops = Table(
            f"What scSE adds per step ({mode}), largest first (CUDA: kernels; CPU: operators)",
            [
                ("op", "kernel or operator", "s"),
                ("none_ms", "none ms", ".3f"),
                ("scse_ms", "scSE ms", ".3f"),
                ("delta_ms", "added ms", "+.3f"),
                ("share", "share of the difference (%)", ".0f"),
            ],
            added_ops(profiles["none"], profiles["scse"]),
        )
        section.tables.append(ops)
        if device.type == "cuda" and not args.quick:
            section.target(f"scSE floor vs none (%) ({mode})", row["floor_pct"], SCSE_OVERHEAD_TARGET, False)
        del runs, synced
        if device.type == "cuda":
            torch.cuda.empty_cache()
    section.tables.insert(0, floors)
    section.notes.append(
        "Profiled times include the profiler's own cost and are per-operator sums (overlapping kernels count "
        "twice): read them as shares, and the step times of the first table as the measurement."
    )
    return section
