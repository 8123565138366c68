"""``scseg-train``: the Hydra entry point (also ``python -m scseg.train``).

    scseg-train                                   # defaults: phantom data, U-Net, no SE, CPU
    scseg-train model=sdnet se=scse se.aggregation=max optimizer.lr=3e-4
    scseg-train --cfg job                         # print the composed config
    scseg-train -m model=unet,sdnet se=none,scse  # a sweep (see configs/launcher/ for parallel / SLURM)

A single run that fails exits non-zero with its error; in a multirun a failed job is recorded in its
status.json and the others go on; the sweep callback lists the failures at the end and exits non-zero.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from scseg.config import CONFIG_DIR


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from scseg.config_check import ConfigError
    from scseg.data.errors import DataError
    from scseg.engine.checkpoint import CheckpointError
    from scseg.engine.run import run_training
    from scseg.engine.run_dir import RunLockedError, RunStateError
    from scseg.engine.trainer import NonFiniteLossError
    from scseg.sweep import write_job_record

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    record: dict = {"job": hydra_cfg.job.num if multirun else 0, "overrides": " ".join(overrides)}
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
        # Another job of this sweep trains the same run (e.g. an aggregation swept over cSE): not a failure.
        record.update(state="skipped", error=str(exc))
        print(f"skipping: {exc}", file=sys.stderr)
    except (ConfigError, DataError, RunStateError, CheckpointError, NonFiniteLossError) as exc:
        # Bad input or a diagnosed stop: one line naming the file, setting or step (the traceback, if the run
        # folder exists, is in its status.json).
        record.update(state="failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
    except Exception as exc:
        record.update(state="failed", error=f"{type(exc).__name__}: {exc} (traceback in the run's status.json)")
        if not multirun:
            raise
        print(f"run failed: {record['error']}", file=sys.stderr)
    finally:
        if multirun:
            write_job_record(hydra_cfg.runtime.output_dir, record)
    return record.get("fg_mean")


if __name__ == "__main__":
    main()
