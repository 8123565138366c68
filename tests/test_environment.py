"""environment.yml stays installable and in step with pyproject.toml and the torch pinned by Makefile / README.

Why: the `pytorch` conda channel stopped at torch 2.5 (pytorch/pytorch#138506), so an environment file taking torch
from there silently cannot give the pinned torch; and a dependency added to pyproject.toml but not here breaks
`conda env create` users only. Parsing only, nothing is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.version import Version  # pytest depends on packaging

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _conda_specs(env: dict) -> dict[str, str]:
    return {re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower(): d for d in env["dependencies"] if isinstance(d, str)}


def _pip_specs(env: dict) -> dict[str, str]:
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return {re.match(r"[A-Za-z0-9_.\-]+", d).group(0).lower(): d for group in pip for d in group}


def _split_conda_spec(spec: str) -> tuple[str, str, str | None]:
    """(name, version spec, build pattern) of a conda MatchSpec string: `name [version [build]]` or
    `name=version=build`."""
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip())
    assert m, spec
    name, rest = m.group(1), m.group(2).strip()
    if " " in rest:
        version, build = rest.split(None, 1)
        return name, version, build
    if rest.startswith("=") and not rest.startswith("=="):
        parts = rest[1:].split("=")
        return name, parts[0] + ("" if parts[0].endswith("*") else "*"), parts[1] if len(parts) > 1 else None
    return name, rest or "*", None


def _admits(version_spec: str, version: str) -> bool:
    """Conda version spec (`|` = or, `,` = and; >=, <=, >, <, ==, !=, prefixes `2.13` / `2.13.*`) admits version."""
    v = Version(version)
    ops = {">=": v.__ge__, "<=": v.__le__, ">": v.__gt__, "<": v.__lt__, "==": v.__eq__, "!=": v.__ne__}

    def clause(c: str) -> bool:
        c = c.strip()
        if c in ("", "*"):
            return True
        for op in (">=", "<=", "==", "!=", ">", "<"):
            if c.startswith(op):
                return ops[op](Version(c[len(op) :].rstrip(".*")))
        prefix = c.lstrip("=").rstrip("*").rstrip(".")
        return version == prefix or version.startswith(prefix + ".")

    return any(all(clause(c) for c in alt.split(",")) for alt in version_spec.split("|"))


def _torch_pin() -> str:
    m = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert m, "Makefile: TORCH_SPEC ?= torch==<version> not found"
    return m.group(1)


def test_conda_forge_only_no_cpuonly():
    env = _environment()
    assert set(env["channels"]) <= {"conda-forge", "nodefaults"} and "conda-forge" in env["channels"]
    specs = _conda_specs(env)
    assert "cpuonly" not in specs and "pytorch-cuda" not in specs  # packages of the deprecated pytorch channel
    assert not any("::" in d for d in specs.values())  # no per-package channel either (pytorch::pytorch)


def test_pinned_torch_is_admitted():
    pin = _torch_pin()
    assert f"torch=={pin}" in (REPO / "README.md").read_text(), "README and Makefile pin different torch versions"
    name, version, build = _split_conda_spec(_conda_specs(_environment())["pytorch"])
    assert name == "pytorch" and _admits(version, pin), f"environment.yml's pytorch {version!r} rejects {pin}"
    assert build is not None and re.match(r"\*?(cpu|cuda)", build), "choose conda-forge's CPU or CUDA build"


@pytest.mark.parametrize(
    ("spec", "version", "ok"),
    [
        (">=2.1", "2.13.0", True),
        (">=2.1,<2.5", "2.13.0", False),
        ("2.13", "2.13.0", True),
        ("2.1*", "2.13.0", False),
        ("=2.13", "2.13.0", True),
        ("<2.0|>=2.13", "2.13.0", True),
        ("*", "2.13.0", True),
    ],
)
def test_version_spec_reader(spec, version, ok):
    assert _admits(spec, version) is ok


def test_every_runtime_dependency_is_in_the_environment():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = _environment()
    present = set(_conda_specs(env)) | set(_pip_specs(env))
    missing = []
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()
        if CONDA_NAMES.get(name, name) not in present:
            missing.append(requirement)
    assert not missing, f"environment.yml lacks runtime dependencies of pyproject.toml: {missing}"
    # the sweep launchers README tells users about come with the plain install
    assert {"hydra-joblib-launcher", "hydra-submitit-launcher"} <= {
        re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in project["dependencies"]
    }
