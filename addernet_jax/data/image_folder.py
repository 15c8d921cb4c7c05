"""torchvision-style ImageFolder trees (`root/<class>/<file>`), decoded lazily with PIL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _image_files(folder: str) -> list[str]:
    """Image file names in `folder` (not recursive, as each class is one flat folder), sorted."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)]
    return sorted(names)


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of `root`: the classes, label = position in this list."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def decode_image(path: str) -> np.ndarray:
    """An image file as uint8 HWC RGB (greyscale, palette and CMYK converted, like torchvision)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class ImageFolderSource:
    """Random access to `root/<class>/<image>`: classes are the sorted folder names.

    Files are listed once at construction (sorted within each class, like torchvision); images
    are decoded only when indexed, so it scales to ImageNet. `labels` is available without
    decoding anything.

    Args:
      root: the split folder, e.g. `.../cifar10-jpeg/train`.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"ImageFolder root {self.root} is not a directory")
        self.classes = class_folders(self.root)
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            files = _image_files(str(self.root / name))
            paths += [os.path.join(name, f) for f in files]
            labels += [label] * len(files)
        if not paths:
            raise ValueError(
                f"ImageFolder root {self.root} has no images in class sub-folders "
                f"(extensions {', '.join(IMG_EXTENSIONS)})"
            )
        self.paths = paths  # relative to root: keeps the source small when pickled to workers
        self.labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = decode_image(os.path.join(self.root, self.paths[index]))
        return {"image": image, "label": int(self.labels[index])}

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root}, {len(self)} images, {len(self.classes)} classes)"
