"""Issue 10's benchmarks in one script: `python scripts/benchmark.py [--quick] [--sections ...] [--markdown PAGE]`.

Why this script exists: speed claims (the allocator gain, the SE overhead, the trainer's own cost, the input
pipeline, start-up, evaluation) are only worth what their measurement is worth. Every figure here is a
throughput or a ratio measured in one process (start-up: in child processes, one per measurement) with the
variants interleaved round by round; the median over rounds is reported, and ratios are the median of the
per-round ratios, so a slow drift of the machine cancels. The markdown table goes to stdout (and, with
``--markdown``, the whole ``docs/benchmarks.md`` page is written from it); the JSON holds every raw time.

Sections (``--sections``, comma-separated; default: all):

- ``se_blocks``: forward + backward time and bytes kept for backward of scseg's cSE, sSE and scSE (every
  aggregation) against a reference written as common libraries do (``x * c + x * s`` as separate products).
- ``training``: slices/s of every architecture x SE variant at the CPU presets (``width=small`` at 256 x 256,
  ``width=cpu`` at 96 x 96) and of the paper U-Net at 96 x 96, each variant's step time against ``none``; and the
  real ``Trainer``'s slices/s (what ``scseg-train`` runs per step) against a bare PyTorch loop over the very same
  DataLoader and model.
- ``pipeline``: slices/s the training DataLoader delivers (augmentation included) next to the U-Net step rate.
- ``startup``: MALC time to the first step, cold (NIfTI read + preprocessing) vs warm (cache); peak anonymous
  resident memory against the number of training subjects. Skipped when MALC is absent.
- ``evaluation``: per-case per-class Dice of 15 volumes x 28 classes: scseg.metrics vs per-class numpy loops vs
  MONAI's DiceMetric (when installed; ``pip install -e '.[bench]'``); the numbers are checked to agree.
- ``gpu`` (CUDA only): slices/s per architecture at 256 x 256 with channels-last, bf16 autocast, torch.compile.

Timings are only as good as the machine is quiet: run it on an idle machine (``make bench``); the load average
before and after each section is recorded next to its numbers. ``--quick`` shrinks everything for a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("se_blocks", "training", "pipeline", "startup", "evaluation", "gpu")
REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
# MALC at its CPU preset (experiment=paper_malc_cpu: 2 mm, 96 x 96 canvas, width=cpu); where a checkout predates it,
# the paper experiment at 2 mm with the small networks.
MALC_CPU_PRESET = ("experiment=paper_malc_cpu",)
MALC_FALLBACK = (
    "experiment=paper_malc",
    "width=small",
    "trainer=cpu",
    "data.loader.num_workers=0",
    "data.preprocess.target_spacing=[2.0,2.0,2.0]",
)
MALC_NUM_CLASSES = 28


def malc_overrides(extra: Sequence[str] = ()) -> list[str]:
    """The MALC CPU-preset overrides (the fallback where the preset does not exist yet) plus ``extra``."""
    preset = (CONFIG_DIR / "experiment" / "paper_malc_cpu.yaml").is_file()
    return [*(MALC_CPU_PRESET if preset else MALC_FALLBACK), *extra]


# ---------------------------------------------------------------------------------------------- measuring
def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, inner: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of every variant, ``repeats`` rounds; each round runs every variant ``inner`` times.

    The order alternates from round to round (forward, backward) so that no variant always follows the same one.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            gc.collect()
            started = time.perf_counter()
            for _ in range(inner):
                variants[name]()
            times[name].append((time.perf_counter() - started) / inner)
    return times


def bracketed(
    variants: dict[str, Callable[[], Any]], base: str, repeats: int, warmup: int = 1
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every other variant run between two runs of ``base`` (base, a, base, b, base, ...; the order of the others
    alternates from round to round): ``(seconds per call, per-run ratios to the mean of the two neighbouring base
    runs)``. For overheads of a few percent: on a shared 2-core machine step times drift by 10-20 % within seconds,
    and a ratio to a base run several steps away carried that drift (FC-DenseNet scSE read +4.8 to +12.6 % between
    idle runs of ``interleaved``); next to its neighbours a linear drift cancels.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    others = [name for name in variants if name != base]
    times: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in others}

    def timed(name: str) -> float:
        gc.collect()
        started = time.perf_counter()
        variants[name]()
        seconds = time.perf_counter() - started
        times[name].append(seconds)
        return seconds

    before = timed(base)
    for round_ in range(repeats):
        for name in others if round_ % 2 == 0 else reversed(others):
            seconds = timed(name)
            after = timed(base)
            ratios[name].append(seconds / ((before + after) / 2))
            before = after
    return times, ratios


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def paired_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of ``time[name] / time[base]`` measured in the same round."""
    return median(a / b for a, b in zip(times[name], times[base]))


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def status_kib(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``RssAnon``, ``VmHWM``), in KiB; None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class PeakSampler:
    """Samples ``RssAnon`` every few milliseconds in a thread: the peak inside a training step is what counts,
    and memory-mapped (file-backed) pages are left out, unlike RSS (``VmHWM``)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_kib = status_kib("RssAnon") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, status_kib("RssAnon") or 0)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, status_kib("RssAnon") or 0)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=REPO, capture_output=True, text=True)
        return (out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")) or None
    except OSError:
        return None


def machine_info(threads: int, allocator: str) -> dict[str, Any]:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "allocator": allocator,
        "gpu": gpu,
        "git": git_commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Table:
    """Rows of one markdown table; ``columns`` is a list of (key, header, format spec)."""

    title: str
    columns: list[tuple[str, str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> str:
        head = "| " + " | ".join(h for _, h, _ in self.columns) + " |"
        rule = "|" + "|".join("---" if spec == "s" else "---:" for _, _, spec in self.columns) + "|"
        lines = [f"**{self.title}**", "", head, rule]
        for row in self.rows:
            cells = []
            for key, _, spec in self.columns:
                value = row.get(key)
                cells.append("-" if value is None else format(value, spec) if spec != "s" else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [k for k, _, _ in self.columns], "rows": self.rows}


@dataclass
class Section:
    name: str
    title: str
    sizes: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0
    load: tuple[float | None, float | None] = (None, None)

    def target(self, name: str, value: float, bound: float, higher_is_better: bool) -> None:
        met = value >= bound if higher_is_better else value <= bound
        self.targets.append({"name": name, "value": value, "target": bound, "higher": higher_is_better, "met": met})

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "sizes": self.sizes,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "load_before_after": list(self.load),
            "tables": [t.as_json() for t in self.tables],
            "notes": self.notes,
            "targets": self.targets,
            "raw": self.raw,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------- SE blocks
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
                    runs[f"{label}/{impl}"] = _fwd_bwd(module, x, grad)
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


def _fwd_bwd(module: Any, x: Any, grad: Any) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)

    return run


# ---------------------------------------------------------------------------------------------- training
def compose(overrides: Sequence[str]) -> Any:
    from scseg.config import compose_train_config

    return compose_train_config(list(overrides))


def synthetic_batch(batch: int, size: int, num_classes: int, in_channels: int = 1) -> tuple[Any, Any]:
    """A normal image and a blocky label map (8 x 8 regions), so the loss's boundary term sees real edges."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, in_channels, size, size, generator=generator)
    coarse = torch.randint(0, num_classes, (batch, 1, 8, 8), generator=generator).float()
    labels = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    return images, labels


