"""Building blocks shared by the model families: layer-kind lookup, BatchNorm, inits.

Every model comes in one variant per registered layer kind (`addernet_jax.layers`), with the
same topology: `variant='adder'` builds `Adder2D` where AdderNet has adder layers,
`variant='cnn'` builds `nnx.Conv` there (the CNN baseline of the paper's tables). Layers that
AdderNet keeps multiplicative (first conv, classifier; ADDERNET.md 4) are built by
`make_kept_conv` (an `nnx.Conv` unless the kind swaps those too) or are `nnx.Linear`.
"""

from __future__ import annotations

import jax
from flax import nnx

from addernet_jax.layers import conv2d, get_layer_kind, layer_kinds, make_kept_conv, make_layer
from addernet_jax.ops import pooling

__all__ = [
    "batch_norm",
    "check_variant",
    "conv2d",
    "flatten_channels_first",
    "kaiming_normal_fan_out",
    "layer_kinds",
    "make_kept_conv",
    "make_layer",
    "torch_default_bias_init",
    "torch_default_kernel_init",
]


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
    """Raises ValueError unless `variant` names a registered layer kind."""
    get_layer_kind(variant)


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


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """nn.MaxPool2d(kernel_size=2, stride=2) on an NHWC batch (odd trailing rows/columns dropped).

    `ops.pooling.max_pool_2x2`: the values and gradient of `nnx.max_pool` (reduce_window, its
    gradient to the first maximum of each window), from four strided slices, faster on XLA:CPU.
    """
    return pooling.max_pool_2x2(x)
