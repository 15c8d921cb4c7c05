"""Checkpoint formats, all through orbax, and the checks every weight passes when it is read.

Two kinds:
  - model checkpoints: `<dir>/model` (model arrays only) + `<dir>/model_info.json` (the model
    spec: name, variant, constructor arguments; plus where it came from). Written by
    `convert_torch_weights.py` and `quantize.py`, read by `evaluate.py` and by `train.py` as an
    initialisation (`config.init_from`).
  - training checkpoints: `<workdir>/checkpoints/<step>/` with `state` (the task's whole train
    state: {'model': ..., 'optimizer': ..., and whatever else the task trains}), `data` (the
    grain iterator position) and `meta` (JSON: step, config, best metric, model specs). Written
    by `training.checkpoints.TrainingCheckpoints`; read here by `WorkdirReader`, which never
    writes: no cleanup of temporary directories, no deletion, so evaluating a workdir while
    its run saves is safe. Steps appear in the listing only once their save is complete (orbax
    renames a finished temporary directory into place).
Every array read is checked (`check_weights`): non-finite values, negative BatchNorm variances
and non-floating dtypes are refused naming the array. A training step that cannot be read is
skipped for the latest intact one, saying so.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

MODEL_INFO_FILE = "model_info.json"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
STATE_ITEM, DATA_ITEM, META_ITEM = "state", "data", "meta"
META_FILE = "metadata"  # orbax's JsonSave file inside the meta item
COMMIT_FILE = "commit_success.txt"  # written by orbax once a step's save is complete

logger = logging.getLogger("addernet_jax")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, mismatched or with bad values."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read or hold values no run saves (NaN/Inf)."""


def first_line(error: BaseException) -> str:
    """'TypeName: the first line of the message', for one-line reports of library errors."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def abstract_like(tree, sharding=None):
    """ShapeDtypeStructs of `tree` (with `sharding` when given), the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), tree)


