"""Local readers: MNIST IDX, CIFAR python batches (restricted pickle), ImageFolder trees."""

import gzip
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from addernet_jax.data import ImageFolderSource, load_cifar_batches, load_mnist_idx, read_idx
from addernet_jax.data.cifar import read_cifar_batch

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def test_read_idx_real_mnist(mnist_dir):
    train = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    test = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert train.shape == (60000, 28, 28) and train.dtype == np.uint8
    assert test.shape == (3000, 28, 28)
    assert labels.shape == (60000,) and labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist()[:2] == [5923, 6742]  # the well-known class counts
    assert train.max() == 255 and train.min() == 0


def test_load_mnist_idx_real(mnist_dir):
    test = load_mnist_idx(mnist_dir, "test")
    assert len(test) == 3000 and test.images.shape == (3000, 28, 28, 1)
    record = test[0]
    assert record["image"].shape == (28, 28, 1) and record["image"].dtype == np.uint8
    assert record["label"] == 7  # the first MNIST test digit
    assert set(np.unique(test.labels)) == set(range(10))


def test_read_idx_roundtrip_big_endian(tmp_path):
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    path = tmp_path / "values-idx2-int"
    path.write_bytes(_idx_bytes(values, 0x0C))
    out = read_idx(path)
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.dtype("int32")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "payload"),  # truncated payload
        (lambda b: b + b"\x00", "payload"),  # trailing garbage
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "dtype code"),
        (lambda b: b[:6], "truncated"),  # cut inside the dimensions
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, mutate, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mutate(_idx_bytes(np.zeros((2, 3, 3), np.uint8))))
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_truncated_gzip(tmp_path, mnist_dir):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()[:-100])
    with pytest.raises(ValueError, match="gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_load_mnist_idx_names_missing_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    )
    with pytest.raises(ValueError, match="train-labels"):
        load_mnist_idx(tmp_path, "train")


def _cifar_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """The real layout: each row is the red plane, then green, then blue (CHW), row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _py2_str(b: bytes) -> bytes:
    """A Python 2 `str` as cPickle writes it (SHORT_BINSTRING / BINSTRING)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_cifar_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """Byte-for-byte what Python 2 cPickle (protocol 2) writes for the official batch dicts."""
    shape = b"".join(b"J" + struct.pack("<i", d) for d in rows.shape)
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b")
        + b"\x87R(K\x01(" + shape + b"tcnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R(K\x03"
        + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + _py2_str(rows.tobytes()) + b"tb"
    )  # fmt: skip
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + _py2_str(b"data") + array + _py2_str(b"labels") + label_list + b"u."


def test_cifar10_batches_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = _cifar_images(rng, 6 * 4)
    labels = rng.integers(0, 10, len(images))
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        part = slice(4 * k, 4 * k + 4)
        batch = {
            b"batch_label": b"training batch",
            b"labels": labels[part].tolist(),
            b"data": _cifar_rows(images[part]),
            b"filenames": [b"x.png"] * 4,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    train = load_cifar_batches(tmp_path, "train")  # the parent folder is accepted too
    test = load_cifar_batches(folder, "test")
    np.testing.assert_array_equal(train.images, images[:20])  # data_batch_1..5, in order
    np.testing.assert_array_equal(train.labels, labels[:20])
    np.testing.assert_array_equal(test.images, images[20:])
    assert test[3]["label"] == labels[23]


def test_cifar_batch_python2_pickle(tmp_path):
    rng = np.random.default_rng(1)
    images = _cifar_images(rng, 3)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_cifar_pickle(_cifar_rows(images), [3, 1, 4]))
    out, labels = read_cifar_batch(path)
    np.testing.assert_array_equal(out, images)
    assert labels.tolist() == [3, 1, 4]


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = _cifar_images(rng, 5)
    batch = {
        "data": _cifar_rows(images),
        "fine_labels": [99, 0, 5, 7, 42],
        "coarse_labels": [0] * 5,
    }
    (folder / "train").write_bytes(pickle.dumps(batch, protocol=5))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a"] * 100}))
    source = load_cifar_batches(folder, "train")
    np.testing.assert_array_equal(source.images, images)
    assert source.labels.tolist() == [99, 0, 5, 7, 42]


class _RunsCode:
    """Pickles to a call of os.system: what a malicious batch file would contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_refuses_globals(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": []}, protocol=2))
    with pytest.raises(ValueError, match="system is not allowed") as err:
        read_cifar_batch(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_cifar_pickle_refuses_codecs_other_than_latin1(tmp_path):
    path = tmp_path / "test_batch"
    # _codecs.encode is allowed only as protocol 2 uses it for bytes (latin-1).
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="base64"):
        read_cifar_batch(path)


def test_image_folder_real_cifar10_test(cifar10_jpeg_dir):
    source = ImageFolderSource(cifar10_jpeg_dir / "test")
    assert len(source) == 10000
    assert source.classes == CIFAR10_CLASSES
    assert np.bincount(source.labels).tolist() == [1000] * 10
    first, last = source[0], source[len(source) - 1]
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
    assert first["label"] == 0 and last["label"] == 9
    assert source.paths[0] == "airplane/0000.jpg"


def test_image_folder_decodes_exactly(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    for name in ("b_class", "a_class"):
        (tmp_path / name).mkdir()
    Image.fromarray(rgb).save(tmp_path / "b_class" / "0.png")
    Image.fromarray(grey).save(tmp_path / "a_class" / "1.PNG")
    (tmp_path / "a_class" / "notes.txt").write_text("not an image")
    source = ImageFolderSource(tmp_path)
    assert source.classes == ["a_class", "b_class"] and len(source) == 2
    np.testing.assert_array_equal(source[1]["image"], rgb)  # PNG is lossless
    np.testing.assert_array_equal(source[0]["image"], np.repeat(grey[..., None], 3, axis=-1))
    assert [source[i]["label"] for i in range(2)] == [0, 1]


def test_image_folder_without_images_fails(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderSource(tmp_path)
