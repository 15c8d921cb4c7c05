"""The training loop's checkpoints: the whole train state, the data iterator and meta per step.

`<workdir>/checkpoints/<step>/` holds `state` (the task's train state as one pytree,
{'model': ..., 'optimizer': ..., ...}), `data` (the grain iterator position, so a resumed run
sees exactly the batches it would have seen) and `meta` (JSON). The latest `keep` steps are
kept, plus the best by the task's metric (in the task's direction). Saving is atomic (orbax
writes a temporary directory and renames it): an interrupted save leaves the previous
checkpoints intact. Readers use `addernet_jax.runtime.checkpoints.WorkdirReader`, which never
writes.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import grain.checkpoint as grain_checkpoint
import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from addernet_jax.runtime.checkpoints import (
    DATA_ITEM,
    META_ITEM,
    STATE_ITEM,
    CheckpointError,
    DamagedCheckpointError,
    abstract_like,
    check_same_structure,
    check_weights,
    checkpoints_dir,
    first_line,
)

# Room a checkpoint needs beyond its arrays' bytes: orbax's metadata, the iterator and meta JSON,
# and the temporary copy of the files it renames into place.
SPACE_OVERHEAD_BYTES = 1 << 20

RANKING_KEY = "value"  # the metric orbax ranks steps by, stored with each evaluated step


class _QuietUnrankedSaves(logging.Filter):
    """Drops orbax's "Requested `tracked_metric`; did not provide metrics." warning: steps that
    were not evaluated (mid-epoch and preemption saves) are saved without a metric on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Requested `tracked_metric`" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietUnrankedSaves())


def _as_pure(state: dict) -> dict:
    return {name: nnx.to_pure_dict(value) for name, value in state.items()}


class TrainingCheckpoints:
    """Saves and restores (train state, data iterator, meta) in `<workdir>/checkpoints`.

    Args:
      workdir: the run's directory.
      keep: how many of the latest steps to keep (the best is kept besides).
      mode: 'max' or 'min': the direction in which the ranking metric is better.
    """

    def __init__(self, workdir: str | Path, *, keep: int = 3, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        rank = lambda metrics: metrics[RANKING_KEY]  # noqa: E731
        options = ocp.CheckpointManagerOptions(
            # best_fn makes the manager record metrics; the policy decides what is deleted.
            best_fn=rank,
            best_mode=mode,
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=keep),
                policies.BestN(get_metric_fn=rank, reverse=mode == "min", n=1,
                               keep_checkpoints_without_metrics=False),
            ]),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,  # the writer's own leftovers from a killed save
        )
        self.directory = checkpoints_dir(workdir)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state: dict, data_iterator, meta: dict,
             value: float | None = None) -> None:
        """Saves one step; `value` (the task's metric, when the step was evaluated) ranks it.

        Args:
          step: the optimizer step.
          state: {name: nnx.State} of the train state (models, optimizers, ...).
          data_iterator: the grain iterator, saved at its position.
          meta: JSON-able meta (step, config, best metric, model specs, ...).
          value: the evaluation metric of this step, or None.
        """
        self._check_free_space(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(**{
                STATE_ITEM: ocp.args.StandardSave(_as_pure(state)),
                DATA_ITEM: grain_checkpoint.CheckpointSave(data_iterator),
                META_ITEM: ocp.args.JsonSave(meta)}),
            metrics=None if value is None else {RANKING_KEY: float(value)},
            force=True,
        )
        self.manager.wait_until_finished()

    def _check_free_space(self, state: dict) -> None:
        """Refuses a save that cannot fit before any of it is written.

        A write that runs out of space midway fails inside orbax while tensorstore still holds
        the step's other writes, which then print tracebacks from tensorstore's threads; a full
        disk is better reported once, before the first byte (the previous checkpoints are
        untouched either way)."""
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(_as_pure(state))
                     if hasattr(leaf, "nbytes")) + SPACE_OVERHEAD_BYTES
        free = shutil.disk_usage(self.directory if self.directory.exists()
                                 else self.directory.parent).free
        if free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          f"{self.directory} ({free} bytes free, a checkpoint needs {needed})")

    def restore(self, step: int, state: dict, data_iterator, sharding=None) -> dict:
        """Restores `step` into `state` ({name: nnx.State}, in place) and the iterator; returns
        its meta.

        Raises:
          CheckpointError: the step does not fit the train state (every mismatch named), is
            damaged, or holds non-finite values.
        """
        target = _as_pure(state)
        where = str(self.directory / str(step))
        try:
            stored = self.manager.item_metadata(step)[STATE_ITEM]
            if stored is not None:
                check_same_structure(stored, target, where)
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.StandardRestore(abstract_like(target, sharding)),
                    DATA_ITEM: grain_checkpoint.CheckpointRestore(data_iterator),
                    META_ITEM: ocp.args.JsonRestore()}))
        except CheckpointError:
            raise
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            raise DamagedCheckpointError(f"cannot read checkpoint {where} ({first_line(e)})"
                                         ) from e
        check_weights(restored[STATE_ITEM], f"checkpoint {where}", error=DamagedCheckpointError)
        for name, value in state.items():
            nnx.replace_by_pure_dict(value, restored[STATE_ITEM][name])
        return restored[META_ITEM]

    def restore_meta(self, step: int) -> dict:
        """The JSON meta of `step` alone; DamagedCheckpointError when it cannot be read."""
        try:
            return self.manager.restore(
                step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))[META_ITEM]
        except Exception as e:
            raise DamagedCheckpointError(f"cannot read the meta of checkpoint "
                                         f"{self.directory / str(step)} ({first_line(e)})") from e

    def set_aside(self, step: int) -> Path:
        """Renames an unreadable step out of the way (to `<step>.unreadable-<n>`, which orbax
        does not list) so that the run can continue from an earlier one; nothing is deleted."""
        source = self.directory / str(step)
        for n in range(1000):
            target = self.directory / f"{step}.unreadable-{n}"
            if not target.exists():
                break
        source.rename(target)
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()
