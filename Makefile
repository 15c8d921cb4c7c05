# The README's commands. Each one creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bench test lint setup

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/activate

setup: $(BIN)/activate

bench: setup
	$(BIN)/python benchmarks/adder_layer.py

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check addernet_jax tests benchmarks
