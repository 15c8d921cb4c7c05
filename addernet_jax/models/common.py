"""Building blocks shared by the model families: the adder-or-conv switch, BatchNorm, inits.

Every model comes in two variants with the same topology and the same parameter shapes:
`variant='adder'` builds `Adder2D` where AdderNet has adder layers, `variant='cnn'` builds
`nnx.Conv` there (the CNN baseline of the paper's tables). Layers that AdderNet keeps
multiplicative (first conv, classifier; ADDERNET.md 4) are `nnx.Conv`/`nnx.Linear` in both.
"""

from __future__ import annotations

import jax
from flax import nnx

from addernet_jax.layers import Adder2D
from addernet_jax.ops.geometry import PaddingLike

VARIANTS = ("adder", "cnn")

# PyTorch's default nn.Conv2d / nn.Linear weight init, kaiming_uniform(a=sqrt(5)), is
# Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance_scaling's uniform limit is sqrt(3 * scale /
# fan_in), so scale = 1/3. Flax computes fan_in = kh * kw * C_in for an HWIO kernel, as PyTorch.
torch_default_kernel_init = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

# nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu'): an untruncated normal with
# std sqrt(2 / fan_out), fan_out = kh * kw * C_out (resnet50.py, torchvision ResNet).
kaiming_normal_fan_out = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_default_bias_init(fan_in: int) -> jax.nn.initializers.Initializer:
    """PyTorch's default conv/linear bias init, Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = fan_in**-0.5

    def init(key, shape, dtype=jax.numpy.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def check_variant(variant: str) -> None:
    """Raises ValueError unless `variant` is 'adder' or 'cnn'."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def adder_or_conv(
    variant: str,
    in_features: int,
    out_features: int,
    kernel_size: int,
    strides: int = 1,
    *,
    padding: PaddingLike,
    impl: str,
    kernel_init: jax.nn.initializers.Initializer,
    rngs: nnx.Rngs,
) -> Adder2D | nnx.Conv:
    """A bias-free layer that is an adder in AdderNet: `Adder2D` or, for the CNN baseline, a conv.

    Args:
      variant: 'adder' or 'cnn'.
      in_features, out_features, kernel_size, strides, padding: as `nnx.Conv` (an int padding
        pads every side by that much, as PyTorch).
      impl: adder2d implementation (adder variant only).
      kernel_init: the conv kernel init of the CNN variant; adders are N(0, 1) (`Adder2D`).
      rngs: NNX random streams.
    """
    check_variant(variant)
    if variant == "adder":
        return Adder2D(
            in_features, out_features, kernel_size, strides, padding=padding, impl=impl, rngs=rngs
        )
    return conv2d(
        in_features,
        out_features,
        kernel_size,
        strides,
        padding=padding,
        kernel_init=kernel_init,
        rngs=rngs,
    )


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
) -> nnx.Conv:
    """A square 2-D `nnx.Conv` with PyTorch-style integer padding (p on every side).

    `nnx.Conv` reads an int `kernel_size` as a 1-D kernel (it would convolve W only and treat H
    as a batch axis), so the size is always given as (k, k) here.
    """
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        (strides, strides),
        padding=padding,  # nnx.Conv turns an int p into (p, p) per spatial axis
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        rngs=rngs,
    )


def batch_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's defaults (ADDERNET.md 3): eps 1e-5, running-average momentum 0.1
    (Flax keeps `momentum` of the old value: 0.9), gamma 1, beta 0. Over the last (channel) axis.
    Train/eval mode: `model.train()` / `model.eval()` set `use_running_average`.

    The batch variance is the two-pass mean((x - mean)^2), not Flax's default E[x^2] - E[x]^2:
    adder outputs are large negative numbers (minus a sum of hundreds of |x - w| terms) with a
    comparatively small spread, where the one-pass formula cancels catastrophically in float32.
    """
    return nnx.BatchNorm(
        num_features, momentum=0.9, epsilon=1e-5, use_fast_variance=False, rngs=rngs
    )


def flatten_channels_first(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, C*H*W) in PyTorch's NCHW flatten order, so that the weights of a
    PyTorch classifier that follows `torch.flatten` map onto ours by a transpose only."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
