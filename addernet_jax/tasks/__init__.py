"""Training methods, one file each, chosen by name with `config.task`.

    classification   cross-entropy training of one classifier (AdderNet or CNN)
    distillation     PKKD: an AdderNet distilled from a CNN trained with it (PKKD.md)
    super_resolution L1 training of an SR model (AdderSR VDSR / EDSR or their CNNs), PSNR

Each is a `tasks.base.Task`: its pipelines, train state, train step, evaluation, best metric and
config checks. The generic loop (`addernet_jax.training.loop`) runs any of them unchanged.
"""

from __future__ import annotations

from addernet_jax.tasks.base import (
    BestMetric,
    ConfigError,
    EvalData,
    Pipelines,
    Task,
    evaluate_set,
    jit_eval_step,
    jit_train_step,
)
from addernet_jax.tasks.classification import Classification
from addernet_jax.tasks.distillation import Distillation
from addernet_jax.tasks.super_resolution import SuperResolution

TASKS: dict[str, type[Task]] = {}


def register_task(task: type[Task]) -> type[Task]:
    """Makes `task` available as `config.task = task.name`."""
    TASKS[task.name] = task
    return task


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> type[Task]:
    """The task class named `name`; ConfigError naming the valid tasks otherwise."""
    if name not in TASKS:
        raise ConfigError(f"config.task = {name!r} is not one of {sorted(TASKS)}")
    return TASKS[name]


def task_for_model(model_task: str) -> type[Task]:
    """The task that evaluates models of kind `ModelInfo.task` (its name)."""
    return get_task(model_task)


register_task(Classification)
register_task(SuperResolution)
register_task(Distillation)

__all__ = [
    "TASKS",
    "BestMetric",
    "Classification",
    "Distillation",
    "ConfigError",
    "EvalData",
    "Pipelines",
    "SuperResolution",
    "Task",
    "evaluate_set",
    "get_task",
    "jit_eval_step",
    "jit_train_step",
    "register_task",
    "task_for_model",
    "task_names",
]
