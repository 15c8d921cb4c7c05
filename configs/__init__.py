"""Experiment configurations: one file per experiment, `get_config(variant='adder')`."""
