"""Per-record preprocessing as grain transforms: the official torchvision recipes, in numpy.

Each transform maps a record {'image': HWC, 'label', ...} to a record with a new 'image'; random
ones draw only from the `np.random.Generator` grain passes per record, so a pipeline is
deterministic given its seed. Geometry follows torchvision exactly (how offsets and crop sizes are
drawn and rounded, PIL bilinear resizing); the random *streams* differ from torch's, of course.

Presets (ADDERNET.md sections 6-7):
  - CIFAR train: RandomCrop(32, padding=4) + RandomHorizontalFlip + Normalize(CIFAR mean/std)
    (the official main.py); eval: Normalize only. CIFAR-100 uses the same transforms and
    statistics: the official repository only has a CIFAR-10 script.
  - MNIST: Normalize((0.1307,), (0.3081,)) on (28, 28, 1), no augmentation (the official recipe
    for MNIST is not published, ADDERNET.md U7; this is the usual PyTorch MNIST example).
  - ImageNet train: RandomResizedCrop(224) + flip + Normalize; eval: Resize(256) + CenterCrop(224)
    + Normalize, with the ImageNet mean/std (the PyTorch ImageNet example and official test.py).
Every preset ends in `Normalize`, so the model gets float32 HWC (NHWC once batched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # official main.py
CIFAR_STD = (0.2023, 0.1994, 0.2010)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Record = dict[str, Any]


def _with_image(record: Record, image: np.ndarray) -> Record:
    return {**record, "image": image}


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL bilinear resize of a uint8 HWC image, as torchvision's PIL backend."""
    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


