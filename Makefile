# slconvert: every target creates .venv and installs what it needs on a fresh machine.
# Variables (override on the command line, e.g. `make test PYTHON=python3.12`):
#   PYTHON   interpreter used to create the virtual environment            (default: python3)
#   VENV     virtual environment folder                                    (default: .venv)
#   TORCH    torch requirement installed first; the default is the CPU wheel used in CI.
#            On a GPU machine use e.g. TORCH=torch (a CUDA build).           (default: torch==2.13.0)
#   PYTEST_ARGS  extra arguments for pytest                                 (default: none)
#   DEMO_OUT     folder of the demo's stages and results                     (default: demo-output)
#   DEMO_ARCH    architecture of the demo's tiny model                       (default: nemotron_h)
#   DEMO_SETTINGS  Superlinear settings of the demo conversion (W = 15)
#   DEMO_LENGTHS   NIAH prompt lengths of the demo (>= 8 W)                  (default: 256,512)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_OUT ?= demo-output
DEMO_ARCH ?= nemotron_h
DEMO_SETTINGS ?= --sw-index 3 --search-power 0.5 --span-power 0.5 --backward-factor 2 --forward-factor 1
DEMO_LENGTHS ?= 256,512
BIN := $(VENV)/bin
STAMP := $(VENV)/.slconvert-installed

.DEFAULT_GOAL := help
.PHONY: help install test lint demo bench-reference gpu-check train-gpu-check clean

help: ## list the targets and variables
	@echo "slconvert make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-18s %s\n", $$1, $$2}'
	@echo "variables: PYTHON=$(PYTHON) VENV=$(VENV) TORCH=$(TORCH) PYTEST_ARGS=$(PYTEST_ARGS)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create the virtual environment and install slconvert with its dev tools

test: $(STAMP) ## run the test suite (GPU tests are skipped without CUDA)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff over the sources and tests
	$(BIN)/ruff check slconvert kernels tests benchmarks

demo: $(STAMP) ## build a tiny hybrid model, inspect, convert, router warm-up, NIAH source vs converted
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(BIN)/python -I -c "from slconvert.tiny import build_tiny_model; build_tiny_model('$(DEMO_ARCH)', '$(DEMO_OUT)/source')"
	$(BIN)/slconvert inspect $(DEMO_OUT)/source $(DEMO_SETTINGS)
	$(BIN)/slconvert convert $(DEMO_OUT)/source $(DEMO_OUT)/converted $(DEMO_SETTINGS) --quiet
	$(BIN)/slconvert train recipes/router-warmup.yaml --model $(DEMO_OUT)/converted --output $(DEMO_OUT)/warmup \
	    --quiet max_steps=20 seq_len=256
	$(BIN)/slconvert eval $(DEMO_OUT)/warmup --niah --lengths $(DEMO_LENGTHS) --depths 0,25,50,75,100 --samples 2 \
	    --compare $(DEMO_OUT)/source --out $(DEMO_OUT)/eval
	$(BIN)/python -I scripts/demo_summary.py $(DEMO_OUT)

bench-reference: $(STAMP) ## time the PyTorch reference on this CPU (16K tokens, released setting)
	$(BIN)/python benchmarks/reference_cpu.py --out reference-cpu.json

gpu-check: ## on a CUDA machine: Triton GPU tests + kernel benchmark (scripts/gpu_check.sh; results in $$OUT)
	bash scripts/gpu_check.sh all

train-gpu-check: ## on a CUDA machine: router warm-up + curriculum at 32K, tokens/s and peak memory
	bash scripts/train_gpu_check.sh

clean: ## remove build artefacts and outputs (keeps .venv)
	rm -rf build dist *.egg-info demo-output bench-output reference-cpu.json
