"""`get_source`: tfds (mocked) and local auto-detection, errors, and the balanced subset."""

import pickle
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from addernet_jax.data import (
    ArraySource,
    ImageFolderSource,
    balanced_subset,
    get_source,
    get_transforms,
    make_train_loader,
)
from addernet_jax.data.sources import balanced_subset_indices


@pytest.fixture
def mock_tfds():
    """tfds with random records generated from the builder code: no files, no network."""
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@pytest.mark.parametrize("dataset, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_source_normalises_records(mock_tfds, dataset, shape):
    source = get_source(dataset, "train", source="tfds", data_dir="/nonexistent")
    assert len(source) == 24
    record = source[5]
    assert set(record) == {"image", "label"}  # cifar10's 'id' is dropped
    assert record["image"].shape == shape and record["image"].dtype == np.uint8
    assert type(record["label"]) is int and 0 <= record["label"] < 10
    loader = make_train_loader(
        source, global_batch_size=8, seed=0, transforms=get_transforms(dataset, train=True)
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (8, *shape) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_tfds_imagenet_uses_validation_split(mock_tfds):
    source = get_source("imagenet2012", "val", source="tfds")
    assert "validation" in repr(source)
    assert source[0]["image"].ndim == 3


def test_tfds_without_prepared_data_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match="not prepared") as err:
        get_source("mnist", "train", source="tfds", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10  # no download attempt
    message = str(err.value)
    assert str(tmp_path) in message and "--config.data.local_path=/path/to/mnist" in message


def test_local_sources_are_detected(mnist_dir, cifar10_jpeg_dir):
    mnist = get_source("mnist", "test", source="local", local_path=mnist_dir)
    assert isinstance(mnist, ArraySource) and len(mnist) == 3000
    cifar = get_source("cifar10", "test", source="local", local_path=cifar10_jpeg_dir)
    assert isinstance(cifar, ImageFolderSource) and len(cifar) == 10000
    assert cifar.root.name == "test"


def test_local_cifar_batches_detected(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((2, 3072), np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}))
    source = get_source("cifar10", "test", source="local", local_path=tmp_path)
    assert len(source) == 2 and source[1]["label"] == 2
    with pytest.raises(ValueError, match="cifar10 python batches, not cifar100"):
        get_source("cifar100", "test", source="local", local_path=tmp_path)


def test_image_folder_val_alias(tmp_path, cifar10_jpeg_dir):
    (tmp_path / "val").symlink_to(cifar10_jpeg_dir / "test")
    source = get_source("cifar10", "validation", source="local", local_path=tmp_path)
    assert len(source) == 10000


@pytest.mark.parametrize(
    "dataset, split, source, path, message",
    [
        ("svhn", "train", "local", "MNIST", r"unknown dataset 'svhn'; choices: \['cifar10', "),
        ("mnist", "dev", "local", "MNIST", r"unknown split 'dev'; choices: \['test', 'train'"),
        ("mnist", "train", "gcs", "MNIST", r"unknown source 'gcs'; choices: \['tfds', 'local'\]"),
        ("mnist", "train", "local", None, "needs local_path"),
        ("mnist", "train", "local", "EMPTY", "unrecognised local dataset layout; choices: .*'idx'"),
        ("cifar10", "train", "local", "MNIST", "MNIST IDX files, not cifar10"),
        ("cifar100", "test", "local", "CIFAR", "10 class folders but cifar100 has 100"),
    ],
)
def test_get_source_errors_name_the_problem(
    tmp_path, mnist_dir, cifar10_jpeg_dir, dataset, split, source, path, message
):
    paths = {"EMPTY": tmp_path, "MNIST": mnist_dir, "CIFAR": cifar10_jpeg_dir, None: None}
    with pytest.raises(ValueError, match=message):
        get_source(dataset, split, source=source, local_path=paths[path])


def test_balanced_subset_real_cifar10(cifar10_jpeg_dir):
    source = ImageFolderSource(cifar10_jpeg_dir / "train")
    subset = balanced_subset(source, 10000)
    assert len(subset) == 10000
    assert np.bincount(subset.labels).tolist() == [1000] * 10
    # The first 1000 images of each class, in source order (NNNN = position within the class).
    names = [source.paths[i] for i in subset.indices]
    assert names[0] == "airplane/0000.jpg" and names[999] == "airplane/0999.jpg"
    assert names[1000] == "automobile/0000.jpg" and names[-1] == "truck/0999.jpg"
    np.testing.assert_array_equal(balanced_subset(source, 10000).indices, subset.indices)


def test_balanced_subset_interleaved_labels():
    labels = np.array([0, 1, 2, 0, 0, 1, 2, 2, 1, 0])
    assert balanced_subset_indices(labels, 6).tolist() == [0, 1, 2, 3, 5, 6]
    with pytest.raises(ValueError, match="multiple of 3 classes"):
        balanced_subset_indices(labels, 7)
    with pytest.raises(ValueError, match="only 3"):
        balanced_subset_indices(labels, 12)


def test_balanced_subset_reads_labels_when_source_has_none():
    class NoLabels:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"image": np.zeros((1, 1, 1), np.uint8), "label": i % 2}

    subset = balanced_subset(NoLabels(), 4)
    assert subset.indices.tolist() == [0, 1, 2, 3]
    assert subset[3]["label"] == 1