def random_crop(image: np.ndarray, size: int, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad `padding` pixels on every side, then a uniformly placed `size` x `size` crop."""
    if padding:
        image = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"crop {size} larger than the padded image {h}x{w}")
    # torchvision RandomCrop.get_params: top then left, each uniform over every valid offset.
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return image[top : top + size, left : left + size]


def resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's RandomResizedCrop.get_params (10 tries, then center)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: the whole image, clipped to the ratio range, centered.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomCrop(grain.transforms.RandomMap):
    """torchvision `RandomCrop(size, padding)` with zero padding (the official CIFAR crop)."""

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = size, padding

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        return _with_image(element, random_crop(element["image"], self.size, self.padding, rng))


class RandomHorizontalFlip(grain.transforms.RandomMap):
    """torchvision `RandomHorizontalFlip(p)`: mirror left-right with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        if rng.random() < self.p:
            return _with_image(element, element["image"][:, ::-1])
        return element


class RandomResizedCrop(grain.transforms.RandomMap):
    """torchvision `RandomResizedCrop(size, scale, ratio)`, PIL bilinear resize to size x size."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        image = element["image"]
        top, left, h, w = resized_crop_box(*image.shape[:2], self.scale, self.ratio, rng)
        crop = image[top : top + h, left : left + w]
        return _with_image(element, resize(crop, self.size, self.size))


def inverse_affine_matrix(
    center: tuple[float, float], angle: float, translate: tuple[float, float], scale: float
) -> tuple[float, ...]:
    """PIL's AFFINE coefficients (output pixel -> input pixel) of a rotation by `angle` degrees
    clockwise and a scaling about `center`, then a translation: the inverse of
    T * C * R * S * C^-1, as torchvision's `affine` builds it (no shear)."""
    rot = math.radians(angle)
    cos, sin = math.cos(rot) / scale, math.sin(rot) / scale
    (cx, cy), (tx, ty) = center, translate
    # (R S)^-1 = [[cos, sin], [-sin, cos]] / scale, applied to (x - cx - tx, y - cy - ty), + C
    return (cos, sin, cx - cos * (cx + tx) - sin * (cy + ty),
            -sin, cos, cy + sin * (cx + tx) - cos * (cy + ty))


class RandomAffine(grain.transforms.RandomMap):
    """torchvision `RandomAffine(degrees, translate, scale)` without shear: a rotation uniform in
    [-degrees, degrees], a scale uniform in `scale`, whole-pixel shifts up to `translate` times
    the width and height, about the image centre, bilinear, zero fill."""

    def __init__(self, degrees: float, translate=(0.0, 0.0), scale=(1.0, 1.0)):
        self.degrees, self.translate, self.scale = float(degrees), tuple(translate), tuple(scale)

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        image = element["image"]
        h, w = image.shape[:2]
        angle = rng.uniform(-self.degrees, self.degrees)
        shift = (int(round(rng.uniform(-1, 1) * self.translate[0] * w)),
                 int(round(rng.uniform(-1, 1) * self.translate[1] * h)))
        scale = rng.uniform(*self.scale)
        coefficients = inverse_affine_matrix((w * 0.5, h * 0.5), angle, shift, scale)
        squeeze = image.shape[-1] == 1
        pil = Image.fromarray(image[..., 0] if squeeze else image)
        out = np.asarray(pil.transform((w, h), Image.Transform.AFFINE, coefficients,
                                       resample=Image.Resampling.BILINEAR, fillcolor=0))
        return _with_image(element, out[..., None] if squeeze else out)


class Resize(grain.transforms.Map):
    """torchvision `Resize(size)` with an int size: the shorter side becomes `size`.

    The longer side is `int(size * long / short)` (truncated, as torchvision), PIL bilinear.
    """

    def __init__(self, size: int):
        self.size = size

    def map(self, element: Record) -> Record:
        image = element["image"]
        h, w = image.shape[:2]
        short, long = min(h, w), max(h, w)
        new_long = int(self.size * long / short)
        new_h, new_w = (self.size, new_long) if h <= w else (new_long, self.size)
        if (new_h, new_w) == (h, w):
            return element
        return _with_image(element, resize(image, new_h, new_w))


class CenterCrop(grain.transforms.Map):
    """torchvision `CenterCrop(size)`: offsets `round((h - size) / 2)`, `round((w - size) / 2)`."""

    def __init__(self, size: int):
        self.size = size

    def map(self, element: Record) -> Record:
        image = element["image"]
        h, w = image.shape[:2]
        if h < self.size or w < self.size:
            raise ValueError(f"CenterCrop({self.size}) of a smaller {h}x{w} image")
        top = int(round((h - self.size) / 2.0))
        left = int(round((w - self.size) / 2.0))
        return _with_image(element, image[top : top + self.size, left : left + self.size])


class Normalize(grain.transforms.Map):
    """`ToTensor` scaling to [0, 1] then `Normalize(mean, std)`: uint8 HWC -> float32 HWC.

    Computed in float32 in torch's order, `(x / 255 - mean) / std`.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def map(self, element: Record) -> Record:
        image = np.asarray(element["image"], np.float32) / np.float32(255)
        return _with_image(element, (image - self.mean) / self.std)


def cifar_train_transforms() -> list[grain.transforms.Transformation]:
    """Official AdderNet CIFAR training augmentation (main.py)."""
    return [RandomCrop(32, padding=4), RandomHorizontalFlip(), Normalize(CIFAR_MEAN, CIFAR_STD)]


def cifar_eval_transforms() -> list[grain.transforms.Transformation]:
    """Official AdderNet CIFAR test preprocessing: scaling and normalisation only."""
    return [Normalize(CIFAR_MEAN, CIFAR_STD)]


def mnist_train_transforms() -> list[grain.transforms.Transformation]:
    """MNIST training: random shifts of up to 2 pixels (RandomCrop(28, padding=2)), scaling and
    Normalize((0.1307,), (0.3081,)). The AdderNet MNIST recipe is unpublished (ADDERNET.md U7);
    without the shifts LeNet-5-BN overfits (99.9% train, ~98.8% test after 10-15 epochs)."""
    return [RandomCrop(28, padding=2), Normalize(MNIST_MEAN, MNIST_STD)]


def mnist_affine_transforms(
    degrees: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1)
) -> list[grain.transforms.Transformation]:
    """MNIST training with random rotations, scalings and shifts (RandomAffine), then Normalize
    (an alternative to the 2-pixel shifts: `config.data.augmentation = 'affine'`)."""
    return [RandomAffine(degrees, (translate, translate), scale), Normalize(MNIST_MEAN, MNIST_STD)]


def mnist_transforms() -> list[grain.transforms.Transformation]:
    """MNIST evaluation: scaling and Normalize((0.1307,), (0.3081,))."""
    return [Normalize(MNIST_MEAN, MNIST_STD)]


def imagenet_train_transforms(size: int = 224) -> list[grain.transforms.Transformation]:
    """PyTorch ImageNet example training augmentation (ADDERNET.md 7)."""
    return [RandomResizedCrop(size), RandomHorizontalFlip(), Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def imagenet_eval_transforms(
    size: int = 224, resize_size: int = 256
) -> list[grain.transforms.Transformation]:
    """Official test.py: Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize."""
    return [Resize(resize_size), CenterCrop(size), Normalize(IMAGENET_MEAN, IMAGENET_STD)]


_PRESETS = {
    "mnist": (mnist_train_transforms, mnist_transforms),
    "cifar10": (cifar_train_transforms, cifar_eval_transforms),
    "cifar100": (cifar_train_transforms, cifar_eval_transforms),
    "imagenet2012": (imagenet_train_transforms, imagenet_eval_transforms),
}


# Training augmentations other than a dataset's preset ("" or "preset"): name -> builder.
AUGMENTATIONS = {
    "mnist": {"affine": mnist_affine_transforms, "none": mnist_transforms},
}


def augmentation_choices(dataset: str) -> list[str]:
    """The values `config.data.augmentation` may take for `dataset`."""
    return ["", "preset", *AUGMENTATIONS.get(dataset, {})]


def get_transforms(
    dataset: str, *, train: bool, image_size: int = 0, augmentation: str = "", **options
) -> list[grain.transforms.Transformation]:
    """The preset transforms of `dataset` for training (`train=True`) or evaluation.

    `image_size` > 0 changes the ImageNet crop (224) and, for evaluation, resizes to
    image_size * 256 / 224 first, as the official ratio (small inputs for tests and smoke runs).
    `augmentation` names another training augmentation of `AUGMENTATIONS` (its keyword
    `options`, e.g. degrees=10.0 for 'affine'); evaluation transforms never change.
    """
    if dataset not in _PRESETS:
        raise ValueError(f"no transforms for dataset {dataset!r}; choices: {sorted(_PRESETS)}")
    if augmentation not in augmentation_choices(dataset):
        raise ValueError(f"unknown augmentation {augmentation!r} for {dataset}; choices: "
                         f"{augmentation_choices(dataset)}")
    if train and augmentation not in ("", "preset"):
        return AUGMENTATIONS[dataset][augmentation](**options)
    if image_size and dataset == "imagenet2012":
        if train:
            return imagenet_train_transforms(image_size)
        return imagenet_eval_transforms(image_size, round(image_size * 256 / 224))
    return _PRESETS[dataset][0 if train else 1]()
