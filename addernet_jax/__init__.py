"""addernet-jax: adder neural networks (AdderNet and follow-ups) in JAX and Flax NNX."""

from addernet_jax.layers import Adder2D
from addernet_jax.ops import adder2d

__all__ = ["Adder2D", "adder2d"]
__version__ = "0.1.0"
