# make run   - create .venv if missing, then run the quickstart sweep on the embedded model
# make test  - create .venv if missing, then lint (ruff, mypy) and run the test suite
# make lint  - ruff check, ruff format --check, mypy sensdir
# make wheel-check - build the wheel, install it with its dependencies in a fresh venv, run a job from elsewhere
# make bench - sensdir's engine against the papers' computation (writes bench.json)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch comes first, so that the package's torch range is already satisfied and pip never
# pulls a second build. On the CPU-only dev machines 2.13.0 is a CPU wheel on local disk.
# Elsewhere choose the build: TORCH_INDEX=https://download.pytorch.org/whl/cpu (CPU) or
# .../whl/cu128 (CUDA), or install torch into .venv yourself before `make`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.sensdir-installed
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: venv run lint test test-fast test-slurm wheel-check bench bench-reduce clean-results

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  echo "sensdir: installing $(TORCH_SPEC) $(if $(TORCH_INDEX),from $(TORCH_INDEX))"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m sensdir.run -m experiment=quickstart direction=real,random,synth_struct
	@echo "sensdir: shards of this sweep are under results/quickstart/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not slurm"

test-slurm: $(STAMP)
	$(PY) -m pytest -m slurm

wheel-check:
	TORCH_SPEC="$(TORCH_SPEC)" TORCH_INDEX="$(TORCH_INDEX)" PYTHON=$(PYTHON) launch/wheel_check.sh

bench: $(STAMP)
	$(PY) -m sensdir.bench --out bench.json

bench-reduce: $(STAMP)
	$(PY) bench/reduce_bench.py

clean-results:
	rm -rf results