def training_step(cfg: Any, model: Any, num_classes: int) -> Callable[[Any, Any], None]:
    """One optimizer step exactly as the trainer takes it: configured optimizer and loss (uniform class weights)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from scseg.losses import create_loss_from_config

    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    loss_fn = create_loss_from_config(
        OmegaConf.to_container(cfg.loss, resolve=True), class_weights=lambda: torch.ones(num_classes)
    )
    model.train()

    def step(images: Any, labels: Any) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    return step


FUSED_SCSE = "scse (fused gates)"


def variant_overhead_table(
    args: argparse.Namespace, section: Section, title: str, archs: Sequence[str], width: str, size: int
) -> Table:
    import torch

    from scseg.engine.loading import memory_format_of
    from scseg.engine.run import build_model
    from scseg.models import SE_VARIANTS
    from scseg.models.se_fused import kernels_available

    batch = 2 if args.quick else 8
    images, labels = synthetic_batch(batch, size, MALC_NUM_CLASSES)
    table = Table(
        title,
        [
            ("arch", "arch", "s"),
            ("width", "width", "s"),
            ("size", "H x W", "s"),
            ("se", "SE", "s"),
            ("step_s", "step s", ".3f"),
            ("slices_per_s", "slices/s", ".1f"),
            ("overhead_pct", "step time vs none", "+.1f"),
        ],
    )
    # the scSE row again with the opt-in fused gates (trainer.se_kernels=fused): what they save per step
    variants = [*SE_VARIANTS, FUSED_SCSE] if kernels_available()[0] else list(SE_VARIANTS)
    for arch in archs:
        steps = {}
        for se in variants:
            extra = ["trainer.se_kernels=fused"] if se == FUSED_SCSE else []
            cfg = compose([f"model={arch}", f"width={width}", f"se={se.split()[0]}", *extra])
            layout = memory_format_of(cfg)  # the layout the trainer trains in (trainer.channels_last)
            torch.manual_seed(0)
            model = build_model(cfg, MALC_NUM_CLASSES, 1).to(memory_format=layout)
            step = training_step(cfg, model, MALC_NUM_CLASSES)
            x = images.contiguous(memory_format=layout)
            steps[se] = lambda step=step, x=x: step(x, labels)
        # overheads of a few percent judged against a 3 % or 10 % line: each variant between two steps of none,
        # at least 9 rounds (see bracketed)
        rounds = args.repeats if args.quick else max(args.repeats, 9)
        times, ratios = bracketed(steps, "none", rounds, warmup=1)
        section.raw[f"{arch}_{width}_{size}"] = {"times": times, "ratios_to_neighbouring_none": ratios}
        for se in variants:
            overhead = 100.0 * (median(ratios[se]) - 1.0) if se != "none" else None
            table.rows.append(
                {
                    "arch": arch,
                    "width": width,
                    "size": f"{size} x {size}",
                    "se": se,
                    "step_s": median(times[se]),
                    "slices_per_s": batch / median(times[se]),
                    "overhead_pct": overhead,
                }
            )
        del steps
        gc.collect()
    return table


def layout_table(args: argparse.Namespace, section: Section, shapes: Sequence[tuple[str, int]]) -> Table:
    """Step time of each architecture (no SE) in NCHW (contiguous) against channels-last (NHWC), interleaved:
    the gain ``trainer.channels_last`` (on in configs/trainer/cpu.yaml) buys."""
    import torch

    from scseg.engine.run import build_model

    batch = 2 if args.quick else 8
    archs = ("unet",) if args.quick else ("unet", "sdnet", "fcdensenet")
    table = Table(
        "Memory layout: channels-last against contiguous (se=none)",
        [
            ("arch", "arch", "s"),
            ("width", "width", "s"),
            ("size", "H x W", "s"),
            ("contiguous_s", "contiguous step s", ".3f"),
            ("channels_last_s", "channels-last step s", ".3f"),
            ("speedup", "channels-last speed-up", ".2f"),
        ],
    )
    for width, size in shapes:
        images, labels = synthetic_batch(batch, size, MALC_NUM_CLASSES)
        for arch in archs:
            cfg = compose([f"model={arch}", f"width={width}", "se=none"])
            steps = {}
            for name, layout in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                torch.manual_seed(0)
                model = build_model(cfg, MALC_NUM_CLASSES, 1).to(memory_format=layout)
                step = training_step(cfg, model, MALC_NUM_CLASSES)
                x = images.contiguous(memory_format=layout)
                steps[name] = lambda step=step, x=x, y=labels: step(x, y)
            times = interleaved(steps, args.repeats, warmup=1, inner=1)
            section.raw[f"layout_{arch}_{width}_{size}"] = times
            table.rows.append(
                {
                    "arch": arch,
                    "width": width,
                    "size": f"{size} x {size}",
                    "contiguous_s": median(times["contiguous"]),
                    "channels_last_s": median(times["channels_last"]),
                    "speedup": paired_ratio(times, "contiguous", "channels_last"),
                }
            )
            del steps
            gc.collect()
    return table


def section_training(args: argparse.Namespace) -> Section:
    section = Section("training", "Training step: architectures x SE variants, and the trainer against a bare loop")
    small = 32 if args.quick else args.train_size
    paper = 32 if args.quick else 96
    archs = ("unet",) if args.quick else ("unet", "sdnet", "fcdensenet")
    cpu_width = (CONFIG_DIR / "width" / "cpu.yaml").is_file() and not args.quick
    section.sizes = (
        f"batch {2 if args.quick else 8}, 28 classes, synthetic slices; width=small at {small} x {small}, the "
        f"paper U-Net at {paper} x {paper}{', width=cpu (paper_malc_cpu) at 96 x 96' if cpu_width else ''}; the "
        "configured loss (ce_dice, uniform class weights) and optimizer (Adam), in the configured memory layout "
        "(trainer.channels_last); one step per run, each SE variant between two steps of none"
    )
    small_table = variant_overhead_table(
        args, section, f"CPU preset width=small at {small} x {small}", archs, "small", small
    )
    paper_table = variant_overhead_table(args, section, f"Paper U-Net at {paper} x {paper}", ("unet",), "paper", paper)
    section.tables += [small_table, paper_table]
    if cpu_width:
        section.tables.append(
            variant_overhead_table(args, section, "CPU preset width=cpu (paper_malc_cpu) at 96 x 96", archs, "cpu", 96)
        )
    # the demo's phantom slices (64 x 64), the small CPU preset and the paper_*_cpu canvas
    shapes = [("small", small)] if args.quick else [("small", 64), ("small", small)]
    section.tables.append(layout_table(args, section, shapes + ([("cpu", 96)] if cpu_width else [])))
    for row in paper_table.rows:
        if row["se"] == "scse":
            section.target(f"scSE step overhead, paper U-Net {paper} x {paper} (%)", row["overhead_pct"], 3.0, False)
    for row in small_table.rows:
        if row["se"] == "scse":
            section.target(
                f"scSE step overhead, {row['arch']} width=small {small} x {small} (%)", row["overhead_pct"], 10.0, False
            )
    section.notes.append(
        "step time vs none: each variant's step runs between two steps of none; the median over at least 9 rounds "
        "of (its time / the mean of those two) - 1, in %; every variant starts from the same backbone weights. "
        "SE gates run as the "
        f"trainer runs them by default (trainer.se_kernels=eager: ATen operations); '{FUSED_SCSE}' is scSE with "
        "trainer.se_kernels=fused, the opt-in C++ kernels."
    )
    trainer_vs_bare(args, section)
    return section


def demo_config(args: argparse.Namespace, runs_dir: str, steps: int, extra: Sequence[str] = ()) -> Any:
    overrides = [
        "experiment=demo",
        f"paths.runs_dir={runs_dir}",
        "trainer.max_epochs=1",
        f"trainer.iters_per_epoch={steps}",
        f"trainer.num_threads={args.threads}",
        "trainer.progress_bar=false",
    ]
    if args.quick:
        overrides += [
            "data.layout.n_subjects=4",
            "data.layout.n_test=1",
            "data.val_subjects=1",
            "data.layout.size=[32,32,32]",
        ]
    return compose([*overrides, *extra])


def trainer_vs_bare(args: argparse.Namespace, section: Section) -> None:
    """``Trainer.train_epoch`` (the per-step code of ``scseg-train``: loader, forward, loss, finiteness check,
    backward, scaler, optimizer, scheduler hook, TensorBoard scalars every ``log_every_n_steps``) against a bare
    loop over the same DataLoader (same sampler, augmentation, batch) with a copy of the same model, its own
    optimizer of the same kind and the same loss. Validation, checkpoints and test evaluation are outside both."""
    import torch
    from hydra.utils import instantiate

    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.tb_logging import RunLogger
    from scseg.engine.trainer import Trainer, seed_everything

    # a round is one epoch of ``steps`` steps (~2 s here): at 20 steps and 5 rounds the ratio moved by ~0.1 between
    # idle runs, more than the 5 % it is judged against, so rounds are longer and more numerous
    steps = 3 if args.quick else 40
    repeats = args.repeats if args.quick else max(args.repeats, 9)
    with tempfile.TemporaryDirectory() as runs_dir:
        cfg = demo_config(args, runs_dir, steps)
        seed_everything(0)
        dm = build_datamodule(cfg)
        dm.prepare()
        model = build_model(cfg, dm.num_classes, dm.in_channels)
        bare_model = copy.deepcopy(model)
        folder = Path(runs_dir) / "trainer"
        folder.mkdir()
        logger = RunLogger(folder, enabled=bool(cfg.logger.enabled))
        trainer = Trainer(cfg, model, dm, folder, logger=logger)
        layout = trainer.memory_format  # the bare loop runs in the trainer's layout (trainer.channels_last)
        bare_model.to(memory_format=layout)
        bare_optimizer = instantiate(cfg.optimizer)(params=bare_model.parameters())
        loss_fn = trainer.loss_fn
        epoch = {"trainer": 0, "bare": 0}
        rates: dict[str, list[float]] = {"trainer": [], "bare": []}

        def run_trainer() -> None:
            trainer.state.batches_done, trainer.state.epoch_loss_sum, trainer.state.epoch_seen = 0, 0.0, 0
            rates["trainer"].append(trainer.train_epoch(epoch["trainer"])[1])
            epoch["trainer"] += 1

        def run_bare() -> None:
            bare_model.train()
            trainer.sampler.set_epoch(epoch["bare"])
            trainer.train_dataset.set_epoch(epoch["bare"])
            started, seen = time.perf_counter(), 0
            for batch in trainer.loader:
                bare_optimizer.zero_grad(set_to_none=True)
                loss_fn(bare_model(batch["image"].contiguous(memory_format=layout)), batch["label"]).backward()
                bare_optimizer.step()
                seen += batch["label"].shape[0]
            rates["bare"].append(seen / (time.perf_counter() - started))
            epoch["bare"] += 1

        torch.manual_seed(0)
        interleaved({"trainer": run_trainer, "bare": run_bare}, repeats, warmup=1)
        logger.close()
    trainer_rate, bare_rate = rates["trainer"][1:], rates["bare"][1:]  # the first is the warm-up round
    ratio = median(t / b for t, b in zip(trainer_rate, bare_rate))
    table = Table(
        "scseg-train's step loop (Trainer.train_epoch) against a bare PyTorch loop",
        [
            ("model", "model", "s"),
            ("data", "data", "s"),
            ("steps", "steps / round", "d"),
            ("trainer", "Trainer slices/s", ".1f"),
            ("bare", "bare loop slices/s", ".1f"),
            ("ratio", "Trainer / bare", ".3f"),
        ],
    )
    table.rows.append(
        {
            "model": f"{cfg.model.arch}, se={cfg.se.name} (the demo's CPU preset)",
            "data": f"{cfg.data.name}, batch {cfg.data.loader.batch_size}, workers {cfg.data.loader.num_workers}, "
            "augmentation on",
            "steps": steps,
            "trainer": median(trainer_rate),
            "bare": median(bare_rate),
            "ratio": ratio,
        }
    )
    section.tables.append(table)
    section.raw["trainer_vs_bare"] = {"trainer_slices_per_s": trainer_rate, "bare_slices_per_s": bare_rate}
    section.target("Trainer / bare loop slices/s", ratio, 0.95, True)
    section.notes.append(
        "Trainer: the demo experiment (`experiment=demo`) as scseg-train builds it, its own slices/s figure "
        "(Trainer.train_epoch: loader, forward, loss, non-finite check, backward, optimizer, TensorBoard scalars); "
        "validation, checkpoints and test evaluation excluded. Bare: the same DataLoader, a copy of the model, the "
        "same optimizer kind and loss, nothing else."
    )


# ---------------------------------------------------------------------------------------------- pipeline
def section_pipeline(args: argparse.Namespace) -> Section:
    import torch

    from scseg.engine.run import build_datamodule, build_model

    section = Section("pipeline", "Input pipeline: DataLoader slices/s with augmentation, next to the step rate")
    load_batches, step_batches = (3, 2) if args.quick else (30, 4)
    table = Table(
        "Training DataLoader (main process unless workers > 0) against a U-Net training step on its batches",
        [
            ("data", "data", "s"),
            ("slice", "slice H x W", "s"),
            ("workers", "workers", "d"),
            ("loader", "loader slices/s", ".1f"),
            ("step", "U-Net step slices/s", ".1f"),
            ("ratio", "loader / step", ".1f"),
        ],
    )
    configs: list[tuple[str, Any]] = []
    with tempfile.TemporaryDirectory() as runs_dir:
        configs.append(("phantom (experiment=demo)", demo_config(args, runs_dir, load_batches)))
        malc = malc_root()
        if malc is not None and not args.quick:
            overrides = malc_overrides(args.malc_override)
            configs.append((f"MALC ({' '.join(overrides)})", compose(overrides)))
        elif malc is None:
            section.notes.append("MALC row skipped: ../shared/data/malc2012 not found")
        for label, cfg in configs:
            dm = build_datamodule(cfg)
            dm.prepare()
            dataset = dm.train_dataset()
            batch = dm.batch_size
            fetched = [b for _, b in zip(range(step_batches), dm.train_loader(dataset, epoch=1))]
            torch.manual_seed(0)
            model = build_model(cfg, dm.num_classes, dm.in_channels)
            step = training_step(cfg, model, dm.num_classes)

            def load(dm: Any = dm, dataset: Any = dataset) -> None:
                _drain(dm.train_loader(dataset, epoch=0, iters_per_epoch=load_batches), load_batches)

            def steps(fetched: list[dict] = fetched, step: Callable = step) -> None:
                for b in fetched:
                    step(b["image"], b["label"])

            times = interleaved({"loader": load, "step": steps}, args.repeats, warmup=1)
            loader_rates = [load_batches * batch / t for t in times["loader"]]
            step_rates = [step_batches * batch / t for t in times["step"]]
            ratio = median(a / b for a, b in zip(loader_rates, step_rates))
            section.raw[label] = {"loader_slices_per_s": loader_rates, "step_slices_per_s": step_rates}
            table.rows.append(
                {
                    "data": label,
                    "slice": " x ".join(str(v) for v in fetched[0]["image"].shape[-2:]),
                    "workers": int(cfg.data.loader.num_workers),
                    "loader": median(loader_rates),
                    "step": median(step_rates),
                    "ratio": ratio,
                }
            )
            section.target(f"DataLoader / U-Net step rate, {label}", ratio, 5.0, True)
    section.sizes = (
        f"per round {load_batches} batches loaded (a fresh epoch iterator) and {step_batches} training steps, the "
        "experiment's own model, batch size and augmentation"
    )
    section.tables.append(table)
    return section


def _drain(loader: Any, batches: int) -> int:
    seen = 0
    for _, batch in zip(range(batches), loader):
        seen += batch["label"].shape[0]
    return seen


# ---------------------------------------------------------------------------------------------- start-up
def malc_root() -> Path | None:
    root = Path(os.environ.get("SCSEG_MALC_ROOT", REPO.parent / "shared" / "data" / "malc2012"))
    return root if (root / "split.json").is_file() else None


def startup_child(args: argparse.Namespace) -> None:
    """One measurement in a fresh process: time to the first optimizer step, peak anonymous memory."""
    from scseg.engine.allocator import tune_allocator

    tune_allocator()
    import torch

    torch.set_num_threads(args.threads)
    sampler = PeakSampler().__enter__()
    started = time.perf_counter()
    import scseg.data.datamodule  # noqa: F401 - imported before the clock starts: imports are the same cold or warm
    from scseg.engine.run import build_datamodule, build_model
    from scseg.engine.trainer import Trainer, configure_determinism, seed_everything

    overrides = [
        *malc_overrides(args.malc_override),
        f"data.cache_dir={args.child_cache}",
        f"trainer.iters_per_epoch={args.child_steps}",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    if args.child_split:
        overrides += [f"data.layout.split_file={args.child_split}", "data.val_subjects=0"]
    cfg = compose(overrides)
    configure_determinism(False, args.threads)
    seed_everything(0)
    imported = time.perf_counter()
    dm = build_datamodule(cfg)
    dm.prepare()
    prepared = time.perf_counter()
    model = build_model(cfg, dm.num_classes, dm.in_channels)
    trainer = Trainer(cfg, model, dm, None)
    built = time.perf_counter()
    trainer.train_epoch(0)
    done = time.perf_counter()
    sampler.__exit__()
    train = dm.subjects("train")
    data_bytes = sum(s.image.nbytes + (s.label.nbytes if s.label is not None else 0) for s in train)
    steps = max(trainer.steps_per_epoch, 1)
    print(
        json.dumps(
            {
                "config_s": imported - started,
                "prepare_s": prepared - imported,
                "build_s": built - prepared,
                "steps_s": done - built,
                "first_step_s": prepared - imported + built - prepared + (done - built) / steps,
                "train_subjects": len(train),
                "subjects_prepared": sum(len(dm.cases(s)) for s in ("train", "val", "test")),
                "train_data_mib": data_bytes / 2**20,
                "peak_rss_anon_mib": sampler.peak_kib / 1024,
                "vm_hwm_mib": (status_kib("VmHWM") or 0) / 1024,
                "steps": steps,
            }
        ),
        flush=True,
    )


def run_child(args: argparse.Namespace, cache: str, steps: int, split: str | None = None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-startup",
        f"--threads={args.threads}",
        f"--child-cache={cache}",
        f"--child-steps={steps}",
        *(["--child-split", split] if split else []),
        *(f"--malc-override={o}" for o in args.malc_override),
    ]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"start-up child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_startup(args: argparse.Namespace) -> Section:
    section = Section("startup", "Start-up on MALC: cold vs warm cache, and memory vs training subjects")
    root = malc_root()
    if root is None:
        section.skipped = "MALC not found (../shared/data/malc2012 or $SCSEG_MALC_ROOT)"
        return section
    split = json.loads((root / "split.json").read_text())
    counts = (1, 2) if args.quick else (5, 10, 15)
    memory_steps = 2 if args.quick else 10
    rounds = 1 if args.quick else 2
    section.sizes = (
        f"overrides {' '.join(malc_overrides(args.malc_override))}; "
        + ("quick: 2 training subjects only; " if args.quick else "the paper split (12 train + 3 val + 15 test); ")
        + f"memory: {memory_steps} steps on the first n training subjects (no validation or test subjects)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        quick_split = None
        if args.quick:
            quick_split = str(Path(tmp) / "split_quick.json")
            Path(quick_split).write_text(json.dumps({"train": split["train"][:2], "test": []}))
        times: dict[str, list[dict]] = {"cold": [], "warm": []}
        for round_ in range(rounds):
            cache = str(Path(tmp) / f"cache{round_}")
            times["cold"].append(run_child(args, cache, 1, quick_split))
            times["warm"].append(run_child(args, cache, 1, quick_split))
        cold = median(r["first_step_s"] for r in times["cold"])
        warm = median(r["first_step_s"] for r in times["warm"])
        start_table = Table(
            "Time to the first training step (after imports; prepare = read + preprocess or load from the cache)",
            [
                ("state", "cache", "s"),
                ("subjects", "subjects prepared", "d"),
                ("prepare_s", "prepare s", ".2f"),
                ("build_s", "model + Trainer s", ".2f"),
                ("step_s", "first step s", ".2f"),
                ("first_step_s", "to first step s", ".2f"),
            ],
        )
        for state in ("cold", "warm"):
            runs = times[state]
            start_table.rows.append(
                {
                    "state": state,
                    "subjects": runs[0]["subjects_prepared"],
                    "prepare_s": median(r["prepare_s"] for r in runs),
                    "build_s": median(r["build_s"] for r in runs),
                    "step_s": median(r["steps_s"] for r in runs),
                    "first_step_s": median(r["first_step_s"] for r in runs),
                }
            )
        section.target("cold / warm time to first step", cold / warm, 5.0, True)
        prepare_ratio = median(r["prepare_s"] for r in times["cold"]) / median(r["prepare_s"] for r in times["warm"])
        section.notes.append(
            f"the cache alone: preparing the subjects is {prepare_ratio:.0f}x faster warm than cold; the first step "
            "itself (first batch, one-off kernel set-up, first-touch page faults) is the same work either way."
        )
        memory_table = Table(
            "Peak anonymous resident memory (RssAnon, sampled every 5 ms) vs training subjects",
            [
                ("subjects", "train subjects", "d"),
                ("data", "their cached data MiB", ".0f"),
                ("rss_anon", "peak RssAnon MiB", ".0f"),
                ("hwm", "peak RSS (VmHWM) MiB", ".0f"),
            ],
        )
        memory = []
        warm_cache = str(Path(tmp) / "cache0")
        for n in counts:
            split_file = Path(tmp) / f"split_{n}.json"
            split_file.write_text(json.dumps({"train": split["train"][:n], "test": []}))
            result = run_child(args, warm_cache, memory_steps, str(split_file))
            memory.append(result)
            memory_table.rows.append(
                {
                    "subjects": n,
                    "data": result["train_data_mib"],
                    "rss_anon": result["peak_rss_anon_mib"],
                    "hwm": result["vm_hwm_mib"],
                }
            )
    growth = memory[-1]["peak_rss_anon_mib"] - memory[0]["peak_rss_anon_mib"]
    data_growth = memory[-1]["train_data_mib"] - memory[0]["train_data_mib"]
    section.target(
        f"peak RssAnon growth / cached data growth, {counts[0]} -> {counts[-1]} subjects",
        growth / data_growth if data_growth else 0.0,
        1.0,
        False,
    )
    section.tables += [start_table, memory_table]
    section.raw = {"startup": times, "memory": memory}
    section.notes.append(
        "cold: an empty cache folder (NIfTI files in the OS page cache after the first round, so cold measures "
        "decompression and preprocessing, not the disk); warm: the same folder again, in a new process."
    )
    return section


# ---------------------------------------------------------------------------------------------- evaluation
def numpy_loop_dice(reference: Any, prediction: Any, num_classes: int, count: str) -> Any:
    """Per-class Dice the way it is usually written: two masks per class, their overlap, their sizes."""
    import numpy as np

    dice = np.full(num_classes, np.nan)
    for k in range(num_classes):
        ref, pred = reference == k, prediction == k
        if count == "sum":
            tp, n_ref, n_pred = np.logical_and(ref, pred).sum(), ref.sum(), pred.sum()
        else:
            tp, n_ref, n_pred = np.count_nonzero(ref & pred), np.count_nonzero(ref), np.count_nonzero(pred)
        if n_ref + n_pred:
            dice[k] = 2.0 * tp / (n_ref + n_pred)
    return dice


def section_evaluation(args: argparse.Namespace) -> Section:
    import numpy as np

    from scseg.metrics import class_counts, dice_from_counts

    n_volumes = 3 if args.quick else 15
    shape = (24, 28, 20) if args.quick else (160, 200, 165)
    k = MALC_NUM_CLASSES
    section = Section(
        "evaluation",
        "Evaluation: per-case per-class Dice",
        sizes=f"{n_volumes} volumes of {' x '.join(map(str, shape))} voxels{'' if args.quick else ' (MALC size)'}, "
        f"{k} classes; reference uint8 (what MALC's label map gives), prediction int16; prediction = "
        "reference with 10 % of voxels relabelled",
    )
    rng = np.random.default_rng(0)
    references, predictions = [], []
    for _ in range(n_volumes):
        ref = rng.integers(0, k, shape, dtype=np.uint8)
        pred = ref.astype(np.int16)
        flip = rng.random(shape) < 0.1
        pred[flip] = rng.integers(0, k, int(flip.sum()), dtype=np.int16)
        references.append(ref)
        predictions.append(pred)
    results: dict[str, list[Any]] = {}

    def method(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[], None]:
        def run() -> None:
            results[name] = [fn(r, p) for r, p in zip(references, predictions)]

        return run

    methods = {
        "scseg": method("scseg", lambda r, p: dice_from_counts(*class_counts(r, p, k).tp_fp_fn())),
        "numpy loop (sum)": method("numpy loop (sum)", lambda r, p: numpy_loop_dice(r, p, k, "sum")),
        "numpy loop (count_nonzero)": method(
            "numpy loop (count_nonzero)", lambda r, p: numpy_loop_dice(r, p, k, "count_nonzero")
        ),
    }
    times = interleaved(methods, max(2, args.repeats - 2), warmup=1)
    per_volume = {name: median(t) / n_volumes for name, t in times.items()}
    agree = all(
        np.array_equal(a, b, equal_nan=True)
        for name in methods
        if name != "scseg"
        for a, b in zip(results["scseg"], results[name])
    )
    monai_volumes = min(n_volumes, 1 if args.quick else 3)
    monai_note = monai_dice(references[:monai_volumes], predictions[:monai_volumes], k)
    if isinstance(monai_note, str):
        section.notes.append(f"MONAI skipped: {monai_note}")
    else:
        monai_seconds, monai_dice_values, monai_version = monai_note
        per_volume[f"MONAI {monai_version} DiceMetric"] = monai_seconds / monai_volumes
        monai_agree = all(
            np.allclose(m, s, rtol=1e-5, atol=1e-6, equal_nan=True)
            for m, s in zip(monai_dice_values, results["scseg"][:monai_volumes])
        )
        agree = agree and monai_agree
        section.notes.append(
            f"MONAI: DiceMetric(include_background=True, reduction='none', ignore_empty=False) on one-hot tensors "
            f"(monai.networks.utils.one_hot, included in its time; faster than passing labels with num_classes), "
            f"timed once on {monai_volumes} volume(s)."
        )
    table = Table(
        "Seconds per volume (median) and scseg's speed-up",
        [("method", "method", "s"), ("ms", "ms per volume", ".1f"), ("speedup", "scseg speed-up", ".1f")],
    )
    for name, seconds in per_volume.items():
        table.rows.append(
            {"method": name, "ms": 1e3 * seconds, "speedup": seconds / per_volume["scseg"] if name != "scseg" else None}
        )
    section.tables.append(table)
    section.extra["agree"] = bool(agree)
    section.extra["dice_checksum"] = float(np.nansum([np.nansum(d) for d in results["scseg"]]))
    section.raw = times
    section.notes.append(f"all methods give the same Dice: {'yes' if agree else 'NO'}")
    section.target(
        "scseg speed-up over the numpy loop (sum)", per_volume["numpy loop (sum)"] / per_volume["scseg"], 8.0, True
    )
    for name in per_volume:
        if name.startswith("MONAI"):
            section.target("scseg speed-up over MONAI", per_volume[name] / per_volume["scseg"], 50.0, True)
    restore_table(args, section)
    return section


def interpolated_class(probabilities: Any, meta: Any, k: int) -> Any:
    """Class ``k``'s probability over the whole canonical grid: un-padded, placed in its crop (background 1
    outside it), then ``F.interpolate`` trilinear, the way scseg restored before interpolating box-wise."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    unpad = tuple(slice(b, n - a) for (b, a), n in zip(meta.pad, meta.shape))
    inside = tuple(slice(a, b) for a, b in meta.crop)
    grid = torch.full(tuple(meta.resampled_shape), 1.0 if k == 0 else 0.0)
    grid[inside] = torch.from_numpy(np.ascontiguousarray(probabilities[(k, *unpad)], dtype=np.float32))
    return F.interpolate(grid[None, None], size=tuple(meta.canonical_shape), mode="trilinear")[0, 0]


