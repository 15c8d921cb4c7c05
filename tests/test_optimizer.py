"""The adaptive learning rate and the AdderNet SGD against the official PyTorch update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from official_torch import OfficialAdder2d

from addernet_jax.layers import Adder2D, AdderKernel
from addernet_jax.optim.optimizer import (
    adder_kernel_mask,
    adder_sgd,
    create_optimizer,
    scale_by_adaptive_lr,
)


class TinyAdderNet(nnx.Module):
    """conv -> adder (stride 2) -> BN -> ReLU -> mean -> linear: every parameter kind."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.adder = Adder2D(4, 6, 3, strides=2, padding=1, rngs=rngs)
        self.bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.bn(self.adder(self.conv(x))))
        return self.fc(jnp.mean(h, axis=(1, 2)))


class TorchTinyAdderNet(torch.nn.Module):
    """The same network with the official adder layer (adaptive scaling inside backward)."""

    def __init__(self, jax_model):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.adder = OfficialAdder2d(4, 6, 3, stride=2, padding=1, adaptive_eta=0.2)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 3)
        with torch.no_grad():
            self.conv.weight.copy_(to_torch(jax_model.conv.kernel, (3, 2, 0, 1)))
            self.adder.adder.copy_(to_torch(jax_model.adder.kernel, (3, 2, 0, 1)))
            self.fc.weight.copy_(to_torch(jax_model.fc.kernel, (1, 0)))
            self.fc.bias.copy_(to_torch(jax_model.fc.bias, (0,)))

    def forward(self, x):
        h = torch.relu(self.bn(self.adder(self.conv(x))))
        return self.fc(h.mean(dim=(2, 3)))


def to_torch(variable, axes):
    return torch.tensor(np.asarray(variable[...]).transpose(axes).copy(), dtype=torch.float64)


def make_batches(steps, batch=8):
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(batch, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, size=batch))
        for _ in range(steps)
    ]


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def test_scale_by_adaptive_lr_sets_rms_to_eta():
    grads = {"a": jnp.arange(12.0).reshape(3, 4) * 1e3, "b": jnp.full((5,), -1e-4)}
    scaled, _ = scale_by_adaptive_lr(eta=0.2).update(grads, optax.EmptyState())
    for leaf in jax.tree.leaves(scaled):
        np.testing.assert_allclose(jnp.sqrt(jnp.mean(leaf**2)), 0.2, rtol=1e-6)
    ratio = scaled["a"].ravel()[1:] / grads["a"].ravel()[1:]  # a rescaling, not a change of
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)  # direction


def test_scale_by_adaptive_lr_clamps_the_norm():
    zero, _ = scale_by_adaptive_lr().update({"w": jnp.zeros(4)}, optax.EmptyState())
    assert np.all(np.asarray(zero["w"]) == 0)
    tiny, _ = scale_by_adaptive_lr(eta=1.0).update({"w": jnp.full((4,), 1e-14)},
                                                    optax.EmptyState())
    # the norm 2e-14 is clamped at 1e-12: 1 * sqrt(4) * 1e-14 / 1e-12 = 0.02
    np.testing.assert_allclose(tiny["w"], 0.02, rtol=1e-5)


def test_mask_selects_exactly_the_adder_kernels():
    model = TinyAdderNet(nnx.Rngs(0))
    mask = adder_kernel_mask(model)
    flat = {jax.tree_util.keystr(path): value for path, value in
            jax.tree_util.tree_leaves_with_path(mask)}
    assert [name for name, is_adder in flat.items() if is_adder] == ["['adder']['kernel']"]
    assert len(flat) == 6
    assert isinstance(model.adder.kernel, AdderKernel)


def test_only_adder_gradients_are_rescaled():
    model = TinyAdderNet(nnx.Rngs(0))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), params)
    tx = optax.chain(optax.masked(scale_by_adaptive_lr(), adder_kernel_mask(model)))
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["adder"]["kernel"], 0.2, rtol=1e-6)
    np.testing.assert_allclose(updates["conv"]["kernel"], 3.0)
    np.testing.assert_allclose(updates["fc"]["bias"], 3.0)


def test_training_matches_official_sgd_over_several_steps():
    """Four steps with a changing learning rate (as the official per-epoch cosine) give the same
    parameters as torch.optim.SGD(momentum=0.9, weight_decay=5e-4) with the official adder."""
    learning_rates = [0.1, 0.05, 0.08, 0.02]
    model = TinyAdderNet(nnx.Rngs(0))
    torch_model = TorchTinyAdderNet(model).double()
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    optimizer = create_optimizer(model, lambda count: jnp.asarray(learning_rates)[count])

    @nnx.jit
    def step(model, optimizer, x, y):
        grads = nnx.grad(loss_fn)(model, x, y)
        optimizer.update(model, grads)

    for (x, y), lr in zip(make_batches(len(learning_rates)), learning_rates):
        step(model, optimizer, x, y)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.zero_grad()
        xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64)
        torch.nn.functional.cross_entropy(torch_model(xt), torch.tensor(y)).backward()
        torch_opt.step()
        pairs = [
            (model.conv.kernel, torch_model.conv.weight, (2, 3, 1, 0)),
            (model.adder.kernel, torch_model.adder.adder, (2, 3, 1, 0)),
            (model.bn.scale, torch_model.bn.weight, (0,)),
            (model.bn.bias, torch_model.bn.bias, (0,)),
            (model.fc.kernel, torch_model.fc.weight, (1, 0)),
            (model.fc.bias, torch_model.fc.bias, (0,)),
        ]
        for ours, theirs, axes in pairs:
            np.testing.assert_allclose(
                np.asarray(ours[...]), theirs.detach().numpy().transpose(axes),
                rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_adder_sgd_without_adders_is_torch_sgd(momentum):
    w0 = np.random.default_rng(0).normal(size=(5,))
    grads = [np.random.default_rng(i).normal(size=(5,)) for i in range(1, 4)]
    tx = adder_sgd(0.1, {"w": False}, momentum=momentum, weight_decay=1e-2)
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)
    wt = torch.tensor(w0, requires_grad=True)
    opt = torch.optim.SGD([wt], lr=0.1, momentum=momentum, weight_decay=1e-2)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        wt.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(params["w"], wt.detach().numpy(), rtol=1e-5, atol=1e-6)