def _flat(tree) -> dict[str, Any]:
    """'a/b/0/kernel' -> leaf. Orbax stores every dict key as a string (nnx.List index 0 comes
    back as '0'), so keys are compared as strings."""
    return {"/".join(str(getattr(e, "key", getattr(e, "idx", e))) for e in path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_same_structure(stored, target, where: str) -> None:
    """CheckpointError listing every missing, unexpected and mis-shaped array of `stored`."""
    flat_stored, flat_target = _flat(stored), _flat(target)
    missing = sorted(set(flat_target) - set(flat_stored))
    unexpected = sorted(set(flat_stored) - set(flat_target))
    misshaped = [f"{k}: {tuple(flat_stored[k].shape)} vs model {tuple(flat_target[k].shape)}"
                 for k in sorted(set(flat_stored) & set(flat_target))
                 if tuple(flat_stored[k].shape) != tuple(flat_target[k].shape)]
    if missing or unexpected or misshaped:
        raise CheckpointError(f"checkpoint {where} does not fit the model: missing {missing}, "
                              f"unexpected {unexpected}, mis-shaped {misshaped}")


def _array_problem(name: str, value) -> str | None:
    """What is wrong with one array, or None."""
    array = np.asarray(jax.device_get(value))
    if not (np.issubdtype(array.dtype, np.floating) or array.dtype.kind in "iub"
            or "bfloat16" in str(array.dtype)):
        return f"{name} has dtype {array.dtype}, which the model cannot use"
    if array.dtype.kind == "f" or "bfloat16" in str(array.dtype):
        values = array.astype(np.float32)
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            return f"{name} holds {bad} non-finite value(s) (NaN or Inf)"
        if name.rsplit("/", 1)[-1] == "var" and values.size and values.min() < 0:
            return f"{name} (a BatchNorm variance) holds negative values (min {values.min():.3g})"
    return None


def check_weights(tree, where: str, *, expected_dtypes: dict[str, Any] | None = None,
                  error: type[CheckpointError] = CheckpointError) -> None:
    """CheckpointError naming the first arrays that hold NaN/Inf, a negative BatchNorm variance
    (a leaf named 'var'), or a dtype that is not a number (or not `expected_dtypes[name]`'s
    kind: a float array where the model has floats).

    Args:
      tree: a pytree of arrays (pure dict or nnx.State).
      where: how to name the checkpoint in the message.
      expected_dtypes: 'a/b/leaf' -> the model's dtype, to refuse integer arrays where the model
        holds floats (and the reverse).
      error: the exception type raised.
    """
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    problems = []
    for name, value in _flat(tree).items():
        problem = _array_problem(name, value)
        expected = (expected_dtypes or {}).get(name)
        if problem is None and expected is not None:
            kind = np.dtype(np.asarray(jax.device_get(value)).dtype).kind
            if (kind == "f") != (np.dtype(expected).kind == "f"):
                problem = f"{name} has dtype {np.asarray(value).dtype}, the model {expected}"
        if problem:
            problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise error(f"{where}: {'; '.join(problems[:3])}{more}")


def _dtypes(target) -> dict[str, Any]:
    return {k: v.dtype for k, v in _flat(target).items()}


# ---------------------------------------------------------------------------------------------
# Model checkpoints.


def save_model_checkpoint(directory: str | Path, model_state, info: dict[str, Any]) -> None:
    """Writes a model checkpoint: `<directory>/model` (orbax) and `model_info.json`.

    Raises:
      FileExistsError: when `directory` exists (nothing is overwritten).
    """
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; choose a new output directory")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / MODEL_DIR, nnx.to_pure_dict(model_state))
    (directory / MODEL_INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")


def read_model_info(directory: str | Path) -> dict[str, Any]:
    """The `model_info.json` of a model checkpoint (a JSON object naming at least its
    'model'); CheckpointError when it is missing or malformed."""
    path = Path(directory) / MODEL_INFO_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a model checkpoint (no {MODEL_INFO_FILE}); "
                              "make one with convert_torch_weights.py")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({first_line(e)})") from None
    if not isinstance(info, dict) or "model" not in info:
        raise CheckpointError(f"{path} does not describe a model (no 'model' name)")
    return info


def load_model_checkpoint(directory: str | Path, model: nnx.Module, sharding=None) -> None:
    """Fills `model` (concrete, or abstract from `nnx.eval_shape`) from a model checkpoint, in
    place, after checking that the arrays fit the model and hold usable values.

    Raises:
      CheckpointError: not a model checkpoint, damaged files, arrays that do not fit the model
        (all mismatches named), or bad values (`check_weights`).
    """
    directory = Path(directory).absolute()
    if not (directory / MODEL_DIR).is_dir():
        raise CheckpointError(f"{directory} is not a model checkpoint (no {MODEL_DIR}/); make "
                              "one with convert_torch_weights.py")
    state = nnx.state(model)
    target = nnx.to_pure_dict(state)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            stored = checkpointer.metadata(directory / MODEL_DIR).item_metadata
            if not _flat(stored):
                raise DamagedCheckpointError(f"cannot read the model checkpoint {directory} "
                                             "(its array metadata is missing or unreadable)")
            check_same_structure(stored, target, str(directory))
            restored = checkpointer.restore(directory / MODEL_DIR, abstract_like(target, sharding))
    except CheckpointError:
        raise
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise DamagedCheckpointError(f"cannot read the model checkpoint {directory} "
                                     f"({first_line(e)})") from e
    check_weights(restored, f"model checkpoint {directory}", expected_dtypes=_dtypes(target))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


# ---------------------------------------------------------------------------------------------
# Training workdirs, read-only.


def checkpoints_dir(workdir: str | Path) -> Path:
    return Path(workdir).absolute() / CHECKPOINTS_DIR


def is_training_workdir(path: str | Path) -> bool:
    return checkpoints_dir(path).is_dir()


class WorkdirReader:
    """Read-only access to a training workdir's checkpoints: it never writes, deletes or cleans
    up, and it does not use an orbax CheckpointManager (whose reading of every step's metadata
    races with the run deleting old steps). A step is listed once its save has committed (its
    directory has the numeric name orbax renames it to at the end, and `commit_success.txt`);
    a step that disappears or cannot be read while the run is saving is skipped for the next
    newest, re-listing the directory.

    Args:
      workdir: the directory `train.py` wrote.
    """

    def __init__(self, workdir: str | Path):
        self.directory = checkpoints_dir(workdir)
        if not self.directory.is_dir():
            raise CheckpointError(f"{workdir} is not a training workdir (no {CHECKPOINTS_DIR}/)")

    def steps(self) -> list[int]:
        """The committed steps, oldest first (re-read from disk every call)."""
        try:
            names = [entry.name for entry in os.scandir(self.directory)]
        except FileNotFoundError:
            return []
        return sorted(int(name) for name in names
                      if name.isdigit() and (self.directory / name / COMMIT_FILE).exists())

    def meta(self, step: int) -> dict:
        """The JSON meta saved with `step`."""
        path = self.directory / str(step) / META_ITEM / META_FILE
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedCheckpointError(f"{path}: cannot read the meta ({first_line(e)})") from e
        if not isinstance(meta, dict):
            raise DamagedCheckpointError(f"{path}: the meta is not a JSON object")
        return meta

    def latest_readable(self, read: Callable[[int], Any], *, prefer: int | None = None,
                        log: Callable[[str], None] = logger.warning) -> tuple[int, Any]:
        """(step, read(step)) for `prefer` (if it exists) or else the newest step that can be
        read. A damaged step is skipped for the next older one, saying so through `log`; a step
        that vanished meanwhile (the run deleted it) is skipped silently, re-listing.

        Raises:
          CheckpointError: no step at all, or none readable (the last error named).
        """
        failed: dict[int, Exception] = {}
        while True:
            steps = [s for s in self.steps() if s not in failed]
            if not steps:
                if failed:
                    raise CheckpointError(f"no readable checkpoint in {self.directory}: "
                                          f"{list(failed.values())[-1]}")
                raise CheckpointError(f"{self.directory} holds no checkpoint")
            step = prefer if prefer in steps else steps[-1]
            try:
                return step, read(step)
            except (CheckpointError, FileNotFoundError) as e:
                failed[step] = e
                if (self.directory / str(step)).exists():
                    log(f"warning: checkpoint step {step} in {self.directory} cannot be used "
                        f"({e}); trying the previous one")

    def best_step(self) -> tuple[int, dict]:
        """(step, meta) of the best step recorded by the run (the `best_step` of the latest
        readable meta), else the latest readable step."""
        latest, meta = self.latest_readable(self.meta)
        best = meta.get("best_step")
        if best is not None and best != latest and best in self.steps():
            try:
                return best, self.meta(best)
            except (CheckpointError, FileNotFoundError) as e:
                logger.warning("warning: best step %s unreadable (%s); using step %s", best, e,
                               latest)
        return latest, meta

    def restore_model(self, step: int, model: nnx.Module, *, key: str = "model",
                      sharding=None) -> None:
        """Restores the arrays of `state/<key>` of `step` into `model`, in place, checked.

        Raises:
          CheckpointError: the step has no such model, it does not fit, or it is damaged.
        """
        state = nnx.state(model)
        target = {key: nnx.to_pure_dict(state)}
        where = f"{self.directory / str(step)} ({key})"
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        item = self.directory / str(step) / STATE_ITEM
        try:
            with ocp.PyTreeCheckpointer() as checkpointer:
                stored = checkpointer.metadata(item).item_metadata.tree
                if key not in stored:
                    raise CheckpointError(f"{where}: the training state has no {key!r} "
                                          f"(it has {sorted(stored)})")
                check_same_structure({key: stored[key]}, target, where)
                restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding),
                                            target)
                restored = checkpointer.restore(item, args=ocp.args.PyTreeRestore(
                    item=abstract_like(target, sharding), restore_args=restore_args,
                    partial_restore=True))
        except CheckpointError:
            raise
        except Exception as e:
            raise DamagedCheckpointError(f"cannot read {where} ({first_line(e)})") from e
        check_weights(restored[key], where, expected_dtypes=_dtypes(target[key]),
                      error=DamagedCheckpointError)
        nnx.replace_by_pure_dict(state, restored[key])
        nnx.update(model, state)

    def close(self) -> None:
        """Nothing to release (kept so that readers are used as context managers)."""

    def __enter__(self) -> WorkdirReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
