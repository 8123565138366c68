# scseg developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu (or .../cu124) to choose a build
TORCH_INDEX ?=
RUNS ?= runs
TASKS ?= malc chaos
PORT ?= 6006
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch-$(subst =,_,$(subst <,_,$(subst >,_,$(TORCH_SPEC))))

.DEFAULT_GOAL := help
.PHONY: gpu-check gpu-wheels help install test test-cpus test-slow lint format demo zoo-demo study paper-cpu paper-studies zoo results zoo-results tb summary bench clean

help: ## list the commands
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

$(TORCH_STAMP): | $(VENV)/bin/python
	$(VPY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(VPY) -m pip install -q -e ".[dev,report,onnx]"
	@# the opt-in fused SE kernels (trainer.se_kernels=fused), built once under a deadline; optional
	$(VPY) -c "import sys; from scseg.models.se_fused import main; sys.exit(main(['--timeout', '300']))" \
	  || echo "fused SE kernels not built: optional, the default gates need none"
	touch $@

install: $(STAMP) ## create .venv, install torch ($(TORCH_SPEC)) then scseg editable with dev extras (idempotent)

test: install ## run the fast test suite (installs first if needed)
	$(VPY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# ATen's dispatch (ATEN_CPU_CAPABILITY) does not reach oneDNN's convolutions or MKL, so each kernel set is also run
# with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA). On a CPU without AVX-512, "avx512" falls back to what it has.
CPU_KERNEL_SETS ?= default:AVX2 avx2:AVX2 avx512:AVX2 avx512:ALL
CPU_THREADS ?= 1 2
test-cpus: install ## run the training tests (marker `learning`) under every CPU kernel set and thread count
	@failed=0; for set in $(CPU_KERNEL_SETS); do for t in $(CPU_THREADS); do \
	  aten=$${set%%:*}; onednn=$${set##*:}; \
	  line=$$(ATEN_CPU_CAPABILITY=$$aten ONEDNN_MAX_CPU_ISA=$$onednn SCSEG_TEST_THREADS=$$t \
	    $(VPY) -m pytest -m learning -q -s -p no:cacheprovider $(PYTEST_ARGS) 2>&1 | grep -E "fg Dice|passed|failed|error" | tr '\n' ' '); \
	  echo "ATEN_CPU_CAPABILITY=$$aten ONEDNN_MAX_CPU_ISA=$$onednn threads=$$t: $$line"; \
	  case "$$line" in *failed*|*error*|"") failed=1;; esac; \
	done; done; exit $$failed

test-slow: install ## run the slow tests too (each states its time budget)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

lint: install ## ruff check, and the import-layer contracts of pyproject.toml (lint-imports)
	$(VENV)/bin/ruff check scseg tests scripts
	$(VENV)/bin/lint-imports

format: install ## ruff format + autofix
	$(VENV)/bin/ruff check --fix scseg tests scripts
	$(VENV)/bin/ruff format scseg tests scripts

summary: install ## parameters, multiply-adds and SE overhead of every arch x SE variant
	$(VPY) -m scseg.models.summary

# The benchmark suite (SE blocks, training step and trainer overhead, compile, precision, input pipeline, start-up, evaluation, GPU):
# markdown to stdout, every raw time in $(BENCH_JSON), and the page $(BENCH_PAGE) regenerated. Run it on an idle
# machine (about 10-12 minutes on 2 cores); BENCH_ARGS adds options, e.g. BENCH_ARGS="--sections se_blocks,training".
# MONAI, the evaluation section's optional reference: $(VPY) -m pip install -e ".[bench]".
BENCH_JSON ?= runs/benchmark.json
BENCH_PAGE ?= docs/benchmarks.md
BENCH_ARGS ?=
bench: install ## the benchmark suite on an idle machine: JSON + docs/benchmarks.md (~12-15 min on 2 cores)
	$(VPY) scripts/benchmark.py --out $(BENCH_JSON) --markdown $(BENCH_PAGE) --command "make bench $(BENCH_ARGS)" $(BENCH_ARGS)

gpu-check: install ## on a CUDA machine: every architecture with bf16 + compile, DDP/NCCL, the GPU benchmark (<= 8 min)
	$(VPY) scripts/gpu_check.py

gpu-wheels: install ## wheels for gpu-check on a GPU machine without network: make gpu-wheels [PY=3.12] (into .whl/)
	bash scripts/offline_wheels.sh .whl $(or $(PY),3.12)

demo: install ## the four-way comparison on the phantom dataset (CPU, < 15 min)
	bash scripts/demo.sh $(RUNS)

zoo-demo: install ## U-Net with every recalibration module and library preset on the phantom (CPU, ~10 min)
	bash scripts/zoo_demo.sh $(RUNS)

# The four-way comparison on your own data with the quick-start settings: 3 architectures x 4 SE variants, two jobs
# at a time, then the report. DATA is an nnU-Net raw folder (dataset.json); STUDY_ARGS adds any override, e.g.
# STUDY_ARGS="data=folder data.layout.images=... label_map@data.label_map=mymap" for a plain folder, or seed=0,1,2.
STUDY_NAME ?= study
STUDY_ARGS ?=
# Seeds (or folds, via STUDY_ARGS="data.folds=5 data.fold=0,1,2,3,4") are the runs a verdict needs: with one seed
# the study page says "too few runs" instead of claiming an effect a rerun could undo; STUDY_SEEDS=0,1,2 for three.
STUDY_SEEDS ?= 0
STUDY_OUT = $(RUNS)/$(STUDY_NAME)_study
study: install ## the 3 x 4 comparison on your data, then its study page: make study DATA=<nnU-Net folder> [RUNS=runs] [STUDY_SEEDS=0,1,2] [STUDY_ARGS=...]
	@test -n "$(DATA)" || { echo "usage: make study DATA=/path/to/DatasetXXX_Name [RUNS=runs] [STUDY_SEEDS=0] [STUDY_ARGS=...]"; exit 2; }
	$(VENV)/bin/scseg-train -m experiment=quickstart experiment_name=$(STUDY_NAME) launcher=joblib \
	  model=unet,sdnet,fcdensenet se=none,cse,sse,scse seed=$(STUDY_SEEDS) data=nnunet \
	  "data.layout.root='$(abspath $(DATA))'" "paths.runs_dir=$(RUNS)" $(STUDY_ARGS); status=$$?; \
	$(VENV)/bin/scseg-compare "$(RUNS)/$(STUDY_NAME)" || status=1; \
	$(VENV)/bin/scseg-study collect "$(RUNS)/$(STUDY_NAME)" --csv "$(STUDY_OUT)/per_case.csv.gz" && \
	$(VENV)/bin/scseg-study page --csv "$(STUDY_OUT)/per_case.csv.gz" --page "$(STUDY_OUT).md" \
	  --task "$(STUDY_NAME) ($(notdir $(abspath $(DATA))))" || status=1; exit $$status

# The paper's four-way comparison on real data at the CPU presets, then its results page. Each task's grid
# runs two jobs of one thread each (LAUNCHER=local: one job at a time with all threads; same run folders either way; ~7 %
# faster on 2 cores, see configs/launcher/joblib.yaml); rerunning the same command resumes.
# SEEDS=0,1,2 MODELS=unet for the extra seeds of U-Net. The pages are written only from finished run folders.
SEEDS ?= 0
MODELS ?= unet,sdnet,fcdensenet
LAUNCHER ?= joblib
# Cross-validated presets (paper_chaos_cpu: data.folds=5) train every fold: data.fold=0,...,FOLDS-1.
FOLDS ?= $(if $(filter chaos,$(TASK)),5,)
FOLD_LIST = $(shell seq -s, 0 $$(( $(or $(FOLDS),1) - 1 )))
paper-cpu: install ## train the CPU-preset grid: make paper-cpu TASK=malc|chaos [RUNS=runs] [SEEDS=0] [MODELS=...]
	@case "$(TASK)" in malc|chaos) ;; *) echo "usage: make paper-cpu TASK=malc|chaos [RUNS=runs] [SEEDS=0,1,2]"; exit 2;; esac
	$(VENV)/bin/scseg-train -m experiment=paper_$(TASK)_cpu model=$(MODELS) se=none,cse,sse,scse seed=$(SEEDS) \
	  $(if $(FOLDS),data.fold=$(FOLD_LIST),) launcher=$(LAUNCHER) "paths.runs_dir=$(RUNS)"

