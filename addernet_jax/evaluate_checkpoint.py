"""Evaluating a checkpoint on a dataset: what `evaluate.py` runs.

    results = evaluate_checkpoint("ckpt/resnet20", "cifar10", source="local",
                                  local_path="../shared/data/cifar10-jpeg")
    print(format_results(results))

The checkpoint is one of
  - a model checkpoint directory (`model_info.json` + `model/`, from convert_torch_weights.py);
  - a training workdir (`<workdir>/checkpoints` from train.py): its best step by test accuracy,
    else its latest; model name and variant come from the config saved with the step;
  - a PyTorch `.pth` file, with `model=NAME`: converted in memory, nothing is written.
The data is the dataset's evaluation preset (`get_transforms(dataset, train=False)`: CIFAR/MNIST
normalisation; ImageNet Resize(256) + CenterCrop(224) + normalisation, ADDERNET.md 6.1 and 7) in
global batches of `batch_size`, sharded over every device along the mesh's 'data' axis; the last
batch is padded and masked, so every image counts exactly once whatever the batch size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from addernet_jax import data
from addernet_jax.convert.converter import describe_model, load_torch_checkpoint_into
from addernet_jax.models import abstract_model, get_model_info
from addernet_jax.ops.adder2d import IMPLEMENTATIONS
from addernet_jax.training import checkpoints, parallel
from addernet_jax.training.evaluation import evaluate

__all__ = [
    "LoadedModel",
    "checkpoint_kind",
    "evaluate_checkpoint",
    "format_results",
    "load_checkpoint_model",
]

@dataclasses.dataclass
class LoadedModel:
    """A model with its weights and where they came from.

    Attributes:
      model: the NNX module (eval mode).
      name, variant, num_classes: what `create_model` was given.
      kind: 'model checkpoint', 'training workdir' or 'pytorch file'.
      step: the training step, for a training workdir.
    """

    model: nnx.Module
    name: str
    variant: str
    num_classes: int
    kind: str
    step: int | None = None


def checkpoint_kind(path: str | os.PathLike) -> str:
    """Which kind of checkpoint `path` is: 'pytorch file', 'model checkpoint' or 'training
    workdir'; FileNotFoundError / ValueError naming it otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        return "pytorch file"
    if (path / checkpoints.MODEL_INFO_FILE).is_file():
        return "model checkpoint"
    if (path / "checkpoints").is_dir():
        return "training workdir"
    raise ValueError(
        f"{path} is neither a model checkpoint (no {checkpoints.MODEL_INFO_FILE}; make one with "
        "convert_torch_weights.py) nor a training workdir (no checkpoints/ folder)"
    )


def _check_num_classes(where: str, num_classes: int, dataset: str) -> None:
    expected = data.dataset_info(dataset).num_classes
    if num_classes != expected:
        raise ValueError(
            f"{where} has {num_classes} classes but {dataset} has {expected}; evaluate it on a "
            f"dataset with {num_classes} classes"
        )


def _build_model(name: str, variant: str, num_classes: int, impl: str, dataset: str,
                 where: str) -> nnx.Module:
    """The abstract model after checking it fits `dataset` (classes and image channels), so
    that a mismatch fails before any weights or data are read."""
    _check_num_classes(where, num_classes, dataset)
    model_channels = get_model_info(name).input_shape[-1]
    data_channels = data.dataset_info(dataset).image_shape[-1]
    if model_channels != data_channels:
        raise ValueError(
            f"{name} takes {model_channels}-channel images but {dataset} has {data_channels}"
        )
    return abstract_model(name, num_classes=num_classes, variant=variant, impl=impl)


def _load_model_checkpoint(path: Path, dataset: str, impl: str, model: str | None,
                           sharding) -> LoadedModel:
    info = checkpoints.read_model_info(path)
    if model and model != info["model"]:
        raise ValueError(f"{path} holds a {info['model']}, not a {model}")
    loaded = _build_model(info["model"], info["variant"], info["num_classes"], impl, dataset,
                          f"checkpoint {path}")
    checkpoints.load_model_checkpoint(path, loaded, sharding=sharding)
    return LoadedModel(
        loaded, info["model"], info["variant"], info["num_classes"], "model checkpoint"
    )


def _load_training_workdir(path: Path, dataset: str, impl: str, model: str | None,
                           sharding) -> LoadedModel:
    """The best step by test accuracy (kept by the manager), else the latest."""
    store = checkpoints.TrainingCheckpoints(path)
    try:
        step = store.best_step()
        step = store.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"{store.directory} holds no checkpoint")
        config = store.restore_meta(step).get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{store.directory}/{step} has no training config in its meta")
        name, variant = config["model"]["name"], config["model"]["variant"]
        if model and model != name:
            raise ValueError(f"{path} trained a {name}, not a {model}")
        num_classes = data.dataset_info(config["data"]["dataset"]).num_classes
        loaded = _build_model(name, variant, num_classes, impl, dataset,
                              f"training workdir {path} (step {step})")
        store.restore_model(step, loaded, sharding=sharding)
    finally:
        store.close()
    return LoadedModel(loaded, name, variant, num_classes, "training workdir", step)


def _load_pytorch_file(
    path: Path, dataset: str, impl: str, model: str | None, variant: str, extra_module_classes
) -> LoadedModel:
    if not model:
        raise ValueError(f"{path} is a file: pass --model NAME to evaluate a PyTorch .pth file")
    num_classes = data.dataset_info(dataset).num_classes
    loaded = _build_model(model, variant, num_classes, impl, dataset, f"{path}")
    what = f"{describe_model(model, variant, num_classes)} of {dataset}"
    load_torch_checkpoint_into(loaded, path, what=what, extra_module_classes=extra_module_classes)
    return LoadedModel(loaded, model, variant, num_classes, "pytorch file")


