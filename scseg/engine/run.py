"""One training run from a composed config to a finished run folder.

    config -> validate -> run folder (hash name, lock, resume decision, status.json) -> data module
           -> model -> Trainer.fit -> best checkpoint on the test split -> per_case.csv + summary.json

The Hydra face (``scseg.cli.train``) only composes the config and calls :func:`run_training`; tests call it directly.
Only rank 0 touches the run folder; other ranks train and evaluate their share.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from scseg.atomic import atomic_write_text
from scseg.config.check import ConfigError, validate_config
from scseg.data.datamodule import DataModule
from scseg.data.folds import write_splits_final
from scseg.engine import checkpoint as ckpt
from scseg.engine import run_dir as rd
from scseg.engine.distributed import (
    DistContext,
    barrier,
    broadcast_object,
    check_device_and_backend,
    cleanup,
    init_distributed,
    pick_device,
)
from scseg.engine.inference import counts_to_rows
from scseg.engine.precision import resolve_amp
from scseg.engine.spec import RunSpec
from scseg.engine.summary import build_summary, json_safe, write_summary
from scseg.engine.tb_logging import RunLogger, test_metric_scalars, test_metrics_table
from scseg.engine.trainer import Trainer, configure_determinism, seed_everything
from scseg.metrics import ROW_KEYS
from scseg.models import count_parameters, create_model
from scseg.models.capacity import capacity_of
from scseg.models.se import se_kernel_path
from scseg.models.se_fused import kernels_available
from scseg.run_identity import HASH_EXCLUDE, comparison_hash, config_hash, run_name, short_hash
from scseg.se_options import (
    DEFAULT_SE_POSITIONS,
    DEFAULT_SE_REDUCTION,
    positions_label,
    run_name_option,
    se_settings,
    uses_option,
)

PER_CASE_COLUMNS = ROW_KEYS  # per_case.csv: one row per subject and class, as scseg.metrics builds them


@dataclass
class RunResult:
    run_dir: Path
    state: str  # done | skipped | failed
    summary: dict | None = None
    error: str | None = None


def identity(cfg: DictConfig) -> tuple[str, str]:
    """(config hash, run folder name). Settings that cannot change the result are normalised away first:
    ``se.aggregation`` when the module has no such option (only scSE does), so an aggregation sweep over cSE trains
    once."""
    canonical = cfg.copy()  # interpolations stay as text, so machine-specific paths never enter the hash
    if not uses_option(str(cfg.se.name), "aggregation") and "aggregation" in canonical.se:
        OmegaConf.update(canonical, "se.aggregation", None)
    # the precision that will run, not the word "auto": bf16 and fp32 runs of one config get their own folders
    device_type = pick_device(str(cfg.trainer.get("device", "cpu"))).split(":")[0]
    OmegaConf.update(canonical, "trainer.amp", resolve_amp(cfg.trainer.get("amp", False), device_type))
    if str(cfg.se.name) == "none" and "gate_scale" in canonical.se:
        OmegaConf.update(canonical, "se.gate_scale", 1.0)  # no gate to scale: one folder for every value
    _canonical_se_settings(cfg, canonical)
    digest = config_hash(canonical, exclude=HASH_EXCLUDE)
    se = str(cfg.se.name)
    option = run_name_option(se)
    aggregation = str(cfg.se[option]) if option is not None else None
    return digest, run_name(str(cfg.model.arch), se, aggregation, int(cfg.seed), short_hash(digest))


def _canonical_se_settings(cfg: DictConfig, canonical: DictConfig) -> None:
    """Hash the network's effective SE placement and reduction, in the form earlier runs hashed them.

    ``se.reduction`` becomes the reduction used (``null`` -> ``model.se_reduction``) and ``model.se_reduction`` leaves
    the hash; ``bottleneck`` is expressed as ``se.in_bottleneck`` and the rest of ``se.positions`` in network order.
    At the defaults this is exactly the old config, so no existing run folder is renamed.
    """
    settings = se_settings(cfg)
    if str(cfg.se.name) == "none":
        # no SE block: reduction and placement build nothing, so every value shares the default run's folder
        settings = {"se_reduction": DEFAULT_SE_REDUCTION, "se_positions": list(DEFAULT_SE_POSITIONS)}
    positions = settings["se_positions"]
    with open_dict(canonical):
        OmegaConf.update(canonical, "se.reduction", settings["se_reduction"], force_add=True)
        if "se_reduction" in canonical.model:
            del canonical.model["se_reduction"]
        OmegaConf.update(canonical, "se.in_bottleneck", "bottleneck" in positions, force_add=True)
        OmegaConf.update(
            canonical, "se.positions", [p for p in positions if p != "bottleneck"], merge=False, force_add=True
        )


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove it takes a file, before anything is trained: a read-only file system (or a
    folder this user may not write) is one ``ConfigError`` line naming the folder and the setting, not a traceback
    after the first epoch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
            raise ConfigError(
                f"paths.runs_dir: cannot write the run folder {folder} ({reason}); choose a writable paths.runs_dir"
            ) from None
        raise


def run_folder(cfg: DictConfig, name: str | None = None) -> Path:
    """``<runs_dir>/<experiment_name>/<run name>``; pass ``name`` when :func:`identity` was already computed."""
    return Path(str(cfg.paths.runs_dir)) / str(cfg.experiment_name) / (name or identity(cfg)[1])


def reset_run_folder(folder: Path) -> None:
    """Remove what an earlier attempt of this run left (checkpoints, events, tables); keep the lock file."""
    for child in folder.iterdir():
        if child.name == rd.LOCK_FILE:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def build_model(spec: RunSpec, num_classes: int, in_channels: int) -> torch.nn.Module:
    """The run's network (logits out), from its resolved spec."""
    m = spec.model
    # The fused SE kernels are opt-in CPU code; a GPU run needs no C++ build for them.
    se_kernels = str(spec.trainer.se_kernels) if spec.on_cpu else "eager"
    if se_kernels != "eager" and m.se != "none":
        # built here with the configured deadline; create_model then reuses this process's result
        kernels_available(float(spec.trainer.se_kernels_build_timeout_s))
    return create_model(
        m.arch,
        num_classes,
        in_channels=in_channels,
        se=m.se,
        se_reduction=m.reduction,
        se_aggregation=m.aggregation,
        se_positions=m.positions,
        se_gate_scale=m.gate_scale,
        se_kernels=se_kernels,
        capacity_match=m.capacity_match,
        se_options=m.options,
        **m.kwargs,
    )


