# slconvert: every target creates .venv and installs what it needs on a fresh machine.
# Variables (override on the command line, e.g. `make test PYTHON=python3.12`):
#   PYTHON   interpreter used to create the virtual environment            (default: python3)
#   VENV     virtual environment folder                                    (default: .venv)
#   TORCH    torch requirement installed first; the default is the CPU wheel used in CI.
#            On a GPU machine use e.g. TORCH=torch (a CUDA build). Installed only into a venv without torch:
#            remove $(VENV) to change the build of an existing one.          (default: torch==2.13.0)
#   PYTEST_ARGS  extra arguments for pytest                                 (default: none)
#   TEST_PROCESSES  pytest processes of `make test` (pytest-xdist, a test file per process at a time; 0: the
#                   tests in one process)                                 (default: auto, one per core)
#   DEMO_OUT     folder of the demo's stages and results                     (default: demo-output)
#   DEMO_MODEL   source checkpoint of the demo        (default: the shipped teacher slconvert/assets/tiny-teacher)
#   DEMO_SETTINGS  Superlinear settings of the demo conversion: every attention layer, the balanced exponents
#                  p = rho = 0.5 (W = 15, 1/34 of the longest prompt) and the span-mean search key
#   DEMO_SHIPPED   the same conversion trained on a GPU by recipes/conversion-study.yaml, evaluated beside the
#                  CPU run                                      (default: slconvert/assets/tiny-converted)
#   DEMO_LENGTHS   NIAH prompt lengths of the demo (>= 16 W)                 (default: 256,512)
#   DEMO_DEPTHS    NIAH needle depths in percent                             (default: 0,25,50,75,100)
#   DEMO_SAMPLES   NIAH prompts per (length, depth) cell                     (default: 4)
#   DEMO_CURRICULUM  retrieval fine-tuning overrides (recipes/demo-curriculum.yaml)   (default: none)
# Pipeline on any checkpoint (`make pipeline MODEL=... OUT=...`; each stage also runs alone, e.g. `make convert`):
#   MODEL        source checkpoint (local directory)                         (required)
#   OUT          folder of the pipeline's stages: inspect.txt, converted/, warmup/, curriculum/, eval/, summary.json
#   SETTINGS     Superlinear settings of the conversion (default: the released setting with the span-mean search
#                key, which the conversion study found a conversion needs to retrieve again; README "Conversion study")
#   CONVERT_ARGS extra `slconvert convert` arguments, e.g. --keep-dense -1 --dtype bfloat16   (default: none)
#   WARMUP       1: run the router warm-up stage before the curriculum (default: 0; the conversion study found no
#                gain from it, README "Conversion study")
#   WARMUP_RECIPE, WARMUP_ARGS          router warm-up recipe and KEY=VALUE overrides (default: recipes/router-warmup.yaml)
#   CURRICULUM_RECIPE, CURRICULUM_ARGS  curriculum recipe and overrides          (default: recipes/niah-curriculum.yaml)
#   EVAL_ARGS    `slconvert eval` arguments of the evaluate stage   (default: NIAH at 4K-32K, 11 depths, 4 samples)
#   LAUNCH       how training runs: one process by default; e.g.
#                LAUNCH="$(VENV)/bin/accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 -m slconvert.cli"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
TEST_PROCESSES ?= auto
DEMO_OUT ?= demo-output
DEMO_MODEL ?= slconvert/assets/tiny-teacher
DEMO_SETTINGS ?= --sw-index 3 --search-power 0.5 --span-power 0.5 --backward-factor 2 --forward-factor 1 \
                 --search-key span_mean
DEMO_SHIPPED ?= slconvert/assets/tiny-converted
DEMO_LENGTHS ?= 256,512
DEMO_DEPTHS ?= 0,25,50,75,100
DEMO_SAMPLES ?= 4
DEMO_CURRICULUM ?=
STUDY_OUT ?= study-output
STUDY_ARGS ?=
TEACHER_ARGS ?=
MODEL ?=
OUT ?= pipeline-output
SETTINGS ?= --search-key span_mean
CONVERT_ARGS ?=
WARMUP ?= 0
WARMUP_RECIPE ?= recipes/router-warmup.yaml
WARMUP_ARGS ?=
CURRICULUM_RECIPE ?= recipes/niah-curriculum.yaml
CURRICULUM_ARGS ?=
EVAL_ARGS ?= --niah --lengths 4096,8192,16384,32768 --samples 4
LAUNCH ?= $(BIN)/slconvert
BIN := $(VENV)/bin
STAMP := $(VENV)/.slconvert-installed

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint demo study study-teacher study-large bench-reference gpu-check train-gpu-check pipeline-gpu-check clean \
        pipeline inspect convert warmup curriculum evaluate summary _need-model

