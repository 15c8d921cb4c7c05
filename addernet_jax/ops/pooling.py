"""2x2 max pooling with stride 2 (torch `nn.MaxPool2d(2)`) as four strided slices, NHWC.

`nnx.max_pool` lowers to reduce_window, and its gradient to select-and-scatter, which XLA:CPU
runs slowly with few channels (LeNet-5's 6 and 16): at batch 128 on one core the pair took
4.7 ms forward and backward for LeNet-5's first pool against 1.8 ms here (benchmarks/
lenet_step.py). The forward is the elementwise maximum of the four slices x[:, i::2, j::2]; the
backward sends each output's gradient to the first maximal element of its window in row-major
order, as select-and-scatter and torch do (a plain `jnp.maximum` chain would split it between
tied elements, and ReLU outputs tie often). `reference_max_pool_2x2` is the reduce_window form
it is tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def reference_max_pool_2x2(x: jax.Array) -> jax.Array:
    """reduce_window max over 2x2 windows, stride 2 (odd trailing rows/columns dropped)."""
    return nnx.max_pool(x, (2, 2), strides=(2, 2))


def _window_slices(x: jax.Array) -> list[jax.Array]:
    """The four (N, H/2, W/2, C) slices x[:, i::2, j::2] in row-major window order."""
    height, width = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :height, :width]
    return [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """Max over each 2x2 window, stride 2, of an NHWC batch (odd trailing rows/columns dropped):
    the values and gradient of `reference_max_pool_2x2`."""
    a, b, c, d = _window_slices(x)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _forward(x):
    return max_pool_2x2(x), x


def _backward(x, g):
    slices = _window_slices(x)
    pooled = jnp.maximum(jnp.maximum(slices[0], slices[1]), jnp.maximum(slices[2], slices[3]))
    taken = jnp.zeros(pooled.shape, bool)
    grads = []
    for window in slices:  # the first maximum of the window gets the gradient
        first = (window == pooled) & ~taken
        grads.append(jnp.where(first, g, 0).astype(x.dtype))
        taken = taken | first
    top = jnp.stack(grads[:2], axis=3)  # (N, H/2, W/2, 2, C): columns 0, 1 of window row 0
    bottom = jnp.stack(grads[2:], axis=3)
    n, h2, w2, _, channels = top.shape
    dx = jnp.stack([top, bottom], axis=2).reshape(n, 2 * h2, 2 * w2, channels)
    pad = ((0, 0), (0, x.shape[1] - 2 * h2), (0, x.shape[2] - 2 * w2), (0, 0))
    return (jnp.pad(dx, pad),)


max_pool_2x2.defvjp(_forward, _backward)
