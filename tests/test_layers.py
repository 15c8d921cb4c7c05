"""Adder2D: official initialisation, and the same output as the op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from addernet_jax import Adder2D, adder2d
from addernet_jax.layers import AdderKernel


def test_kernel_is_standard_normal_hwio():
    layer = Adder2D(64, 128, 3, rngs=nnx.Rngs(0))
    kernel = np.asarray(layer.kernel[...])
    assert kernel.shape == (3, 3, 64, 128)
    assert isinstance(layer.kernel, AdderKernel)
    # N(0, 1) with no fan-in scaling (official adder.py): 73,728 samples.
    assert abs(kernel.mean()) < 0.02
    assert abs(kernel.std() - 1.0) < 0.02
    assert layer.bias is None


def test_bias_is_uniform_zero_one():
    layer = Adder2D(4, 4096, 1, use_bias=True, rngs=nnx.Rngs(1))
    bias = np.asarray(layer.bias[...])
    assert bias.min() >= 0.0 and bias.max() < 1.0
    assert abs(bias.mean() - 0.5) < 0.02


@pytest.mark.parametrize(("strides", "padding", "out_hw"), [(1, 1, (9, 7)), (2, 1, (5, 4)),
                                                             (2, "SAME", (5, 4)), (1, 0, (7, 5))])
def test_layer_equals_op(strides, padding, out_hw):
    layer = Adder2D(3, 5, 3, strides, padding=padding, use_bias=True, rngs=nnx.Rngs(2))
    x = jax.random.normal(jax.random.key(3), (2, 9, 7, 3))
    y = layer(x)
    assert y.shape == (2, *out_hw, 5)
    expected = adder2d(x, layer.kernel[...], layer.bias[...], stride=strides, padding=padding)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_layer_gradient_flows_to_kernel_and_bias():
    layer = Adder2D(3, 4, 3, padding=1, use_bias=True, rngs=nnx.Rngs(4))
    x = jax.random.normal(jax.random.key(5), (2, 6, 6, 3))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    assert grads["kernel"][...].shape == (3, 3, 3, 4)
    assert np.all(np.isfinite(grads["kernel"][...]))
    np.testing.assert_allclose(grads["bias"][...], jnp.sum(2 * layer(x), axis=(0, 1, 2)),
                               rtol=1e-5)
