"""Compose the root training config outside a Hydra app (tests, notebooks, scripts).

``scseg-train`` composes ``configs/train.yaml`` through ``@hydra.main``; this gives the same result for a list of
command-line style overrides, without starting a run or touching the current Hydra state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PID_RESOLVER = "scseg.pid"


def register_resolvers() -> None:
    """``${scseg.pid:}``: the id of the process that first resolves it, used in ``hydra.sweep.dir`` so that two
    sweeps started in the same second keep separate records. Cached per config: Hydra copies the launching
    process's cache into every job's config, so joblib / SLURM jobs resolve the launcher's pid, not their own."""
    if not OmegaConf.has_resolver(PID_RESOLVER):
        OmegaConf.register_new_resolver(PID_RESOLVER, os.getpid, use_cache=True)


register_resolvers()  # at import: scseg.train imports this module before Hydra composes the config


def compose_train_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The composed root config, e.g. ``compose_train_config(["experiment=demo", "model=sdnet"])``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        restore_gh_from_backup(backup)
