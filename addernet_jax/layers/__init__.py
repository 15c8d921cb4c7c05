"""Flax NNX layers built on the ops, one file per layer kind, registered by name.

    adder      `Adder2D` (paper Eq. 2) where AdderNet has adder layers
    cnn        `nnx.Conv` there: the CNN baseline of the paper's tables
    shiftadd   `ShiftAdd2D` (a bit-shift conv, then a square adder) there, and shift convs for
               the convolutions AdderNet keeps (ShiftAddNet, SHIFTADDNET.md 3)
    deepshift  `ShiftConv2D` everywhere AdderNet and ShiftAddNet have convolutions (DeepShift-PS)

`make_layer(variant, ...)` builds the layer a variant puts where AdderNet has an adder;
`make_kept_conv(variant, ...)` the convolutions AdderNet keeps multiplicative. Each kind also
registers how its calls are counted (`base.register_op_counter`).
"""

from __future__ import annotations

from addernet_jax.layers.adder import ADDER, Adder2D, AdderKernel
from addernet_jax.layers.base import (
    LAYER_KINDS,
    OP_COUNTERS,
    Counts,
    EnergyTable,
    LayerKind,
    OpCounter,
    get_layer_kind,
    layer_kinds,
    op_counter,
    param_count,
    register_layer_kind,
    register_op_counter,
)

# Importing each kind's module registers it; the registry keeps this order (adder, cnn,
# shiftadd, deepshift).
from addernet_jax.layers.conv import CNN, conv2d
from addernet_jax.layers.shift import (
    DEEPSHIFT,
    SHIFTADD,
    ShiftAdd2D,
    ShiftConv2D,
    ShiftParam,
    SignParam,
)


def make_layer(variant: str, in_features: int, out_features: int, kernel_size: int,
               strides: int = 1, *, padding, impl: str, kernel_init, rngs):
    """The layer that variant `variant` puts where AdderNet has an adder (bias-free)."""
    return get_layer_kind(variant).build(in_features, out_features, kernel_size, strides,
                                         padding=padding, impl=impl, kernel_init=kernel_init,
                                         rngs=rngs)


def make_kept_conv(variant: str, in_features: int, out_features: int, kernel_size: int,
                   strides: int = 1, *, padding, kernel_init, rngs, impl: str = "auto",
                   **conv_kwargs):
    """A convolution that AdderNet keeps multiplicative (stem, 1x1 classifier): an `nnx.Conv`,
    unless the variant's kind swaps those too (`LayerKind.build_kept`). `conv_kwargs` (bias)
    go to the convolution."""
    build = get_layer_kind(variant).build_kept
    if build is None:
        return conv2d(in_features, out_features, kernel_size, strides, padding=padding,
                      kernel_init=kernel_init, rngs=rngs, **conv_kwargs)
    return build(in_features, out_features, kernel_size, strides, padding=padding, impl=impl,
                 kernel_init=kernel_init, rngs=rngs, **conv_kwargs)


__all__ = [
    "ADDER",
    "CNN",
    "DEEPSHIFT",
    "LAYER_KINDS",
    "OP_COUNTERS",
    "SHIFTADD",
    "Adder2D",
    "AdderKernel",
    "Counts",
    "EnergyTable",
    "LayerKind",
    "OpCounter",
    "ShiftAdd2D",
    "ShiftConv2D",
    "ShiftParam",
    "SignParam",
    "conv2d",
    "get_layer_kind",
    "layer_kinds",
    "make_kept_conv",
    "make_layer",
    "op_counter",
    "param_count",
    "register_layer_kind",
    "register_op_counter",
]
