# Two commands set everything up on a fresh machine (Python 3.11 + pip):
#   make repro   install, generate the default SynthCLEF data if data/ is absent, run the whole DVC pipeline
#   make test    install and run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= demo
SEED   ?= 0

.PHONY: install data repro test test-all lint bench clean-build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

data: $(STAMP)
	@if [ ! -d data ]; then \
		echo "data/ is absent: generating the SynthCLEF '$(PRESET)' preset (seed $(SEED))"; \
		$(BIN)/birdclef data synth --preset $(PRESET) --seed $(SEED) --out data; \
	fi

repro: data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src stages tests benchmarks

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean-build:
	rm -rf build
