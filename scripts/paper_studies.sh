#!/usr/bin/env bash
# The studies behind docs/results/malc_cpu.md and chaos_cpu.md, in the order that matters most when they cannot all
# finish in one sitting: MALC U-Net -> MALC SD-Net -> CHAOS U-Net -> the rest. Each step is a resumable sweep (two
# one-thread jobs at a time): rerunning this script skips finished runs and resumes interrupted ones.
#
#   bash scripts/paper_studies.sh RUNS_DIR [STEP ...]     # steps: malc-unet malc-sdnet chaos-unet malc-fcdensenet
#                                                         #        malc-gates chaos-sdnet chaos-fcdensenet (default: all)
# Then: make results RUNS=RUNS_DIR (the tidy per-case CSVs and the pages).
set -uo pipefail
runs=${1:?usage: bash scripts/paper_studies.sh RUNS_DIR [STEP ...]}
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(malc-unet malc-sdnet chaos-unet malc-fcdensenet malc-gates chaos-sdnet chaos-fcdensenet)
here=$(cd "$(dirname "$0")/.." && pwd)
train="${SCSEG_TRAIN:-$here/.venv/bin/scseg-train}"
malc=(experiment=paper_malc_cpu launcher=joblib "paths.runs_dir=$runs")
chaos=(experiment=paper_chaos_cpu launcher=joblib "paths.runs_dir=$runs" data.fold=0,1,2,3,4)
status=0
sweep() { echo "== $*"; "$train" -m "$@" || status=1; }
for step in "${steps[@]}"; do
  case $step in
    malc-unet | malc-sdnet)
      arch=${step#malc-}
      sweep "${malc[@]}" model="$arch" se=none,cse,sse,scse seed=0,1,2,3,4
      sweep "${malc[@]}" model="$arch" se=scse se.aggregation=max seed=0,1,2,3,4 ;;
    chaos-unet | chaos-sdnet | chaos-fcdensenet)
      sweep "${chaos[@]}" model="${step#chaos-}" se=none,cse,sse,scse seed=0 ;;
    malc-fcdensenet)
      sweep "${malc[@]}" model=fcdensenet se=none,cse,sse,scse seed=0,1,2
      sweep "${malc[@]}" model=fcdensenet se=none model.capacity_match=scse seed=0,1,2 ;;
    malc-gates)
      sweep "${malc[@]}" model=unet se=cse,sse se.gate_scale=2 seed=0,1,2 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit $status
