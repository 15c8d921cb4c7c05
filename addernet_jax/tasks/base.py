"""The interface a training method implements, and what the generic loop does with it.

A task owns everything that differs between training methods (classification, distillation,
super-resolution, ...); `addernet_jax.training.loop.train_and_evaluate` runs any of them:

    task = get_task(config.task)(config)
    task.check_config()                       # ConfigError naming the field, before any work
    pipes = task.create_pipelines()           # train batches, evaluation sets, steps per epoch
    state = task.create_state(pipes.steps_per_epoch)   # {'model': ..., 'optimizer': ..., ...}
    metrics = task.train_step(state, batch)   # inside jit; updates the nnx objects in place
    sums = task.eval_step(task.eval_models(state), batch, split)   # per-batch sums, in jit
    results = task.reduce(total_sums, split)  # -> metrics of the whole evaluation set
    task.end_of_epoch(state)                  # optional per-epoch hook

The train state is a dict of named NNX objects (models and optimizers); the loop checkpoints it
as one pytree and restores it exactly. The model under 'model' is the one the run exports:
`evaluate.py` and `init_from` load it as any other model checkpoint. `best` says which
evaluation metric picks the best checkpoint, and in which direction.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import grain
import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from addernet_jax.optim import apply_epoch_end
from addernet_jax.runtime import parallel


class ConfigError(ValueError):
    """A config field has a value the run cannot use."""


def require(condition: bool, message: str) -> None:
    """ConfigError(message) unless `condition`."""
    if not condition:
        raise ConfigError(message)


def one_of(value, choices, field: str) -> None:
    """ConfigError naming `field` unless `value` is one of `choices`."""
    require(value in choices, f"config.{field} = {value!r} is not one of {sorted(choices)}")


@dataclasses.dataclass
class EvalData:
    """One evaluation set: this process's part of padded global batches (each with a boolean
    'mask', False on padding) and how many batches there are."""

    loader: Iterable[dict[str, np.ndarray]]
    num_batches: int


@dataclasses.dataclass
class Pipelines:
    """A run's data: training batches, evaluation sets by name, optimizer steps per epoch."""

    train: grain.IterDataset
    steps_per_epoch: int
    evals: dict[str, EvalData]


@dataclasses.dataclass(frozen=True)
class BestMetric:
    """The evaluation metric that ranks checkpoints.

    Attributes:
      split: the evaluation set it comes from (a key of `Pipelines.evals`).
      key: its key in that set's `reduce` results.
      name: how summaries and logs call it ('accuracy' gives `best_accuracy`).
      mode: 'max' (higher is better) or 'min'.
    """

    split: str
    key: str
    name: str
    mode: str = "max"

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


