"""MNIST's IDX format (`*-idx3-ubyte`, `*-idx1-ubyte`, optionally gzipped), in pure numpy.

An IDX file is a 4-byte magic number `0x00 0x00 <dtype code> <ndim>`, then `ndim` big-endian
uint32 dimensions, then the row-major payload (http://yann.lecun.com/exdb/mnist/).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from addernet_jax.data.sources import ArraySource

# IDX dtype codes; multi-byte types are big-endian.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# Both spellings occur in the wild: `train-images-idx3-ubyte` and `train-images.idx3-ubyte`.
MNIST_PREFIXES = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its suffix)."""
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file into an array of its native dtype (native byte order).

    Args:
      path: an IDX file, raw or gzipped.

    Returns:
      The array, shaped by the header's dimensions (e.g. (60000, 28, 28) uint8 for MNIST images).

    Raises:
      ValueError: naming the file, if the magic number, dtype code or dimensions are invalid or
        the payload length does not match the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()!r})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header with {ndim} dimensions is invalid or truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(data) - 4 - 4 * ndim
    if payload != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but the payload has "
            f"{payload} bytes (truncated or corrupt file)"
        )
    array = np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_idx_file(directory: Path, prefix: str, kind: str) -> Path:
    """`<prefix>-<kind>-idx?-ubyte[.gz]` (or the `.idx?-ubyte` spelling) inside `directory`.

    Args:
      directory: folder holding the IDX files.
      prefix: `train` or `t10k`.
      kind: `images` or `labels`.
    """
    matches = sorted(directory.glob(f"{prefix}-{kind}[-.]idx?-ubyte*"))
    if not matches:
        raise ValueError(
            f"{directory}: no {prefix}-{kind}-idx*-ubyte[.gz] file (expected the standard MNIST "
            "file names: train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, ...)"
        )
    return matches[0]


def is_idx_dir(directory: Path) -> bool:
    """Whether `directory` looks like an MNIST IDX folder."""
    return any(directory.glob("*[-.]idx3-ubyte*"))


def load_mnist_idx(directory: str | Path, split: str) -> ArraySource:
    """MNIST from a folder of IDX files as a random-access source of {'image', 'label'}.

    Args:
      directory: folder with `train-*` and `t10k-*` images/labels IDX files.
      split: `train` or `test` (the `t10k-*` files, whatever number of images they hold).

    Returns:
      An `ArraySource` with images (N, 28, 28, 1) uint8 and int32 labels.
    """
    if split not in MNIST_PREFIXES:
        raise ValueError(f"unknown MNIST split {split!r}; choices: {sorted(MNIST_PREFIXES)}")
    directory = Path(directory)
    prefix = MNIST_PREFIXES[split]
    images_path = find_idx_file(directory, prefix, "images")
    labels_path = find_idx_file(directory, prefix, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{directory}: {images_path.name} {images.shape} and {labels_path.name} "
            f"{labels.shape} are not N images with N labels"
        )
    return ArraySource(images[..., None], labels, name=f"mnist-idx:{split}")
