"""The integer adder layer that replaces a float `Adder2D` (and the BatchNorm it folds).

A layer's input x and filters F are mapped onto one integer grid of 2^bits levels,

    x ~ scale * (x_q - zero_point),   F ~ scale * (w_q - zero_point),   x_q, w_q in int8,

so that x - F = scale * (x_q - w_q): only the difference enters the adder (paper Eq. 2), so one
scale and one zero point are shared and the zero point cancels. The float layer's zero padding
is the integer `zero_point` (`adder2d_int(..., zero_point=)`). With S = sum |Xpad_q - W_q| the
layer output is

    y = out_scale * S + out_bias        (per output channel, float32)

where out_scale and out_bias fold -scale, the exact correction of the clipped filter values
(`addernet_jax.quantize.calibrate`) and the following BatchNorm's running statistics and affine
parameters (ADDERNET.md 3: every adder layer is followed by BN). A BatchNorm so folded is
replaced by `FoldedBatchNorm`, the identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.ops.geometry import PaddingLike, pair
from addernet_jax.ops.integer import adder2d_int

BIT_WIDTHS = (4, 5, 6, 7, 8)


class QuantizedKernel(nnx.Variable):
    """int8 filters of a quantised adder layer (HWIO). Not an `nnx.Param`: never trained."""


class QuantizationParam(nnx.Variable):
    """A float32 constant of a quantised layer (grid scale, folded output affine)."""


@dataclasses.dataclass(frozen=True)
class Grid:
    """The integer grid x ~ scale * (q - zero_point), q in [-2^(bits-1), 2^(bits-1) - 1]."""

    scale: float
    zero_point: int
    bits: int = 8

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def low(self) -> float:
        """The smallest representable value (<= 0)."""
        return self.scale * (self.qmin - self.zero_point)

    @property
    def high(self) -> float:
        """The largest representable value (>= 0)."""
        return self.scale * (self.qmax - self.zero_point)


def check_bits(bits) -> int:
    """`bits` as an int in `BIT_WIDTHS`; ValueError naming the valid widths otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BIT_WIDTHS:
        raise ValueError(f"bit width must be one of {', '.join(map(str, BIT_WIDTHS))}, got "
                         f"{bits!r}")
    return bits


def grid_for_range(low: float, high: float, bits: int) -> Grid:
    """The grid of `bits` levels that spans [min(low, 0), max(high, 0)] with 0 on a level.

    The zero point is rounded to an integer, so the grid's own `low`/`high` may differ from
    the requested ones by up to half a step.
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    levels = 2**bits - 1
    scale = (high - low) / levels if high > low else 1.0
    qmin = -(2 ** (bits - 1))
    zero_point = int(min(max(round(qmin - low / scale), qmin), qmin + levels))
    return Grid(scale, zero_point, bits)


def quantize_values(x: jax.Array, scale, zero_point: int, bits: int) -> jax.Array:
    """x -> int8 q = clip(round(x / scale) + zero_point, qmin, qmax) (round half to even)."""
    grid = Grid(1.0, zero_point, bits)
    q = jnp.round(x / scale) + zero_point
    return jnp.clip(q, grid.qmin, grid.qmax).astype(jnp.int8)


class QuantizedAdder2D(nnx.Module):
    """An adder layer on the integer path: quantise the input, S = adder2d_int, per-channel
    affine (see the module docstring). Inference only.

    Args:
      in_features, out_features, kernel_size, strides, padding: as the float `Adder2D`.
      zero_point: the grid's zero point (static: it is the integer padding value).
      bits: the grid's bit width (4 to 8).
      impl: `adder2d_int` implementation ('auto': the vpsadbw kernel where it runs).
    """

    def __init__(self, in_features: int, out_features: int,
                 kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1, *,
                 padding: PaddingLike = 0, zero_point: int = 0, bits: int = 8,
                 impl: str = "auto"):
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.padding = padding
        self.zero_point = int(zero_point)
        self.bits = check_bits(bits)
        self.impl = impl
        shape = (*self.kernel_size, in_features, out_features)
        self.kernel = QuantizedKernel(jnp.zeros(shape, jnp.int8))
        self.scale = QuantizationParam(jnp.ones((), jnp.float32))
        self.out_scale = QuantizationParam(jnp.zeros((out_features,), jnp.float32))
        self.out_bias = QuantizationParam(jnp.zeros((out_features,), jnp.float32))

    def quantize_input(self, x: jax.Array) -> jax.Array:
        """The int8 input x_q of a float NHWC input."""
        return quantize_values(x, self.scale[...], self.zero_point, self.bits)

    def integer_sum(self, x_q: jax.Array) -> jax.Array:
        """S = sum |Xpad_q - W_q| (int32) of an int8 input."""
        return adder2d_int(x_q, self.kernel[...], stride=self.strides, padding=self.padding,
                           zero_point=self.zero_point, impl=self.impl)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Float NHWC input -> the float layer output (with its BatchNorm, when folded)."""
        total = self.integer_sum(self.quantize_input(x))
        return total.astype(jnp.float32) * self.out_scale[...] + self.out_bias[...]


class FoldedBatchNorm(nnx.Module):
    """Where a BatchNorm was folded into the preceding `QuantizedAdder2D`: the identity."""

    def __init__(self, num_features: int):
        self.num_features = num_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return x
