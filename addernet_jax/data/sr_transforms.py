"""Per-record SR preprocessing as grain transforms: EDSR's patch sampling and augmentation.

Records are {'lr': uint8 (h, w, C), 'hr': uint8 (h * scale, w * scale, C), ...} (`data.sr`).
Random transforms draw only from the `np.random.Generator` grain passes per record, so a pipeline
is deterministic given its seed (as `data.transforms`). Training (ADDERSR.md 4, the EDSR recipe):
a random 48x48 LR patch with the HR patch at the same place, then random horizontal and vertical
flips and a 90-degree rotation, then float32 RGB in [0, 255] (EDSR keeps that range and the model
subtracts the DIV2K mean itself). Evaluation: whole images, float32 only.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

Record = dict[str, Any]
PATCH_SIZE = 48  # EDSR's LR training patch (its --patch_size is the HR size, 48 * scale)


def random_patch(
    lr: np.ndarray, hr: np.ndarray, patch_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly placed `patch_size` LR patch and the HR patch (patch_size * scale) it maps to.

    EDSR's `common.get_patch`: LR top-left uniform over every valid offset, HR offset x scale.
    """
    h, w = lr.shape[:2]
    if hr.shape[:2] != (h * scale, w * scale):
        raise ValueError(
            f"HR image {hr.shape[0]}x{hr.shape[1]} is not the {h}x{w} LR image times {scale}"
        )
    if h < patch_size or w < patch_size:
        raise ValueError(f"LR patch {patch_size} larger than the {h}x{w} LR image")
    top = int(rng.integers(0, h - patch_size + 1))
    left = int(rng.integers(0, w - patch_size + 1))
    hr_top, hr_left, hr_size = top * scale, left * scale, patch_size * scale
    return (
        lr[top : top + patch_size, left : left + patch_size],
        hr[hr_top : hr_top + hr_size, hr_left : hr_left + hr_size],
    )


def augment(images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips and 90-degree rotation of every image (EDSR's `common.augment`).

    Horizontal flip, vertical flip and a transpose (a rotation by 90 degrees combined with the
    flips), each with probability 1/2: the 8 symmetries of the square, equally likely.
    """
    hflip, vflip, rot90 = rng.random(3) < 0.5
    out = []
    for image in images:
        if hflip:
            image = image[:, ::-1]
        if vflip:
            image = image[::-1]
        if rot90:
            image = image.transpose(1, 0, *range(2, image.ndim))
        out.append(np.ascontiguousarray(image))
    return out


class RandomPatch(grain.transforms.RandomMap):
    """A random LR patch of `patch_size` and the aligned HR patch of `patch_size * scale`."""

    def __init__(self, scale: int, patch_size: int = PATCH_SIZE):
        self.scale, self.patch_size = scale, patch_size

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        """Crop both images of `element` at one random place."""
        lr, hr = random_patch(element["lr"], element["hr"], self.patch_size, self.scale, rng)
        return {**element, "lr": lr, "hr": hr}


class RandomFlipRotate(grain.transforms.RandomMap):
    """Random horizontal flip, vertical flip and 90-degree rotation, the same for LR and HR."""

    def random_map(self, element: Record, rng: np.random.Generator) -> Record:
        """Apply one random symmetry of the square to both images of `element`."""
        lr, hr = augment([element["lr"], element["hr"]], rng)
        return {**element, "lr": lr, "hr": hr}


class ToFloat(grain.transforms.Map):
    """uint8 'lr' and 'hr' -> float32 in [0, 255] (EDSR's range; no normalisation here)."""

    def map(self, element: Record) -> Record:
        """Convert both images of `element`."""
        return {
            **element,
            "lr": np.asarray(element["lr"], np.float32),
            "hr": np.asarray(element["hr"], np.float32),
        }


def sr_train_transforms(scale: int, patch_size: int = PATCH_SIZE) -> list[Any]:
    """EDSR training: random aligned patches, flips and rotations, float32 in [0, 255]."""
    return [RandomPatch(scale, patch_size), RandomFlipRotate(), ToFloat()]


def sr_eval_transforms() -> list[Any]:
    """Evaluation on whole images: float32 in [0, 255] only."""
    return [ToFloat()]
