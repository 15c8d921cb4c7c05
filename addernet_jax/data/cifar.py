"""CIFAR-10/100 "python version" batches, read with a restricted unpickler.

The official archives (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2 pickles of dicts:
`data` (N, 3072) uint8, each row the 1024 red, then green, then blue values of a 32x32 image
(row-major CHW), and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100). Unpickling is code
execution by design, so `RestrictedUnpickler` resolves only the handful of globals that rebuild
numpy arrays and refuses everything else.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from addernet_jax.data.sources import ArraySource

CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR100_DIRNAME = "cifar-100-python"
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _latin1_encode(text: str, encoding: str) -> bytes:
    """`_codecs.encode` for latin-1 only: how Python 3 protocol-2 pickles store bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_EMPTY = np.empty(0)
# The globals numpy's ndarray/dtype pickling uses, under numpy 1 (`numpy.core`) and numpy 2
# (`numpy._core`) names; each maps to the object itself so no module is imported by name.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _EMPTY.__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): _EMPTY.__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): _EMPTY.__reduce_ex__(5)[0],  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _EMPTY.__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001
    """An unpickler for plain data: builtins containers plus numpy arrays, nothing callable else.

    The pure-Python unpickler, as convert/safe_unpickler.py: the C one can be made to allocate
    tens of GB by a few corrupted bytes before any check runs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a data pickle"
            ) from None


def load_pickle(path: str | Path) -> Any:
    """Unpickles `path` with `RestrictedUnpickler` (latin-1 for Python 2 strings, as torchvision).

    Raises:
      ValueError: naming the file, if it is not a pickle or uses a forbidden global.
    """
    path = Path(path)
    try:
        return RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a plain-data CIFAR pickle ({e})") from e


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file as images (N, 32, 32, 3) uint8 HWC and labels (N,) int32.

    Accepts `labels` (CIFAR-10) or `fine_labels` (CIFAR-100); keys may be str or bytes.
    """
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    label_key = "fine_labels" if "fine_labels" in batch else "labels"
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path}: missing 'data' or 'labels'/'fine_labels' (keys {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], np.int32)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' is {data.shape} {data.dtype}, expected (N, 3072) uint8")
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar_batch_dir(directory: Path) -> tuple[Path, str] | None:
    """(batch folder, 'cifar10' | 'cifar100') for a CIFAR python folder or its parent, else None."""
    for folder in (directory, directory / CIFAR10_DIRNAME, directory / CIFAR100_DIRNAME):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder, "cifar10"
        if (folder / "meta").is_file() and (
            (folder / "train").is_file() or (folder / "test").is_file()
        ):
            return folder, "cifar100"
    return None


def load_cifar_batches(directory: str | Path, split: str) -> ArraySource:
    """CIFAR-10 or CIFAR-100 python batches of one split as an in-memory source.

    Args:
      directory: `cifar-10-batches-py/`, `cifar-100-python/`, or the folder holding either.
      split: `train` (CIFAR-10: data_batch_1..5, in order) or `test`.
    """
    found = cifar_batch_dir(Path(directory))
    if found is None:
        raise ValueError(
            f"{directory}: no CIFAR-10 (data_batch_*) or CIFAR-100 (train, meta) batches"
        )
    folder, flavour = found
    files = (CIFAR10_FILES if flavour == "cifar10" else CIFAR100_FILES).get(split)
    if files is None:
        raise ValueError(f"unknown CIFAR split {split!r}; choices: ['test', 'train']")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: missing CIFAR batch files {missing}")
    parts = [read_cifar_batch(folder / name) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArraySource(images, labels, name=f"{flavour}-batches:{split}")
