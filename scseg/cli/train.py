"""``scseg-train``: the Hydra entry point (also ``python -m scseg.cli.train``, and ``python -m scseg.train``).

    scseg-train                                   # defaults: phantom data, U-Net, no SE, CPU
    scseg-train model=sdnet se=scse se.aggregation=max optimizer.lr=3e-4
    scseg-train --cfg job                         # print the composed config
    scseg-train -m model=unet,sdnet se=none,scse  # a sweep (see configs/launcher/ for parallel / SLURM)

A single run that fails exits non-zero with its error; in a multirun a failed job is recorded in its
status.json and the others go on; the sweep callback lists the failures at the end and exits non-zero. A run
folder locked by another process (another sweep over the same runs folder) is left to it and reported as
"running elsewhere" (scseg.engine.sweep), which also makes the sweep exit non-zero.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from scseg.atomic import DiskFullError, is_disk_full
from scseg.config import CONFIG_DIR
from scseg.config.check import ConfigError
from scseg.data.errors import DataError, LoaderWorkerError
from scseg.engine.allocator import tune_allocator
from scseg.engine.checkpoint import CheckpointError
from scseg.engine.run import run_folder, run_training
from scseg.engine.run_dir import RunLockedError, RunStateError
from scseg.engine.sweep import write_job_record
from scseg.engine.trainer import NonFiniteLossError


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # First, in every process that trains (a single run, each joblib worker, each torchrun rank): keep activation
    # buffers in the process instead of faulting them in every step (see scseg.engine.allocator).
    allocator = tune_allocator(OmegaConf.select(cfg, "trainer.tune_malloc", default=None))
    if os.environ.get("RANK", "0") == "0":
        print(f"allocator: {allocator}", flush=True)

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    record: dict = {"job": hydra_cfg.job.num if multirun else 0, "overrides": " ".join(overrides)}
    if multirun:
        # Replaced by the outcome below; left as is when the process is killed, so the report names the run.
        record["run_dir"] = _run_dir_or_none(cfg)
        _write_record(hydra_cfg.runtime.output_dir, {**record, "state": "started", "pid": os.getpid()})
    try:
        result = run_training(cfg, overrides=overrides, multirun=multirun)
        record.update(
            state=result.state,
            run_dir=str(result.run_dir),
            fg_mean=None if result.summary is None else result.summary.get("fg_mean"),
        )
    except RunLockedError as exc:
        if not multirun:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        # Another process trains this run: another sweep (reported as running elsewhere, the sweep exits
        # non-zero) or another job of this sweep with the same run folder, e.g. an aggregation swept over cSE
        # (the sweep report counts it as skipped). Either way it is trained once, by the lock holder.
        record.update(state="running_elsewhere", error=str(exc))
        print(f"not training here: {exc}", file=sys.stderr)
    except (
        ConfigError,
        DataError,
        RunStateError,
        CheckpointError,
        NonFiniteLossError,
        LoaderWorkerError,
        DiskFullError,
    ) as exc:
        # Bad input or a diagnosed stop: one line naming the file, setting or step (the traceback, if the run
        # folder exists, is in its status.json).
        record.update(state="failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
    except Exception as exc:
        if is_disk_full(exc):  # a writer outside scseg.atomic (e.g. TensorBoard, the phantom's NIfTI files)
            record.update(state="failed", error=f"no space left on device (the disk is full): {exc}")
            print(f"error: {record['error']}", file=sys.stderr)
            if not multirun:
                sys.exit(2)
        else:
            record.update(state="failed", error=f"{type(exc).__name__}: {exc} (traceback in the run's status.json)")
            if not multirun:
                raise
            print(f"run failed: {record['error']}", file=sys.stderr)
    finally:
        if multirun:
            _write_record(hydra_cfg.runtime.output_dir, record)
    return record.get("fg_mean")


def _write_record(job_dir: str, record: dict) -> None:
    """Write a sweep record; if that fails (a full disk), say so and let the sweep go on: the sweep report
    counts a job without its final record as failed."""
    try:
        write_job_record(job_dir, record)
    except OSError as exc:
        print(f"warning: cannot record the job's outcome: {exc}", file=sys.stderr)


def _run_dir_or_none(cfg: DictConfig) -> str | None:
    """The run folder this config trains in, for the sweep record; None when the config cannot be hashed (the
    job then fails in run_training with the reason)."""
    try:
        return str(run_folder(cfg))
    except Exception:
        return None


if __name__ == "__main__":
    main()
