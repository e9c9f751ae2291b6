# The two set-up commands of the README. Both create .venv/ on first use.
#   make quickstart   install, then run studies/quickstart.yaml (offline, ~2 min on 2 cores)
#   make test         install with test extras, lint (ruff) and type-check (mypy), start the
#                     local PostgreSQL if it is down, then run the whole test suite, in two
#                     processes (pytest-xdist)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test test-fast lint install clean

quickstart: $(VENV)/.installed
	$(BIN)/sweep run studies/quickstart.yaml

test: lint $(VENV)/.installed-test
	-scripts/start-postgres
	$(BIN)/pytest -n 2 --durations=15

test-fast: lint $(VENV)/.installed-test
	$(BIN)/pytest -n 2 -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check sweep tests benchmarks scripts
	$(BIN)/mypy

install: $(VENV)/.installed

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) sweep.db mlflow.db mlruns mlartifacts
