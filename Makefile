# The two set-up commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing (or when a lock
# file changed) from nothing but python3, and install exactly the versions locked in
# requirements/*.txt (every file hash-pinned): base for `make run`, dev for `make test`,
# bench for `make bench`. `make lock` refreshes the locks and runs the suite on them.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
OUT    ?= demo-output
# no user- or machine-level uv.toml changes what gets installed
export UV_NO_CONFIG := 1

.PHONY: run test lint typecheck unit bench clean lock postgres-server browser slurm .venv .venv-dev .venv-bench

# `make .venv` only builds the environment.
.venv: $(VENV)/.stamp-base
.venv-dev: $(VENV)/.stamp-dev
.venv-bench: $(VENV)/.stamp-bench

# The installer, bootstrapped with pip from its own hash-pinned lock.
$(UV): requirements/uv.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements/uv.txt
	@touch $@

# One environment, the richest lock asked for so far: `uv pip install` of a lock installs
# exactly its pinned versions (up or down) and checks every hash; the project itself goes in
# editable, built by the locked setuptools (no build isolation, so nothing unpinned is fetched).
define install_lock
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r $(1)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	@touch $@
endef

$(VENV)/.stamp-base: requirements/base.txt pyproject.toml $(UV)
	$(call install_lock,requirements/base.txt)

$(VENV)/.stamp-dev: requirements/dev.txt pyproject.toml $(UV)
	$(call install_lock,requirements/dev.txt)

$(VENV)/.stamp-bench: requirements/bench.txt pyproject.toml $(UV)
	$(call install_lock,requirements/bench.txt)

# Refresh every lock to the newest versions pyproject.toml allows, install them, and run the
# whole suite: an upgrade is a deliberate, tested commit of requirements/.
COMPILE = $(UV) pip compile --quiet --generate-hashes --universal --python-version 3.11
lock: $(UV)
	$(COMPILE) --upgrade pyproject.toml requirements/tools.in -o requirements/base.txt
	$(COMPILE) pyproject.toml requirements/tools.in --extra dev \
		-c requirements/base.txt -o requirements/dev.txt
	$(COMPILE) pyproject.toml requirements/tools.in --extra dev --extra bench \
		-c requirements/dev.txt -o requirements/bench.txt
	echo uv | $(COMPILE) - -c requirements/base.txt -o requirements/uv.txt
	$(COMPILE) --no-deps requirements/highspy-1.15.in -o requirements/highspy-1.15.txt
	rm -f $(VENV)/.stamp-*
	$(MAKE) test

# The main job on the embedded defaults.
run: $(VENV)/.stamp-base
	$(BIN)/continuum demo --output $(OUT)

# Lint, types, then every test.
test: $(VENV)/.stamp-dev lint typecheck postgres-server browser slurm unit

# The store tests also run against PostgreSQL: install the server from Debian's
# packages when it is missing and we may (root with apt-get); the tests start and
# stop their own cluster. Without it those tests skip, saying why, except under CI=true,
# where a missing server fails the run (here and in the tests).
postgres-server:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
			|| { echo "could not install PostgreSQL"; [ "$${CI:-}" != true ]; }; \
	else \
		echo "PostgreSQL not installed and not root: its tests will skip"; [ "$${CI:-}" != true ]; \
	fi

# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a
# browser here): install it when missing and we may (root with apt-get). Without it those
# tests skip, saying why; under CI=true they fail instead.
browser:
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then \
		echo "chromium found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| { echo "could not install chromium: the browser tests will skip (fail under CI=true)"; [ "$${CI:-}" != true ]; }; \
	else \
		echo "chromium not installed and not root: the browser tests will skip (fail under CI=true)"; [ "$${CI:-}" != true ]; \
	fi

# The Slurm connector's tests run against a real single-host cluster that the tests start
# and stop (munged, slurmctld, slurmd by PID): install Debian's packages when they are
# missing and we may (root with apt-get). Without them those tests skip, saying why; under
# CI=true they fail with the reason instead.
slurm:
	@if command -v sbatch >/dev/null 2>&1 && { command -v slurmctld || test -x /usr/sbin/slurmctld; } >/dev/null 2>&1; then \
		echo "Slurm found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			slurmctld slurmd slurm-client munge >/dev/null) \
			|| { echo "could not install Slurm: its tests will skip (fail under CI=true)"; [ "$${CI:-}" != true ]; }; \
	else \
		echo "Slurm not installed and not root: its tests will skip (fail under CI=true)"; [ "$${CI:-}" != true ]; \
	fi

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

unit: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest

# Every benchmark (or BENCH="twin placement" for some of them). One BLAS thread:
# on a shared 2-core machine multithreaded OpenBLAS makes the batched figures erratic.
bench: $(VENV)/.stamp-bench
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m benchmarks $(BENCH)

# Mutation testing (mutmut 3; not part of `make test`) of four modules, one after the other:
# MUTATE="checker runstore" picks some. mutmut copies the tree into ./mutants (the tests then
# read ../shared through CONTINUUM_SHARED_DATA); each mutant runs only the tests of pyproject's
# [tool.mutmut] selection that reach the function it changes (which tests reach which function
# is learnt once and kept in ./mutants; `rm -rf mutants` starts afresh). Prints the score per
# module (docs/development.md) and exits 1 when one is below MUTATION_MIN percent.
MUTATE       ?= checker runstore aai buffers
MUTATION_MIN ?= 85
MUTATION_JOBS ?= 2
mutation_glob_checker  := orchestrator.placement.checker.*
mutation_glob_runstore := orchestrator.execution.store.*
mutation_glob_aai      := federation.api.aai.*
mutation_glob_buffers  := datalogistics.buffers.store.*
.PHONY: mutation
mutation: export CONTINUUM_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
mutation: SHELL := /bin/bash
mutation: .SHELLFLAGS := -o pipefail -c
mutation: $(VENV)/.stamp-dev
	@for m in $(MUTATE); do \
		case "$$m" in checker) g='$(mutation_glob_checker)';; runstore) g='$(mutation_glob_runstore)';; \
			aai) g='$(mutation_glob_aai)';; buffers) g='$(mutation_glob_buffers)';; \
			*) echo "MUTATE: unknown module $$m (checker, runstore, aai, buffers)"; exit 2;; esac; \
		echo "== mutmut run $$g"; start=$$(date +%s); \
		$(BIN)/mutmut run --max-children $(MUTATION_JOBS) "$$g" | grep -v '^🎉' || exit 1; \
		echo "== $$m: $$(( $$(date +%s) - start )) s (load average $$(cut -d' ' -f1-3 /proc/loadavg))"; \
	done
	$(BIN)/python .ci/mutation_score.py --min $(MUTATION_MIN) $(MUTATE)

clean:
	rm -rf $(VENV) mutants .mypy_cache .ruff_cache .pytest_cache .hypothesis $(OUT) *.egg-info test-artifacts
