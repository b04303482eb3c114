# Entry points a user relies on. `make test` works on a fresh clone (it runs setup first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
config ?= smoke
ARGS ?=

.PHONY: setup experiment test test-fast bench calibrate lint format sim clean

$(BIN)/harness: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(BIN)/harness

setup: $(BIN)/harness

## Run configs/experiment/$(config).yaml on the embedded simulators (or the targets it names).
experiment: setup
	$(BIN)/harness experiment experiment=$(config) $(ARGS)

## Full suite, slow end-to-end runs included (what CI runs).
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 $(PYTEST_ARGS)

## Everything but the slow end-to-end runs.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

## Performance benchmarks: print their figures (simulator, clients, analysis).
bench: setup
	$(BIN)/python -m bench

## Canary judge calibration (not in CI): GO / NO_GO rates on synthetic runs, then
## configs/experiment/aa_check.yaml and regression_check.yaml end to end, $(seeds) runs each
## with different seeds (about 2.5 minutes per run). make calibrate seeds=5
seeds ?= 3
calibrate: setup
	$(BIN)/python -m bench.calibrate_judge --seeds $(seeds)

lint: setup
	$(BIN)/ruff check harness tests bench
	$(BIN)/ruff format --check harness tests bench

format: setup
	$(BIN)/ruff format harness tests bench
	$(BIN)/ruff check --fix harness tests bench

## Start one simulator in the foreground: make sim profile=vllm port=8000
profile ?= vllm
port ?= 8000
sim: setup
	$(BIN)/harness sim --profile $(profile) --port $(port)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
