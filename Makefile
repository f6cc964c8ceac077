# One virtual environment, pinned by constraints.txt to the versions tested here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LOSSY_MEMORY_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: install test test-all bench compression artifacts transfer-generators clean

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

transfer-generators:  # the DiscreteVAEs the lifelong experiments' recollection memories start from (outputs/artifacts/transfer/)
	for c in 46 298; do $(BIN)/python -m lossy_memory.train +experiment=transfer_generator data=omniglot_small model.latent.c=$$c model.hidden=48 || exit 1; done  # split MNIST: budget 10 (c=46), 50 and 200 (c=298)
	for c in 46 298; do $(BIN)/python -m lossy_memory.train +experiment=transfer_generator data=mnist model.latent.c=$$c model.hidden=32 trainer.max_epochs=10 || exit 1; done  # the Omniglot subset, budgets 10 / 50

clean:
	rm -rf outputs/* .pytest_cache
