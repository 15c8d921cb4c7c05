"""The multiplicative layers: `conv2d` (PyTorch-style padding), the 'cnn' layer kind, and the op
counters of `nnx.Conv`, `nnx.Linear` and `nnx.BatchNorm` (ADDERNET.md 9 conventions).

Conventions, per image: a conv or FC with M multiply-accumulates costs M multiplications and M
additions (the paper's tables count #Add(CNN) = #Mul(CNN), not M - outputs); a bias adds one
addition per output; BatchNorm at inference is a folded per-channel affine, one multiplication
and one addition per output element.
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from addernet_jax.layers.base import (
    Counts,
    LayerKind,
    OpCounter,
    bias_adds,
    kernel_terms,
    param_count,
    register_layer_kind,
    register_op_counter,
)
from addernet_jax.ops.few_channel_conv import few_channel_conv
from addernet_jax.ops.geometry import PaddingLike


def conv2d(
    in_features: int,
    out_features: int,
    kernel_size: int,
    strides: int = 1,
    *,
    padding: PaddingLike,
    kernel_init: jax.nn.initializers.Initializer,
    use_bias: bool = False,
    bias_init: jax.nn.initializers.Initializer = jax.nn.initializers.zeros,
    rngs: nnx.Rngs,
    impl: str | None = None,
) -> nnx.Conv:
    """A square 2-D `nnx.Conv` with PyTorch-style integer padding (p on every side).

    `nnx.Conv` reads an int `kernel_size` as a 1-D kernel (it would convolve W only and treat H
    as a batch axis), so the size is always given as (k, k) here. `impl` (an adder option) is
    accepted and ignored so that every layer kind's builder has one signature. The convolution
    runs through `few_channel_conv` (`lax.conv_general_dilated` except for few-channel layers
    on the CPU, where the shifted-window form is faster).
    """
    del impl
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        (strides, strides),
        padding=padding,  # nnx.Conv turns an int p into (p, p) per spatial axis
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        conv_general_dilated=few_channel_conv,
        rngs=rngs,
    )


def _count_multiplicative(module: nnx.Module, out_shape) -> tuple[int, Counts]:
    macs = kernel_terms(module, out_shape)
    return macs, Counts(macs, macs + bias_adds(module, out_shape), param_count(module))


def _count_batch_norm(module: nnx.Module, out_shape) -> tuple[int, Counts]:
    elements = math.prod(out_shape)
    return elements, Counts(elements, elements, param_count(module))


register_op_counter(nnx.Conv, OpCounter("conv", _count_multiplicative, multiplicative=True))
register_op_counter(nnx.Linear, OpCounter("fc", _count_multiplicative, multiplicative=True))
register_op_counter(nnx.BatchNorm, OpCounter("bn", _count_batch_norm))

CNN = register_layer_kind(
    LayerKind("cnn", conv2d, description="convolutions everywhere (the CNN baseline)")
)
