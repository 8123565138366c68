#!/usr/bin/env bash
# Wheels for running `make gpu-check` on a GPU machine without network (a lent device, an air-gapped node):
#   bash scripts/offline_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
# then on that machine (which brings its own CUDA torch, numpy, scipy, yaml, tqdm, tensorboard):
#   bash scripts/offline_gpu_check.sh DEST [gpu_check.py arguments...]
# The list is what scseg imports beyond those (hydra, albumentations and their pure-Python or binary
# dependencies), --no-deps so pip does not try to resolve torch for another machine. antlr4 4.9.3 (hydra's parser
# runtime) ships no wheel: it is built here, it is pure Python.
# Versions are those of this checkout's .venv (what the tests ran with): albumentations, for one, pins albucore.
set -euo pipefail
dest=${1:-.whl}
py=${2:-3.12}
python=${PYTHON:-.venv/bin/python}
packages="hydra-core omegaconf hydra-joblib-launcher albumentations albucore pydantic pydantic-core annotated-types
  typing-inspection typing-extensions simsimd stringzilla nibabel"
pinned=$("$python" - $packages <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)  # not installed here (an optional dependency of a newer release): the newest wheel
PY
)
mkdir -p "$dest"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" --python-version "$py" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 $pinned
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" antlr4-python3-runtime==4.9.3
ls "$dest"