def dense_restore(probabilities: Any, meta: Any) -> Any:
    """The linear restore written directly: every class interpolated over the whole grid, arg-max kept as it goes."""
    import torch

    best = interpolated_class(probabilities, meta, 0)
    labels = torch.zeros(best.shape, dtype=torch.int16)
    for k in range(1, probabilities.shape[0]):
        up = interpolated_class(probabilities, meta, k)
        better = up > best
        best = torch.where(better, up, best)
        labels.masked_fill_(better, k)
    return labels.numpy()


def synthetic_restore_case(shape: tuple[int, int, int], k: int, seed: int) -> tuple[Any, Any]:
    """(probabilities on a 2 mm grid, PreprocessMeta) for a 1 mm head of ``shape``: K-1 ellipsoids of 3-30 mm
    radius inside a brain-sized ellipsoid; probabilities = softmax(8 x the class fractions of each coarse voxel),
    so boundaries are soft the way a trained network's are."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from scseg.data.preprocess import PreprocessMeta

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array(shape, np.float32) / 2
    label = np.zeros(shape, np.int64)
    for c in range(1, k):
        radii = rng.uniform(3, 30, 3).astype(np.float32)
        middle = centre + rng.uniform(-0.3, 0.3, 3).astype(np.float32) * np.array(shape, np.float32)
        label[(((grid - middle[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1] = c
    coarse_shape = tuple(n // 2 for n in shape)
    fractions = F.avg_pool3d(
        F.one_hot(torch.from_numpy(label[: 2 * coarse_shape[0], : 2 * coarse_shape[1], : 2 * coarse_shape[2]]), k)
        .permute(3, 0, 1, 2)
        .float()[None],
        2,
    )[0]
    probs = torch.softmax(8.0 * fractions, 0).numpy()
    meta = PreprocessMeta(
        id=f"synthetic-{seed}", settings={}, version=0, canonical_shape=shape, canonical_spacing=(1.0, 1.0, 1.0),
        resampled_shape=coarse_shape, spacing=(2.0, 2.0, 2.0), crop=tuple((0, n) for n in coarse_shape),
        pad=((0, 0),) * 3, shape=coarse_shape, modalities=1, intensity_range=((0.0, 1.0),), norm_mean=(0.0,),
        norm_std=(1.0,), geometry={}, image_paths=(), label_path=None, num_classes=k,
    )  # fmt: skip
    return probs, meta


def restore_table(args: argparse.Namespace, section: Section) -> None:
    """Back to the file's grid (trainer.eval_resample=linear): scseg's box-wise restore vs the dense one."""
    import numpy as np

    from scseg.data.preprocess import invert_probabilities_to_canonical

    shape = (48, 56, 40) if args.quick else (160, 200, 165)
    cases = [synthetic_restore_case(shape, MALC_NUM_CLASSES, seed) for seed in range(1 if args.quick else 3)]
    results: dict[str, list[Any]] = {}

    def method(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[], None]:
        def run() -> None:
            results[name] = [fn(p, m) for p, m in cases]

        return run

    methods = {"scseg (box-wise)": method("scseg", invert_probabilities_to_canonical)}
    methods["dense"] = method("dense", dense_restore)
    times = interleaved(methods, max(2, args.repeats - 2), warmup=1)
    differ, ties = 0, 0
    for (probs, meta), a, b in zip(cases, results["scseg"], results["dense"]):
        where = np.argwhere(a != b)
        differ += len(where)
        classes: dict[int, Any] = {}  # each class interpolated once per case
        for voxel in map(tuple, where[:200]):
            pair = [int(a[voxel]), int(b[voxel])]
            for k in pair:
                if k not in classes:
                    classes[k] = interpolated_class(probs, meta, k)
            ties += abs(float(classes[pair[0]][voxel]) - float(classes[pair[1]][voxel])) < 1e-6
    scseg_s = median(times["scseg (box-wise)"]) / len(cases)
    dense_s = median(times["dense"]) / len(cases)
    table = Table(
        f"Back to the file's grid: {len(cases)} synthetic heads, {MALC_NUM_CLASSES} classes, 2 mm probabilities "
        f"-> {' x '.join(map(str, shape))} at 1 mm (trainer.eval_resample=linear)",
        [("method", "method", "s"), ("ms", "ms per volume", ".0f"), ("speedup", "scseg speed-up", ".1f")],
    )
    table.rows.append({"method": "scseg (box-wise)", "ms": 1e3 * scseg_s, "speedup": None})
    table.rows.append({"method": "dense (every class everywhere)", "ms": 1e3 * dense_s, "speedup": dense_s / scseg_s})
    section.tables.append(table)
    section.raw["restore"] = times
    section.extra["restore"] = {"voxels_differ": differ, "checked": min(differ, 200), "ties": ties}
    section.notes.append(
        "restore: scseg interpolates each class only inside the box where its coarse probability reaches 1/K "
        "(elsewhere it cannot win); dense interpolates all of them over the whole volume; labels differ at "
        f"{differ} of {sum(a.size for a in results['scseg'])} voxels"
        + (f", {ties} of the first {min(differ, 200)} checked are ties (two classes within 1e-6)" if differ else "")
    )


def monai_dice(references: Sequence[Any], predictions: Sequence[Any], num_classes: int) -> tuple | str:
    """(seconds, Dice per volume, MONAI version), or why MONAI was skipped (it is an optional dependency)."""
    try:
        import monai
        import torch
        from monai.metrics import DiceMetric
        from monai.networks.utils import one_hot
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    values = []
    started = time.perf_counter()
    for ref, pred in zip(references, predictions):
        y = one_hot(torch.from_numpy(ref.astype("int64"))[None, None], num_classes)
        y_pred = one_hot(torch.from_numpy(pred.astype("int64"))[None, None], num_classes)
        values.append(metric(y_pred, y)[0].double().numpy())
        metric.reset()
        del y, y_pred
    return time.perf_counter() - started, values, monai.__version__


# ---------------------------------------------------------------------------------------------- GPU
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

    from scseg.engine.run import build_model

    channels_last, bf16, compiled = mode
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(cfg, MALC_NUM_CLASSES, 1).to(device).to(memory_format=memory_format)
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
RUNNERS: dict[str, Callable[[argparse.Namespace], Section]] = {
    "se_blocks": section_se_blocks,
    "training": section_training,
    "pipeline": section_pipeline,
    "startup": section_startup,
    "evaluation": section_evaluation,
    "gpu": section_gpu,
}

PAGE_INTRO = """# Benchmarks

