"""2x2 max pooling from strided slices against reduce_window (nnx.max_pool): the same values and
the same gradient, bit for bit, on random shapes, odd sizes and inputs full of ties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from addernet_jax.ops.pooling import max_pool_2x2, reference_max_pool_2x2

SHAPES = [(2, 4, 4, 1), (3, 5, 7, 2), (2, 28, 28, 6), (4, 10, 10, 16), (1, 3, 3, 3),
          (2, 16, 16, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_values_and_gradient_match_reduce_window(shape, ties):
    rng = np.random.default_rng(sum(shape))
    if ties:  # small integers: most windows have several maxima (as ReLU zeros do)
        x = rng.integers(0, 3, size=shape).astype(np.float32)
    else:
        x = rng.normal(size=shape).astype(np.float32)
    y, vjp = jax.vjp(max_pool_2x2, jnp.asarray(x))
    expected, expected_vjp = jax.vjp(reference_max_pool_2x2, jnp.asarray(x))
    np.testing.assert_array_equal(y, expected)
    g = jnp.asarray(rng.normal(size=y.shape).astype(np.float32))
    np.testing.assert_array_equal(vjp(g)[0], expected_vjp(g)[0])


def test_gradient_goes_to_the_first_maximum_only():
    x = jnp.zeros((1, 2, 2, 1))
    dx = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
