"""Shared pytest fixtures: paths to the optional real data, temporary cache folders."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: nothing is written to ~/.cache or next to the data."""
    monkeypatch.setenv("SCSEG_CACHE", str(tmp_path_factory.mktemp("scseg_cache")))


@pytest.fixture
def malc_root() -> Path:
    root = SHARED_DATA / "malc2012"
    if not root.is_dir():
        pytest.skip("../shared/data/malc2012 is absent")
    return root


@pytest.fixture
def chaos_root() -> Path:
    root = SHARED_DATA / "chaos_t2"
    if not root.is_dir():
        pytest.skip("../shared/data/chaos_t2 is absent")
    return root
