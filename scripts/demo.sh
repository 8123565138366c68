#!/usr/bin/env bash
# `make demo`: the paper's four-way comparison (3 architectures x 4 SE variants, one seed) on the embedded phantom
# dataset, two jobs at a time on the CPU, then the comparison table. Usage: scripts/demo.sh [RUNS_DIR]
set -u
RUNS="${1:-runs}"
BIN="$(dirname "$0")/../.venv/bin"
started=$(date +%s)
"$BIN/scseg-train" -m experiment=demo launcher=joblib model=unet,sdnet,fcdensenet se=none,cse,sse,scse seed=0 \
  "paths.runs_dir=$RUNS"
sweep_status=$?
# The report is written even when a run failed: failed and missing runs are listed in it.
"$BIN/scseg-compare" "$RUNS/demo"
"$BIN/python" "$(dirname "$0")/check_learning.py" "$RUNS/demo" || sweep_status=1
echo
echo "demo finished in $(( $(date +%s) - started )) s on $(nproc) CPU cores"
echo "look at the curves and predictions:  make tb RUNS=$RUNS   (or: $BIN/tensorboard --logdir $RUNS)"
exit $sweep_status
