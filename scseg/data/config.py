"""Compose a dataset's `data` config node outside a Hydra app (tests, `python -m scseg.data`, notebooks).

Why this module exists: the per-dataset configs pull their label map from another group
(`/label_map@label_map: <name>`), so they only compose from the `configs/` root. This helper does that
once, correctly, and restores any Hydra state already active (it is safe to call inside a Hydra app).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from scseg.data.errors import DataError

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def available_data_configs(config_root: Path = CONFIG_ROOT) -> list[str]:
    """Names of the dataset configs in `configs/data` (without `common`)."""
    return sorted(p.stem for p in (config_root / "data").glob("*.yaml") if p.stem != "common")


def compose_data_config(name: str, overrides: Sequence[str] = (), config_root: str | Path = CONFIG_ROOT) -> DictConfig:
    """The composed `data` node of dataset config `name` (e.g. "malc", "phantom").

    `overrides` are Hydra overrides RELATIVE to the data node, e.g. ``["slices.axis=coronal",
    "layout.root=/x"]``; use ``+key=value`` to add a key the config does not have.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

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
