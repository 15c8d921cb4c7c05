"""A drop-in `lax.conv_general_dilated` for convolutions with few channels, faster on XLA:CPU.

XLA:CPU's convolution is slow when both channel counts are small: LeNet-5's first layer (1 -> 6
channels, 5x5) took 8.3 ms per batch of 128 on one Xeon core, ResNet-20's (3 -> 16, 3x3) 4.5x
the time of the same sum written as shifted windows. For such layers the forward pass is the
shifted-window accumulation of the adder op (`shifted.shifted_sum`) with a product term,

    Y[n, i, j, :] += Xpad[n, i*sh + u, j*sw + v, c] * F[u, v, c, :]   for each (u, v, c),

and the backward pass is `lax.conv_general_dilated`'s own VJP (its unused forward is dead code
under jit). Every other layer, and every other backend, calls `lax.conv_general_dilated`.
Values differ from it only by float32 summation order.

Pass `conv_general_dilated=few_channel_conv` to `nnx.Conv`.
"""

from __future__ import annotations

import functools

import jax
from jax import lax

from addernet_jax.ops import shifted
from addernet_jax.ops.geometry import Geometry
from addernet_jax.ops.reference import pad_input

# Output channels up to which the shifted form wins: 1 -> 6 (5x5) 13x and 3 -> 16 (3x3) 4.5x
# faster than lax.conv, but 1 -> 32 (5x5, LeNet++) 0.86x (one Xeon core, batch 128-256).
MAX_OUT_CHANNELS = 16
ENABLED = True  # False: always lax.conv_general_dilated (tests pin older numbers with it)

_NHWC = ("NHWC", "HWIO", "NHWC")


def _product(a, b, _):
    return a * b


def conv_shifted(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
    """NHWC x HWIO -> NHWC convolution by shifted-window accumulation (forward only)."""
    out_hw = geometry.output_hw(x.shape[1:3], w.shape[:2])
    return shifted.shifted_sum(pad_input(x, geometry), w, out_hw, geometry.strides, _product)


def conv_lax(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
    """The same convolution by `lax.conv_general_dilated` (the reference)."""
    return lax.conv_general_dilated(x, w, geometry.strides, geometry.pads, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, geometry):
    return conv_shifted(x, w, geometry)


def _conv_fwd(x, w, geometry):
    return conv_shifted(x, w, geometry), (x, w)


def _conv_bwd(geometry, residuals, g):
    x, w = residuals
    _, pullback = jax.vjp(functools.partial(conv_lax, geometry=geometry), x, w)
    return pullback(g)


_conv.defvjp(_conv_fwd, _conv_bwd)


def uses_shifted_form(x_shape, w_shape, dtype) -> bool:
    """Whether `few_channel_conv` computes this layer as shifted windows (CPU, float32, few
    channels: a kernel that `shifted_sum` fuses into one vectorised loop body)."""
    kh, kw, c_in, c_out = w_shape
    return (
        ENABLED
        and jax.default_backend() == "cpu"
        and dtype == jax.numpy.float32
        and c_in < shifted.TERM_BUDGET
        and shifted.fuses_whole_kernel(kh, kw, c_in)
        and c_out <= MAX_OUT_CHANNELS
    )


def few_channel_conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
):
    """`lax.conv_general_dilated`'s signature; the shifted form for plain few-channel NHWC
    convolutions with explicit padding, `lax.conv_general_dilated` for everything else."""
    plain = (
        lhs.ndim == 4
        and not isinstance(padding, str)
        and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and out_sharding is None
        and dimension_numbers is not None
        and lhs.dtype == rhs.dtype
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if plain and uses_shifted_form(lhs.shape, rhs.shape, lhs.dtype):
        geometry = Geometry(tuple(window_strides), tuple(tuple(p) for p in padding))
        return _conv(lhs, rhs, geometry)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type,
        **({} if out_sharding is None else {"out_sharding": out_sharding}),
    )