# Every study of the results pages (MALC: 5 seeds, scSE max, FC-DenseNet with its capacity control, gate scale;
# CHAOS: 5 folds), in the order that matters when they cannot all finish; rerunning resumes (scripts/paper_studies.sh).
# LAUNCHER as for paper-cpu (e.g. slurm_cpu: one SLURM job per run).
STEPS ?=
paper-studies: install ## all the studies behind docs/results (hours; resumable): make paper-studies RUNS=... [STEPS=...]
	LAUNCHER=$(LAUNCHER) bash scripts/paper_studies.sh "$(RUNS)" $(STEPS)

# The recalibration zoo on MALC (configs/experiment/zoo_malc_cpu.yaml; hours, resumable; after paper-studies).
ZOO_SEEDS ?= 0,1,2
zoo: install ## the module zoo on MALC at the CPU preset: make zoo RUNS=... [STEPS=libraries attention control quicknat paper-presets] [ZOO_SEEDS=0,1,2]
	ZOO_SEEDS='$(ZOO_SEEDS)' bash scripts/zoo_study.sh "$(RUNS)" $(STEPS)

ZOO_CSV = docs/results/zoo_malc_cpu/per_case.csv.gz
ZOO_PAGE = scseg-study page --csv $(ZOO_CSV) --page docs/results/zoo_malc_cpu.md --settings configs/report/zoo_malc.yaml \
  --effects-csv docs/results/zoo_malc_cpu/effects.csv
