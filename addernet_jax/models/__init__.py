"""Model zoo: AdderNet models (and their CNN baselines) by name.

    model = create_model("resnet20", num_classes=10, variant="adder", rngs=nnx.Rngs(0))

Every model takes NHWC images and exists in one variant per registered layer kind
(`addernet_jax.layers`: 'adder' is the AdderNet, 'cnn' the same topology with convolutions).
Classifiers return (N, num_classes) logits. BatchNorm follows the NNX convention:
`model.train()` (batch statistics, running averages updated) / `model.eval()`.

A *model spec* is the JSON-able description from which a model is rebuilt for a checkpoint:
{'model': name, 'variant': kind, **constructor arguments} (for a classifier, `num_classes`);
`model_info.json` files and training checkpoints store one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from flax import nnx

from addernet_jax.layers import Adder2D, get_layer_kind
from addernet_jax.models.cifar_resnet import BasicBlock, CifarResNet
from addernet_jax.models.imagenet_resnet import Bottleneck, ImageNetResNet
from addernet_jax.models.lenet import LeNet5
from addernet_jax.models.lenetpp import LeNetPP
from addernet_jax.models.sr import EDSR, VDSR, edsr_baseline, edsr_full
from addernet_jax.models.vgg import VGG19Small, VGGSmall
from addernet_jax.ops.adder2d import INPUT_GRADS


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registry entry.

    Attributes:
      constructor: `constructor(*, variant, impl, rngs, **spec_arguments)` builds the model.
      input_shape: (H, W, C) of the dataset the model is defined for.
      num_classes: that dataset's number of classes (classifiers), else 0.
      task: the kind of model, which names the task that evaluates it ('classification').
      spec_fields: the constructor arguments a model spec records.
    """

    constructor: Callable[..., nnx.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    task: str = "classification"
    spec_fields: tuple[str, ...] = ("num_classes",)


_CIFAR, _MNIST, _IMAGENET = (32, 32, 3), (28, 28, 1), (224, 224, 3)
_SR_LR, _SR_FIELDS = (360, 640, 3), ("scale", "per_channel_alpha")

MODELS: dict[str, ModelInfo] = {
    "resnet20": ModelInfo(functools.partial(CifarResNet, 20), _CIFAR, 10),
    "resnet32": ModelInfo(functools.partial(CifarResNet, 32), _CIFAR, 10),
    "resnet44": ModelInfo(functools.partial(CifarResNet, 44), _CIFAR, 10),
    "resnet56": ModelInfo(functools.partial(CifarResNet, 56), _CIFAR, 10),
    "vgg_small": ModelInfo(VGGSmall, _CIFAR, 10),
    "vgg19_small": ModelInfo(VGG19Small, _CIFAR, 10),  # ShiftAddNet (SHIFTADDNET.md 3.3)
    "lenet5": ModelInfo(LeNet5, _MNIST, 10),
    "lenetpp": ModelInfo(LeNetPP, _MNIST, 10),  # paper Figure 1 (ADDERNET.md 10)
    "resnet18": ModelInfo(functools.partial(ImageNetResNet, 18), _IMAGENET, 1000),
    "resnet34": ModelInfo(functools.partial(ImageNetResNet, 34), _IMAGENET, 1000),
    "resnet50": ModelInfo(functools.partial(ImageNetResNet, 50), _IMAGENET, 1000),
    # AdderSR (ADDERSR.md 3): LR RGB in, SR RGB out; input_shape is the LR size that count_ops.py
    # states (x2 -> a 1280x720 output, the size SR papers count operations at).
    "vdsr": ModelInfo(VDSR, _SR_LR, 0, "super_resolution", _SR_FIELDS + ("colour",)),
    "edsr_baseline": ModelInfo(edsr_baseline, _SR_LR, 0, "super_resolution", _SR_FIELDS),
    "edsr": ModelInfo(edsr_full, _SR_LR, 0, "super_resolution", _SR_FIELDS),
}


def list_models() -> list[str]:
    """The registered model names."""
    return list(MODELS)


def get_model_info(name: str) -> ModelInfo:
    """The registry entry of `name`; ValueError naming the valid models if there is none."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(name: str, *, variant: str = "adder", rngs: nnx.Rngs,
                 input_grad: str = "hardtanh", **kwargs) -> nnx.Module:
    """Builds a registered model.

    Args:
      name: one of `list_models()`.
      variant: a layer kind ('adder', 'cnn', ...).
      rngs: NNX random streams for the initialisation.
      input_grad: the input gradient of every adder layer: 'hardtanh' (paper Eq. 6) or 'sign'
        (the exact derivative; ADDERNET.md U10). Training only: the forward is the same.
      **kwargs: passed to the constructor: `num_classes` for a classifier, and e.g.
        `impl='reference'`.

    Returns:
      The NNX module, in training mode.
    """
    if input_grad not in INPUT_GRADS:
        raise ValueError(f"unknown input_grad {input_grad!r}; choose one of {INPUT_GRADS}")
    constructor = get_model_info(name).constructor
    model = constructor(variant=variant, rngs=rngs, **kwargs)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Adder2D):
            module.input_grad = input_grad
    return model


def model_spec(name: str, variant: str, **arguments) -> dict:
    """The model spec {'model', 'variant', **arguments}, checked against the registry: every
    spec field of the model is given (or defaulted: `num_classes` to the model's dataset)."""
    info = get_model_info(name)
    get_layer_kind(variant)
    defaults = {"num_classes": info.num_classes} if "num_classes" in info.spec_fields else {}
    values = {**defaults, **{k: v for k, v in arguments.items() if v is not None}}
    missing = [field for field in info.spec_fields if field not in values]
    if missing:
        raise ValueError(f"model {name} needs {', '.join(missing)}")
    return {"model": name, "variant": variant,
            **{field: values[field] for field in info.spec_fields}}


def spec_arguments(spec: dict) -> dict:
    """The constructor arguments recorded in a model spec."""
    return {field: spec[field] for field in get_model_info(spec["model"]).spec_fields}


def describe_spec(spec: dict) -> str:
    """How messages name a model: "resnet20 (variant 'adder', 10 classes)"."""
    details = ", ".join(f"{v} classes" if k == "num_classes" else f"{k} {v}"
                        for k, v in spec_arguments(spec).items())
    return f"{spec['model']} (variant '{spec['variant']}', {details})"


__all__ = [
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "EDSR",
    "ImageNetResNet",
    "LeNet5",
    "LeNetPP",
    "ModelInfo",
    "VDSR",
    "VGG19Small",
    "VGGSmall",
    "abstract_from_spec",
    "abstract_model",
    "create_model",
    "describe_spec",
    "get_model_info",
    "list_models",
    "model_spec",
    "spec_arguments",
]


def abstract_model(name: str, *, variant: str = "adder", impl: str = "auto",
                   **arguments) -> nnx.Module:
    """A registered model's structure with abstract arrays (`nnx.eval_shape`): nothing is
    initialised, so checkpoints can be restored straight into it. `arguments` as
    `create_model` (`num_classes` for a classifier)."""
    return nnx.eval_shape(
        lambda: create_model(name, variant=variant, impl=impl, rngs=nnx.Rngs(0), **arguments))


def abstract_from_spec(spec: dict, impl: str = "auto") -> nnx.Module:
    """`abstract_model` of a model spec."""
    return abstract_model(spec["model"], variant=spec["variant"], impl=impl,
                          **spec_arguments(spec))
