# One virtual environment, pinned by constraints.txt to the versions tested here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LOSSY_MEMORY_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: install test test-all bench compression artifacts clean

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

artifacts:  # the checkpoints mnist_distill and equal_bits read from outputs/artifacts/: the teacher, generators at 10x, 50x, 100x total storage
	$(BIN)/python -m lossy_memory.train +experiment=mnist_teacher
	$(BIN)/python -m lossy_memory.train +experiment=mnist_generator model.latent.c=168 model.hidden=40
	$(BIN)/python -m lossy_memory.train +experiment=mnist_generator model.latent.c=62 model.hidden=13
	$(BIN)/python -m lossy_memory.train +experiment=mnist_generator model.latent.c=38 model.hidden=6

clean:
	rm -rf outputs/* .pytest_cache
