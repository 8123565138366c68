"""Tiny end-to-end configs for the training tests: a few phantom subjects of 32^3, narrow networks, few steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from scseg.config import compose_train_config
from tests.engine.tiny import TINY_DATA, TINY_MODELS, TINY_TRAINER


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Factory: ``tiny_config("sdnet", "se=scse")`` -> a composed config writing runs under ``tmp_path``."""

    def make(arch: str = "unet", *extra: str):
        overrides = [
            *TINY_DATA,
            *TINY_TRAINER,
            *TINY_MODELS[arch],
            f"paths.runs_dir={tmp_path / 'runs'}",
            "experiment_name=test",
            *extra,
        ]
        return compose_train_config(overrides)

    return make
