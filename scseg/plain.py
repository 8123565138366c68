"""Config nodes as plain Python: the one conversion every reader of a composed config uses.

Readers accept a composed OmegaConf node (from Hydra) or a plain mapping (tests, notebooks, ``.hydra/config.yaml``
loaded with PyYAML) alike, by converting the former with interpolations resolved.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(value: Any) -> Any:
    """DictConfig / ListConfig -> plain dicts and lists (interpolations resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


__all__ = ["to_plain"]
