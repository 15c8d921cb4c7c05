"""Optimizers from the parameters' own rules: AdderNet's adaptive learning rate, torch-style SGD.

Parameter types declare their optimizer rules as class attributes of their `nnx.Variable`
subclass, so a new layer kind brings its rules with it and this module never names a layer:
  adaptive_lr = True     the gradient is rescaled by `scale_by_adaptive_lr` (AdderKernel)
  weight_decay = False   no weight decay (default True)
  project(value)         a projection applied to the stored value after every update
  epoch_end(value)       a re-projection applied once at the end of every epoch

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


def rule_mask(model: nnx.Module, rule: str, default: bool = False, wrt=nnx.Param):
    """A pytree of bools over `nnx.state(model, wrt)`: each variable type's `rule` attribute
    (`default` where the type does not set it)."""
    state = nnx.state(model, wrt)
    return jax.tree.map(lambda v: bool(getattr(type(v), rule, default)), state,
                        is_leaf=lambda v: isinstance(v, nnx.Variable))


def adder_kernel_mask(model: nnx.Module, wrt=nnx.Param):
    """A pytree of bools over `nnx.state(model, wrt)`: True at every parameter whose type asks
    for the adaptive learning rate (`AdderKernel`, paper Eq. 12-13)."""
    return rule_mask(model, "adaptive_lr", False, wrt)


def weight_decay_mask(model: nnx.Module, wrt=nnx.Param):
    """True at every parameter that takes weight decay, or None when all of them do (then the
    decay runs unmasked, as it always has for AdderNet and CNN models)."""
    mask = rule_mask(model, "weight_decay", True, wrt)
    return None if all(jax.tree.leaves(mask)) else mask


def adder_sgd(
    learning_rate: optax.ScalarOrSchedule,
    adder_mask,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    eta: float = ETA,
    nesterov: bool = False,
    decay_mask=None,
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
      decay_mask: pytree of bools marking the parameters that take weight decay (None: all;
        see `weight_decay_mask`).
    """
    return optax.chain(
        optax.masked(scale_by_adaptive_lr(eta), adder_mask),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
    )


def adder_adam(
    learning_rate: optax.ScalarOrSchedule,
    adder_mask,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    eta: float = ETA,
    decay_mask=None,
) -> optax.GradientTransformation:
    """Adam (EDSR's optimizer, ADDERSR.md 4) after the adaptive adder learning rate, with
    optional coupled L2 weight decay as torch.optim.Adam's `weight_decay`."""
    return optax.chain(
        optax.masked(scale_by_adaptive_lr(eta), adder_mask),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
    )


OPTIMIZERS = ("sgd", "adam")


def make_transformation(model: nnx.Module, learning_rate, config) -> optax.GradientTransformation:
    """The transformation named by `config.name` ('sgd': `adder_sgd`, 'adam': `adder_adam`) for
    `model`'s parameters, with the masks their types declare.

    Args:
      model: the model whose `nnx.Param`s are optimised.
      learning_rate: a float or an optax schedule.
      config: an `optimizer` config section (name, momentum, weight_decay, eta, nesterov, b1,
        b2, eps; fields a transformation does not use are ignored).
    """
    masks = dict(adder_mask=adder_kernel_mask(model), decay_mask=weight_decay_mask(model))
    name = config.get("name", "sgd")
    if name == "sgd":
        return adder_sgd(learning_rate, momentum=config.momentum, eta=config.eta,
                         weight_decay=config.weight_decay, nesterov=config.nesterov, **masks)
    if name == "adam":
        return adder_adam(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                          weight_decay=config.weight_decay, eta=config.eta, **masks)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def _apply_variable_rule(model: nnx.Module, rule: str) -> None:
    """value <- type(v).<rule>(value) for every variable of `model` whose type has `rule`."""
    for _, variable in nnx.iter_graph(model):
        function = getattr(type(variable), rule, None) if isinstance(
            variable, nnx.Variable) else None
        if function is not None:
            variable.value = function(variable.value)


def apply_projections(model: nnx.Module) -> None:
    """Projects every parameter whose type defines `project` (after an optimizer update)."""
    _apply_variable_rule(model, "project")


def apply_epoch_end(model: nnx.Module) -> None:
    """Re-projects every parameter whose type defines `epoch_end` (once per epoch)."""
    _apply_variable_rule(model, "epoch_end")


def create_optimizer(model: nnx.Module, learning_rate, **kwargs) -> nnx.Optimizer:
    """An `nnx.Optimizer` over the model's Params running `adder_sgd` (kwargs go to it)."""
    tx = adder_sgd(learning_rate, adder_kernel_mask(model), decay_mask=weight_decay_mask(model),
                   **kwargs)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)
