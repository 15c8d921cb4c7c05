"""Checks a training config before any work is done; every error names the field.

The loop's own fields are checked here; everything about the model, the data and the optimizer
is the task's (`Task.check_config`).
"""

from __future__ import annotations

import ml_collections

from addernet_jax.runtime.parallel import check_batch_size
from addernet_jax.tasks import ConfigError, get_task
from addernet_jax.tasks.base import require

__all__ = ["ConfigError", "validate_config"]


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the field for any value that would fail later: the task, the
    loop's counts and batch sizes (a training batch the devices and processes can divide;
    evaluation batches are padded up to a multiple of the devices), then the task's checks."""
    task = get_task(config.get("task", "classification"))
    for field in ("num_epochs", "eval_every_epochs", "log_every_steps",
                  "checkpoint_every_steps", "keep_checkpoints"):
        require(config[field] >= 1, f"config.{field} = {config[field]} must be >= 1")
    try:
        check_batch_size(config.batch_size, "batch_size")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    require(config.eval_batch_size >= 1,
            f"config.eval_batch_size = {config.eval_batch_size} must be >= 1")
    require(config.get("precise_bn_batches", 0) >= 0,
            f"config.precise_bn_batches = {config.get('precise_bn_batches')} must be >= 0")
    task(config).check_config()
