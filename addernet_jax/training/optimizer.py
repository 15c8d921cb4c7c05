"""The AdderNet optimizer: adaptive per-layer learning rate for adder kernels + torch-style SGD.

Official update (ADDERNET.md 2.3, `adder.py` + `main.py`), per step and per adder layer l:
    g_l <- eta * sqrt(k_l) * g_l / max(||g_l||_2, 1e-12)      paper Eq. 12-13, eta = 0.2
    d   <- g + weight_decay * w                              coupled L2, every parameter
    v   <- momentum * v + d   (v = d on the first step)       torch.optim.SGD, dampening 0
    w   <- w - lr * v
`adder_sgd` is exactly this chain. Non-adder parameters skip the first line.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from addernet_jax.layers import AdderKernel

ETA = 0.2
NORM_EPS = 1e-12


def scale_by_adaptive_lr(eta: float = ETA, eps: float = NORM_EPS) -> optax.GradientTransformation:
    """Rescales every leaf g to eta * sqrt(k) * g / max(||g||_2, eps), k = g.size.

    After it the per-element RMS of each leaf is exactly `eta`, whatever the loss scale or the
    batch size. Apply it (through `optax.masked`) to adder kernels only, before weight decay and
    momentum. Under `jax.jit` over a mesh the gradient is the global one, so the norm is taken
    over the globally reduced gradient (ADDERNET.md U3). A leaf is one layer: stacked layers
    (e.g. under `nnx.scan`) would need a per-slice norm and are not supported here.

    Args:
      eta: the paper's eta (Eq. 13); the official code divides by 5.
      eps: lower clamp of the norm, as the official `clamp(min=1e-12)`.
    """

    def scale(g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
        factor = eta * math.sqrt(g.size) / jnp.maximum(norm, eps)
        return (g * factor).astype(g.dtype)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def adder_kernel_mask(model: nnx.Module, wrt=nnx.Param):
    """A pytree of bools over `nnx.state(model, wrt)`: True at every `AdderKernel`."""
    state = nnx.state(model, wrt)
    return jax.tree.map(
        lambda v: isinstance(v, AdderKernel), state, is_leaf=lambda v: isinstance(v, nnx.Variable)
    )


def adder_sgd(
    learning_rate: optax.ScalarOrSchedule,
    adder_mask,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    eta: float = ETA,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """The official AdderNet optimizer (module docstring) as one optax transformation.

    Args:
      learning_rate: a float or an optax schedule of the step count.
      adder_mask: pytree of bools (or a callable producing one) marking adder kernels; see
        `adder_kernel_mask`. An all-False mask gives plain torch SGD (the CNN baseline).
      momentum: SGD momentum (0.9 official).
      weight_decay: coupled L2 weight decay on every parameter (5e-4 official on CIFAR).
      eta: adaptive learning-rate coefficient (0.2 official).
      nesterov: Nesterov momentum (off officially).
    """
    return optax.chain(
        optax.masked(scale_by_adaptive_lr(eta), adder_mask),
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
    )


def create_optimizer(model: nnx.Module, learning_rate, **kwargs) -> nnx.Optimizer:
    """An `nnx.Optimizer` over the model's Params running `adder_sgd` (kwargs go to it)."""
    tx = adder_sgd(learning_rate, adder_kernel_mask(model), **kwargs)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)
