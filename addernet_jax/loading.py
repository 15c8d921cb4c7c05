"""Loading a model from a checkpoint of any kind: the one place `evaluate.py`, `init_from` and the
quantiser get their weights from.

A checkpoint is one of
  - a model checkpoint directory (`model_info.json` + `model/`, from convert_torch_weights.py or
    quantize.py);
  - a training workdir (`<workdir>/checkpoints` from train.py): its best step by the task's
    metric, else its latest readable step; the model of the state key asked for ('model', the
    exported one, by default; e.g. 'teacher' for a distillation run), its spec from the meta;
  - a PyTorch `.pth` file, with a model spec given by the caller: converted in memory, nothing
    is written.
Reading never writes to the checkpoint, and every array is checked on the way in
(`runtime.checkpoints.check_weights`).

    ref = describe_checkpoint("runs/c10_r20")           # kind, spec, step: no arrays read
    loaded = load_checkpoint(ref, impl="auto")          # LoadedModel(model, spec, kind, step)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from flax import nnx
from jax.sharding import Mesh

from addernet_jax import data
from addernet_jax.convert.converter import load_torch_checkpoint_into
from addernet_jax.models import abstract_from_spec, describe_spec, model_spec
from addernet_jax.quantize import abstract_quantized_model
from addernet_jax.runtime import parallel
from addernet_jax.runtime.checkpoints import (
    MODEL_INFO_FILE,
    CheckpointError,
    WorkdirReader,
    is_training_workdir,
    load_model_checkpoint,
    read_model_info,
)

KINDS = ("model checkpoint", "training workdir", "pytorch file")
# model_info.json's record of a quantised model (quantize.py): loaded onto the integer path.
QUANTIZATION_KEY = "quantization"


@dataclasses.dataclass
class CheckpointRef:
    """What a checkpoint holds, read without its arrays.

    Attributes:
      path: the checkpoint path.
      kind: one of `KINDS`.
      spec: the model spec (`addernet_jax.models.model_spec`).
      step: the training step (training workdir), else None.
      key: the state key of the model in a training workdir.
      info: the extra information stored with it (model_info.json / the step's meta).
    """

    path: Path
    kind: str
    spec: dict
    step: int | None = None
    key: str = "model"
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LoadedModel:
    """A model with its weights, in eval mode, and where they came from."""

    model: nnx.Module
    spec: dict
    kind: str
    step: int | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec["model"]

    @property
    def variant(self) -> str:
        return self.spec["variant"]


def checkpoint_kind(path: str | os.PathLike) -> str:
    """Which of `KINDS` `path` is; FileNotFoundError / ValueError naming it otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        return "pytorch file"
    if (path / MODEL_INFO_FILE).is_file():
        return "model checkpoint"
    if is_training_workdir(path):
        return "training workdir"
    raise ValueError(  # a wrong path on the command line: a usage error
        f"{path} is neither a model checkpoint (no {MODEL_INFO_FILE}; make one with "
        "convert_torch_weights.py) nor a training workdir (no checkpoints/ folder)")


def _spec_from_meta(meta: dict, key: str, where: str) -> dict:
    """The model spec of state key `key` from a training step's meta (older runs recorded only
    the classification config: the spec is derived from it)."""
    specs = meta.get("models")
    if isinstance(specs, dict):
        if key not in specs:
            raise CheckpointError(f"{where} holds no model {key!r}; it holds {sorted(specs)}")
        return specs[key]
    config = meta.get("config")
    if key != "model" or not isinstance(config, dict):
        raise CheckpointError(f"{where} has no model description in its meta")
    try:
        num_classes = data.dataset_info(config["data"]["dataset"]).num_classes
        return model_spec(config["model"]["name"], config["model"]["variant"],
                          num_classes=num_classes)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its training config does not name a model ({e})") from e


def _spec_from_info(info: dict, where: str) -> dict:
    try:
        return model_spec(info["model"], info.get("variant", "adder"),
                          **{k: v for k, v in info.items() if k not in ("model", "variant")
                             and isinstance(v, int | float | str)})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}/{MODEL_INFO_FILE}: {e}") from e


