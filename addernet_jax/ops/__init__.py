"""Adder convolution ops: a plain reference and fast formulations behind one custom-VJP API."""

from addernet_jax.ops.adder2d import IMPLEMENTATIONS, adder2d, select_implementation
from addernet_jax.ops.geometry import Geometry, resolve_geometry

__all__ = ["IMPLEMENTATIONS", "Geometry", "adder2d", "resolve_geometry", "select_implementation"]
