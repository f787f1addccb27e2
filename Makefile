# apprank: two commands do all the set-up on a fresh machine.
#   make run   creates .venv, trains LR and DeepFM-D on synthetic data if no bundles exist, serves on :8000
#   make test  creates .venv and runs every test (ruff and mypy --strict included)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models
PORT ?= 8000

.PHONY: venv test lint typecheck unit run demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,serve,dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

run: $(STAMP)
	$(BIN)/apprank run --models $(MODELS) --port $(PORT)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
