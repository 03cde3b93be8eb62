# slconvert: every target creates .venv and installs what it needs on a fresh machine.
# Variables (override on the command line, e.g. `make test PYTHON=python3.12`):
#   PYTHON   interpreter used to create the virtual environment            (default: python3)
#   VENV     virtual environment folder                                    (default: .venv)
#   TORCH    torch requirement installed first; the default is the CPU wheel used in CI.
#            On a GPU machine use e.g. TORCH=torch (a CUDA build).           (default: torch==2.13.0)
#   PYTEST_ARGS  extra arguments for pytest                                 (default: none)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.slconvert-installed

.DEFAULT_GOAL := help
.PHONY: help install test lint demo bench-reference gpu-test bench clean

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

demo: $(STAMP) ## the main job end to end on the embedded tiny default
	$(BIN)/python -m slconvert.demo --out demo-output

bench-reference: $(STAMP) ## time the PyTorch reference on this CPU (16K tokens, released setting)
	$(BIN)/python benchmarks/reference_cpu.py --out reference-cpu.json

clean: ## remove build artefacts and outputs (keeps .venv)
	rm -rf build dist *.egg-info demo-output bench-output reference-cpu.json
