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
SNAKE_CONFIG := $(if $(SCENARIO),--config scenario=$(SCENARIO))
# Where `make run` executes its jobs: local (this machine) or slurm (every job submitted with sbatch
# to the cluster this machine submits to; see the README's SLURM section).
EXECUTOR ?= local
# SLURM only: how job states are polled (auto: sacct when job accounting answers, else squeue),
# and the account and partition (empty: the cluster's defaults).
SLURM_STATUS ?= auto
SLURM_ACCOUNT ?=
SLURM_PARTITION ?=
# SLURM only: how many short per-session jobs one SLURM job runs (empty: 8; 1: one SLURM job each).
SLURM_GROUP_SESSIONS ?=
SLURM_RUN := $(BIN)/python -m ketamap.slurm --status-command $(SLURM_STATUS) \
	$(if $(SLURM_ACCOUNT),--account '$(SLURM_ACCOUNT)') $(if $(SLURM_PARTITION),--partition '$(SLURM_PARTITION)') \
	$(if $(SLURM_GROUP_SESSIONS),--group-sessions '$(SLURM_GROUP_SESSIONS)') --
# The run guard (ketamap.runguard) holds a lock for the run's lifetime: a Snakemake lock left by a
# killed run is cleared by the next `make run`, a live run in the same folder is refused.
GUARD := $(BIN)/python -m ketamap.runguard --
ifeq ($(EXECUTOR),local)
RUN := $(GUARD) $(SNAKEMAKE)
else ifeq ($(EXECUTOR),slurm)
RUN := $(GUARD) $(SLURM_RUN)
else
$(error EXECUTOR=$(EXECUTOR): expected local or slurm)
endif

.PHONY: run report test setup lint format docs dry-run repro clean lock

# A clone whose results came from `dvc pull` is up to date when dvc.lock is there and `dvc status`
# is clean: Snakemake alone could not tell (the fetched site data and its job records are not
# shared), so `make run` says so and runs nothing. A scenario override always runs Snakemake.
DVC_UP_TO_DATE := test -z "$(SCENARIO)" && test -f dvc.lock && $(BIN)/dvc status --quiet

# `exec`: the recipe's shell becomes Snakemake or the SLURM launcher, so a SIGTERM that make passes
# on to its recipe (e.g. `kill <pid of make>`) reaches it instead of orphaning it.
run: $(STAMP)
	@if $(DVC_UP_TO_DATE); then \
		echo "make run: results match dvc.lock and dvc status is clean; nothing to run"; \
	else \
		echo "$(RUN) $(SNAKE_CONFIG)"; exec $(RUN) $(SNAKE_CONFIG); \
	fi

# The Snakemake report of the finished run (after `make run`, same profile and SCENARIO, so the same
# DAG): every figure and pooled result with its caption, and the run's n and verdict read from the
# results, in one self-contained HTML file.
REPORT := results/report.html
report: $(STAMP)
	$(SNAKEMAKE) --report $(REPORT) $(SNAKE_CONFIG)

# The DVC pipeline (dvc.yaml): runs the Snakemake targets of the stages whose code, params or data changed.
repro: $(STAMP)
	$(BIN)/dvc repro

test: lint
	$(BIN)/python -m pytest

setup: $(STAMP)

# uv (pinned with hashes in requirements-uv.lock) installs the locked wheels: the same files, hash-
# checked, in seconds where pip takes minutes. uv compiles no bytecode, so compileall does, once
# (about 26 s; 5 s when it is up to date): where PYTHONDONTWRITEBYTECODE is set (many container
# images) Python never writes the .pyc files itself, and every job compiled pandas & co. again at
# import (importing pandas: 1.5 s instead of 0.45 s).
$(STAMP): requirements.lock requirements-uv.lock pyproject.toml packages/snakemake-storage-plugin-dvc/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-uv.lock
	$(BIN)/uv pip install --quiet --system-certs --python $(BIN)/python --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e packages/snakemake-storage-plugin-dvc
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow packages
	$(BIN)/ruff format --check src tests workflow packages
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests workflow
	$(BIN)/ruff check --fix src tests workflow
	$(BIN)/snakefmt Snakefile workflow/rules

docs: $(STAMP)
	$(BIN)/ketamap datadict --out docs/data_dictionary.md

dry-run: $(STAMP)
	@if $(DVC_UP_TO_DATE); then \
		echo "make dry-run: results match dvc.lock and dvc status is clean; nothing to run"; \
	else \
		$(SNAKEMAKE) --dry-run $(SNAKE_CONFIG); \
	fi

# Re-pin every dependency (needs network access to PyPI).
lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --system-certs pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
	{ sed -n 1p requirements-uv.lock; echo "uv==$$($(BIN)/uv --version | cut -d' ' -f2)" | \
		$(BIN)/uv pip compile --system-certs - --generate-hashes --python-version 3.11 --no-header -q; } > requirements-uv.lock.new
	mv requirements-uv.lock.new requirements-uv.lock

clean:
	rm -rf results resources logs .snakemake