Generated by `scripts/benchmark.py`; do not edit by hand. To refresh it, run `make bench` on an idle machine
(about 10-12 minutes on 2 cores; nothing else running: a sweep next to it moves every figure) and commit the page;
the raw times are in `runs/benchmark.json`. `python scripts/benchmark.py --help` lists the options
(`--sections`, `--threads`, `--repeats`; `--quick` is a smoke test with tiny sizes whose numbers mean nothing).

Protocol: every figure is a throughput or a ratio measured in one process (start-up: one child process per
measurement) with a fixed number of torch threads and the variants interleaved round by round; tables show the
median over rounds, and ratios are the median of the per-round ratios, so a slow drift of the machine cancels.
The load average before and after each section says how quiet the machine was.

What each section measures:

- **SE blocks**: forward + backward time of scseg's cSE, sSE and scSE (each aggregation) against the same block
  written the way common libraries write it (pooling and 1x1 convolutions in `nn.Sequential`, `x * c + x * s`
  as separate full-size products), and the bytes autograd keeps for backward (deterministic), in units of the
  input's size.
- **Training step**: slices/s of every architecture x SE variant at the CPU presets (`width=small` at 256 x 256,
  `width=cpu` of `paper_malc_cpu` at 96 x 96) and of the paper U-Net at 96 x 96; each variant's step time against
  `none` (same backbone weights). Then scseg-train's own step loop (`Trainer.train_epoch` on the demo experiment)
  against a bare PyTorch loop over the same DataLoader, model, batch, allocator and augmentation: the trainer's
  overhead (validation, checkpoints and test evaluation are outside both).
