"""Evaluation over a whole dataset on every device: top-1, top-5, loss, images per second."""

from __future__ import annotations

import time
from collections.abc import Iterable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from addernet_jax.training import parallel
from addernet_jax.training.metrics import progress
from addernet_jax.training.steps import eval_step

_jitted_eval_step = jax.jit(eval_step, static_argnums=0)


def evaluate(model: nnx.Module, batches: Iterable[dict[str, np.ndarray]], mesh: Mesh, *,
             num_batches: int | None = None, show_progress: bool = False,
             description: str = "eval") -> dict[str, float]:
    """Runs `model` in eval mode over `batches` (this process's rows of padded global batches
    with a `mask`, as `make_eval_loader` yields them) and returns exact dataset metrics.

    Returns:
      {'top1', 'top5' (fractions), 'loss' (mean cross-entropy), 'count' (real examples),
       'images_per_sec', 'seconds'}.
    """
    graphdef, state = nnx.split(model)
    state = parallel.replicate(mesh, state)
    totals = None
    start = time.perf_counter()
    bar = progress(total=num_batches, description=description, enabled=show_progress)
    for local in batches:
        sums = _jitted_eval_step(graphdef, state, parallel.global_batch(mesh, local))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        bar.update(1)
    totals = jax.device_get(totals)
    seconds = time.perf_counter() - start
    bar.close()
    if totals is None or totals["count"] == 0:
        raise ValueError("evaluation saw no examples")
    count = float(totals["count"])
    return {"top1": float(totals["correct_top1"]) / count,
            "top5": float(totals["correct_top5"]) / count,
            "loss": float(totals["loss_sum"]) / count,
            "count": int(count), "images_per_sec": count / seconds, "seconds": seconds}
