"""Shift layers (SHIFTADDNET.md 1, 3): `ShiftConv2D`, the ShiftAdd unit `ShiftAdd2D`, their
parameter types and op counts, and the 'shiftadd' and 'deepshift' layer kinds.

    shiftadd   ShiftAddNet: `ShiftAdd2D` (shift conv -> square adder) where AdderNet has adders,
               `ShiftConv2D` for the convolutions AdderNet keeps (stem, 1x1 classifier conv):
               the official conversion turns every nn.Conv2d into a shift layer and keeps
               nn.Linear full precision (3.2)
    deepshift  DeepShift-PS baseline: `ShiftConv2D` in both places, 3-bit as the official
               `scripts/deepshift/cifar10.sh`

Optimizer rules live on the parameter types (`addernet_jax.optim.optimizer` reads them):
`weight_decay = False` on both (1.5); `ShiftParam.project(value)` clamps p to its range after
every update (1.3a, 7); `epoch_end(value)` is the end-of-epoch re-projection (1.6).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.layers.adder import Adder2D
from addernet_jax.layers.base import (
    Counts,
    LayerKind,
    OpCounter,
    bias_adds,
    param_count,
    register_layer_kind,
    register_op_counter,
)
from addernet_jax.ops.geometry import PaddingLike, pair
from addernet_jax.ops.shift import shift_conv2d, shift_range

SHIFTADDNET_WEIGHT_BITS = 5  # scripts/shiftaddnet/*: --weight_bits 5
DEEPSHIFT_WEIGHT_BITS = 3  # scripts/deepshift/cifar10.sh: --weight_bits 3


class ShiftParam(nnx.Param):
    """Latent shifts p of a shift layer with `weight_bits` = 5 (other widths: `shift_param_type`).

    The bit width is part of the type so that the optimizer's type-level calls need nothing
    but the value: `v[...] = type(v).project(v[...])` and `v[...] = type(v).epoch_end(v[...])`.
    (`project` is a classmethod, to read the type's `weight_bits`; it is called exactly as a
    staticmethod would be.)

    Attributes:
      weight_bits: b; p is kept in `shift_range(b)` = [-(2^(b-1) - 2), 0].
      weight_decay: False, the official optimizer's wd = 0 for *.shift (SHIFTADDNET.md 1.5).
    """

    weight_bits = SHIFTADDNET_WEIGHT_BITS
    weight_decay = False

    @classmethod
    def project(cls, value: jax.Array) -> jax.Array:
        """p <- clip(p, lo, 0), after every optimizer update: the official forward clamps the
        stored parameter in place before each use (SHIFTADDNET.md 1.3a, 7)."""
        lo, hi = shift_range(cls.weight_bits)
        return jnp.clip(value, lo, hi)

    @staticmethod
    def epoch_end(value: jax.Array) -> jax.Array:
        """p <- round(p) (half to even), once per epoch (SHIFTADDNET.md 1.6)."""
        return jnp.round(value)


@functools.cache
def shift_param_type(weight_bits: int) -> type[ShiftParam]:
    """The `ShiftParam` subtype of bit width `weight_bits` (ShiftParam itself for 5), one per
    width, so that `isinstance(v, ShiftParam)` holds for every width."""
    shift_range(weight_bits)  # validates
    if weight_bits == ShiftParam.weight_bits:
        return ShiftParam
    name = f"ShiftParam{weight_bits}Bit"
    return type(ShiftParam)(name, (ShiftParam,), {
        "weight_bits": weight_bits, "__module__": __name__, "__qualname__": name,
        "__doc__": f"Latent shifts p of a {weight_bits}-bit shift layer (see ShiftParam)."})


def __getattr__(name: str):
    """Resolves `ShiftParam<b>Bit` by name (pickle looks types up on their module), creating the
    type in a process that has not built a b-bit layer yet."""
    match = re.fullmatch(r"ShiftParam(\d+)Bit", name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return shift_param_type(int(match.group(1)))


class SignParam(nnx.Param):
    """Latent signs s of a shift layer. No projection: the official forward leaves s unclamped.

    Attributes:
      weight_decay: False, the official optimizer's wd = 0 for *.sign (SHIFTADDNET.md 1.5).
    """

    weight_decay = False

    @staticmethod
    def epoch_end(value: jax.Array) -> jax.Array:
        """s <- sign(round(s)), once per epoch (SHIFTADDNET.md 1.6)."""
        return jnp.sign(jnp.round(value))


class ShiftConv2D(nnx.Module):
    """2-D shift convolution, NHWC: y = conv(x_q, 2^round(p) * sign(round(s))) (SHIFTADDNET.md 1).

    Initialised as the official `Conv2dShift`: p ~ U(-(2^(b-1) - 2), 0), s ~ U(-1, 1) (1.2),
    both of the HWIO kernel shape; the optional bias is a float `nnx.Param`, fixed-point
    rounded in the forward pass as the official layer's.

    Args:
      in_features: C_in.
      out_features: C_out.
      kernel_size: int or (kh, kw).
      strides: int or (sh, sw).
      padding: as `shift_conv2d`; an int pads every side by that much.
      weight_bits: b (5 ShiftAddNet, 3 the DeepShift baseline scripts).
      use_bias: add a learned per-channel bias (off in every official model).
      bias_init: initializer of the bias.
      grad_bits: None (default: off) or 16 for the official backward gradient quantiser
        (`addernet_jax.ops.shift.quantize_grad`); its keys come from the 'shift_grad' stream of
        `rngs` (falling back to 'default'), held by the layer.
      precision: convolution precision (None: the backend default).
      param_dtype: dtype of the parameters.
      rngs: NNX random streams; `rngs.params` initialises the parameters.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        *,
        padding: PaddingLike = 0,
        weight_bits: int = SHIFTADDNET_WEIGHT_BITS,
        use_bias: bool = False,
        bias_init: jax.nn.initializers.Initializer = jax.nn.initializers.zeros,
        grad_bits: int | None = None,
        precision=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kh, kw = pair(kernel_size, "kernel_size")
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = (kh, kw)
        self.strides = pair(strides, "strides")
        self.padding = padding
        self.weight_bits = weight_bits
        self.grad_bits = grad_bits
        self.precision = precision
        shape = (kh, kw, in_features, out_features)
        lo, hi = shift_range(weight_bits)
        p = jax.random.uniform(rngs.params(), shape, param_dtype, lo, hi)
        self.shift = shift_param_type(weight_bits)(p)
        self.sign = SignParam(jax.random.uniform(rngs.params(), shape, param_dtype, -1.0, 1.0))
        self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
                     if use_bias else None)
        self.grad_rngs = None if grad_bits is None else rngs["shift_grad"].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer to an NHWC batch."""
        return shift_conv2d(
            x,
            self.shift[...],
            self.sign[...],
            None if self.bias is None else self.bias[...],
            stride=self.strides,
            padding=self.padding,
            weight_bits=self.weight_bits,
            grad_bits=self.grad_bits,
            key=None if self.grad_rngs is None else self.grad_rngs(),
            precision=self.precision,
        )


class ShiftAdd2D(nnx.Module):
    """The ShiftAdd unit (SHIFTADDNET.md 3.1): shift conv (C_in -> C_out, the stride and padding
    of the replaced conv) -> adder (C_out -> C_out, same kernel, stride 1, 'SAME' padding), both
    bias-free; BN and ReLU follow the unit where they followed the conv.

    The official units give the adder the conv's padding p; every one of them is a 3x3 with
    p = 1 or a 1x1 with p = 0, where that is 'SAME'. 'SAME' keeps the unit's output the shape of
    the replaced conv's for other geometries too (LeNet-5's 5x5 with p = 0), which a model
    written for convolutions relies on.

    Attributes `shift` and `adder` are the official nn.Sequential(Conv2dShift, Adder2D)'s
    entries 0 and 1.

    Args:
      in_features: C_in.
      out_features: C_out.
      kernel_size: int (square, as every official unit).
      strides: int or (sh, sw), of the shift conv.
      padding: of the shift conv, as `shift_conv2d`.
      weight_bits: b of the shift conv.
      impl: adder2d implementation.
      rngs: NNX random streams.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int,
                 strides: int | Sequence[int] = 1, *, padding: PaddingLike = 0,
                 weight_bits: int = SHIFTADDNET_WEIGHT_BITS, impl: str = "auto",
                 rngs: nnx.Rngs):
        self.shift = ShiftConv2D(in_features, out_features, kernel_size, strides,
                                 padding=padding, weight_bits=weight_bits, rngs=rngs)
        self.adder = Adder2D(out_features, out_features, kernel_size, 1, padding="SAME",
                             impl=impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies shift conv then adder to an NHWC batch."""
        return self.adder(self.shift(x))


def _count_shift(module: ShiftConv2D, out_shape) -> tuple[int, Counts]:
    """Each term x * (+-2^k) is one shift and one accumulation (the sign is folded into the
    addition): `terms` shifts and `terms` additions, no multiplication; parameters count both
    latent tensors (p and s), as the official state_dict holds them."""
    terms = math.prod(out_shape) * math.prod(module.shift.shape[:-1])
    return terms, Counts(mults=0, adds=terms + bias_adds(module, out_shape),
                         params=param_count(module), shifts=terms)


register_op_counter(ShiftConv2D, OpCounter("shift", _count_shift))


def shiftadd_layer(in_features, out_features, kernel_size, strides=1, *, padding, impl,
                   kernel_init, rngs) -> ShiftAdd2D:
    """The 'shiftadd' kind's builder: a `ShiftAdd2D` where AdderNet has an adder
    (`kernel_init` is the CNN variant's, unused: both halves have their official inits)."""
    del kernel_init
    return ShiftAdd2D(in_features, out_features, kernel_size, strides, padding=padding,
                      impl=impl, rngs=rngs)


def shift_conv_builder(weight_bits: int):
    """A `LayerKind` builder of bit width `weight_bits` for either place: a `ShiftConv2D`
    (bias-free unless `use_bias`, for the kept convolutions of an ImageNet head)."""

    def build(in_features, out_features, kernel_size, strides=1, *, padding, impl, kernel_init,
              rngs, use_bias=False, bias_init=jax.nn.initializers.zeros) -> ShiftConv2D:
        del impl, kernel_init  # no adder; the latent parameters have their own init (1.2)
        return ShiftConv2D(in_features, out_features, kernel_size, strides, padding=padding,
                           weight_bits=weight_bits, use_bias=use_bias, bias_init=bias_init,
                           rngs=rngs)

    return build


SHIFTADD = register_layer_kind(LayerKind(
    "shiftadd", shiftadd_layer, shift_conv_builder(SHIFTADDNET_WEIGHT_BITS),
    description="ShiftAddNet: shift conv + adder per AdderNet adder, shift convs where AdderNet "
                "keeps convs (5-bit shifts)"))

DEEPSHIFT = register_layer_kind(LayerKind(
    "deepshift", shift_conv_builder(DEEPSHIFT_WEIGHT_BITS),
    shift_conv_builder(DEEPSHIFT_WEIGHT_BITS),
    description="DeepShift-PS baseline: shift convs everywhere, no adders (3-bit shifts)"))