zoo-results: install ## docs/results/zoo_malc_cpu/per_case.csv.gz and zoo_malc_cpu.md from the zoo runs in RUNS (MERGE=1: add to the CSV)
	@test -d "$(RUNS)/zoo_malc_cpu" || { echo "usage: make zoo-results RUNS=<folder holding zoo_malc_cpu/> [MERGE=1]"; exit 2; }
	$(VENV)/bin/scseg-study collect "$(RUNS)/zoo_malc_cpu" --csv $(ZOO_CSV) $(if $(MERGE),--merge,)
	$(VENV)/bin/$(ZOO_PAGE) --command "$(ZOO_PAGE)"

# Each task: the tidy per-case CSV from its finished run folders (docs/results/<task>_cpu_study/per_case.csv.gz,
# committed), then the page and its forest plot from that CSV alone (configs/report/<task>.yaml holds the analysis
# settings; the page names the command that remakes it from the CSV alone), then the results index's copies of
# its tables (scripts/sync_readme_results.py; the first, subject-level pages are in docs/results/archive/).
# MERGE=1 adds RUNS' runs to the committed CSV
# (runs of earlier sessions, whose folders are gone, stay; a run in both is replaced); without it the CSV holds
# exactly the runs in RUNS.
MERGE ?=
results: install ## docs/results/<task>_cpu_study/per_case.csv.gz and <task>_cpu_study.md from the runs in RUNS (RUNS=..., TASKS=chaos: one task, MERGE=1: add to the CSV)
	@found=0; for task in $(TASKS); do \
	  dir="$(RUNS)/paper_$${task}_cpu"; [ -d "$$dir" ] || { echo "skip $$task: no $$dir"; continue; }; found=1; \
	  $(VENV)/bin/scseg-study collect "$$dir" --csv docs/results/$${task}_cpu_study/per_case.csv.gz \
	    $(if $(MERGE),--merge,) || exit 1; \
	  page="scseg-study page --csv docs/results/$${task}_cpu_study/per_case.csv.gz --page docs/results/$${task}_cpu_study.md"; \
	  page="$$page --settings configs/report/$${task}.yaml --effects-csv docs/results/$${task}_cpu_study/effects.csv"; \
	  $(VENV)/bin/$$page --command "$$page" || exit 1; \
	done; [ $$found = 1 ] || { echo "no paper_*_cpu runs under $(RUNS)"; exit 2; }; \
	$(VENV)/bin/python scripts/sync_readme_results.py

tb: install ## TensorBoard on the runs folder (RUNS=..., PORT=...)
	$(VENV)/bin/tensorboard --logdir $(RUNS) --port $(PORT)

clean: ## remove caches and build leftovers (keeps .venv and runs)
	rm -rf .pytest_cache .ruff_cache .import_linter_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
