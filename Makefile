# The README's commands. Each one creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# MNIST for the main job: tfds by default; the IDX files in ../shared when they are there.
MNIST_DIR ?= $(wildcard ../shared/data/mnist)
EPOCHS ?= 30

.PHONY: train bench test lint setup

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m addernet_jax.ops.sad_kernel  # builds the int8 adder CPU kernel, or says why not
	touch $(BIN)/activate

setup: $(BIN)/activate

train: setup
	ADDERNET_MNIST_DIR=$(abspath $(MNIST_DIR)) $(BIN)/python train.py \
		--config configs/mnist_lenet5.py --workdir runs/mnist_lenet5 --config.num_epochs=$(EPOCHS)

bench: setup
	$(BIN)/python benchmarks/adder_layer.py
	$(BIN)/python benchmarks/training_step.py

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check addernet_jax tests benchmarks configs *.py
