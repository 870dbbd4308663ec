# The two commands: `make run` and `make test`. Both build .venv from the lock file when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ketamap-installed
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake --profile workflow/profiles/default --cores $(CORES)
SCENARIO ?=
comma := ,
SNAKE_CONFIG := $(if $(SCENARIO),--config 'demo={scenario: $(SCENARIO)$(comma) registry: resources/demo/registry$(comma) remote: resources/demo/dvc-remote$(comma) release: v1}')

.PHONY: run test setup lint format docs dry-run clean lock

run: $(STAMP)
	$(SNAKEMAKE) $(SNAKE_CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/ruff format --check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests workflow benchmarks
	$(BIN)/ruff check --fix src tests workflow benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

docs: $(STAMP)
	$(BIN)/ketamap datadict --out docs/data_dictionary.md

dry-run: $(STAMP)
	$(SNAKEMAKE) --dry-run $(SNAKE_CONFIG)

# Re-pin every dependency (needs network access to PyPI).
lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf results resources logs .snakemake
