"""The same results on one device and with the batch sharded over 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from test_optimizer import TinyAdderNet

from addernet_jax.ops import IMPLEMENTATIONS, adder2d
from addernet_jax.optim.optimizer import create_optimizer


@pytest.fixture(scope="module", params=[AxisType.Explicit, AxisType.Auto], ids=str)
def mesh(request):
    """An 8-device data mesh, with explicit sharding (the `make_mesh` default) and the
    automatic (GSPMD) kind."""
    assert len(jax.devices()) == 8, "conftest.py should give 8 CPU devices"
    return jax.make_mesh((8,), ("data",), axis_types=(request.param,))


def shard_batch(mesh, array):
    return jax.device_put(array, NamedSharding(mesh, P("data")))


def replicate(mesh, array):
    return jax.device_put(array, NamedSharding(mesh, P()))


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_op_value_and_grads_are_sharding_invariant(mesh, impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)

    @jax.jit
    def value_and_grads(x, w):
        return jax.value_and_grad(
            lambda x, w: jnp.sum(jnp.sin(adder2d(x, w, stride=2, padding=1, impl=impl))),
            argnums=(0, 1),
        )(x, w)

    single = value_and_grads(jax.device_put(x, jax.devices()[0]), w)
    sharded = value_and_grads(shard_batch(mesh, x), replicate(mesh, w))
    assert sharded[1][0].sharding.spec[0] == "data"
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5)
    np.testing.assert_allclose(sharded[1][0], single[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded[1][1], single[1][1], rtol=1e-5, atol=1e-5)


def test_train_step_is_sharding_invariant(mesh):
    """BatchNorm over the global batch and the adaptive norm over the global gradient: three
    optimizer steps give the same parameters on 1 device and on 8."""
    rng = np.random.default_rng(1)
    batches = [(rng.normal(size=(16, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, size=16))
               for _ in range(3)]

    def train(place_batch, place_state):
        model = TinyAdderNet(nnx.Rngs(0))
        optimizer = create_optimizer(model, 0.1)
        nnx.update((model, optimizer), place_state(nnx.state((model, optimizer))))

        @nnx.jit
        def step(model, optimizer, x, y):
            def loss_fn(model):
                return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        losses = [step(model, optimizer, *map(place_batch, batch)) for batch in batches]
        return losses, nnx.state(model)

    on_one_device = lambda a: jax.device_put(a, jax.devices()[0])  # noqa: E731
    single_losses, single_state = train(on_one_device, on_one_device)
    sharded_losses, sharded_state = train(lambda a: shard_batch(mesh, a),
                                          lambda a: replicate(mesh, a))
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
    for ours, theirs in zip(jax.tree.leaves(sharded_state), jax.tree.leaves(single_state)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
