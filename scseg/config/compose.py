"""Compose configs outside a Hydra app (tests, notebooks, scripts, ``python -m scseg.data inspect``).

``scseg-train`` composes ``configs/train.yaml`` through ``@hydra.main``; :func:`compose_train_config` gives the
same result for a list of command-line style overrides, without starting a run. :func:`compose_data_config`
composes one dataset's ``data`` node alone: the per-dataset configs pull their label map from another group
(``/label_map@label_map: <name>``), so they only compose from the ``configs/`` root. Both restore any Hydra state
already active (they are safe to call inside a Hydra app).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scseg.data.errors import DataError
from scseg.paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
PID_RESOLVER = "scseg.pid"


def register_resolvers() -> None:
    """``${scseg.pid:}``: the id of the process that first resolves it, used in ``hydra.sweep.dir`` so that two
    sweeps started in the same second keep separate records. Cached per config: Hydra copies the launching
    process's cache into every job's config, so joblib / SLURM jobs resolve the launcher's pid, not their own."""
    if not OmegaConf.has_resolver(PID_RESOLVER):
        OmegaConf.register_new_resolver(PID_RESOLVER, os.getpid, use_cache=True)


register_resolvers()  # at import: scseg.cli.train imports this module before Hydra composes the config


def compose_train_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The composed root config, e.g. ``compose_train_config(["experiment=demo", "model=sdnet"])``."""
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        restore_gh_from_backup(backup)


def available_data_configs(config_root: Path = CONFIG_DIR) -> list[str]:
    """Names of the dataset configs in `configs/data` (without `common`)."""
    return sorted(p.stem for p in (config_root / "data").glob("*.yaml") if p.stem != "common")


def compose_data_config(name: str, overrides: Sequence[str] = (), config_root: str | Path = CONFIG_DIR) -> DictConfig:
    """The composed `data` node of dataset config `name` (e.g. "malc", "phantom").

    `overrides` are Hydra overrides RELATIVE to the data node, e.g. ``["slices.axis=coronal",
    "layout.root=/x"]``; use ``+key=value`` to add a key the config does not have. An unknown dataset or a bad
    override is a `DataError` naming it.
    """
    config_root = Path(config_root).resolve()
    if name not in available_data_configs(config_root):
        raise DataError(
            f"data config {name!r} not found in {config_root / 'data'}; "
            f"available: {', '.join(available_data_configs(config_root)) or 'none'}"
        )
    full = [f"+data={name}"]
    for o in overrides:
        prefix = ""
        if o.startswith(("++", "+", "~")):
            prefix, o = (o[:2], o[2:]) if o.startswith("++") else (o[0], o[1:])
        full.append(f"{prefix}data.{o}")
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_root), version_base=None):
            cfg = compose(config_name=None, overrides=full)
    except (HydraException, OmegaConfBaseException) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data config {name!r} with overrides {list(overrides)}: {msg}") from err
    finally:
        restore_gh_from_backup(backup)
    return cfg.data


__all__ = [
    "CONFIG_DIR",
    "PID_RESOLVER",
    "available_data_configs",
    "compose_data_config",
    "compose_train_config",
    "register_resolvers",
]
