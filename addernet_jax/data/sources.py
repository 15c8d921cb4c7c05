"""Random-access sources shared by every reader, and the class-balanced training subset.

A source is what grain calls a `RandomAccessDataSource`: `len(source)` and
`source[i] -> {'image': uint8 HWC, 'label': int}`. Sources that know all their labels without
decoding images expose them as `source.labels` (an int array), which `balanced_subset` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Source(Protocol):
    """The random-access protocol every reader returns (grain's `RandomAccessDataSource`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class ArraySource:
    """In-memory images (N, H, W, C) uint8 and labels (N,), e.g. decoded IDX or CIFAR batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, name: str = "arrays"):
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
            raise ValueError(
                f"{name}: expected (N, H, W, C) uint8 images and N labels, got "
                f"{images.shape} {images.dtype} and {np.shape(labels)}"
            )
        self.images = images
        self.labels = np.asarray(labels, np.int32)
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": int(self.labels[index])}

    def __repr__(self) -> str:
        return f"ArraySource({self.name}, {len(self)} x {self.images.shape[1:]})"


class SubsetSource:
    """The records of `source` at `indices`, in that order."""

    def __init__(self, source: Source, indices: Sequence[int]):
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        parent_labels = getattr(source, "labels", None)
        if parent_labels is not None:
            self.labels = np.asarray(parent_labels)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[int(self.indices[index])]

    def __repr__(self) -> str:
        return f"SubsetSource({self.source!r}, {len(self)} records)"


def source_labels(source: Source) -> np.ndarray:
    """All labels of `source`: `source.labels` when it has them, else by reading every record.

    Reading every record decodes every image (e.g. a tfds source), so it is slow but correct.
    """
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = [source[i]["label"] for i in range(len(source))]
    return np.asarray(labels, np.int64)


def balanced_subset_indices(labels: np.ndarray, size: int) -> np.ndarray:
    """Indices of the first `size / num_classes` records of each class, in source order.

    Fixed and seed-independent, so every run (and every process) trains on the same images.

    Args:
      labels: (N,) int labels of the full source.
      size: subset size; must be a multiple of the number of classes.

    Returns:
      (size,) sorted int64 indices into the source.
    """
    classes, counts = np.unique(labels, return_counts=True)
    if size <= 0 or size % len(classes):
        raise ValueError(f"subset size {size} is not a positive multiple of {len(classes)} classes")
    per_class = size // len(classes)
    if counts.min() < per_class:
        raise ValueError(
            f"subset of {size} needs {per_class} images per class, but class "
            f"{classes[counts.argmin()]} has only {counts.min()}"
        )
    # Stable sort keeps source order within each class.
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], classes)
    chosen = np.concatenate([order[s : s + per_class] for s in starts])
    return np.sort(chosen)


def balanced_subset(source: Source, size: int) -> SubsetSource:
    """A fixed class-balanced subset of `size` records (see `balanced_subset_indices`)."""
    return SubsetSource(source, balanced_subset_indices(source_labels(source), size))