def describe_checkpoint(path: str | os.PathLike, *, key: str = "model",
                        pth_spec: dict | None = None) -> CheckpointRef:
    """The kind, model spec and step of a checkpoint, without reading its arrays.

    Args:
      path: model checkpoint directory, training workdir or `.pth` file.
      key: the model of a training workdir ('model', or another model of its train state).
      pth_spec: the model spec of a `.pth` file (which does not describe itself).

    Raises:
      FileNotFoundError, CheckpointError, ValueError: naming the path and the problem.
    """
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind == "pytorch file":
        if pth_spec is None:
            raise ValueError(f"{path} is a file: pass --model NAME to evaluate a PyTorch .pth "
                             "file")
        return CheckpointRef(path, kind, pth_spec)
    if kind == "model checkpoint":
        info = read_model_info(path)
        return CheckpointRef(path, kind, _spec_from_info(info, str(path)), info=info)
    with WorkdirReader(path) as reader:
        step, meta = reader.best_step()
    where = f"training workdir {path} (step {step})"
    return CheckpointRef(path, kind, _spec_from_meta(meta, key, where), step, key, meta)


def _restore_from_workdir(ref: CheckpointRef, impl: str, sharding) -> tuple[nnx.Module, int]:
    """The model of `ref.key` from the preferred step, else the latest readable one."""
    def read(step: int) -> nnx.Module:
        model = abstract_from_spec(ref.spec, impl)
        reader.restore_model(step, model, key=ref.key, sharding=sharding)
        return model

    with WorkdirReader(ref.path) as reader:
        step, model = reader.latest_readable(read, prefer=ref.step)
    return model, step


def load_checkpoint(ref: CheckpointRef, *, impl: str = "auto", mesh: Mesh | None = None,
                    extra_module_classes: Iterable[str] = ()) -> LoadedModel:
    """The model of `ref` with its weights, in eval mode, replicated over `mesh` (default: every
    device).

    Raises:
      CheckpointError: damaged or mismatched arrays, bad values (every problem named).
      ValueError: an unreadable or unsafe `.pth` file.
    """
    sharding = parallel.replicated(mesh or parallel.create_mesh())
    step = ref.step
    if ref.kind == "training workdir":
        model, step = _restore_from_workdir(ref, impl, sharding)
    else:
        if ref.kind == "model checkpoint" and QUANTIZATION_KEY in ref.info:
            # A quantize.py checkpoint: the float model with its adder layers on the integer path.
            model = abstract_quantized_model(ref.spec, ref.info[QUANTIZATION_KEY], impl,
                                             where=str(ref.path))
        else:
            model = abstract_from_spec(ref.spec, impl)
        if ref.kind == "model checkpoint":
            load_model_checkpoint(ref.path, model, sharding=sharding)
        else:
            load_torch_checkpoint_into(model, ref.path, what=describe_spec(ref.spec),
                                       extra_module_classes=extra_module_classes)
    model.eval()
    return LoadedModel(model, ref.spec, ref.kind, step, ref.info)


def load_weights_into(model: nnx.Module, path: str | os.PathLike, spec: dict) -> None:
    """Copies the weights of a model checkpoint or training workdir into `model` (in place):
    what `config.init_from` does. The checkpoint's arrays must fit `model` (all mismatches are
    named); its spec is not required to equal `spec`, which only names the model in messages.
    """
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind == "model checkpoint" and QUANTIZATION_KEY in read_model_info(path):
        raise CheckpointError(f"{path} is a quantised (inference-only) checkpoint; start from "
                              "the float checkpoint it was made from")
    if kind == "model checkpoint":
        load_model_checkpoint(path, model)
    elif kind == "training workdir":
        ref = describe_checkpoint(path)
        with WorkdirReader(path) as reader:
            reader.latest_readable(lambda step: reader.restore_model(step, model),
                                   prefer=ref.step)
    else:
        load_torch_checkpoint_into(model, path, what=describe_spec(spec))
