# The two entry points of the README. Both create the virtualenv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `serve` installs what serving needs; `test` (and bench, chaos) also the test tools.
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve

.PHONY: serve test bench chaos wheel clean lint

$(SERVE_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/snapledger serve $(ARGS)

# Whole test files go to one of two processes, so a module's shared server
# starts once. PYTEST_JOBS=0 runs everything in one process. Files go out in
# collection order, `slow` ones first (tests/conftest.py), not xdist's order
# by test count, which sent the longest single-test files last.
PYTEST_JOBS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python ops/bench/run.py $(ARGS)

chaos: $(STAMP)
	$(BIN)/python ops/chaos.py $(ARGS)

# The wheel an operator installs (README "Installing it on a server").
wheel: $(SERVE_STAMP)
	$(BIN)/pip wheel --quiet --no-deps -w dist .

clean:
	rm -rf $(VENV) .pytest_cache dist build

# ruff and mypy as CI runs them (issue 15).
lint: $(STAMP)
	$(BIN)/python ops/static_checks.py
