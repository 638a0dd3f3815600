# The two set-up commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing (or when
# pyproject.toml changed) from nothing but python3; nothing is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= demo-output

.PHONY: run test lint typecheck unit bench clean .venv .venv-dev .venv-bench

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
test: $(VENV)/.stamp-dev lint typecheck unit

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

unit: $(VENV)/.stamp-dev
	$(BIN)/python -m pytest

# Every benchmark (or BENCH="twin placement" for some of them).
bench: $(VENV)/.stamp-bench
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(OUT) *.egg-info
