"""Compose the root training config outside a Hydra app (tests, notebooks, scripts).

``scseg-train`` composes ``configs/train.yaml`` through ``@hydra.main``; this gives the same result for a list of
command-line style overrides, without starting a run or touching the current Hydra state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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
