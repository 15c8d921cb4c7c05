"""The calibration set: a few hundred training images, prepared as for evaluation."""

from __future__ import annotations

import numpy as np

from addernet_jax import data


def calibration_images(dataset: str, count: int, *, source: str = "tfds", local_path=None,
                       data_dir=None, split: str = "train", seed: int = 0,
                       image_size: int = 0, local_flag: str | None = None) -> np.ndarray:
    """`count` images drawn at random (seeded, without replacement) from a split, through the
    dataset's evaluation transforms (no augmentation): (count, H, W, C) float32.

    Raises:
      ValueError: `count` < 1 or a split with no images (an empty calibration set), or what
        `data.get_source` raises for a bad dataset, split or path.
    """
    if count < 1:
        raise ValueError(f"the calibration set is empty: the number of calibration images must "
                         f"be positive, got {count}")
    records = data.get_source(dataset, split, source=source, local_path=local_path,
                              data_dir=data_dir, local_flag=local_flag)
    if len(records) == 0:
        raise ValueError(f"the calibration set is empty: {dataset} {split} has no images")
    indices = np.sort(np.random.default_rng(seed).choice(len(records), min(count, len(records)),
                                                         replace=False))
    subset = data.SubsetSource(records, indices)
    loader = data.make_eval_loader(subset, batch_size=len(subset),
                                   transforms=data.get_transforms(dataset, train=False,
                                                                  image_size=image_size))
    batch = next(iter(loader))
    return np.asarray(batch["image"], np.float32)[np.asarray(batch["mask"])]
