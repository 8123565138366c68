"""The training loop: one readable module from a built model and data module to a best checkpoint.

Reading order: ``Trainer.fit`` -> ``train_epoch`` -> ``validate`` -> ``save``. Everything tunable comes from the
``trainer``, ``optimizer``, ``scheduler`` and ``loss`` config groups; nothing here hides a hyper-parameter.

Reproducibility: the order of training samples and their augmentation draws derive from (seed, epoch, index)
(``scseg.data.sampler.EpochSampler`` and the slice dataset, both behind ``DataModule.train_loader``), dropout
from torch's global RNG whose state is checkpointed. Checkpoints are written at every epoch end and, with
``trainer.checkpoint_every_n_steps`` / ``checkpoint_every_minutes``, inside an epoch too; a mid-epoch one also
records how many batches of the epoch are done, the epoch's running loss sum and torch's RNG state at the epoch
start (the DataLoader draws its worker seed from it). Resuming skips the finished batches without loading them
(the sampler starts at an offset) and replays that draw, so a run killed at any moment and resumed ends with the
same weights as an uninterrupted one on CPU with ``deterministic=true`` and a fixed thread count
(tests/engine/test_midepoch_resume.py kills real processes).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn
from tqdm import tqdm

from scseg.config.check import SCHEDULER_INTERVALS
from scseg.data.errors import LoaderWorkerError, worker_died
from scseg.engine import checkpoint as ckpt
from scseg.engine import faults
from scseg.engine.distributed import DistContext, all_reduce_sum, shard, wrap_ddp
from scseg.engine.gates import GateCapture, Gates, SEBlock, map_views
from scseg.engine.inference import Predictor
from scseg.engine.precision import cpu_has_amx, precision_label, resolve_amp
from scseg.engine.spec import RunSpec, nsd_tolerances
from scseg.engine.tb_logging import RunLogger, channel_bars, comparison_grid, gate_heatmap_grid
from scseg.losses import create_loss_from_config
from scseg.metrics import ClassCounts, dice_from_counts


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_validations: int = 0  # validations since the best one (early stopping)
    history: list[dict] = field(default_factory=list)
    # The epoch in progress (number ``epoch``): batches done and the running loss sum / sample count, so that a
    # mid-epoch checkpoint resumes at the exact batch with the same epoch mean loss. All zero between epochs.
    batches_done: int = 0
    epoch_loss_sum: float = 0.0
    epoch_seen: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators: what a run draws before its own generators exist."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (legacy global RNG: third-party code may draw from it)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, num_threads: int | None) -> None:
    """Apply ``trainer.deterministic`` and ``trainer.num_threads`` process-wide."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=False)
    torch.backends.cudnn.deterministic = bool(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def distributed_counts(
    model: nn.Module,
    datamodule: Any,
    split: str,
    batch_size: int,
    device: torch.device,
    dist: DistContext,
    forward: Any = None,
    resample: str = "linear",
) -> dict[str, np.ndarray]:
    """Per-subject ``(5, K)`` counts on ``split``: subjects are sharded over ranks, counts summed (integers: exact)."""
    predictor = Predictor(model, datamodule, batch_size, device, forward=forward, resample=resample)
    return distributed_evaluation(predictor, datamodule.subjects(split), dist)[0]


def distributed_evaluation(
    predictor: Predictor, subjects: Any, dist: DistContext, surfaces: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Counts (and with ``surfaces`` the ``(2, K)`` HD95 / NSD) of every subject, sharded over ranks: each subject
    is measured on one rank and the others add zeros, so the sums are exact (counts are integers)."""
    subjects = list(subjects)
    ids = [str(s.id) for s in subjects]
    k = predictor.datamodule.num_classes
    mine = [(str(s.id), *predictor.measure(s, surfaces=surfaces)) for s in shard(subjects, dist)]
    stacked = np.zeros((len(ids), 5, k), dtype=np.int64)
    surface = np.zeros((len(ids), 2, k), dtype=np.float64)
    index = {sid: i for i, sid in enumerate(ids)}
    for sid, counts, measured in mine:
        stacked[index[sid]] = counts
        if measured is not None:
            surface[index[sid]] = measured
    stacked = all_reduce_sum(stacked, dist)
    counts = {sid: stacked[i] for i, sid in enumerate(ids)}
    if not surfaces:
        return counts, None
    surface = all_reduce_sum(surface, dist)
    return counts, {sid: surface[i] for i, sid in enumerate(ids)}


def loader_worker_error(
    error: BaseException, num_workers: int, where: str, wait_s: float = 2.0
) -> LoaderWorkerError | None:
    """The one-line error for a DataLoader worker that died, or None when ``error`` is something else.

    PyTorch usually says it itself (a RuntimeError that :func:`worker_died` recognises). But a worker killed while
    it hands a batch's shared memory to the training process breaks that connection first, so the training process
    sees ``ConnectionResetError`` (or ``EOFError``), and PyTorch's own report comes a moment later from its SIGCHLD
    handler, wherever the process then is. For those, PyTorch's check of its workers is polled for ``wait_s``: a
    dead worker turns into the same one-line error; a live one leaves ``error`` as it was.
    """
    died = worker_died(error, num_workers, where)
    if died is not None or num_workers == 0 or not isinstance(error, (ConnectionError, EOFError)):
        return died
    from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            _error_if_any_worker_fails()
            time.sleep(0.05)  # inside the try: the SIGCHLD handler may raise PyTorch's error here
        except RuntimeError as confirmed:
            return worker_died(confirmed, num_workers, where)
    return None


class Trainer:
    """Trains ``model`` on ``datamodule`` as the run ``spec`` says; writes checkpoints into ``run_dir`` (rank 0)."""

    def __init__(
        self,
        spec: RunSpec,
        model: nn.Module,
        datamodule: Any,
        run_dir: Path | None,
        dist: DistContext | None = None,
        logger: RunLogger | None = None,
        show_progress: bool = False,
    ) -> None:
        self.spec = spec
        self.settings = spec.trainer
        self.dm = datamodule
        self.dist = dist or DistContext()
        self.run_dir = run_dir
        self.logger = logger or RunLogger(None, enabled=False)
        self.show_progress = show_progress and self.dist.is_main
        self.device = torch.device(self.settings.device)
        self.state = TrainState()
        # called on the main process after each epoch's checkpoint with (epochs done, max epochs): run.py records
        # it in status.json, where `scseg-study status` reads a sweep's progress
        self.on_epoch_end: Callable[[int, int], None] | None = None

        self.amp_enabled = resolve_amp(self.settings.amp, self.device.type)
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[str(self.settings.amp_dtype)]
        self.precision = precision_label(self.amp_enabled, str(self.settings.amp_dtype))
        if self.amp_enabled and self.device.type == "cpu" and not cpu_has_amx():
            print(
                f"trainer.amp: {self.precision} autocast on a CPU without AMX runs on its vector units: faster than "
                "fp32 on some (AMD Zen 4 with AVX512-BF16: 1.7-1.9x measured), slower on others (0.09-0.7x on an "
                "Intel Xeon limited to AVX512-BF16 or less); `python scripts/benchmark.py --sections precision` "
                "measures this one",
                file=sys.stderr,
            )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_enabled and self.amp_dtype == torch.float16)

        self.model = model.to(self.device)
        self.memory_format = spec.memory_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.train_module: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_module = wrap_ddp(self.model, ids)  # gradients as DDP's bucket views (see wrap_ddp)
        if self.settings.compile:
            self.train_module = torch.compile(self.train_module)

        self.optimizer = instantiate(spec.optimizer)(params=self.model.parameters())
        # The data module owns the loader and its sample order (scseg.data.sampler.EpochSampler); the trainer
        # only moves it from epoch to epoch (and to the first unfinished batch of a resumed epoch).
        self.train_dataset = datamodule.train_dataset()
        iters = self.settings.iters_per_epoch
        self.loader = datamodule.train_loader(
            self.train_dataset,
            iters_per_epoch=None if iters is None else int(iters),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            device=self.device,
            worker_init_fn=faults.loader_worker_init,  # test-only; does nothing unless SCSEG_FAULT=loader_worker:n
        )
        self.sampler = self.loader.sampler
        self.steps_per_epoch = len(self.loader)
        self.scheduler, self.scheduler_interval = self._build_scheduler(spec.scheduler)
        self.loss_fn = self._build_loss(spec.loss).to(self.device)
        every_n, minutes = self.settings.checkpoint_every_n_steps, self.settings.checkpoint_every_minutes
        if (every_n is not None and int(every_n) < 1) or (minutes is not None and float(minutes) <= 0):
            raise ValueError("trainer.checkpoint_every_n_steps / checkpoint_every_minutes must be positive or null")
        self.checkpoint_every_n_steps = None if every_n is None else int(every_n)
        self.checkpoint_every_s = None if minutes is None else float(minutes) * 60.0
        self._last_checkpoint_time = time.monotonic()
        # torch's CPU RNG state before this epoch's DataLoader iterator drew its worker seed from it; restored
        # from a mid-epoch checkpoint, it lets the resumed epoch make the very same draw.
        self._epoch_rng: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------------- building
    def _build_scheduler(self, scheduler: dict):
        params = dict(scheduler)
        interval = params.pop("interval", "epoch")
        if interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"scheduler.interval must be one of {', '.join(SCHEDULER_INTERVALS)}, got {interval!r}")
        if "total_iters" in params and params["total_iters"] is None:
            per = self.steps_per_epoch if interval == "iteration" else 1
            params["total_iters"] = int(self.settings.max_epochs) * per
        return instantiate(params)(optimizer=self.optimizer), interval

    def _build_loss(self, loss: dict) -> nn.Module:
        return create_loss_from_config(dict(loss), class_weights=lambda: self.dm.class_weights().float())

    # ----------------------------------------------------------------------------------------------- helpers
    def forward(self, images: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_enabled):
            return (self.model if module is None else module)(images).float()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------------------------------------- the loop
    def fit(self, stop_after_epoch: int | None = None) -> TrainState:
        """Train until ``trainer.max_epochs`` (or early stopping). ``stop_after_epoch`` simulates an interruption
        in tests: it returns after that epoch's checkpoint is written, exactly as a killed run would leave it."""
        max_epochs = int(self.settings.max_epochs)
        val_every = int(self.settings.val_every)
        patience = self.settings.early_stopping_patience
        self._last_checkpoint_time = time.monotonic()
        while self.state.epoch < max_epochs:
            epoch = self.state.epoch
            started = time.perf_counter()
            try:
                train_loss, slices_per_s = self.train_epoch(epoch)
            except (RuntimeError, ConnectionError, EOFError) as exc:  # a dead loader worker: one line, no traceback
                died = loader_worker_error(exc, self.dm.num_workers, f"epoch {epoch + 1}, {self.state.step} steps done")
                if died is None:
                    raise
                raise died from exc
            self.state.epoch = epoch + 1
            self.state.batches_done, self.state.epoch_loss_sum, self.state.epoch_seen = 0, 0.0, 0
            record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": self.lr, "slices_per_s": slices_per_s}
            validated = (epoch + 1) % val_every == 0 or epoch + 1 == max_epochs
            improved = False
            if validated and self.dm.subjects("val"):
                val_dice, per_class = self.validate(epoch + 1)
                record["val_dice"] = val_dice
                improved = val_dice > self.state.best_metric
                if improved:
                    self.state.best_metric, self.state.best_epoch, self.state.bad_validations = val_dice, epoch + 1, 0
                else:
                    self.state.bad_validations += 1
                if self.scheduler_interval == "validation":
                    self.scheduler.step(val_dice)
                self.logger.scalars({"val/dice_mean": val_dice}, self.state.step)
                self.logger.scalars({f"val/dice/{k}": v for k, v in per_class.items()}, self.state.step)
            if self.scheduler_interval == "epoch":
                self.scheduler.step()
            record["epoch_time_s"] = time.perf_counter() - started
            self.state.history.append(record)
            self.logger.scalars(
                {
                    "train/epoch_loss": train_loss,
                    "train/epoch_time_s": record["epoch_time_s"],
                    "train/slices_per_s": slices_per_s,
                },
                self.state.step,
            )
            self.save(best=improved or not self.dm.subjects("val"))
            if self.on_epoch_end is not None and self.dist.is_main:
                self.on_epoch_end(self.state.epoch, max_epochs)
            self._print_epoch(record, max_epochs)
            if patience is not None and self.state.bad_validations >= int(patience):
                self._print(f"early stopping: no better validation Dice for {patience} validations")
                break
            if stop_after_epoch is not None and self.state.epoch >= stop_after_epoch:
                break
        return self.state

    def _epoch_iterator(self, epoch: int) -> Iterator[dict]:
        """The DataLoader iterator of ``epoch``, starting after the ``state.batches_done`` batches already done.

        Creating the iterator draws the workers' base seed from torch's global RNG (also with 0 workers). A
        resumed epoch makes that draw from the epoch-start state stored in its checkpoint and then restores the
        checkpoint's state, so the global RNG (dropout) and the worker seeds continue exactly as without a stop.
        """
        start = self.state.batches_done
        if not 0 <= start <= self.steps_per_epoch:
            raise ckpt.CheckpointError(
                f"checkpoint has {start} batches of epoch {epoch + 1} done, but an epoch has {self.steps_per_epoch}"
            )
        self.sampler.set_epoch(epoch, start=start * int(self.loader.batch_size))
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(epoch)
        if start == 0 or self._epoch_rng is None:
            self._epoch_rng = torch.get_rng_state()
            return iter(self.loader)
        resumed = torch.get_rng_state()
        torch.set_rng_state(self._epoch_rng)
        iterator = iter(self.loader)
        torch.set_rng_state(resumed)
        return iterator

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch of optimizer steps (from ``state.batches_done`` on, after a mid-epoch resume); returns the
        epoch's mean loss and the throughput in slices per second."""
        self.model.train()
        batches = self._epoch_iterator(epoch)
        count, started = 0, time.perf_counter()
        if self.show_progress:
            batches = tqdm(
                batches,
                desc=f"epoch {epoch + 1}/{self.settings.max_epochs}",
                total=self.steps_per_epoch,
                initial=self.state.batches_done,
                leave=False,
                dynamic_ncols=True,
            )
        log_every = int(self.spec.logger.log_every_n_steps)
        for batch in batches:
            labels = batch["label"].to(self.device, non_blocking=True)
            logits = self.forward(batch["image"], self.train_module)
            loss = self.loss_fn(logits, labels)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {self.state.step + 1}; the last good "
                    "checkpoint is kept. Lower optimizer.lr, enable trainer.grad_clip_norm, or check the data."
                )
            self.optimizer.zero_grad(set_to_none=not self.dist.enabled)  # DDP: keep them as bucket views
            self.scaler.scale(loss).backward()
            if self.settings.grad_clip_norm:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), float(self.settings.grad_clip_norm))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler_interval == "iteration":
                self.scheduler.step()
            self.state.step += 1
            self.state.batches_done += 1
            n = labels.shape[0]
            self.state.epoch_loss_sum += loss.item() * n
            self.state.epoch_seen += n
            count += n
            if self.state.step % log_every == 0:
                self.logger.scalars({"train/loss": loss.item(), "train/lr": self.lr}, self.state.step)
            if self.show_progress:
                rate = count / max(time.perf_counter() - started, 1e-9)
                batches.set_postfix(
                    loss=f"{self.state.epoch_loss_sum / self.state.epoch_seen:.4f}", slices_s=f"{rate:.1f}"
                )
            if self.state.batches_done < self.steps_per_epoch and self._mid_epoch_checkpoint_due():
                self.save(best=False, mid_epoch=True)
            faults.maybe_fail("after_step", self.state.step)
        totals = np.array([self.state.epoch_loss_sum, self.state.epoch_seen], dtype=np.float64)
        mean_loss = all_reduce_sum(totals, self.dist)
        return float(mean_loss[0] / max(mean_loss[1], 1)), count / max(time.perf_counter() - started, 1e-9)

    def _mid_epoch_checkpoint_due(self) -> bool:
        """Whether a checkpoint is due inside the epoch (the last batch never: the epoch-end one follows).

        Every rank gets the same answer: the step count is shared, and under DDP the minute timer of any rank
        decides for all (one tiny all-reduce per step, only when ``checkpoint_every_minutes`` is set), because
        writing the checkpoint sums the ranks' running losses.
        """
        every_n = self.checkpoint_every_n_steps
        due = every_n is not None and self.state.step % every_n == 0
        if self.checkpoint_every_s is not None:
            timed = time.monotonic() - self._last_checkpoint_time >= self.checkpoint_every_s
            if self.dist.enabled:
                timed = bool(all_reduce_sum(np.array([int(timed)], dtype=np.int64), self.dist)[0])
            due = due or timed
        return due

    # ----------------------------------------------------------------------------------------------- evaluation
    def predictor(self) -> Predictor:
        """The one prediction path, configured as this run evaluates (batch size, restore, NSD tolerance)."""
        return Predictor(
            self.model,
            self.dm,
            int(self.settings.eval_batch_size),
            self.device,
            forward=self.forward,
            resample=str(self.settings.eval_resample),
            nsd_tolerance_mm=nsd_tolerances(self.spec.eval.nsd_tolerance_mm, self.dm.class_names),
            tta=self.spec.eval.tta,
        )

    def evaluate_counts(self, split: str) -> dict[str, np.ndarray]:
        """Per-subject counts on ``split`` (validation: Dice only)."""
        return distributed_evaluation(self.predictor(), self.dm.subjects(split), self.dist)[0]

    def evaluate_test(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Counts and, when ``eval.surface_metrics``, HD95 / NSD of every subject of ``split``."""
        surfaces = bool(self.spec.eval.surface_metrics)
        return distributed_evaluation(self.predictor(), self.dm.subjects(split), self.dist, surfaces=surfaces)

    def validate(self, epoch: int) -> tuple[float, dict[str, float]]:
        """Mean foreground Dice over validation volumes (per subject: mean over foreground classes, NaN ignored)."""
        counts = self.evaluate_counts("val")
        names = list(self.dm.class_names)
        dice = np.stack([dice_from_counts(*ClassCounts.from_array(c).tp_fp_fn()) for c in counts.values()])
        with np.errstate(all="ignore"):
            subject_fg = np.nanmean(dice[:, 1:], axis=1) if dice.shape[1] > 1 else np.full(len(dice), np.nan)
            per_class = {names[c]: float(np.nanmean(dice[:, c])) for c in range(1, len(names))}
        fg = float(np.nanmean(subject_fg)) if np.isfinite(subject_fg).any() else 0.0
        self.log_images(epoch)
        return fg, per_class

    def log_images(self, epoch: int) -> None:
        """Input / reference / prediction overlays of fixed slices of the first validation subject and, for a run
        with SE and ``logger.gate_maps``, every SE block's gates on the same slices (captured by hooks during this
        very prediction: no extra forward)."""
        n = int(self.spec.logger.image_slices)
        if self.logger.writer is None or n <= 0 or not self.dm.subjects("val"):
            return
        subject = self.dm.subjects("val")[0]
        slices = self.dm.eval_slices(subject)
        picks = np.unique(np.linspace(len(slices) * 0.3, len(slices) * 0.7, n).astype(int))
        items = [slices[int(i)] for i in picks]
        if not items or "label" not in items[0]:
            return
        images = torch.stack([it["image"] for it in items])
        capture = GateCapture(self.model) if self.spec.logger.gate_maps else None
        with capture if capture is not None and capture.blocks else contextlib.nullcontext():
            predictor = Predictor(self.model, self.dm, len(items), self.device, self.forward)
            predictions = predictor.slice_labels(images.unbind(0))
        centre = images.shape[1] // 2  # the slice itself when 2.5D context stacks neighbours around it
        slices = [im[centre].numpy() for im in images]
        grid = comparison_grid(slices, [it["label"].numpy() for it in items], list(predictions), self.dm.num_classes)
        self.logger.image("val/overlay", grid, self.state.step)
        if capture is not None:
            self.log_gates(slices, capture.collected(), capture.blocks)

    def log_gates(self, slices: list[np.ndarray], gates: dict[str, Gates], blocks: list[SEBlock]) -> None:
        """Per SE block, every map it declares (:func:`~scseg.engine.gates.map_views`): spatial maps as heat maps
        over the overlay slices, channel gates as bars, under ``gates/<module>/<map>/<site>``; the paper's modules
        keep ``gates/sse/<site>``, ``gates/cse/<site>`` (histogram) and ``gates/cse_bars/<site>``."""
        for block in blocks:
            if block.name not in gates:
                continue
            for view in map_views(block, gates[block.name]):
                if view.kind == "spatial":
                    image = gate_heatmap_grid(slices, list(view.values.numpy()))
                else:
                    image = channel_bars(view.values.numpy())
                    if view.histogram_tag is not None:
                        self.logger.histogram(view.histogram_tag, view.values.flatten(), self.state.step)
                self.logger.image(view.tag, image, self.state.step)

    # ----------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        """The full training state as saved in ``last.pt`` / ``best.pt`` (between epochs: ``epoch`` epochs done)."""
        return ckpt.build_checkpoint_state(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            epoch=self.state.epoch,
            step=self.state.step,
            best_metric=self.state.best_metric,
            history=self.state.history,
            config_yaml=self.spec.config_yaml,
            arch=self.spec.model.arch,
            num_classes=self.dm.num_classes,
            extra={
                "best_epoch": self.state.best_epoch,
                "bad_validations": self.state.bad_validations,
                # the slice canvas of training: evaluation and prediction pad to the same (data/slices.py)
                "canvas": None if self.dm.canvas is None else list(self.dm.canvas),
            },
        )

    def mid_epoch_record(self) -> dict:
        """What a checkpoint inside epoch ``state.epoch`` adds: batches done, the running loss sum and count
        (summed over ranks: collective under DDP) and torch's RNG state at the epoch start."""
        totals = all_reduce_sum(
            np.array([self.state.epoch_loss_sum, self.state.epoch_seen], dtype=np.float64), self.dist
        )
        assert self._epoch_rng is not None, "mid_epoch_record is called inside an epoch"
        return {
            "epoch": self.state.epoch,
            "batches_done": self.state.batches_done,
            "loss_sum": float(totals[0]),
            "seen": int(totals[1]),
            "torch_rng_epoch_start": self._epoch_rng.clone(),
        }

    def save(self, best: bool, mid_epoch: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt`` if ``best``) on rank 0. ``mid_epoch``: inside an epoch, with the
        position in it (:meth:`mid_epoch_record`); such a checkpoint only ever goes to ``last.pt``."""
        self._last_checkpoint_time = time.monotonic()
        record = self.mid_epoch_record() if mid_epoch else None  # on every rank: it may reduce over ranks
        if self.run_dir is None or not self.dist.is_main:
            return
        manager = ckpt.CheckpointManager(self.run_dir / "checkpoints")
        state = self.checkpoint_state()
        if record is not None:
            state["mid_epoch"] = record
        manager.save_last(state)
        if best and record is None:
            manager.save_best(state)

    def restore(self, folder: Path) -> Path:
        """Continue from the newest loadable checkpoint in ``folder`` (``last.pt``, else its spare ``last.prev.pt``):
        weights, optimizer, scheduler, scaler, counters, RNG states and, for a mid-epoch checkpoint, the position
        in the epoch. Returns the checkpoint used. Temporary files of a killed writer are removed (rank 0)."""
        manager = ckpt.CheckpointManager(folder)
        if self.dist.is_main:
            manager.remove_stale_temp_files()
        found = manager.load_latest()
        if found is None:
            raise ckpt.CheckpointNotFoundError(f"no checkpoint to resume from in {folder}")
        path, state = found
        ckpt.load_model_weights(self.model, state, self.spec.model.arch, self.dm.num_classes)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        extra = state.get("extra") or {}
        self.state = TrainState(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            best_metric=float(state["best_metric"]),
            best_epoch=int(extra.get("best_epoch", -1)),
            bad_validations=int(extra.get("bad_validations", 0)),
            history=list(state.get("history") or []),
        )
        mid = state.get("mid_epoch")
        self._epoch_rng = None
        if mid is not None:
            if int(mid["epoch"]) != self.state.epoch:
                raise ckpt.CheckpointError(
                    f"{path}: mid-epoch record of epoch {mid['epoch']} in a checkpoint of epoch {self.state.epoch}"
                )
            self.state.batches_done = int(mid["batches_done"])
            if self.dist.is_main:  # the stored sums cover all ranks; the others restart theirs from zero
                self.state.epoch_loss_sum, self.state.epoch_seen = float(mid["loss_sum"]), int(mid["seen"])
            self._epoch_rng = mid["torch_rng_epoch_start"].cpu()
        ckpt.restore_rng_state(state)
        return path

    # ----------------------------------------------------------------------------------------------- output
    def _print(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    def _print_epoch(self, r: dict, max_epochs: int) -> None:
        val = f" val_dice {r['val_dice']:.4f}" if "val_dice" in r else ""
        self._print(
            f"epoch {r['epoch']}/{max_epochs} loss {r['train_loss']:.4f}{val} lr {r['lr']:.2e} "
            f"{r['slices_per_s']:.1f} slices/s {r['epoch_time_s']:.1f}s"
        )


__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "Trainer",
    "configure_determinism",
    "seed_everything",
]
