#!/usr/bin/env bash
# `make gpu-check` on a GPU machine without network, from the wheels of scripts/offline_wheels.sh:
#   bash scripts/offline_gpu_check.sh WHEELS [gpu_check.py arguments, e.g. --budget-s 540 --page OUT/page.md]
# Installs the wheels into a scratch folder (nothing in the machine's environment changes) and runs the check
# from this checkout with that folder on PYTHONPATH; the machine's own torch is used.
set -euo pipefail
wheels=${1:-}
if [ -z "$wheels" ] || ! ls "$wheels"/*.whl >/dev/null 2>&1; then
  echo "usage: bash scripts/offline_gpu_check.sh WHEELS_DIR [gpu_check.py arguments]; WHEELS_DIR must hold the" \
    "wheels of 'make gpu-wheels' (got: '${wheels}')" >&2
  exit 2
fi
shift
site=${SCSEG_OFFLINE_SITE:-/tmp/scseg-site}
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
cd "$(dirname "$0")/.."
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
exec python3 scripts/gpu_check.py "$@"