- **Input pipeline**: slices/s the training DataLoader delivers with augmentation, next to the U-Net step rate
  on the same batches.
- **Start-up**: time to the first training step on MALC at its CPU preset with an empty cache (NIfTI read +
  preprocessing) and a warm one; peak anonymous resident memory (`RssAnon`, which leaves out the memory-mapped
  cache) against the number of training subjects. Skipped where MALC is absent.
- **Evaluation**: per-case per-class Dice of 15 MALC-sized volumes x 28 classes: `scseg.metrics` (one bincount
  per volume) against per-class numpy loops and MONAI's `DiceMetric` (optional: `pip install -e '.[bench]'`),
  checked to give the same numbers.
- **GPU** (only with CUDA): slices/s per architecture at 256 x 256 with channels-last, bf16 autocast and
  `torch.compile`.
"""


def meta_line(meta: dict[str, Any]) -> str:
    gpu = f", GPU {meta['gpu']}" if meta.get("gpu") else ""
    return (
        f"{meta['cpu']} ({meta['cores']} cores), {meta['threads']} threads, torch {meta['torch']}, "
        f"allocator {meta['allocator']}{gpu}"
    )


def render_section(meta: dict[str, Any], section: Section) -> str:
    """One section's markdown: its title, a context line (machine, threads, torch, sizes, load), tables, notes."""
    lines = [f"### {section.title}", ""]
    if section.skipped:
        return "\n".join([*lines, f"Skipped: {section.skipped}.", ""])
    before, after = section.load
    load = f"load average {before if before is not None else '?'} -> {after if after is not None else '?'}"
    lines += [f"_{meta_line(meta)}; {section.sizes}; {load}; {section.seconds:.0f} s._", ""]
    for table in section.tables:
        lines += [table.markdown(), ""]
    lines += [f"- {note}" for note in section.notes]
    return "\n".join([*lines, ""])


