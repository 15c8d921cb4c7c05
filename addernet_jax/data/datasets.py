"""The datasets the project trains on, and `get_source`: one call from (dataset, split) to records.

Two origins:
  - 'tfds':  `tfds.data_source` over array_record files (downloaded when reachable).
  - 'local': files on disk, format detected from the folder: MNIST IDX files, CIFAR python
             batches, or an ImageFolder root with `train/` and `test/` (or `val/`) sub-folders.
Split names are 'train' and 'test'; 'val' and 'validation' are aliases of 'test' (ImageNet's
held-out split is tfds' 'validation').
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from addernet_jax.data import cifar, idx
from addernet_jax.data.image_folder import IMG_EXTENSIONS, ImageFolderSource
from addernet_jax.data.sources import Source
from addernet_jax.data.tfds_source import tfds_source


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about a dataset.

    Attributes:
      num_classes: number of labels.
      image_shape: HWC shape of the images the model sees (after the eval transforms).
      tfds_name: the tfds builder name.
      tfds_splits: our split name -> tfds split name.
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    tfds_name: str
    tfds_splits: dict[str, str]


_TRAIN_TEST = {"train": "train", "test": "test"}
DATASETS = {
    "mnist": DatasetInfo(10, (28, 28, 1), "mnist", _TRAIN_TEST),
    "cifar10": DatasetInfo(10, (32, 32, 3), "cifar10", _TRAIN_TEST),
    "cifar100": DatasetInfo(100, (32, 32, 3), "cifar100", _TRAIN_TEST),
    "imagenet2012": DatasetInfo(
        1000, (224, 224, 3), "imagenet2012", {"train": "train", "test": "validation"}
    ),
}
SPLIT_ALIASES = {"train": "train", "test": "test", "val": "test", "validation": "test"}
ORIGINS = ("tfds", "local")
LOCAL_FORMATS = ("idx", "cifar-batches", "image-folder", "class-folders")
# ImageFolder split sub-folder names, in the order they are looked for.
IMAGE_FOLDER_SPLITS = {"train": ("train",), "test": ("test", "val", "validation")}


def dataset_info(dataset: str) -> DatasetInfo:
    """The `DatasetInfo` of `dataset`; ValueError listing the known names otherwise."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choices: {sorted(DATASETS)}")
    return DATASETS[dataset]


def canonical_split(split: str) -> str:
    """'train' or 'test' for a split name or alias; ValueError listing the choices otherwise."""
    if split not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; choices: {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[split]


def detect_local_format(path: str | Path) -> str:
    """The format of a local dataset folder: one of `LOCAL_FORMATS`.

    Raises:
      ValueError: naming the folder and the layouts looked for, if none matches.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"local dataset path {path} is not a directory")
    if idx.is_idx_dir(path):
        return "idx"
    if cifar.cifar_batch_dir(path) is not None:
        return "cifar-batches"
    if any((path / name).is_dir() for names in IMAGE_FOLDER_SPLITS.values() for name in names):
        return "image-folder"
    if _is_class_folders(path):
        return "class-folders"
    raise ValueError(
        f"{path}: unrecognised local dataset layout; choices: {list(LOCAL_FORMATS)} = MNIST IDX "
        "files (train-images-idx3-ubyte[.gz], ...), CIFAR python batches (cifar-10-batches-py/ "
        "or cifar-100-python/), an ImageFolder root with train/ and test/ (or val/) sub-folders, "
        "or one split's folder of class folders (as ImageNet's val/)"
    )


def _is_class_folders(path: Path) -> bool:
    """Whether `path` is one split of an ImageFolder: class sub-folders holding images (the
    first non-empty class folder is looked at, so that 1000 classes are not all listed)."""
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        files = [f for f in folder.iterdir() if f.is_file()]
        if files:
            return any(f.name.lower().endswith(IMG_EXTENSIONS) for f in files)
    return False


def _image_folder_split(root: Path, split: str) -> Path:
    """The sub-folder of an ImageFolder root that holds `split`."""
    for name in IMAGE_FOLDER_SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise ValueError(f"{root}: no {' or '.join(IMAGE_FOLDER_SPLITS[split])} sub-folder")


def local_source(dataset: str, split: str, path: str | Path) -> Source:
    """The local files of `dataset`/`split` under `path`, format auto-detected.

    Raises:
      ValueError: if the format does not fit the dataset (IDX is MNIST only, CIFAR-10 batches are
        not CIFAR-100) or an ImageFolder has the wrong number of classes.
    """
    info, split, path = dataset_info(dataset), canonical_split(split), Path(path)
    fmt = detect_local_format(path)
    if fmt == "idx":
        if dataset != "mnist":
            raise ValueError(f"{path} holds MNIST IDX files, not {dataset}")
        return idx.load_mnist_idx(path, split)
    if fmt == "cifar-batches":
        flavour = cifar.cifar_batch_dir(path)[1]
        if flavour != dataset:
            raise ValueError(f"{path} holds {flavour} python batches, not {dataset}")
        return cifar.load_cifar_batches(path, split)
    # A split's own folder of class folders serves whatever split is asked for.
    folder = path if fmt == "class-folders" else _image_folder_split(path, split)
    source = ImageFolderSource(folder)
    if len(source.classes) != info.num_classes:
        raise ValueError(
            f"{source.root} has {len(source.classes)} class folders but {dataset} has "
            f"{info.num_classes} classes"
        )
    return source


def get_source(
    dataset: str,
    split: str,
    *,
    source: str = "tfds",
    data_dir: str | None = None,
    local_path: str | Path | None = None,
    local_flag: str | None = None,
) -> Source:
    """A grain random-access source of {'image': uint8 HWC, 'label': int} records.

    Args:
      dataset: one of `DATASETS` ('mnist', 'cifar10', 'cifar100', 'imagenet2012').
      split: 'train' or 'test' ('val'/'validation' are aliases of 'test').
      source: 'tfds' (prepared array_record data under `data_dir`) or 'local' (`local_path`).
      data_dir: tfds data directory; None for tfds' default.
      local_path: folder of local files (required for source='local').
      local_flag: how the caller's command line points at local files, for the message when
        tfds has no data (default: train.py's --config.data.* fields).

    Raises:
      ValueError: for an unknown dataset, split, origin or local layout (naming it and the
        choices), or, quickly, when tfds has no prepared data.
    """
    info, split = dataset_info(dataset), canonical_split(split)
    if source == "tfds":
        return tfds_source(
            info.tfds_name, info.tfds_splits[split], data_dir=data_dir, local_hint=dataset,
            local_flag=local_flag,
        )
    if source == "local":
        if local_path is None:
            raise ValueError(f"source='local' needs local_path (a folder of {dataset} files)")
        return local_source(dataset, split, local_path)
    raise ValueError(f"unknown source {source!r}; choices: {list(ORIGINS)}")
