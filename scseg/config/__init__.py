"""Configs: where they live, composing them outside a Hydra app (:mod:`scseg.config.compose`) and the start-up
check that names a bad key (:mod:`scseg.config.check`, imported on its own: it builds optimizers and losses)."""

from __future__ import annotations

from scseg.config.compose import (
    CONFIG_DIR,
    PID_RESOLVER,
    available_data_configs,
    compose_data_config,
    compose_train_config,
    register_resolvers,
)

__all__ = [
    "CONFIG_DIR",
    "PID_RESOLVER",
    "available_data_configs",
    "compose_data_config",
    "compose_train_config",
    "register_resolvers",
]