help: ## list the targets and variables
	@echo "slconvert make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-18s %s\n", $$1, $$2}'
	@echo "variables: PYTHON=$(PYTHON) VENV=$(VENV) TORCH=$(TORCH) PYTEST_ARGS=$(PYTEST_ARGS)"
	@echo "demo:      DEMO_OUT=$(DEMO_OUT) DEMO_MODEL=$(DEMO_MODEL) DEMO_LENGTHS=$(DEMO_LENGTHS)"
	@echo "           DEMO_DEPTHS=$(DEMO_DEPTHS) DEMO_SAMPLES=$(DEMO_SAMPLES)"
	@echo "           DEMO_SETTINGS=$(DEMO_SETTINGS)"
	@echo "           DEMO_SHIPPED=$(DEMO_SHIPPED) DEMO_CURRICULUM=$(DEMO_CURRICULUM)"
	@echo "pipeline:  MODEL=$(MODEL) OUT=$(OUT) SETTINGS=$(SETTINGS) CONVERT_ARGS=$(CONVERT_ARGS)"
	@echo "           WARMUP=$(WARMUP) WARMUP_RECIPE=$(WARMUP_RECIPE) WARMUP_ARGS=$(WARMUP_ARGS)"
	@echo "           CURRICULUM_RECIPE=$(CURRICULUM_RECIPE) CURRICULUM_ARGS=$(CURRICULUM_ARGS)"
	@echo "           EVAL_ARGS=$(EVAL_ARGS)"
	@echo "           LAUNCH=$(LAUNCH)"
	@echo "study:     STUDY_OUT=$(STUDY_OUT) STUDY_ARGS=$(STUDY_ARGS) TEACHER_ARGS=$(TEACHER_ARGS)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create the virtual environment and install slconvert with its dev tools

test: $(STAMP) ## run the test suite on every core (GPU tests are skipped without CUDA; `slow` tests run with make test-slow)
	$(BIN)/pytest -q -m "not slow" -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

test-slow: $(STAMP) ## the slow CPU tests (RULER's tasks on the shipped teacher, the conversion study's jobs, DDP warm-up)
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP) ## ruff over the sources and tests
	$(BIN)/ruff check slconvert kernels tests benchmarks scripts

demo: $(STAMP) ## shipped tiny teacher -> convert (p = 0.5, W = 15) -> fine-tuning -> NIAH beside the source and the shipped GPU run
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	cp -r $(DEMO_MODEL) $(DEMO_OUT)/source
	$(BIN)/slconvert inspect $(DEMO_OUT)/source $(DEMO_SETTINGS)
	$(BIN)/slconvert convert $(DEMO_OUT)/source $(DEMO_OUT)/converted $(DEMO_SETTINGS) --quiet
	$(BIN)/slconvert eval $(DEMO_OUT)/converted --niah --niah-style slconvert --lengths $(DEMO_LENGTHS) --depths $(DEMO_DEPTHS) \
	    --samples $(DEMO_SAMPLES) --out $(DEMO_OUT)/eval-converted > $(DEMO_OUT)/eval-converted.log
	$(BIN)/slconvert train recipes/demo-curriculum.yaml --model $(DEMO_OUT)/converted --output $(DEMO_OUT)/curriculum \
	    --quiet $(DEMO_CURRICULUM)
	$(BIN)/slconvert eval $(DEMO_OUT)/curriculum --niah --niah-style slconvert --lengths $(DEMO_LENGTHS) --depths $(DEMO_DEPTHS) \
	    --samples $(DEMO_SAMPLES) --compare $(DEMO_OUT)/source --out $(DEMO_OUT)/eval
	$(BIN)/slconvert eval $(DEMO_SHIPPED) --niah --niah-style slconvert --lengths $(DEMO_LENGTHS) --depths $(DEMO_DEPTHS) \
	    --samples $(DEMO_SAMPLES) --out $(DEMO_OUT)/eval-shipped > $(DEMO_OUT)/eval-shipped.log
	$(BIN)/python -I scripts/demo_summary.py $(DEMO_OUT)

study: $(STAMP) ## on a CUDA machine: the conversion study (scripts/conversion_study.py; STUDY_OUT, STUDY_ARGS)
	$(BIN)/python scripts/conversion_study.py run --out $(STUDY_OUT) $(STUDY_ARGS)

study-teacher: $(STAMP) ## on a CUDA machine: train the larger study teacher dense to 8K (STUDY_OUT/teacher)
	$(BIN)/python scripts/conversion_study.py teacher --out $(STUDY_OUT)/teacher $(TEACHER_ARGS)

