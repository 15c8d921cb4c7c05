"""Model zoo: AdderNet models (and their CNN baselines) by name.

    model = create_model("resnet20", num_classes=10, variant="adder", rngs=nnx.Rngs(0))

Every model takes NHWC images, returns (N, num_classes) logits, and exists as `variant='adder'`
(AdderNet) and `variant='cnn'` (identical topology with convolutions). BatchNorm follows the NNX
convention: `model.train()` (batch statistics, running averages updated) / `model.eval()`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from flax import nnx

from addernet_jax.models.cifar_resnet import BasicBlock, CifarResNet
from addernet_jax.models.imagenet_resnet import Bottleneck, ImageNetResNet
from addernet_jax.models.lenet import LeNet5
from addernet_jax.models.vgg import VGGSmall


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registry entry.

    Attributes:
      constructor: `constructor(*, num_classes, variant, impl, rngs)` builds the model.
      input_shape: (H, W, C) of the dataset the model is defined for.
      num_classes: that dataset's number of classes.
    """

    constructor: Callable[..., nnx.Module]
    input_shape: tuple[int, int, int]
    num_classes: int


_CIFAR, _MNIST, _IMAGENET = (32, 32, 3), (28, 28, 1), (224, 224, 3)

MODELS: dict[str, ModelInfo] = {
    "resnet20": ModelInfo(functools.partial(CifarResNet, 20), _CIFAR, 10),
    "resnet32": ModelInfo(functools.partial(CifarResNet, 32), _CIFAR, 10),
    "resnet44": ModelInfo(functools.partial(CifarResNet, 44), _CIFAR, 10),
    "resnet56": ModelInfo(functools.partial(CifarResNet, 56), _CIFAR, 10),
    "vgg_small": ModelInfo(VGGSmall, _CIFAR, 10),
    "lenet5": ModelInfo(LeNet5, _MNIST, 10),
    "resnet18": ModelInfo(functools.partial(ImageNetResNet, 18), _IMAGENET, 1000),
    "resnet34": ModelInfo(functools.partial(ImageNetResNet, 34), _IMAGENET, 1000),
    "resnet50": ModelInfo(functools.partial(ImageNetResNet, 50), _IMAGENET, 1000),
}


def list_models() -> list[str]:
    """The registered model names."""
    return list(MODELS)


def get_model_info(name: str) -> ModelInfo:
    """The registry entry of `name`; ValueError naming the valid models if there is none."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(
    name: str, *, num_classes: int, variant: str = "adder", rngs: nnx.Rngs, **kwargs
) -> nnx.Module:
    """Builds a registered model.

    Args:
      name: one of `list_models()`.
      num_classes: number of logits.
      variant: 'adder' or 'cnn'.
      rngs: NNX random streams for the initialisation.
      **kwargs: passed to the constructor (e.g. `impl='reference'`).

    Returns:
      The NNX module, in training mode.
    """
    constructor = get_model_info(name).constructor
    return constructor(num_classes=num_classes, variant=variant, rngs=rngs, **kwargs)


__all__ = [
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "LeNet5",
    "ModelInfo",
    "VGGSmall",
    "abstract_model",
    "create_model",
    "get_model_info",
    "list_models",
]


def abstract_model(
    name: str, *, num_classes: int, variant: str = "adder", impl: str = "auto"
) -> nnx.Module:
    """A registered model's structure with abstract arrays (`nnx.eval_shape`): nothing is
    initialised, so checkpoints can be restored straight into it."""
    return nnx.eval_shape(
        lambda: create_model(name, num_classes=num_classes, variant=variant, impl=impl,
                             rngs=nnx.Rngs(0)))
