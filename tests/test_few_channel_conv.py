"""The few-channel convolution (ops/few_channel_conv.py) against lax.conv_general_dilated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from addernet_jax.layers import conv2d
from addernet_jax.ops import few_channel_conv as fcc
from addernet_jax.ops.geometry import Geometry

# (N, H, W, C_in, C_out, k, stride, pad): LeNet-5's and ResNet-20's first layers, odd sizes,
# strides, asymmetric output sizes, one input channel and the largest fused kernel.
SHAPES = [
    (4, 28, 28, 1, 6, 5, 1, 2),
    (3, 32, 32, 3, 16, 3, 1, 1),
    (2, 9, 11, 2, 5, 3, 2, 1),
    (2, 10, 7, 3, 4, 5, 2, 0),
    (1, 8, 8, 1, 1, 1, 1, 0),
    (2, 12, 12, 8, 16, 5, 1, 2),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_and_grads_match_lax_conv(shape):
    n, h, w, c, o, k, s, p = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w, c)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, c, o)), jnp.float32)
    geometry = Geometry((s, s), ((p, p), (p, p)))
    assert fcc.uses_shifted_form(x.shape, kernel.shape, x.dtype)

    def conv(fn):
        return jax.jit(lambda x, w: fn(x, w, (s, s), ((p, p), (p, p)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")))

    expected = conv(jax.lax.conv_general_dilated)(x, kernel)
    got = conv(fcc.few_channel_conv)(x, kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * k * k * c)
    np.testing.assert_allclose(fcc.conv_shifted(x, kernel, geometry), expected,
                               rtol=1e-5, atol=1e-5 * k * k * c)
    g = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    vjp = lambda fn: jax.vjp(conv(fn), x, kernel)[1](g)  # noqa: E731
    expected_grads = vjp(jax.lax.conv_general_dilated)
    for got_grad, expected_grad in zip(vjp(fcc.few_channel_conv), expected_grads):
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-4)


def test_wide_layers_and_other_layouts_go_to_lax():
    assert not fcc.uses_shifted_form((1, 8, 8, 1), (5, 5, 1, 32), jnp.float32)  # LeNet++ conv1
    assert not fcc.uses_shifted_form((1, 8, 8, 16), (3, 3, 16, 16), jnp.float32)  # ResNet body
    assert not fcc.uses_shifted_form((1, 8, 8, 3), (7, 7, 3, 64), jnp.float32)  # ImageNet stem
    assert not fcc.uses_shifted_form((1, 8, 8, 3), (3, 3, 3, 16), jnp.bfloat16)
    x = jnp.ones((1, 3, 6, 6))  # NCHW: not the shifted form, same answer as lax
    kernel = jnp.ones((4, 3, 3, 3))
    args = (x, kernel, (1, 1), "SAME")
    nchw = ("NCHW", "OIHW", "NCHW")
    np.testing.assert_array_equal(fcc.few_channel_conv(*args, dimension_numbers=nchw),
                                  jax.lax.conv_general_dilated(*args, dimension_numbers=nchw))


def test_nnx_conv_uses_it_and_matches_the_plain_conv():
    layer = conv2d(1, 6, 5, padding=2, kernel_init=nnx.initializers.lecun_normal(),
                   rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 28, 28, 1)), jnp.float32)
    expected = jax.lax.conv_general_dilated(x, layer.kernel[...], (1, 1), ((2, 2), (2, 2)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert layer.conv_general_dilated is fcc.few_channel_conv
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-4)
