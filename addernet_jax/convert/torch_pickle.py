"""A safe, torch-free reader of PyTorch `.pth` checkpoints.

`load_torch_state_dict` reads the two formats `torch.save` has written, without importing torch:

- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickles of the magic number,
  the protocol version and sys_info, then the object pickle, then the pickled list of storage
  keys, then each storage as an int64 element count followed by its raw little-endian bytes;
- zip (torch >= 1.6): `<folder>/data.pkl`, `<folder>/data/<key>` raw storages and an optional
  `<folder>/byteorder` record.

The pickles go through `safe_unpickler.SafeUnpickler` (an allow-list of inert stand-ins: no code
from the file runs). Tensors stay lazy references until the storages are read, then become numpy
arrays through `np.frombuffer` + strides, copied to C order. A whole pickled model
(`torch.save(net)`, as the official AdderNet `main.py` does) is turned back into the state_dict
that `net.state_dict()` would give, by walking the recorded `_parameters`, `_buffers` and
`_modules` of placeholder module objects.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterable

import numpy as np

# Absolute imports: tests load this file on its own, by path, in an interpreter without torch.
from addernet_jax.convert.safe_unpickler import (
    DEFAULT_MODULE_CLASSES,
    CheckpointFormatError,
    ModuleStub,
    SafeUnpickler,
    StorageRef,
    TensorRef,
    UnsafePickleError,
    as_text,
)

__all__ = [
    "DEFAULT_MODULE_CLASSES",
    "CheckpointFormatError",
    "UnsafePickleError",
    "load_torch_state_dict",
]

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION, the first two pickles of a legacy file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Keys under which a training script may have nested its state_dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")

# What a file may ask us to allocate, beyond the bytes it holds. torch writes zip records
# uncompressed (ZIP_STORED), so a stored record cannot be larger than the archive; other writers
# may deflate: a compressed record may expand to this ratio of its compressed size, or to
# `_MAX_EXPANDED_RECORD` (zero tensors compress far better than the ratio; a "zip bomb" of
# gigabytes from a few megabytes exceeds both).
_MAX_COMPRESSION_RATIO = 64
_MAX_EXPANDED_RECORD = 1 << 26
# A tensor may be a view that repeats its storage's elements (stride 0, from `expand`); such a
# tensor is materialised only up to this many bytes more than its storage holds.
_MAX_EXPANSION_BYTES = 1 << 24


# ----------------------------------------------------------------------------------------------
# The two container formats.

# What zipfile raises for a damaged archive besides BadZipFile: unknown compression or version
# (NotImplementedError), an encryption flag (RuntimeError), cut-off or undecodable data.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    zlib.error,
)


def _load_object(data: bytes, path: str, module_classes: frozenset[str]):
    """Unpickles the checkpoint's object and attaches storage bytes; returns (obj, little)."""
    if not data:
        raise CheckpointFormatError(f"{path}: empty file")
    if data[:4] == b"PK\x03\x04":
        return _load_zip(data, path, module_classes)
    if data[257:262] == b"ustar":
        raise CheckpointFormatError(f"{path}: the tar format of torch < 0.1.10 is not supported")
    return _load_legacy(data, path, module_classes), True


def _load_legacy(data: bytes, path: str, module_classes: frozenset[str]):
    """Legacy format; storages are stored little-endian whatever the writer's byte order."""
    file = io.BytesIO(data)
    _check_legacy_header(file, path, data)
    unpickler = SafeUnpickler(file, path, module_classes)
    obj = unpickler.load()
    keys = SafeUnpickler(file, path).load()
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"{path}: storage key list is a {type(keys).__name__}")
    _attach_legacy_storages(memoryview(data), file.tell(), keys, unpickler.storages, path)
    return obj


def _check_legacy_header(file: io.BytesIO, path: str, data: bytes) -> None:
    try:
        magic = SafeUnpickler(file, path).load()
    except Exception:  # any failure here means the header is not torch's magic number
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch checkpoint: starts with {data[:8]!r}, neither a zip archive "
            "nor the legacy magic number"
        )
    version = SafeUnpickler(file, path).load()
    if version != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{path}: unknown legacy protocol version {version!r}")
    SafeUnpickler(file, path).load()  # sys_info: byte order and C type sizes, unused by torch


def _attach_legacy_storages(view: memoryview, pos: int, keys, storages, path: str) -> None:
    for key in map(as_text, keys):
        storage = storages.get(key)
        if storage is None:
            raise CheckpointFormatError(f"{path}: storage {key} is listed but never referenced")
        left = len(view) - pos
        if left < 8:
            raise CheckpointFormatError(
                f"{path}: truncated: storage {key} size header needs 8 bytes, file has {left} left"
            )
        (numel,) = struct.unpack_from("<q", view, pos)
        if numel != storage.numel:
            raise CheckpointFormatError(
                f"{path}: storage {key} holds {numel} elements, the pickle says {storage.numel}"
            )
        if storage.nbytes > left - 8:
            raise CheckpointFormatError(
                f"{path}: truncated: storage {key} needs {storage.nbytes} bytes, "
                f"file has {left - 8} left"
            )
        storage.data = view[pos + 8 : pos + 8 + storage.nbytes]
        pos += 8 + storage.nbytes