def build_datamodule(spec: RunSpec) -> DataModule:
    """The run's data: its subjects, cache and loaders, seeded like the run."""
    return DataModule(spec.data, seed=spec.seed)


def write_per_case(path: Path, rows: list[dict]) -> None:
    """``per_case.csv`` (one row per subject and class; NaN Dice left empty), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=PER_CASE_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if isinstance(row[k], float) and np.isnan(row[k]) else row[k]) for k in PER_CASE_COLUMNS}
        )
    atomic_write_text(path, buffer.getvalue())


def write_config_snapshot(folder: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """``.hydra/config.yaml`` (resolved) and ``overrides.yaml`` in the run folder, as Hydra itself would."""
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


def evaluate_and_report(
    trainer: Trainer,
    spec: RunSpec,
    folder: Path | None,
    checkpoint: Path | None,
    hashes: tuple[str, str],
    n_params: int,
    started: float,
    epoch: int | None = None,
) -> dict:
    """Evaluate ``trainer.model`` on the test split; rank 0 writes per_case.csv and summary.json.

    ``hashes``: (config hash, comparison hash) of the run's config; ``epoch``: the epoch of the evaluated checkpoint
    (default: the epochs trained). The summary comes from
    :func:`scseg.engine.summary.build_summary`, the builder ``scseg-evaluate`` uses too.
    """
    split = spec.test_split
    counts, surfaces = trainer.evaluate_test(split)
    rows = counts_to_rows(counts, trainer.dm.class_names, surfaces)
    summary = build_summary(
        spec,
        rows,
        trainer.dm.class_names,
        split,
        n_params=n_params,
        checkpoint=checkpoint,
        epoch=trainer.state.epoch if epoch is None else epoch,
        best_epoch=trainer.state.best_epoch,
        best_val_dice=trainer.state.best_metric,
        config_hash=hashes[0],
        comparison_hash=hashes[1],
        device=trainer.device,
        wall_time_s=time.perf_counter() - started,
        se_kernels=se_kernel_path(trainer.model),
        capacity=capacity_of(trainer.model),
        precision=trainer.precision,
    )
    if folder is not None and trainer.dist.is_main:
        write_per_case(folder / "per_case.csv", rows)
        write_summary(folder / "summary.json", summary)
    return summary


def _progress_wanted(setting: Any, multirun: bool) -> bool:
    if setting in (True, "true"):
        return True
    if setting in (False, "false"):
        return False
    return not multirun and os.isatty(2)


def run_training(
    cfg: DictConfig, overrides: list[str] | None = None, multirun: bool = False, stop_after_epoch: int | None = None
) -> RunResult:
    """Train, test and report one config. Failures are recorded in status.json and re-raised."""
    validate_config(cfg)
    started = time.perf_counter()
    spec = RunSpec.from_config(cfg)
    trainer_settings = spec.trainer
    try:
        check_device_and_backend(trainer_settings.device, trainer_settings.backend, trainer_settings.distributed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    dist = (
        init_distributed(trainer_settings.backend, trainer_settings.device)
        if trainer_settings.distributed
        else DistContext()
    )
    digest, name = identity(cfg)
    folder = run_folder(cfg, name)
    lock = None
    failed = True  # until the run returns: a failing rank leaves the process group without waiting for its peers
    try:
        decision = "fresh"
        if dist.is_main:
            check_writable(folder)
            lock = rd.RunLock(folder)
            lock.acquire()
            decision = rd.resolve_resume(folder, digest, str(cfg.resume))
        decision = broadcast_object(decision, dist)
        if decision == "skip":
            print(f"skipping {folder}: already done with the same config (hash {digest[:8]})", flush=True)
            failed = False
            return RunResult(folder, "skipped", summary=_read_json(folder / "summary.json"))
        if dist.is_main:
            if decision == "fresh":
                reset_run_folder(folder)
            write_config_snapshot(folder, cfg, overrides or [])
            rd.write_status(folder, "running", digest)
        hashes = (digest, comparison_hash(cfg))
        result = _train_in(spec, folder, hashes, decision, dist, multirun, stop_after_epoch, started)
        failed = False
        return result
    except BaseException as exc:
        if dist.is_main and folder.exists() and lock is not None and lock.locked:
            try:
                rd.write_status(
                    folder, "failed", digest, traceback=traceback.format_exc(), error=f"{type(exc).__name__}: {exc}"
                )
            except OSError as status_error:  # e.g. the disk is still full: report the first error, not this one
                print(f"warning: could not record the failure in {folder / rd.STATUS_FILE}: {status_error}", flush=True)
        raise
    finally:
        if lock is not None:
            lock.release()
        cleanup(dist, together=not failed)


def _train_in(spec: RunSpec, folder, hashes, decision, dist, multirun, stop_after_epoch, started) -> RunResult:
    digest = hashes[0]
    configure_determinism(spec.trainer.deterministic, spec.trainer.num_threads)
    seed_everything(spec.seed)
    dm = build_datamodule(spec)
    if dist.is_main:
        dm.prepare()
        folds = dm.folds()
        if folds is not None:  # the folds this run belongs to, as nnU-Net stores them
            write_splits_final(folds, folder / "splits_final.json")
    barrier(dist)
    if not dist.is_main:
        dm.prepare()
    seed_everything(spec.seed)  # the weight initialisation does not depend on what preparing the data drew
    try:
        model = build_model(spec, dm.num_classes, dm.in_channels)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model / se config cannot build a network: {exc}") from exc
    n_params = count_parameters(model)
    logger = RunLogger(folder if dist.is_main else None, enabled=spec.logger.enabled)
    logger.text("run/settings", _settings_text(spec, n_params))
    trainer = Trainer(
        spec, model, dm, folder, dist, logger, show_progress=_progress_wanted(spec.trainer.progress_bar, multirun)
    )
    if dist.is_main:
        status_started = rd.read_status(folder) or {}
        since = status_started.get("started_at", status_started.get("updated_at"))

        def record_epoch(epoch: int, epochs: int) -> None:
            try:
                rd.write_status(folder, "running", digest, started_at=since, epoch=epoch, epochs=epochs)
            except OSError as error:  # progress is a convenience: a full disk must not end the run here
                print(f"warning: could not record progress in {folder / rd.STATUS_FILE}: {error}", flush=True)

        trainer.on_epoch_end = record_epoch
    try:
        if decision == "resume":
            used = trainer.restore(folder / "checkpoints")
            done = trainer.state.batches_done
            position = f", batch {done}/{trainer.steps_per_epoch} of epoch {trainer.state.epoch + 1}" if done else ""
            print(f"resuming {folder} from {used.name} after epoch {trainer.state.epoch}{position}", flush=True)
        trainer.fit(stop_after_epoch=stop_after_epoch)
        if stop_after_epoch is not None and trainer.state.epoch < spec.trainer.max_epochs:
            return RunResult(folder, "interrupted")
        best = folder / "checkpoints" / "best.pt"
        barrier(dist)
        evaluated_epoch = None
        if best.exists():
            state = ckpt.load_checkpoint(best)
            ckpt.load_model_weights(trainer.model, state, spec.model.arch, dm.num_classes)
            evaluated_epoch = int(state["epoch"])
        summary = evaluate_and_report(
            trainer, spec, folder, best if best.exists() else None, hashes, n_params, started, evaluated_epoch
        )
        if dist.is_main:
            logger.text(f"{spec.test_split}/per_structure", test_metrics_table(summary, dm.class_names))
            logger.scalars(test_metric_scalars(summary, spec.test_split), trainer.state.step)
            logger.hparams(
                _hparams(spec, n_params),
                {
                    "hparam/test_fg_dice": summary["fg_mean"] or 0.0,
                    "hparam/best_val_dice": max(trainer.state.best_metric, 0.0),
                },
            )
            rd.write_status(folder, "done", digest, fg_mean=json_safe(summary["fg_mean"]))
            print(
                f"done: {folder} test foreground Dice {summary['fg_mean']:.4f} +- {summary['fg_std'] or 0:.4f}",
                flush=True,
            )
        return RunResult(folder, "done", summary=summary)
    finally:
        logger.close()


def _hparams(spec: RunSpec, n_params: int) -> dict:
    """Only the study's swept dimensions: TensorBoard ticks the first five hparams (by name) in its HPARAMS table,
    so anything else would hide them. The rest of the run's settings go to :func:`_settings_text`."""
    m = spec.model
    hparams = {
        "arch": m.arch,
        "se": m.se,
        "aggregation": m.aggregation_used or "n/a",
        "se_reduction": m.reduction,
        "seed": spec.seed,
    }
    if tuple(m.positions) != DEFAULT_SE_POSITIONS:
        hparams["se_positions"] = positions_label(m.positions)
    return hparams


def _settings_text(spec: RunSpec, n_params: int) -> str:
    """The run's other settings as a Markdown table (TensorBoard's TEXT tab), next to the study hparams."""
    rows = {
        "experiment": spec.experiment,
        "data": str(spec.data.get("name", "data")),
        "loss": str(spec.loss.get("name", "")),
        "optimizer": str(spec.optimizer.get("_target_", "")).rsplit(".", 1)[-1],
        "lr": f"{float(spec.optimizer.get('lr', 0.0)):g}",
        "scheduler": str(spec.scheduler.get("_target_", "")).rsplit(".", 1)[-1],
        "max_epochs": str(spec.trainer.max_epochs),
        "batch_size": str(int(spec.data.get("loader", {}).get("batch_size", 8))),
        "n_params": f"{n_params:,}",
        "se_positions": positions_label(spec.model.positions),
    }
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
