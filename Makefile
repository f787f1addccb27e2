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

# gbstats (GrowthBook's stats engine, the report tests' reference) is installed without its dependencies:
# its metadata caps numpy and pandas below 2 (the project pins newer ones), and the modules the tests use
# need only numpy, scipy and pydantic.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,serve,dev]'
	$(BIN)/python -m pip install --quiet --no-deps gbstats==0.8.0
	touch $(STAMP)

venv: $(STAMP)

# promtool and prometheus (Debian package `prometheus`) for tests/deploy, and chromium for the console's
# browser tests (Playwright drives Debian's build: it cannot download its own); installed when missing and root.
tools:
	@if ! command -v chromium >/dev/null 2>&1; then \
	    if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	    else \
	        echo "tests/service/console need chromium: sudo apt-get install -y chromium" >&2; \
	    fi; \
	fi
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
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) tools
	$(BIN)/pytest

test: lint typecheck unit

run: $(STAMP)
	$(BIN)/apprank run --models $(MODELS) --port $(PORT)

# make demo: `apprank run` in the background on a fresh event database and a copy of the models ($(DEMO_DIR)),
# a simulated A/B test of $(DEMO_USERS) users over $(DEMO_DAYS) days, the report and its charts; the server is
# stopped at the end. After day $(DEMO_RETRAIN_AFTER) the daily loop retrains DeepFM-D on the logged days
# (`apprank retrain`, log in $(DEMO_DIR)/retrain.log) and the service swaps the new version in while the next
# day runs; the per-day table shows which version served each day.
DEMO_DIR ?= var/demo
DEMO_USERS ?= 2000
DEMO_DAYS ?= 7
DEMO_RETRAIN_AFTER ?= 3
DEMO_DATA ?= var/data/synthetic
DEMO_TOKEN ?= demo-admin
# Extra training overrides for the demo's retrain (`--retrain-set key=value`). The retrain fine-tunes at
# warm_lr_factor (0.1) times the serving version's step: at 1e-3 itself the gate refused the candidate.
DEMO_RETRAIN_SET ?=
DEMO_URL = http://127.0.0.1:$(PORT)
READY = $(BIN)/python -c "import httpx, sys; sys.exit(httpx.get('$(DEMO_URL)/readyz', timeout=2).status_code != 200)"

demo: $(STAMP)
	@if $(READY) 2>/dev/null; then echo "something already serves $(DEMO_URL): stop it or use PORT=..." >&2; exit 1; fi
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	if [ -d $(MODELS) ]; then cp -r $(MODELS) $(DEMO_DIR)/models; fi
	@APPRANK_DATABASE_URL=sqlite:///$(DEMO_DIR)/apprank.db APPRANK_EVENT_CLOCK_SKEW_S=$$(( ($(DEMO_DAYS) + 1) * 86400 )) \
	    APPRANK_ADMIN_TOKEN=demo:$(DEMO_TOKEN) \
	    $(BIN)/apprank run --models $(DEMO_DIR)/models --data $(DEMO_DATA) --port $(PORT) & \
	server=$$!; trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	until $(READY) 2>/dev/null; do \
	    kill -0 $$server 2>/dev/null || { echo "apprank run stopped before the service was ready" >&2; exit 1; }; \
	    sleep 2; \
	done; \
	$(BIN)/apprank simulate --url $(DEMO_URL) --world $(DEMO_DATA) --users $(DEMO_USERS) --days $(DEMO_DAYS) \
	    --retrain-after $(DEMO_RETRAIN_AFTER) --models $(DEMO_DIR)/models --db sqlite:///$(DEMO_DIR)/apprank.db \
	    --token $(DEMO_TOKEN) $(foreach item,$(DEMO_RETRAIN_SET),--retrain-set $(item)) \
	    --png $(DEMO_DIR)/daily_lift.png --lists-png $(DEMO_DIR)/list_metrics.png --out $(DEMO_DIR)/figures.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
