#!/usr/bin/env bash
# The studies behind docs/results/malc_cpu_study.md and chaos_cpu_study.md, in the order that matters most when
# they cannot all finish in one sitting: MALC U-Net -> MALC SD-Net -> CHAOS U-Net -> the rest. Each step is a resumable sweep (two
# one-thread jobs at a time): rerunning this script skips finished runs and resumes interrupted ones. Seeds come first
# in each sweep, so the variants vary fastest: a sweep stopped half-way leaves whole seeds (every variant of them).
#
#   bash scripts/paper_studies.sh RUNS_DIR [STEP ...]     # steps: malc-unet malc-sdnet chaos-unet malc-fcdensenet
#                                                         #        malc-gates chaos-sdnet chaos-fcdensenet (default: all)
# Then: make results RUNS=RUNS_DIR (the tidy per-case CSVs and the pages).
# LAUNCHER picks configs/launcher/<name>.yaml (default joblib); on a SLURM cluster, one job per run:
#   SCSEG_SLURM_PARTITION=cpu LAUNCHER=slurm_cpu bash scripts/paper_studies.sh RUNS_DIR
set -uo pipefail
runs=${1:?usage: bash scripts/paper_studies.sh RUNS_DIR [STEP ...]}
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(malc-unet malc-sdnet chaos-unet malc-fcdensenet malc-gates chaos-sdnet chaos-fcdensenet)
here=$(cd "$(dirname "$0")/.." && pwd)
train="${SCSEG_TRAIN:-$here/.venv/bin/scseg-train}"
launcher=${LAUNCHER:-joblib}
malc=(experiment=paper_malc_cpu "launcher=$launcher" "paths.runs_dir=$runs")
chaos=(experiment=paper_chaos_cpu "launcher=$launcher" "paths.runs_dir=$runs" data.fold=0,1,2,3,4)
status=0
sweep() { echo "== $*"; "$train" -m "$@" || status=1; }
for step in "${steps[@]}"; do
  case $step in
    malc-unet | malc-sdnet)
      arch=${step#malc-}
      sweep "${malc[@]}" model="$arch" seed=0,1,2,3,4 se=none,cse,sse,scse
      sweep "${malc[@]}" model="$arch" seed=0,1,2,3,4 se=scse se.aggregation=max ;;
    chaos-unet | chaos-sdnet | chaos-fcdensenet)
      sweep "${chaos[@]}" model="${step#chaos-}" seed=0 se=none,cse,sse,scse ;;
    malc-fcdensenet)
      sweep "${malc[@]}" model=fcdensenet seed=0,1,2 se=none,cse,sse,scse
      sweep "${malc[@]}" model=fcdensenet seed=0,1,2 se=none model.capacity_match=scse ;;
    malc-gates)
      sweep "${malc[@]}" model=unet seed=0,1,2 se=cse,sse se.gate_scale=2 ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit $status
