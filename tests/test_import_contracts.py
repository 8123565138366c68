"""The import contracts of pyproject.toml ([tool.importlinter]) hold: `lint-imports` exits 0.

They are the layer diagram of docs/architecture.md made checkable: one way down (cli -> engine -> config -> data |
models | losses | metrics | report -> shared leaves), the data package's own layers, commands that never import
each other, a torch-free report and no cycles between sibling modules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> str | None:
    beside = Path(sys.executable).parent / "lint-imports"
    return str(beside) if beside.is_file() else shutil.which("lint-imports")


def test_import_contracts_hold():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
