"""Precise BatchNorm statistics: running averages recomputed over training batches with the
weights frozen, before an evaluation (pycls `compute_precise_bn_stats`, detectron2
`update_bn_stats`).

AdderNet's adaptive learning rate moves every adder weight by about lr * eta / (1 - momentum)
per step, far faster than BatchNorm's running averages (momentum 0.1) follow, so early
evaluations in eval mode sit near chance while training accuracy is high (README, RESULTS.md).
Recomputing the statistics for the current weights removes that lag; training itself is
unaffected (train mode normalises with batch statistics). The statistics are those of all the
examples of the batches: the mean of the batch means, and (equal batch sizes) the mean of the
batch variances plus the variance of the batch means, the law of total variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from addernet_jax.runtime import parallel


def _batch_norms(model: nnx.Module) -> list[nnx.BatchNorm]:
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def _batch_statistics(graphdef, arrays, inputs):
    """Every BatchNorm's (batch mean, batch variance, squared batch mean) for one batch, from a
    train-mode forward whose running averages take the batch's statistics (momentum 0)."""
    models = nnx.merge(graphdef, arrays)
    for model in models.values():
        model.train()
        for layer in _batch_norms(model):
            layer.momentum = 0.0
        model(inputs)
    return {"stats": nnx.to_pure_dict(nnx.state(models, nnx.BatchStat)),
            "squared_means": _squared_means(models)}


def _squared_means(models: dict) -> list[jax.Array]:
    return [jnp.square(layer.mean[...]) for model in models.values()
            for layer in _batch_norms(model)]


_jitted_statistics = jax.jit(_batch_statistics, static_argnums=0)


def recompute_batch_norm(models: dict[str, nnx.Module], batches: Iterable, mesh: Mesh,
                         inputs: Callable, num_batches: int) -> int:
    """Replaces the running mean and variance of every BatchNorm of `models` (in place) by the
    statistics of `num_batches` batches of training data.

    Args:
      models: named NNX models (e.g. `task.eval_models(state)`).
      batches: an iterator of this process's part of global training batches.
      mesh: the device mesh (batches sharded along 'data', models replicated).
      inputs: `inputs(batch)` -> what the models take (`task.model_inputs`).
      num_batches: how many batches to average over.

    Returns:
      The number of batches used (fewer when `batches` ends first).
    """
    graphdef, arrays = nnx.split(models)
    arrays = parallel.replicate(mesh, arrays)
    totals, count = None, 0
    for local in batches:
        if count == num_batches:
            break
        out = _jitted_statistics(graphdef, arrays, inputs(parallel.global_batch(mesh, local)))
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        count += 1
    if count == 0:
        return 0
    _assign_averages(models, jax.tree.map(lambda t: t / count, totals))
    return count


def _assign_averages(models: dict[str, nnx.Module], averages: dict) -> None:
    """mean = E[batch mean]; var = E[batch var] + E[batch mean^2] - E[batch mean]^2."""
    stats = nnx.state(models, nnx.BatchStat)
    nnx.replace_by_pure_dict(stats, averages["stats"])
    nnx.update(models, stats)
    layers = [layer for model in models.values() for layer in _batch_norms(model)]
    for layer, squared_mean in zip(layers, averages["squared_means"], strict=True):
        spread = jnp.maximum(squared_mean - jnp.square(layer.mean[...]), 0.0)
        layer.var[...] = layer.var[...] + spread
