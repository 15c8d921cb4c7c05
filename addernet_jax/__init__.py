"""addernet-jax: adder neural networks (AdderNet and follow-ups) in JAX and Flax NNX."""

from addernet_jax.xla_cpu import tune_xla_cpu

tune_xla_cpu()  # before JAX's CPU backend starts; see xla_cpu.py

from addernet_jax.layers import Adder2D  # noqa: E402
from addernet_jax.ops import adder2d  # noqa: E402

__all__ = ["Adder2D", "adder2d"]
__version__ = "0.1.0"