class Task(abc.ABC):
    """A training method: pipelines, train state, train step, evaluation, best metric, checks.

    Subclasses set `name` and `best` and implement the abstract methods. `defining_fields`
    lists the config fields (or section prefixes ending in '.') that define the model or the
    data: a resumed run must keep them (training.resume).
    """

    name: ClassVar[str]
    best: ClassVar[BestMetric]
    defining_fields: ClassVar[tuple[str, ...]] = ("task", "model.name", "model.variant",
                                                  "data.dataset")

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @abc.abstractmethod
    def check_config(self) -> None:
        """Raises ConfigError naming the field for any value that would fail later."""

    @abc.abstractmethod
    def create_pipelines(self) -> Pipelines:
        """Sources, transforms and loaders for this process's shard of every global batch."""

    @abc.abstractmethod
    def create_state(self, steps_per_epoch: int) -> dict[str, Any]:
        """The train state: named models and optimizers, the exported model under 'model'."""

    @abc.abstractmethod
    def model_specs(self) -> dict[str, dict]:
        """Model specs (`addernet_jax.models.model_spec`) of the state's models by state key;
        'model' is the exported one."""

    @abc.abstractmethod
    def train_step(self, state: dict[str, Any], batch: dict[str, jax.Array]) -> dict:
        """One optimizer step on `batch` (global arrays), updating `state` in place; returns
        scalar metrics, at least 'loss' (checked for NaN/Inf) and 'learning_rate'."""

    def eval_models(self, state: dict[str, Any]) -> dict[str, Any]:
        """The part of the state that evaluation needs (default: the exported model)."""
        return {"model": state["model"]}

    def model_inputs(self, batch: dict[str, jax.Array]) -> jax.Array:
        """What the evaluated models take from a batch (default: the 'image' field); used to
        run them outside the task's own steps (precise BatchNorm statistics)."""
        return batch["image"]

    @abc.abstractmethod
    def eval_step(self, models: dict[str, Any], batch: dict[str, jax.Array], split: str) -> dict:
        """Sums over the real (mask == True) examples of one evaluation batch (in jit)."""

    @abc.abstractmethod
    def reduce(self, sums: dict[str, float], split: str) -> dict[str, float]:
        """The metrics of a whole evaluation set from its summed `eval_step` outputs."""

    @abc.abstractmethod
    def format_train(self, metrics: dict[str, float]) -> str:
        """One short line of training metrics (progress bar, log)."""

    @abc.abstractmethod
    def format_eval(self, results: dict[str, float]) -> str:
        """One short line of evaluation metrics."""

    def format_best(self, value: float) -> str:
        return f"{value:.4f}"

    def end_of_epoch(self, state: dict[str, Any]) -> None:
        """Called after every epoch's steps, before its evaluation and checkpoint: re-projects
        parameters whose types ask for it (ShiftAddNet, SHIFTADDNET.md 1.6), unless
        `config.epoch_end_projection` is False."""
        if self.config.get("epoch_end_projection", True):
            for value in state.values():
                if isinstance(value, nnx.Module):
                    apply_epoch_end(value)


# ---------------------------------------------------------------------------------------------
# Evaluation over a whole set on every device, shared by the loop and evaluate.py.


def jit_train_step(task: Task) -> Callable:
    """`task.train_step` as a pure jitted function (graphdef, state arrays, batch) ->
    (state arrays, metrics), with the state arrays donated."""

    def step(graphdef, arrays, batch):
        state = nnx.merge(graphdef, arrays)
        metrics = task.train_step(state, batch)
        return nnx.state(state), metrics

    return jax.jit(step, static_argnums=0, donate_argnums=1)


def jit_eval_step(task: Task, split: str) -> Callable:
    """`task.eval_step` for `split` as a jitted function of (graphdef, arrays, batch)."""

    def step(graphdef, arrays, batch):
        return task.eval_step(nnx.merge(graphdef, arrays), batch, split)

    return jax.jit(step, static_argnums=0)


def evaluate_set(task: Task, models: dict[str, Any], data: EvalData, mesh: Mesh, split: str, *,
                 progress: Callable | None = None, step_fn: Callable | None = None) -> dict:
    """Runs `task.eval_step` over every batch of `data` and reduces the sums.

    Args:
      task: the task.
      models: `task.eval_models(state)` (or {'model': a loaded model}).
      data: the evaluation set.
      mesh: the device mesh; batches are sharded along 'data', models replicated.
      split: the set's name, passed to the task.
      progress: optional `progress(total=...)` factory for a bar over the batches.
      step_fn: a jitted eval step from `jit_eval_step` (compiled once per run and split).

    Returns:
      `task.reduce(...)` plus 'images_per_sec' and 'seconds'.
    """
    graphdef, arrays = nnx.split(models)
    arrays = parallel.replicate(mesh, arrays)
    step_fn = step_fn or jit_eval_step(task, split)
    totals = None
    bar = progress(total=data.num_batches) if progress else None
    start = time.perf_counter()
    for local in data.loader:
        sums = step_fn(graphdef, arrays, parallel.global_batch(mesh, local))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
        if bar:
            bar.update(1)
    totals = jax.device_get(totals)
    seconds = time.perf_counter() - start
    if bar:
        bar.close()
    if totals is None or totals["count"] == 0:
        raise ValueError("evaluation saw no examples")
    results = task.reduce(totals, split)
    return {**results, "images_per_sec": float(totals["count"]) / seconds, "seconds": seconds}
