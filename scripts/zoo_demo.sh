#!/usr/bin/env bash
# `make zoo-demo`: U-Net with every recalibration module and library preset (one seed) on the phantom, two jobs at a
# time, then the comparison table and a check that every run learned. Usage: scripts/zoo_demo.sh [RUNS_DIR]
set -u
RUNS="${1:-runs}"
BIN="$(dirname "$0")/../.venv/bin"
MODULES=none,cse,sse,scse,cbam,eca,coord,project_excite,attention_gate,authors_scse,smp_scse,monai_cse,nnunet_cse
started=$(date +%s)
"$BIN/scseg-train" -m experiment=zoo_demo launcher=joblib model=unet "se=$MODULES" seed=0 "paths.runs_dir=$RUNS"
sweep_status=$?
"$BIN/scseg-compare" "$RUNS/zoo_demo"
"$BIN/python" "$(dirname "$0")/check_learning.py" "$RUNS/zoo_demo" || sweep_status=1
echo
echo "zoo demo finished in $(( $(date +%s) - started )) s on $(nproc) CPU cores"
exit $sweep_status
