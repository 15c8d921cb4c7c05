"""Input pipelines: tfds and local readers -> grain random-access sources -> per-process batches.

Typical use (one call each, every object documented in its module)::

    from addernet_jax import data

    train_src = data.get_source("cifar10", "train", source="local",
                                local_path="../shared/data/cifar10-jpeg")
    train = data.make_train_loader(train_src, global_batch_size=256, seed=0,
                                   transforms=data.get_transforms("cifar10", train=True),
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
    it = iter(train)                 # grain DatasetIterator
    batch = next(it)                 # {'image': (B, 32, 32, 3) float32, 'label': (B,) int32}
    state = it.get_state()           # ... later: it.set_state(state) resumes exactly

    test_src = data.get_source("cifar10", "test", source="local", local_path=...)
    for batch in data.make_eval_loader(test_src, batch_size=100,
                                       transforms=data.get_transforms("cifar10", train=False)):
        ...                          # plus batch['mask'] (False on the last batch's padding)

Modules:
  datasets      `get_source(dataset, split, *, source='tfds'|'local', data_dir, local_path)`,
                `DATASETS` (mnist, cifar10, cifar100, imagenet2012), local format detection.
  tfds_source   `tfds.data_source`; downloads only when reachable, else fails fast.
  idx           `read_idx(path)`, `load_mnist_idx(directory, split)` (MNIST IDX files).
  cifar         `read_cifar_batch(path)`, `load_cifar_batches(directory, split)`, restricted pickle.
  image_folder  `ImageFolderSource(root)` (root/<class>/<image>, decoded lazily with PIL).
  sources       `ArraySource`, `SubsetSource`, `balanced_subset(source, size)`.
  transforms    torchvision-equivalent grain transforms and the official presets.
  loaders       `make_train_loader`, `make_eval_loader` (grain MapDataset pipelines).
  imresize      MATLAB `imresize` bicubic: `imresize`, `downscale`, `upscale`, `resize_matrix`.
  sr            super-resolution sources of {'lr', 'hr', 'name'} records: `PairedSRSource`
                (EDSR's benchmark layout), `HRFolderSource` (LR made by bicubic downscaling),
                `div2k_source` (tfds), `CachedSource`, `RepeatedSource`.
  sr_transforms EDSR's random aligned patches, flips and rotations (`sr_train_transforms`).
"""

from addernet_jax.data.cifar import load_cifar_batches, read_cifar_batch
from addernet_jax.data.datasets import DATASETS, DatasetInfo, dataset_info, get_source
from addernet_jax.data.idx import load_mnist_idx, read_idx
from addernet_jax.data.image_folder import ImageFolderSource
from addernet_jax.data.imresize import downscale, imresize, resize_matrix, upscale
from addernet_jax.data.loaders import (
    make_eval_loader,
    make_train_loader,
    num_eval_batches,
    steps_per_epoch,
)
from addernet_jax.data.sources import ArraySource, SubsetSource, balanced_subset
from addernet_jax.data.sr import (
    CachedSource,
    HRFolderSource,
    PairedSRSource,
    RepeatedSource,
    check_scale,
    div2k_source,
)
from addernet_jax.data.sr_transforms import sr_eval_transforms, sr_train_transforms
from addernet_jax.data.transforms import augmentation_choices, get_transforms

__all__ = [
    "DATASETS",
    "ArraySource",
    "CachedSource",
    "DatasetInfo",
    "HRFolderSource",
    "ImageFolderSource",
    "PairedSRSource",
    "RepeatedSource",
    "SubsetSource",
    "balanced_subset",
    "check_scale",
    "dataset_info",
    "div2k_source",
    "downscale",
    "get_source",
    "augmentation_choices",
    "get_transforms",
    "imresize",
    "load_cifar_batches",
    "load_mnist_idx",
    "make_eval_loader",
    "make_train_loader",
    "num_eval_batches",
    "read_cifar_batch",
    "read_idx",
    "resize_matrix",
    "sr_eval_transforms",
    "sr_train_transforms",
    "steps_per_epoch",
    "upscale",
]