def render_targets(sections: Sequence[Section], quick: bool = False) -> str:
    """The issue's targets against what was measured (with ``--quick`` the sizes are too small to judge them)."""
    targets = [t for s in sections for t in s.targets]
    if not targets:
        return ""
    title = "### Targets (issue 10)" + (" - quick mode: tiny sizes, not to be judged" if quick else "")
    lines = [title, "", "| figure | measured | target | met |", "|---|---:|---:|---|"]
    for t in targets:
        sign = ">=" if t["higher"] else "<="
        met = "-" if quick else "yes" if t["met"] else "NO"
        lines.append(f"| {t['name']} | {t['value']:.2f} | {sign} {t['target']:g} | {met} |")
    return "\n".join([*lines, ""])


def render_results(meta: dict[str, Any], sections: Sequence[Section], command: str, quick: bool = False) -> str:
    head = [
        f"Command: `{command}`",
        "",
        f"Machine: {meta_line(meta)}; Python {meta['python']}; scseg {meta['git'] or '?'}; {meta['date']}.",
        "",
    ]
    return "\n".join([*head, *(render_section(meta, s) for s in sections), render_targets(sections, quick)])


def render_page(results: str | None) -> str:
    body = results if results is not None else "Results: run `make bench` on an idle machine.\n"
    return PAGE_INTRO + "\n## Results\n\n" + body


