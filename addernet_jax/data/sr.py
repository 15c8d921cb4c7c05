"""Super-resolution sources: grain random-access sources of {'lr', 'hr', 'name'} records.

Every record is {'lr': uint8 (h, w, 3), 'hr': uint8 (h * scale, w * scale, 3), 'name': str}.
Greyscale images (Set14's bridge.png) are repeated to three channels, so every model sees RGB.
The HR image is cropped to the LR size times the scale, as EDSR does when it evaluates, so each
LR pixel has its scale x scale block of HR pixels. An LR image must be floor(HR size / scale)
(ADDERSR.md 4-5: LR = MATLAB bicubic of the HR image cropped to a multiple of the scale).

Sources:
  PairedSRSource   HR and LR files on disk: EDSR's benchmark layout `<root>/HR/<name>.png` and
                   `<root>/LR_bicubic/X<s>/<name>x<s>.png` (../shared/data/sr-benchmark/Set5),
                   or DIV2K's (`hr_dir='DIV2K_train_HR', lr_dir='DIV2K_train_LR_bicubic'`).
  HRFolderSource   a folder of HR images alone; LR made by MATLAB-style bicubic downscaling.
  div2k_source     DIV2K through `tfds.data_source('div2k/bicubic_x<s>')`, failing fast with a
                   one-line ValueError when it is not prepared and cannot be downloaded.
Wrappers: `CachedSource` (decode once, keep in memory), `RepeatedSource` (EDSR's repeat of a
small training set so that an epoch is a fixed number of batches).
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from addernet_jax.data.image_folder import IMG_EXTENSIONS, decode_image
from addernet_jax.data.imresize import crop_to_multiple, downscale
from addernet_jax.data.tfds_source import network_reachable

Record = dict[str, Any]
DIV2K_SCALES = (2, 3, 4, 8)  # the tfds div2k builder's bicubic_x<s> configs
# tfds' div2k builder downloads from this host; a quick connection decides whether to try.
DIV2K_PROBE = ("data.vision.ee.ethz.ch", 443)


def check_scale(scale: int, allowed: tuple[int, ...] | None = None, where: str = "") -> int:
    """`scale` as an int, or a ValueError when it is not an integer >= 2 (or not in `allowed`)."""
    number = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
    if not number or int(scale) != scale or scale < 2:
        raise ValueError(f"unknown SR scale {scale!r}{where}: need an integer >= 2")
    if allowed is not None and scale not in allowed:
        raise ValueError(f"unknown SR scale {scale!r}{where}; choices: {list(allowed)}")
    return int(scale)


def check_lr_size(lr_size: tuple[int, int], hr_size: tuple[int, int], scale: int, what: str):
    """A ValueError naming `what` unless the LR (height, width) is floor(HR / scale)."""
    expected = (hr_size[0] // scale, hr_size[1] // scale)
    if tuple(lr_size) != expected:
        raise ValueError(
            f"{what}: LR image is {lr_size[0]}x{lr_size[1]} but the {hr_size[0]}x{hr_size[1]} "
            f"HR image at x{scale} needs floor(HR / {scale}) = {expected[0]}x{expected[1]}"
        )


def pair_record(lr: np.ndarray, hr: np.ndarray, scale: int, name: str) -> Record:
    """The record of an LR/HR pair: both RGB uint8, HR cropped to LR size x scale."""
    lr, hr = _rgb(lr), _rgb(hr)
    check_lr_size(lr.shape[:2], hr.shape[:2], scale, name)
    h, w = lr.shape[:2]
    return {"lr": lr, "hr": hr[: h * scale, : w * scale], "name": name}


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): greyscale (H, W) or (H, W, 1) repeated to three channels."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def _image_files(folder: Path) -> list[str]:
    """Sorted image file names in `folder`, or a ValueError naming it when it has none."""
    if not folder.is_dir():
        raise ValueError(f"SR image folder {folder} is not a directory")
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.name.lower().endswith(IMG_EXTENSIONS))
    if not names:
        raise ValueError(f"SR image folder {folder} has no images ({', '.join(IMG_EXTENSIONS)})")
    return names


def _size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    with Image.open(path) as image:
        return image.height, image.width


class PairedSRSource:
    """HR/LR pairs from files: `<root>/<hr_dir>/<name>.png` + `<root>/<lr_dir>/X<s>/<name>x<s>.png`.

    Files are listed and their sizes checked at construction (headers only), so a missing LR file
    or a wrong LR size fails at once with the path; images are decoded when indexed.

    Args:
      root: the dataset folder, e.g. `../shared/data/sr-benchmark/Set5`.
      scale: the SR scale; `<root>/<lr_dir>/X<scale>` must exist.
      hr_dir: HR sub-folder ('HR' in EDSR's benchmark layout, 'DIV2K_train_HR' for DIV2K).
      lr_dir: LR sub-folder holding X2, X3, ... ('LR_bicubic'; 'DIV2K_train_LR_bicubic').
    """

    def __init__(
        self, root: str | Path, scale: int, *, hr_dir: str = "HR", lr_dir: str = "LR_bicubic"
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"SR dataset folder {self.root} is not a directory")
        self.scale = check_scale(scale, where=f" for {self.root}")
        self.hr_dir = self.root / hr_dir
        self.lr_dir = self.root / lr_dir / f"X{self.scale}"
        if not self.lr_dir.is_dir():
            present = sorted(p.name for p in self.lr_dir.parent.glob("X*"))
            raise ValueError(
                f"unknown SR scale {scale} for {self.root}: no LR folder {self.lr_dir} "
                f"(present: {present or 'none'})"
            )
        self.hr_files = _image_files(self.hr_dir)
        self.lr_files = [self._lr_file(f) for f in self.hr_files]

    def _lr_file(self, hr_file: str) -> str:
        """The LR file name of `hr_file` (EDSR: `<stem>x<s><ext>`), checked to exist and fit."""
        stem, ext = os.path.splitext(hr_file)
        lr_file = f"{stem}x{self.scale}{ext}"
        lr_path = self.lr_dir / lr_file
        if not lr_path.is_file():
            raise ValueError(f"missing LR image {lr_path} for HR image {self.hr_dir / hr_file}")
        check_lr_size(_size(lr_path), _size(self.hr_dir / hr_file), self.scale, str(lr_path))
        return lr_file

    def __len__(self) -> int:
        return len(self.hr_files)

    def __getitem__(self, index: int) -> Record:
        hr = decode_image(str(self.hr_dir / self.hr_files[index]))
        lr = decode_image(str(self.lr_dir / self.lr_files[index]))
        name = os.path.splitext(self.hr_files[index])[0]
        return pair_record(lr, hr, self.scale, name)

    def __repr__(self) -> str:
        return f"PairedSRSource({self.root}, x{self.scale}, {len(self)} images)"


class HRFolderSource:
    """A folder of HR images; each LR image is made on access by MATLAB-style bicubic downscaling.

    The HR image is cropped to a multiple of `scale` first (EDSR's modcrop), so the LR size is
    floor(HR size / scale). Downscaling a 2K image takes about a second of CPU: for training on
    DIV2K, prefer stored LR images (`PairedSRSource`, `div2k_source`).

    Args:
      folder: the folder of HR images (not recursive), e.g. `.../Set5/HR`.
      scale: the SR scale, an integer >= 2.
    """

    def __init__(self, folder: str | Path, scale: int):
        self.folder, self.scale = Path(folder), check_scale(scale, where=f" for {folder}")
        self.files = _image_files(self.folder)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Record:
        path = self.folder / self.files[index]
        hr = crop_to_multiple(_rgb(decode_image(str(path))), self.scale)
        if min(hr.shape[:2]) == 0:
            raise ValueError(f"HR image {path} is smaller than the scale {self.scale}")
        name = os.path.splitext(self.files[index])[0]
        return {"lr": downscale(hr, self.scale), "hr": hr, "name": name}

    def __repr__(self) -> str:
        return f"HRFolderSource({self.folder}, x{self.scale}, {len(self)} images)"


class CachedSource:
    """Every record of `source` decoded once, at construction, and kept in memory.

    Training samples one patch per record access; decoding a whole PNG (and, for
    `HRFolderSource`, downscaling it) for every patch would cost more than the model's step on
    small sets such as B100 (100 images, about 60 MB decoded). Not for DIV2K-sized sets.
    """

    def __init__(self, source: Any):
        self.name = repr(source)
        self.records = [source[i] for i in range(len(source))]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def __repr__(self) -> str:
        return f"CachedSource({self.name})"


class RepeatedSource:
    """`source` repeated `repeats` times (record i is source[i % len(source)]): EDSR's
    `--test_every`, which makes one epoch a fixed number of batches of a small training set."""

    def __init__(self, source: Any, repeats: int):
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.source, self.repeats = source, int(repeats)

    def __len__(self) -> int:
        return len(self.source) * self.repeats

    def __getitem__(self, index: int) -> Record:
        return self.source[index % len(self.source)]

    def __repr__(self) -> str:
        return f"RepeatedSource({self.source!r} x {self.repeats})"


class Div2kSource:
    """A `tfds.data_source('div2k/bicubic_x<s>')` as {'lr', 'hr', 'name'} records.

    tfds records hold only 'lr' and 'hr'; the name is '<config>:<split>[<index>]'.
    """

    def __init__(self, data_source: Any, scale: int, *, name: str):
        self.data_source, self.scale, self.name = data_source, scale, name

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> Record:
        record = self.data_source[index]
        return pair_record(record["lr"], record["hr"], self.scale, f"{self.name}[{index}]")

    def __repr__(self) -> str:
        return f"Div2kSource({self.name}, {len(self)} images)"


def div2k_not_prepared_message(name: str, data_dir: str) -> str:
    """One line: the tfds DIV2K config is not prepared here and cannot be downloaded."""
    return (
        f"tfds dataset {name!r} is not prepared under {data_dir} and cannot be downloaded (no "
        f"connection to {DIV2K_PROBE[0]}). Prepare it once on a machine with network "
        f"(`tfds build {name} --file_format=array_record --data_dir=DIR`) and pass that "
        "data_dir, or read DIV2K's PNG files with PairedSRSource(root, scale, "
        "hr_dir='DIV2K_train_HR', lr_dir='DIV2K_train_LR_bicubic')"
    )


def div2k_source(
    scale: int, split: str = "train", *, data_dir: str | None = None, download: bool = True
) -> Div2kSource:
    """DIV2K bicubic x`scale` from tfds (800 'train', 100 'validation' images), random access.

    Like `tfds_source.tfds_source`: reads prepared array_record data; when there is none,
    downloads and prepares it only if the DIV2K host answers within seconds (and `download`).

    Raises:
      ValueError: in seconds, for a scale without a tfds config, or when the data is not
        prepared in `data_dir` and cannot be downloaded.
    """
    import tensorflow_datasets as tfds

    name = f"div2k/bicubic_x{check_scale(scale, DIV2K_SCALES, ' for tfds div2k')}"
    try:
        return _open_div2k(tfds, name, split, data_dir, scale)
    except Exception as e:  # tfds raises several types here; diagnose below, chain the original
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise ValueError(
                f"tfds dataset {name!r} at {builder.data_dir} cannot be read with random access "
                f"({e}); prepare it with --file_format=array_record"
            ) from e
        if not (download and network_reachable(DIV2K_PROBE)):
            raise ValueError(div2k_not_prepared_message(name, str(builder.data_dir))) from e
        builder.download_and_prepare(file_format="array_record")
    return _open_div2k(tfds, name, split, data_dir, scale)


def _open_div2k(tfds, name: str, split: str, data_dir: str | None, scale: int) -> Div2kSource:
    """The prepared tfds data only (download=False): raises when it is not there."""
    data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return Div2kSource(data_source, scale, name=f"{name}:{split}")
