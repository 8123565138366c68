"""Section training: slices/s and SE step overheads per architecture, channels-last, the trainer against a bare loop."""

from __future__ import annotations

import argparse
import copy
import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import CONFIG_DIR, MALC_NUM_CLASSES, Section, Table, bracketed, interleaved, median, paired_ratio


def fwd_bwd(module: Any, x: Any, grad: Any) -> Callable[[], None]:
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


def seeded_model(cfg: Any, layout: Any = None) -> Any:
    """The config's network for the MALC classes, seeded (every variant of a comparison starts from the same
    weights) and in ``layout`` (default: the memory format the trainer trains it in)."""
    import torch

    from scseg.engine.run import build_model
    from scseg.engine.spec import RunSpec

    spec = RunSpec.from_config(cfg)
    torch.manual_seed(0)
    return build_model(spec, MALC_NUM_CLASSES, 1).to(memory_format=layout or spec.memory_format)


def variant_overhead_table(
    args: argparse.Namespace, section: Section, title: str, archs: Sequence[str], width: str, size: int
) -> Table:

    from scseg.engine.spec import RunSpec
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
            layout = RunSpec.from_config(cfg).memory_format  # the layout the trainer trains in (trainer.channels_last)
            model = seeded_model(cfg, layout)
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
                model = seeded_model(cfg, layout)
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
    from scseg.engine.spec import RunSpec
    from scseg.engine.tb_logging import RunLogger
    from scseg.engine.trainer import Trainer, seed_everything

    # a round is one epoch of ``steps`` steps (~2 s here): at 20 steps and 5 rounds the ratio moved by ~0.1 between
    # idle runs, more than the 5 % it is judged against, so rounds are longer and more numerous
    steps = 3 if args.quick else 40
    repeats = args.repeats if args.quick else max(args.repeats, 9)
    with tempfile.TemporaryDirectory() as runs_dir:
        cfg = demo_config(args, runs_dir, steps)
        seed_everything(0)
        dm = build_datamodule(RunSpec.from_config(cfg))
        dm.prepare()
        model = build_model(RunSpec.from_config(cfg), dm.num_classes, dm.in_channels)
        bare_model = copy.deepcopy(model)
        folder = Path(runs_dir) / "trainer"
        folder.mkdir()
        logger = RunLogger(folder, enabled=bool(cfg.logger.enabled))
        trainer = Trainer(RunSpec.from_config(cfg), model, dm, folder, logger=logger)
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
