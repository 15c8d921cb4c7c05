"""`.pth` file -> model checkpoint (what `convert_torch_weights.py` runs), and `.pth` -> model.

    info = convert_torch_checkpoint("ResNet20-AdderNet.pth", "ckpt/resnet20", model="resnet20")

reads the file without torch and without running code from it (`load_torch_state_dict`), maps
it onto the named model (`torch_state_dict_to_nnx`), and writes an orbax model checkpoint
(`save_model_checkpoint`: `<dir>/model` + `<dir>/model_info.json`) that `evaluate.py` and
`train.py --config.init_from` read. The output appears complete or not at all: it is written into
a hidden temporary sibling directory and renamed at the end; an existing output is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from addernet_jax.convert.mapping import torch_state_dict_to_nnx
from addernet_jax.convert.torch_pickle import load_torch_state_dict
from addernet_jax.models import abstract_from_spec, describe_spec, get_model_info, model_spec
from addernet_jax.runtime.checkpoints import CheckpointError, check_weights, save_model_checkpoint

__all__ = ["convert_torch_checkpoint", "load_torch_checkpoint_into", "sha256_of_file"]


FORMAT = "pytorch state_dict (huawei-noah/AdderNet names)"


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_and_map(path: Path, model: nnx.Module, what: str, extra_module_classes) -> nnx.State:
    """The file's arrays as `model`'s state, checked; errors name the file and the array."""
    state_dict = load_torch_state_dict(path, extra_module_classes)
    try:
        state = torch_state_dict_to_nnx(state_dict, model, what=what)
    except ValueError as err:  # the file does not fit the model: a mismatched checkpoint
        raise CheckpointError(f"{path}: {err}") from None
    check_weights(state, str(path))  # NaN/Inf, negative BatchNorm variances: refused, named
    return state


def _check_output(output: Path) -> None:
    if output.exists() or output.is_symlink():
        raise FileExistsError(f"output {output} already exists; nothing was written")


def _save_atomically(output: Path, state: nnx.State, info: dict[str, Any]) -> None:
    """Writes the model checkpoint into a temporary sibling, then renames it to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)  # only once the input has been read
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        save_model_checkpoint(staging / "checkpoint", state, info)
        _check_output(output)  # again: it may have appeared meanwhile
        os.rename(staging / "checkpoint", output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def convert_torch_checkpoint(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model: str,
    num_classes: int | None = None,
    variant: str = "adder",
    extra_module_classes: Iterable[str] = (),
) -> dict[str, Any]:
    """Converts a PyTorch `.pth` checkpoint into a model checkpoint directory.

    Args:
      input_path: a file written by `torch.save` (a state_dict, a dict wrapping one, or a whole
        pickled model of allow-listed classes), e.g. the released `ResNet20-AdderNet.pth`.
      output_dir: the directory to create; it must not exist.
      model: a registered model name (`addernet_jax.models.list_models()`).
      num_classes: the model's number of logits (default: that of the model's dataset).
      variant: 'adder' (official AdderNet keys, filters named `adder`) or 'cnn'.
      extra_module_classes: further "module.Class" nn.Module classes a pickled model may hold.

    Returns:
      The info written to `model_info.json`: model, variant, num_classes, the source file's
      name and SHA-256.

    Raises:
      FileNotFoundError: no input file.
      FileExistsError: the output exists.
      ValueError: unknown model or variant; an unreadable, corrupt, truncated or unsafe file
        (`CheckpointFormatError`, `UnsafePickleError`); or arrays that do not fit the model
        (every missing, unexpected and mis-shaped key listed).
    """
    num_classes = get_model_info(model).num_classes if num_classes is None else num_classes
    if num_classes <= 0:
        raise ValueError(f"the number of classes must be positive, got {num_classes}")
    input_path, output = Path(input_path), Path(output_dir).absolute()
    _check_output(output)
    spec = model_spec(model, variant, num_classes=num_classes)  # checks the names
    target = abstract_from_spec(spec)
    state = _read_and_map(input_path, target, describe_spec(spec), extra_module_classes)
    info = {
        **spec,
        "source": {"file": input_path.name, "sha256": sha256_of_file(input_path)},
        "format": FORMAT,
    }
    _save_atomically(output, jax.tree.map(jax.numpy.asarray, state), info)
    return info


def load_torch_checkpoint_into(
    model: nnx.Module,
    path: str | os.PathLike,
    *,
    what: str,
    extra_module_classes: Iterable[str] = (),
) -> None:
    """Reads a `.pth` file and copies its arrays into `model` (concrete or from `nnx.eval_shape`)
    in place, writing no file: what `evaluate.py --checkpoint X.pth --model NAME` does.

    Raises:
      as `convert_torch_checkpoint` (the model is unchanged on error).
    """
    nnx.update(model, _read_and_map(Path(path), model, what, extra_module_classes))