# study-large's defaults are run 13's staged setting (README "Conversion study"), the one that reached the teacher
# at 2K-16K; STUDY_ARGS="--shapes balanced,released --keys anchor,span_mean --presets attention,mixers,all" widens it.
study-large: study-teacher ## on a CUDA machine: the conversion study on the larger teacher at 2K-16K (run 13's setting)
	$(BIN)/python scripts/conversion_study.py run --out $(STUDY_OUT)/large --teacher $(STUDY_OUT)/teacher/model \
	    --lengths 2048,4096,8192,16384 --seq-len 4096 --batch-size 8 --shapes balanced --keys span_mean \
	    --presets mixers --steps 2700 --evals 675,1350,2025,2700 --no-untrained \
	    --train "lm_average=sample;data.niah_tasks=[single, multikey, multivalue, multivalue, multivalue, multivalue];curriculum=[{seq_len: 4096, steps: 2025}, {seq_len: 16384, steps: 675, batch_size: 2}]" \
	    $(STUDY_ARGS)

# ----- pipeline on any checkpoint: each stage reads the previous stage's folder under $(OUT) -----
pipeline: $(STAMP) ## inspect, convert, [router warm-up with WARMUP=1], curriculum, evaluate, summary (MODEL=... OUT=...)
	$(MAKE) --no-print-directory inspect convert $(if $(filter 1,$(WARMUP)),warmup) curriculum evaluate summary \
	    MODEL="$(MODEL)" OUT="$(OUT)"

_need-model:
	@test -n "$(MODEL)" || { echo "error: set MODEL=path/to/checkpoint (e.g. make pipeline MODEL=ckpt OUT=run)"; exit 2; }

inspect: $(STAMP) _need-model ## pipeline stage: what would be converted, memory and settings (OUT/inspect.txt)
	mkdir -p $(OUT)
	$(BIN)/slconvert inspect $(MODEL) $(SETTINGS) > $(OUT)/inspect.txt || { rm -f $(OUT)/inspect.txt; exit 2; }
	cat $(OUT)/inspect.txt

convert: $(STAMP) _need-model ## pipeline stage: MODEL -> OUT/converted
	mkdir -p $(OUT)
	$(BIN)/slconvert convert $(MODEL) $(OUT)/converted $(SETTINGS) $(CONVERT_ARGS) --force

# PYTHONSAFEPATH=1: a LAUNCH such as `accelerate launch -m slconvert.cli` would otherwise put this directory on
# sys.path, where kernels/ shadows the Hugging Face `kernels` package that transformers probes for.
warmup: $(STAMP) ## pipeline stage: router warm-up OUT/converted -> OUT/warmup (resumes an interrupted run)
	PYTHONSAFEPATH=1 $(LAUNCH) train $(WARMUP_RECIPE) --model $(OUT)/converted --output $(OUT)/warmup \
	    $(if $(wildcard $(OUT)/warmup/checkpoints/step-*),--resume) $(WARMUP_ARGS)

# The curriculum starts from OUT/warmup when the warm-up stage ran, else from OUT/converted.
curriculum: $(STAMP) ## pipeline stage: length curriculum OUT/warmup or OUT/converted -> OUT/curriculum (resumes too)
	PYTHONSAFEPATH=1 $(LAUNCH) train $(CURRICULUM_RECIPE) \
	    --model $(if $(wildcard $(OUT)/warmup/config.json),$(OUT)/warmup,$(OUT)/converted) --output $(OUT)/curriculum \
	    $(if $(wildcard $(OUT)/curriculum/checkpoints/step-*),--resume) $(CURRICULUM_ARGS)

evaluate: $(STAMP) _need-model ## pipeline stage: OUT/curriculum vs MODEL on the same inputs -> OUT/eval
	$(BIN)/slconvert eval $(OUT)/curriculum $(EVAL_ARGS) --compare $(MODEL) --out $(OUT)/eval --force

summary: $(STAMP) ## pipeline stage: OUT/summary.json (accuracies, settings, training summaries)
	$(BIN)/python -I scripts/demo_summary.py $(OUT)

bench-reference: $(STAMP) ## time the PyTorch reference on this CPU (16K tokens, released setting)
	$(BIN)/python benchmarks/reference_cpu.py --out reference-cpu.json

gpu-check: ## on a CUDA machine: Triton GPU tests + kernel benchmark (scripts/gpu_check.sh; results in OUT, default gpu-out)
	bash scripts/gpu_check.sh all

train-gpu-check: ## on a CUDA machine: router warm-up + curriculum at 32K, tokens/s and peak memory
	bash scripts/train_gpu_check.sh

pipeline-gpu-check: ## on a CUDA machine: every pipeline stage on a Nemotron-3-Nano-shaped random checkpoint
	bash scripts/pipeline_gpu_check.sh

clean: ## remove build artefacts and outputs (keeps .venv)
	rm -rf build dist *.egg-info demo-output pipeline-output pipeline-gpu-check bench-output reference-cpu.json study-output
