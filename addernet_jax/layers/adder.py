"""The adder layer (`Adder2D`, paper Eq. 2), its op counts and the 'adder' layer kind."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
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
from addernet_jax.ops import adder2d
from addernet_jax.ops.geometry import PaddingLike, pair


class AdderKernel(nnx.Param):
    """An adder layer's filters. A Param subtype so that the optimizer can find every adder
    kernel (and only those) for the adaptive learning rate of paper Eq. 12-13: the optimizer
    applies that rule to every Variable type whose `adaptive_lr` is True."""

    adaptive_lr = True


class Adder2D(nnx.Module):
    """2-D adder layer: y = -||patch - filter||_1 per output channel (paper Eq. 2), NHWC.

    Initialised as the official `adder.py`: filters ~ N(0, 1) with no fan-in scaling, bias
    (off by default, as in every official model) ~ U[0, 1) (ADDERNET.md 1.4-1.5). Follow it with
    BatchNorm: adder outputs are non-positive with a large variance (ADDERNET.md 3).

    Args:
      in_features: C_in.
      out_features: C_out.
      kernel_size: int or (kh, kw).
      strides: int or (sh, sw).
      padding: see `adder2d`; an int pads every side by that much, as the official layer.
      use_bias: add a learned per-channel bias.
      impl: adder2d implementation name, or 'auto'.
      input_grad: 'hardtanh' (paper) or 'sign'.
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
        use_bias: bool = False,
        impl: str = "auto",
        input_grad: str = "hardtanh",
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kh, kw = pair(kernel_size, "kernel_size")
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = (kh, kw)
        self.strides = pair(strides, "strides")
        self.padding = padding
        self.impl = impl
        self.input_grad = input_grad
        shape = (kh, kw, in_features, out_features)
        self.kernel = AdderKernel(jax.random.normal(rngs.params(), shape, param_dtype))
        self.bias = (
            nnx.Param(jax.random.uniform(rngs.params(), (out_features,), param_dtype))
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the layer to an NHWC batch."""
        return adder2d(
            x,
            self.kernel[...],
            None if self.bias is None else self.bias[...],
            stride=self.strides,
            padding=self.padding,
            impl=self.impl,
            input_grad=self.input_grad,
        )


def adder_layer(in_features, out_features, kernel_size, strides=1, *, padding, impl,
                kernel_init, rngs) -> Adder2D:
    """The 'adder' kind's builder: a bias-free `Adder2D` (`kernel_init` is the CNN variant's and
    unused: adders are N(0, 1) as the official layer)."""
    del kernel_init
    return Adder2D(in_features, out_features, kernel_size, strides, padding=padding, impl=impl,
                   rngs=rngs)


def _count_adder(module: Adder2D, out_shape) -> tuple[int, Counts]:
    """Each term |x - w| is one subtraction and one accumulation (|.| is a sign flip): 2 additions
    per term and no multiplication, #Add(ANN) = 2 #Mul(CNN) as the paper's tables [T1], [T2]."""
    terms = kernel_terms(module, out_shape)
    return terms, Counts(0, 2 * terms + bias_adds(module, out_shape), param_count(module))


register_op_counter(Adder2D, OpCounter("adder", _count_adder))

ADDER = register_layer_kind(
    LayerKind("adder", adder_layer,
              description="adder layers where AdderNet has them (first conv and classifier kept)")
)
