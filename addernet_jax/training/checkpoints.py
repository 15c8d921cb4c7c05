"""Checkpoints, all through orbax.

Two kinds:
  - training checkpoints: an orbax `CheckpointManager` in `<workdir>/checkpoints`, one step
    directory per save holding `state` ({'model', 'optimizer'} arrays), `data` (the grain
    iterator position, so a resumed run sees exactly the batches it would have seen) and `meta`
    (JSON). The latest `keep` are kept, plus the best by test accuracy.
  - model checkpoints: `<dir>/model` (model arrays only) + `<dir>/model_info.json` (model name,
    variant, number of classes, where it came from). Written by `convert_torch_weights.py`, read
    by `evaluate.py` and by `train.py` as an initialisation (`config.init_from`).
Saving is atomic (orbax writes a temporary directory and renames it): an interrupted save leaves
the previous checkpoints intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain.checkpoint as grain_checkpoint
import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

BEST_METRIC = "accuracy"
MODEL_INFO_FILE = "model_info.json"


def _abstract(tree, sharding=None):
    """ShapeDtypeStructs of `tree` (with `sharding` when given), the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), tree)


class TrainingCheckpoints:
    """Saves and restores (model, optimizer, data iterator, meta) in `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | Path, *, keep: int = 3):
        options = ocp.CheckpointManagerOptions(
            # best_fn makes the manager record metrics and answer best_step(); the policy
            # decides what is deleted.
            best_fn=lambda metrics: metrics[BEST_METRIC],
            best_mode="max",
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=keep),
                policies.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                               keep_checkpoints_without_metrics=False),
            ]),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, model_state, optimizer_state, data_iterator, meta: dict,
             accuracy: float | None = None) -> None:
        """Saves one step; `accuracy` (when the step was evaluated) ranks it for keep-best."""
        state = {"model": nnx.to_pure_dict(model_state),
                 "optimizer": nnx.to_pure_dict(optimizer_state)}
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    data=grain_checkpoint.CheckpointSave(data_iterator),
                                    meta=ocp.args.JsonSave(meta)),
            metrics=None if accuracy is None else {BEST_METRIC: float(accuracy)},
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, model_state, optimizer_state, data_iterator, sharding=None):
        """Restores `step` into the given states (in place) and iterator; returns its meta."""
        target = {"model": nnx.to_pure_dict(model_state),
                  "optimizer": nnx.to_pure_dict(optimizer_state)}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(target, sharding)),
                data=grain_checkpoint.CheckpointRestore(data_iterator),
                meta=ocp.args.JsonRestore()))
        nnx.replace_by_pure_dict(model_state, restored["state"]["model"])
        nnx.replace_by_pure_dict(optimizer_state, restored["state"]["optimizer"])
        return restored["meta"]

    def restore_meta(self, step: int) -> dict:
        """The JSON meta saved with `step` (its training config, best accuracy, ...)."""
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"]

    def restore_model(self, step: int, model: nnx.Module, sharding=None) -> None:
        """Restores only the model arrays of `step` into `model`, in place (evaluation)."""
        state = nnx.state(model)
        target = {"model": nnx.to_pure_dict(state)}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=_abstract(target, sharding),
                    restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding),
                                              target) if sharding else None,
                    partial_restore=True)))
        nnx.replace_by_pure_dict(state, restored["state"]["model"])
        nnx.update(model, state)

    def close(self) -> None:
        self.manager.close()


def save_model_checkpoint(directory: str | Path, model_state, info: dict[str, Any]) -> None:
    """Writes a model checkpoint: `<directory>/model` (orbax) and `model_info.json`.

    Raises:
      FileExistsError: when `directory` exists (nothing is overwritten).
    """
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; choose a new output directory")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "model", nnx.to_pure_dict(model_state))
    (directory / MODEL_INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")


def read_model_info(directory: str | Path) -> dict[str, Any]:
    """The `model_info.json` of a model checkpoint; ValueError when it is not one."""
    path = Path(directory) / MODEL_INFO_FILE
    if not path.is_file():
        raise ValueError(f"{directory} is not a model checkpoint (no {MODEL_INFO_FILE}); "
                         "make one with convert_torch_weights.py")
    return json.loads(path.read_text())


def load_model_checkpoint(directory: str | Path, model: nnx.Module, sharding=None) -> None:
    """Fills `model` (concrete, or abstract from `nnx.eval_shape`) from a model checkpoint, in
    place.

    Raises:
      ValueError: when `directory` is not a model checkpoint, or naming the mismatching arrays
        when it does not fit the model.
    """
    directory = Path(directory).absolute()
    if not (directory / "model").is_dir():
        raise ValueError(f"{directory} is not a model checkpoint (no model/); make one with "
                         "convert_torch_weights.py")
    state = nnx.state(model)
    target = nnx.to_pure_dict(state)
    with ocp.StandardCheckpointer() as checkpointer:
        stored = checkpointer.metadata(directory / "model").item_metadata
        check_same_structure(stored, target, str(directory))
        restored = checkpointer.restore(directory / "model", _abstract(target, sharding))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def check_same_structure(stored, target, where: str) -> None:
    """ValueError listing every missing, unexpected and mis-shaped array of `stored`."""
    # Orbax stores every dict key as a string: nnx.List index 0 comes back as '0'.
    def flat(tree):
        return {"/".join(str(getattr(e, "key", getattr(e, "idx", e))) for e in path): leaf
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    flat_stored, flat_target = flat(stored), flat(target)
    missing = sorted(set(flat_target) - set(flat_stored))
    unexpected = sorted(set(flat_stored) - set(flat_target))
    misshaped = [f"{k}: {tuple(flat_stored[k].shape)} vs model {tuple(flat_target[k].shape)}"
                 for k in sorted(set(flat_stored) & set(flat_target))
                 if tuple(flat_stored[k].shape) != tuple(flat_target[k].shape)]
    if missing or unexpected or misshaped:
        raise ValueError(f"checkpoint {where} does not fit the model: missing {missing}, "
                         f"unexpected {unexpected}, mis-shaped {misshaped}")
