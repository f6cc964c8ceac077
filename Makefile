# One virtual environment, pinned by constraints.txt to the versions tested here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LOSSY_MEMORY_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: install test test-all bench compression clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'

test:
	$(BIN)/python -m pytest -q

test-all:
	$(BIN)/python -m pytest -q -m ''

bench:
	$(BIN)/python -m benchmarks

compression:  # the README's main job, on the datasets LOSSY_MEMORY_DATA_DIR points at
	$(BIN)/python -m lossy_memory.train +experiment=mnist_compression model.latent.c=38 model.latent.l=2

clean:
	rm -rf outputs/* .pytest_cache
