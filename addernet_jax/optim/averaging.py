"""An exponential moving average of a model's weights (Polyak averaging), for evaluation.

    average <- d_t * average + (1 - d_t) * model,   d_t = min(decay, (1 + t) / (10 + t))

after every optimizer step t = 1, 2, ... (`tf.train.ExponentialMovingAverage` with
`num_updates`: the average follows the model closely at first, then settles at `decay`; timm's
`ModelEmaV2` averages the same way). Parameters and BatchNorm running statistics are averaged
(as timm does with a model's buffers); with precise BatchNorm the statistics are recomputed for
the averaged weights before each evaluation anyway. Parameters that keep a projected form
(ShiftAddNet's powers of two) are projected again after averaging.

AdderNet's adaptive learning rate (ADDERNET.md Eq. 13) gives every adder layer an update of
norm lr * eta * sqrt(k) however small its gradient is, so the weights keep moving by a fixed
amount until the learning rate decays; their average is the usual remedy for that noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.optim.optimizer import apply_projections

AVERAGED = (nnx.Param, nnx.BatchStat)


def average_decay(step: jax.Array, decay: float) -> jax.Array:
    """The decay d_t after optimizer step `step` (>= 1): min(decay, (1 + t) / (10 + t))."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_average(average: nnx.Module, model: nnx.Module, step: jax.Array,
                   decay: float) -> None:
    """average <- d_t * average + (1 - d_t) * model (in place) for every parameter and BatchNorm
    statistic; `average` and `model` have the same structure."""
    d = average_decay(step, decay)
    averaged = jax.tree.map(lambda a, m: (d * a + (1.0 - d) * m).astype(a.dtype),
                            nnx.state(average, AVERAGED), nnx.state(model, AVERAGED))
    nnx.update(average, averaged)
    apply_projections(average)
