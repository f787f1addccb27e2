# apprank: two commands do all the set-up on a fresh machine.
#   make run   creates .venv, trains LR and DeepFM-D on synthetic data if no bundles exist, serves on :8000
#   make test  creates .venv and runs every test (ruff and mypy --strict included)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models
PORT ?= 8000

.PHONY: venv tools test lint typecheck unit run demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,serve,dev]'
	touch $(STAMP)

venv: $(STAMP)

# promtool and prometheus (Debian package `prometheus`) for tests/deploy; installed when missing and root.
tools:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
	    if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	    else \
	        echo "tests/deploy need promtool and prometheus: sudo apt-get install -y prometheus" >&2; \
	    fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) tools
	$(BIN)/pytest

test: lint typecheck unit

run: $(STAMP)
	$(BIN)/apprank run --models $(MODELS) --port $(PORT)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