def output_path(out: str) -> Path:
    path = Path(out)
    return path / "benchmark.json" if path.is_dir() or out.endswith(os.sep) else path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated from {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds: a smoke test (< 60 s)")
    parser.add_argument("--out", default="benchmark.json", help="JSON file, or a folder for benchmark.json")
    parser.add_argument("--markdown", default=None, help="also write the whole benchmarks page here")
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=default_threads, help="torch intra-op threads (pinned)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--train-size", type=int, default=256, help="slice side of the CPU-preset step table")
    parser.add_argument("--command", default=None, help="the command line shown on the page (default: this one)")
    parser.add_argument(
        "--malc-override", action="append", default=[], help="extra override for the MALC config (repeatable)"
    )
    parser.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # "cpu": check the code path
    parser.add_argument("--child-startup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-split", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_startup:
        startup_child(args)
        return
    from scseg.engine.allocator import tune_allocator

    allocator = tune_allocator()  # first, as every entry point does
    import torch

    torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    meta = machine_info(args.threads, allocator)
    command = args.command or " ".join(
        ["python", "scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(f"# scseg benchmarks\n\nMachine: {meta_line(meta)}\n", flush=True)
    sections = []
    for name in names:
        before, started = load_average(), time.perf_counter()
        section = RUNNERS[name](args)
        section.seconds, section.load = time.perf_counter() - started, (before, load_average())
        sections.append(section)
        print(render_section(meta, section), flush=True)
    print(render_targets(sections, args.quick), flush=True)
    results = render_results(meta, sections, command, args.quick)
    report = {
        "meta": meta,
        "command": command,
        "quick": args.quick,
        "repeats": args.repeats,
        "sections": {s.name: s.as_json() for s in sections},
        "targets": [t for s in sections for t in s.targets],
    }
    path = output_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    print(f"JSON: {path}", flush=True)
    if args.markdown:
        Path(args.markdown).write_text(render_page(results))
        print(f"page: {args.markdown}", flush=True)


if __name__ == "__main__":
    main()
