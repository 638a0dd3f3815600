# The two set-up commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing (or when
# pyproject.toml changed) from nothing but python3; nothing is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= demo-output

.PHONY: run test lint typecheck unit bench clean postgres-server .venv .venv-dev .venv-bench

# `make .venv` only builds the environment.
.venv: $(VENV)/.stamp-base
.venv-dev: $(VENV)/.stamp-dev

$(VENV)/.stamp-base: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(PIP) install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

.venv-bench: $(VENV)/.stamp-bench
$(VENV)/.stamp-bench: $(VENV)/.stamp-dev
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

# The main job on the embedded defaults.
run: $(VENV)/.stamp-base
	$(BIN)/continuum demo --output $(OUT)

# Lint, types, then every test.
test: $(VENV)/.stamp-dev lint typecheck postgres-server unit

# The store tests also run against PostgreSQL: install the server from Debian's
# packages when it is missing and we may (root with apt-get); the tests start and
# stop their own cluster. Best effort: without it those tests skip, saying why.
postgres-server:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "PostgreSQL server binaries found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
			|| echo "could not install PostgreSQL: its tests will skip"; \
	else \
		echo "PostgreSQL not installed and not root: its tests will skip"; \
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

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(OUT) *.egg-info