def load_checkpoint_model(
    checkpoint: str | os.PathLike,
    dataset: str,
    *,
    impl: str = "auto",
    model: str | None = None,
    variant: str = "adder",
    extra_module_classes: Iterable[str] = (),
    mesh: Mesh | None = None,
) -> LoadedModel:
    """The model of any kind of checkpoint, in eval mode, checked against `dataset`, with its
    arrays replicated over `mesh` (default: every device).

    Args:
      checkpoint: model checkpoint directory, training workdir or `.pth` file.
      dataset: the dataset it will be evaluated on (its number of classes must match).
      impl: adder2d implementation.
      model, variant, extra_module_classes: for a `.pth` file (`model` is required there); a
        given `model` must match a directory's.
      mesh: where the weights go.

    Raises:
      FileNotFoundError: no such checkpoint.
      ValueError: not a checkpoint, a different number of classes than `dataset`, or weights
        that do not fit the model.
    """
    path = Path(checkpoint)
    kind = checkpoint_kind(path)
    sharding = parallel.replicated(mesh or parallel.create_mesh())
    if kind == "model checkpoint":
        loaded = _load_model_checkpoint(path, dataset, impl, model, sharding)
    elif kind == "training workdir":
        loaded = _load_training_workdir(path, dataset, impl, model, sharding)
    else:
        loaded = _load_pytorch_file(path, dataset, impl, model, variant, extra_module_classes)
    loaded.model.eval()
    return loaded


def _check_impl(impl: str) -> None:
    if impl != "auto" and impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown --impl {impl!r}; choices: auto, {', '.join(IMPLEMENTATIONS)}")


def _eval_loader(dataset, split, source, local_path, data_dir, batch_size, image_size):
    """(loader, number of images) for the dataset's evaluation preset."""
    records = data.get_source(
        dataset, split, source=source, data_dir=data_dir, local_path=local_path
    )
    loader = data.make_eval_loader(
        records,
        batch_size=batch_size,
        transforms=data.get_transforms(dataset, train=False, image_size=image_size),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return loader, len(records)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    dataset: str,
    *,
    split: str = "test",
    source: str = "tfds",
    local_path: str | os.PathLike | None = None,
    data_dir: str | None = None,
    batch_size: int = 100,
    impl: str = "auto",
    model: str | None = None,
    variant: str = "adder",
    image_size: int = 0,
    extra_module_classes: Iterable[str] = (),
    show_progress: bool = True,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of a checkpoint over a whole dataset split, on every device.

    Args:
      checkpoint: model checkpoint directory, training workdir, or `.pth` file (with `model`).
      dataset: 'mnist', 'cifar10', 'cifar100' or 'imagenet2012'.
      split: 'test' (ImageNet: the validation set) or 'train'.
      source: 'tfds' (prepared data under `data_dir`) or 'local' (files under `local_path`:
        MNIST IDX, CIFAR python batches or an ImageFolder root with test/ or val/).
      batch_size: global batch, any size: it is padded up to a multiple of the device count,
        and the remainder of the dataset is a padded last batch; padding is never counted.
      impl: adder2d implementation ('auto' or one of `IMPLEMENTATIONS`).
      model, variant, extra_module_classes: for a `.pth` checkpoint.
      image_size: ImageNet crop size (0: the official 224 after a resize to 256).
      show_progress: a progress bar over the batches.

    Returns:
      {'top1', 'top5' (fractions), 'loss', 'count' (images), 'images_per_sec', 'seconds',
       'checkpoint', 'kind', 'step', 'model', 'variant', 'num_classes', 'dataset', 'split',
       'batch_size', 'devices', 'impl'}.

    Raises:
      FileNotFoundError, ValueError: naming the problem (bad checkpoint, dataset, split, data,
        batch size, class count or channel count).
    """
    _check_impl(impl)
    batch_size = parallel.device_multiple(batch_size)
    mesh = parallel.create_mesh()
    # The model first: a missing or mismatched checkpoint fails before any data is read.
    loaded = load_checkpoint_model(
        checkpoint,
        dataset,
        impl=impl,
        model=model,
        variant=variant,
        extra_module_classes=extra_module_classes,
        mesh=mesh,
    )
    loader, num_images = _eval_loader(
        dataset, split, source, local_path, data_dir, batch_size, image_size
    )
    metrics = evaluate(
        loaded.model,
        loader,
        mesh,
        num_batches=data.num_eval_batches(num_images, batch_size),
        show_progress=show_progress,
        description=f"{dataset}/{split}",
    )
    return {
        **metrics,
        "checkpoint": str(checkpoint),
        "kind": loaded.kind,
        "step": loaded.step,
        "model": loaded.name,
        "variant": loaded.variant,
        "num_classes": loaded.num_classes,
        "dataset": dataset,
        "split": split,
        "batch_size": batch_size,
        "devices": jax.device_count(),
        "impl": impl,
    }


def format_results(results: dict[str, Any]) -> str:
    """Three human-readable lines: what was evaluated, on what, and the numbers."""
    step = f", step {results['step']}" if results["step"] is not None else ""
    return (
        f"{results['model']} ({results['variant']}, {results['num_classes']} classes) from "
        f"{results['checkpoint']} [{results['kind']}{step}]\n"
        f"{results['dataset']} {results['split']}: {results['count']} images, batch "
        f"{results['batch_size']} over {results['devices']} device"
        f"{'s' if results['devices'] != 1 else ''}\n"
        f"top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  "
        f"loss {results['loss']:.4f}  {results['images_per_sec']:.0f} images/s"
    )