def _load_zip(data: bytes, path: str, module_classes: frozenset[str]):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (*_ZIP_ERRORS, ValueError, struct.error) as err:
        raise CheckpointFormatError(f"{path}: corrupt or truncated zip archive ({err})") from err
    with archive:
        prefix = _zip_prefix(archive, path)
        pickled = _zip_read(archive, prefix + "data.pkl", path, len(data))
        unpickler = SafeUnpickler(io.BytesIO(pickled), path, module_classes)
        obj = unpickler.load()
        for key, storage in unpickler.storages.items():
            storage.data = _zip_storage(archive, f"{prefix}data/{key}", storage, path, len(data))
        byteorder = _zip_byteorder(archive, prefix, path, len(data))
    return obj, byteorder == "little"


def _zip_prefix(archive: zipfile.ZipFile, path: str) -> str:
    """The archive's top folder (`archive/` by default, the file's stem for older torch)."""
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointFormatError(f"{path}: zip archive has no <folder>/data.pkl record")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "constants.pkl" in names or any(n.startswith(prefix + "code/") for n in names):
        raise CheckpointFormatError(
            f"{path}: a TorchScript archive (torch.jit.save); save model.state_dict() instead"
        )
    return prefix


def _zip_info(archive: zipfile.ZipFile, name: str, path: str, archive_size: int):
    """The record's entry, refused before reading when its declared size is implausible for an
    archive of `archive_size` bytes (a stored record larger than the archive, or a compression
    ratio beyond `_MAX_COMPRESSION_RATIO`)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointFormatError(f"{path}: zip record {name} is missing") from None
    stored = info.compress_type == zipfile.ZIP_STORED
    limit = archive_size if stored else max(_MAX_COMPRESSION_RATIO * info.compress_size,
                                             _MAX_EXPANDED_RECORD)
    if info.file_size > limit:
        raise CheckpointFormatError(
            f"{path}: zip record {name} declares {info.file_size} bytes, implausible in an "
            f"archive of {archive_size} bytes; refusing to read it")
    return info


def _zip_read(archive: zipfile.ZipFile, name: str, path: str, archive_size: int) -> bytes:
    info = _zip_info(archive, name, path, archive_size)
    try:
        return archive.read(info)
    except _ZIP_ERRORS as err:
        raise CheckpointFormatError(f"{path}: corrupt zip record {name} ({err})") from err


def _zip_storage(archive: zipfile.ZipFile, name: str, storage: StorageRef, path: str,
                 archive_size: int) -> memoryview:
    declared = _zip_info(archive, name, path, archive_size).file_size
    if declared < storage.nbytes:
        raise CheckpointFormatError(
            f"{path}: truncated: storage {storage.key} needs {storage.nbytes} bytes, "
            f"record has {declared}"
        )
    raw = _zip_read(archive, name, path, archive_size)
    if len(raw) < storage.nbytes:
        raise CheckpointFormatError(
            f"{path}: truncated: storage {storage.key} needs {storage.nbytes} bytes, "
            f"record has {len(raw)}"
        )
    return memoryview(raw)[: storage.nbytes]


def _zip_byteorder(archive: zipfile.ZipFile, prefix: str, path: str, archive_size: int) -> str:
    # Archives written before torch 1.13 have no byteorder record; they are little-endian.
    if prefix + "byteorder" not in archive.namelist():
        return "little"
    record = _zip_read(archive, prefix + "byteorder", path, archive_size)
    byteorder = record.decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder!r}")
    return byteorder


# ----------------------------------------------------------------------------------------------
# From the unpickled object to the state_dict, and from lazy tensors to numpy.


def _is_tensor_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, TensorRef) for k, v in obj.items())
    )


def _is_state_source(obj) -> bool:
    return isinstance(obj, ModuleStub) or _is_tensor_dict(obj)


def _find_state_dict(obj, path: str) -> dict:
    """The tensor dict in `obj`: itself, a wrapper's `state_dict`/`model`/`net`, or a model."""
    if isinstance(obj, ModuleStub):
        return _module_state_dict(obj, "", collections.OrderedDict())
    if _is_tensor_dict(obj):
        return obj
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: no state_dict in a pickled {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        if _is_state_source(obj.get(key)):
            return _find_state_dict(obj[key], path)
    sources = [value for value in obj.values() if _is_state_source(value)]
    if len(sources) != 1:
        keys = ", ".join(repr(k) for k in list(obj)[:20])
        raise CheckpointFormatError(f"{path}: no unique state_dict among the keys {keys}")
    return _find_state_dict(sources[0], path)


def _module_state_dict(module: ModuleStub, prefix: str, out: dict) -> dict:
    """Mirrors nn.Module.state_dict: own parameters, persistent buffers, then children."""
    state = module.state
    skipped = state.get("_non_persistent_buffers_set") or ()
    for name, value in _slots(state, "_parameters", module):
        if value is not None:
            out[prefix + name] = _expect(value, TensorRef, prefix + name)
    for name, value in _slots(state, "_buffers", module):
        if value is not None and name not in skipped:
            out[prefix + name] = _expect(value, TensorRef, prefix + name)
    for name, child in _slots(state, "_modules", module):
        if child is not None:
            _module_state_dict(_expect(child, ModuleStub, prefix + name), f"{prefix}{name}.", out)
    return out


def _slots(state: dict, field: str, module: ModuleStub):
    entries = state.get(field) or {}
    if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
        raise CheckpointFormatError(f"{module.torch_class}.{field} is not a dict of names")
    return entries.items()


def _expect(value, kind: type, name: str):
    if not isinstance(value, kind):
        raise CheckpointFormatError(f"{name!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _storage_bytes(storage: StorageRef) -> memoryview:
    if storage.root is None:
        if storage.data is None:
            raise CheckpointFormatError(f"storage {storage.key} has no data in the file")
        return storage.data
    root = _storage_bytes(storage.root)
    end = storage.byte_offset + storage.nbytes
    if end > len(root):
        raise CheckpointFormatError(f"storage view {storage.key} ends past its root's bytes")
    return root[storage.byte_offset : end]


def _to_numpy(tensor: TensorRef, little_endian: bool, key: str) -> np.ndarray:
    """Applies dtype, offset, size and stride to the storage bytes; returns a C-ordered copy."""
    dtype = _expect(tensor.dtype, np.dtype, key)
    if 0 in tensor.size:
        return np.zeros(tensor.size, dtype)
    raw = _storage_bytes(tensor.storage)
    flat = np.frombuffer(raw, dtype, count=len(raw) // dtype.itemsize)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True))
    if last >= flat.size:
        raise CheckpointFormatError(
            f"tensor {key!r} (size {tensor.size}, stride {tensor.stride}, offset {tensor.offset}) "
            f"reaches element {last} of a storage of {flat.size}"
        )
    wanted = math.prod(tensor.size) * dtype.itemsize
    if wanted > len(raw) + _MAX_EXPANSION_BYTES:
        raise CheckpointFormatError(
            f"tensor {key!r} (size {tensor.size}, stride {tensor.stride}) would take {wanted} "
            f"bytes from a storage of {len(raw)}; refusing to expand it")
    strides = tuple(s * dtype.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :], tensor.size, strides, writeable=False
    )
    array = np.array(view, order="C", copy=True)
    if not little_endian:
        array = _swap_bytes(array)
    # torch can save lazily negated/conjugated views; materialise what the bits mean.
    if tensor.metadata.get("neg"):
        array = -array
    if tensor.metadata.get("conj"):
        array = np.conj(array)
    return array


def _swap_bytes(array: np.ndarray) -> np.ndarray:
    # Swap per real component (complex numbers are two floats); ml_dtypes types go through uint.
    unit = array.dtype.itemsize // (2 if array.dtype.kind == "c" else 1)
    if unit == 1:
        return array
    flat = array.reshape(-1).view(f"<u{unit}").byteswap()
    return flat.view(array.dtype).reshape(array.shape)


def load_torch_state_dict(
    path: str | os.PathLike, extra_module_classes: Iterable[str] = ()
) -> collections.OrderedDict[str, np.ndarray]:
    """Reads a PyTorch `.pth` checkpoint without torch and without running code from it.

    Args:
      path: a file written by `torch.save`, legacy or zip format. It may hold a state_dict, a
        dict wrapping one (`{'state_dict': ..., 'epoch': 3}`, `'model'`, `'net'`), or a whole
        pickled model (optionally in `nn.DataParallel`) built from allow-listed module classes.
      extra_module_classes: more "module.ClassName" nn.Module classes a pickled model may
        contain, beyond `DEFAULT_MODULE_CLASSES`. They are rebuilt as inert placeholders.

    Returns:
      The parameters and persistent buffers by key, exactly as stored (a `module.` prefix is
      kept), as C-contiguous numpy arrays of the stored dtype (bfloat16 and float8 as the
      `ml_dtypes` types). For a pickled model, the keys and order of `model.state_dict()`.

    Raises:
      FileNotFoundError: there is no file at `path`.
      UnsafePickleError: the pickle names a global outside the allow-list.
      CheckpointFormatError: the file is empty, truncated, corrupt or not a PyTorch checkpoint.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    module_classes = DEFAULT_MODULE_CLASSES | frozenset(extra_module_classes)
    try:
        obj, little_endian = _load_object(data, path, module_classes)
        tensors = _find_state_dict(obj, path)
        return collections.OrderedDict(
            (key, _to_numpy(tensor, little_endian, key)) for key, tensor in tensors.items()
        )
    except CheckpointFormatError as err:
        if str(err).startswith(path):
            raise
        raise type(err)(f"{path}: {err}") from err
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        RecursionError,
        struct.error,
        zipfile.BadZipFile,
    ) as err:
        raise CheckpointFormatError(
            f"{path}: corrupt checkpoint ({type(err).__name__}: {err})"
        ) from err
