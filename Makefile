# The README's commands. Each one creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# MNIST for the main job: tfds by default; the IDX files in ../shared when they are there.
MNIST_DIR ?= $(wildcard ../shared/data/mnist)
EPOCHS ?= 30

.PHONY: train bench test lint setup figures

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

# The README's pictures, regenerated from the real MNIST (LeNet++ adder and cnn: several minutes).
figures: setup
	ADDERNET_MNIST_DIR=$(abspath $(MNIST_DIR)) $(BIN)/python train.py \
		--config configs/mnist_lenetpp.py:adder --workdir runs/mnist_lenetpp_adder
	ADDERNET_MNIST_DIR=$(abspath $(MNIST_DIR)) $(BIN)/python train.py \
		--config configs/mnist_lenetpp.py:cnn --workdir runs/mnist_lenetpp_cnn
	$(BIN)/python plot_features.py --workdir runs/mnist_lenetpp_adder \
		--workdir runs/mnist_lenetpp_cnn --local-path $(abspath $(MNIST_DIR)) \
		--output docs/features.png
	$(BIN)/python plot_curves.py --workdir runs/mnist_lenetpp_adder --label adder \
		--workdir runs/mnist_lenetpp_cnn --label cnn --output docs/curves.png
	$(BIN)/python plot_ops.py --model resnet20 --output docs/ops_resnet20.png

bench: setup
	$(BIN)/python benchmarks/adder_layer.py
	$(BIN)/python benchmarks/training_step.py

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

lint: setup
	$(BIN)/ruff check addernet_jax tests benchmarks configs *.py
