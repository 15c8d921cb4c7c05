"""Checks a training config before any work is done; every error names the field."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from addernet_jax.data.datasets import DATASETS, ORIGINS
from addernet_jax.models import list_models
from addernet_jax.models.common import VARIANTS
from addernet_jax.ops import IMPLEMENTATIONS
from addernet_jax.training.parallel import check_batch_size

SCHEDULES = ("per_epoch_cosine", "constant")


class ConfigError(ValueError):
    """A config field has a value the run cannot use."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _one_of(value, choices, field: str) -> None:
    _require(value in choices, f"config.{field} = {value!r} is not one of {sorted(choices)}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the field for any value that would fail later.

    Covers the model and dataset names, the variant and implementation, the data source and
    local path, the schedule, positive counts, and a training batch that the devices and
    processes can divide (evaluation batches are padded up to a multiple of the devices).
    """
    _one_of(config.model.name, list_models(), "model.name")
    _one_of(config.model.variant, VARIANTS, "model.variant")
    _one_of(config.model.impl, ["auto", *IMPLEMENTATIONS], "model.impl")
    _one_of(config.data.dataset, DATASETS, "data.dataset")
    _one_of(config.data.source, ORIGINS, "data.source")
    if config.data.source == "local":
        path = Path(config.data.local_path)
        _require(bool(config.data.local_path) and path.is_dir(),
                 f"config.data.local_path = {config.data.local_path!r} is not a directory "
                 "(needed when config.data.source = 'local')")
    _one_of(config.schedule.name, SCHEDULES, "schedule.name")
    for field in ("num_epochs", "eval_every_epochs", "log_every_steps",
                  "checkpoint_every_steps", "keep_checkpoints"):
        _require(config[field] >= 1, f"config.{field} = {config[field]} must be >= 1")
    _require(config.optimizer.learning_rate > 0,
             f"config.optimizer.learning_rate = {config.optimizer.learning_rate} must be > 0")
    _require(config.data.train_subset >= 0, "config.data.train_subset must be >= 0")
    if config.init_from:
        _require(Path(config.init_from).is_dir(),
                 f"config.init_from = {config.init_from!r} is not a directory")
    try:
        check_batch_size(config.batch_size, "batch_size")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _require(config.eval_batch_size >= 1,
             f"config.eval_batch_size = {config.eval_batch_size} must be >= 1")
