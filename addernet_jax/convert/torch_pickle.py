"""A safe, torch-free reader of PyTorch `.pth` checkpoints.

`load_torch_state_dict` reads the two formats `torch.save` has written, without importing torch:

- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickles of the magic number,
  the protocol version and sys_info, then the object pickle, then the pickled list of storage
  keys, then each storage as an int64 element count followed by its raw little-endian bytes;
- zip (torch >= 1.6): `<folder>/data.pkl`, `<folder>/data/<key>` raw storages and an optional
  `<folder>/byteorder` record.

No code from the file runs: `find_class` resolves only an explicit allow-list of globals, each to
an inert stand-in defined here (never the real torch object), and everything else raises
`UnsafePickleError`. Tensors stay lazy references until the storages are read, then become numpy
arrays through `np.frombuffer` + strides, copied to C order. A whole pickled model
(`torch.save(net)`, as the official AdderNet `main.py` does) is turned back into the state_dict
that `net.state_dict()` would give, by walking the recorded `_parameters`, `_buffers` and
`_modules` of placeholder module objects.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Iterable

import ml_dtypes
import numpy as np

__all__ = [
    "DEFAULT_MODULE_CLASSES",
    "CheckpointFormatError",
    "UnsafePickleError",
    "load_torch_state_dict",
]


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint: corrupt, truncated, empty or foreign."""


class UnsafePickleError(CheckpointFormatError):
    """The checkpoint's pickle names a global that is not on the allow-list."""


# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION, the first two pickles of a legacy file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    # torch 2.x pickles the dtypes without a typed storage (uint16, float8, ...) as bytes plus a
    # dtype argument to _rebuild_tensor_v3.
    "UntypedStorage": np.dtype(np.uint8),
}

# `torch.<name>` dtype globals, aliases included (torch.float is torch.float32).
_TORCH_DTYPES = {
    **dict.fromkeys(("float32", "float"), np.dtype(np.float32)),
    **dict.fromkeys(("float64", "double"), np.dtype(np.float64)),
    **dict.fromkeys(("float16", "half"), np.dtype(np.float16)),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    **dict.fromkeys(("int64", "long"), np.dtype(np.int64)),
    **dict.fromkeys(("int32", "int"), np.dtype(np.int32)),
    **dict.fromkeys(("int16", "short"), np.dtype(np.int16)),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    **dict.fromkeys(("complex64", "cfloat"), np.dtype(np.complex64)),
    **dict.fromkeys(("complex128", "cdouble"), np.dtype(np.complex128)),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}

_TORCH_NN_CLASSES = {
    "module": "Module",
    "conv": "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d",
    "batchnorm": "BatchNorm1d BatchNorm2d BatchNorm3d SyncBatchNorm",
    "instancenorm": "InstanceNorm1d InstanceNorm2d InstanceNorm3d",
    "normalization": "GroupNorm LayerNorm LocalResponseNorm",
    "linear": "Linear Identity Bilinear",
    "activation": "ReLU ReLU6 LeakyReLU PReLU ELU GELU SiLU Sigmoid Tanh Hardtanh Hardswish "
    "Hardsigmoid Softmax LogSoftmax",
    "container": "Sequential ModuleList ModuleDict ParameterList ParameterDict",
    "pooling": "AvgPool1d AvgPool2d AvgPool3d MaxPool1d MaxPool2d MaxPool3d AdaptiveAvgPool1d "
    "AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d",
    "dropout": "Dropout Dropout1d Dropout2d Dropout3d",
    "flatten": "Flatten Unflatten",
    "pixelshuffle": "PixelShuffle PixelUnshuffle",
    "upsampling": "Upsample UpsamplingNearest2d UpsamplingBilinear2d",
    "padding": "ZeroPad2d ConstantPad2d ReflectionPad2d ReplicationPad2d",
}

# Module classes a pickled model may contain: torch.nn's own, DataParallel, and the classes of
# the official AdderNet repository (huawei-noah/AdderNet resnet20.py, resnet50.py, adder.py).
DEFAULT_MODULE_CLASSES = frozenset(
    [f"torch.nn.modules.{m}.{c}" for m, names in _TORCH_NN_CLASSES.items() for c in names.split()]
    + [
        "torch.nn.parallel.data_parallel.DataParallel",
        "resnet20.ResNet",
        "resnet20.BasicBlock",
        "resnet50.ResNet",
        "resnet50.Bottleneck",
        "adder.adder2d",
    ]
)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


# ----------------------------------------------------------------------------------------------
# Inert stand-ins handed out by find_class and persistent_load.


class _Inert:
    """Base of shared stand-ins: a pickle BUILD must not be able to modify them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set the state of {type(self).__name__}")


class _StorageType(_Inert):
    """Stand-in for `torch.FloatStorage` etc.: only its element dtype matters."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class _TorchDtype(_Inert):
    """Stand-in for a `torch.float32`-like dtype global."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, dtype


class _SafeFunction(_Inert):
    """A callable allow-listed global, mapped to one of this module's own functions."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)


class _Storage(_Inert):
    """A storage named by a persistent id; its bytes are attached once the file is read."""

    __slots__ = ("key", "dtype", "numel", "data", "root", "byte_offset")

    def __init__(self, key: str, dtype: np.dtype, numel: int, root=None, byte_offset: int = 0):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: memoryview | None = None
        # Pre-1.0 legacy files could describe a storage as a view into another (view_metadata).
        self.root, self.byte_offset = root, byte_offset

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class _Tensor(_Inert):
    """A lazy tensor: storage, element offset, size, stride (in elements) and dtype."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "metadata")

    def __init__(self, storage, offset, size, stride, dtype, metadata=None):
        if not isinstance(storage, _Storage):
            raise CheckpointFormatError(f"tensor rebuilt from {type(storage).__name__}")
        self.storage, self.dtype, self.metadata = storage, dtype, metadata or {}
        self.offset, self.size, self.stride = _index(offset), _dims(size), _dims(stride)
        if len(self.size) != len(self.stride):
            raise CheckpointFormatError(f"tensor size {self.size} and stride {self.stride}")


class _ModuleStub:
    """Inert placeholder for an allow-listed nn.Module class: records the pickled `__dict__`."""

    torch_class = "torch.nn.modules.module.Module"

    def __new__(cls, *args, **kwargs):
        # NEWOBJ passes the class's __new__ arguments; a module needs none and we run no __init__.
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise CheckpointFormatError(f"{self.torch_class} state is a {type(state).__name__}")
        self.state = state


def _index(value) -> int:
    if type(value) is not int or value < 0:
        raise CheckpointFormatError(f"expected a non-negative int, got {value!r}")
    return value


def _dims(values) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)):
        raise CheckpointFormatError(f"expected a tuple of ints, got {type(values).__name__}")
    return tuple(_index(v) for v in values)


def _rebuild_tensor(storage, offset, size, stride):
    return _Tensor(storage, offset, size, stride, getattr(storage, "dtype", None))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    return _Tensor(storage, offset, size, stride, getattr(storage, "dtype", None), meta)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, meta=None):
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointFormatError(f"_rebuild_tensor_v3 dtype is {type(dtype).__name__}")
    return _Tensor(storage, offset, size, stride, dtype.dtype, meta)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    # A Parameter is its data for a state_dict; hooks and Python attributes are dropped.
    if not isinstance(data, _Tensor):
        raise CheckpointFormatError(f"parameter rebuilt from {type(data).__name__}")
    return data


def _latin1_bytes(text, encoding):
    # Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointFormatError(f"_codecs.encode({text!r:.40}, {encoding!r})")
    return text.encode("latin1")


_SAFE_CALLABLES = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": lambda dims=(): _dims(dims),
    # DataParallel records its source device; keep it as a string.
    "torch.device": lambda *args: ":".join(str(a) for a in args),
    # Module.__init__ of torch <= 1.5 stored the THNN backend object in `_backend`.
    "torch.nn.backends.thnn._get_thnn_function_backend": lambda: None,
    "_codecs.encode": _latin1_bytes,
}

_SAFE_GLOBALS = {
    **{name: _SafeFunction(name, fn) for name, fn in _SAFE_CALLABLES.items()},
    # Builtin types are immutable and only build plain data.
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    **{
        f"{module}.{name}": _StorageType(name, dtype)
        for module in ("torch", "torch.cuda", "torch.storage")
        for name, dtype in _STORAGE_DTYPES.items()
    },
    **{f"torch.{name}": _TorchDtype(name, dtype) for name, dtype in _TORCH_DTYPES.items()},
}


# ----------------------------------------------------------------------------------------------
# The unpickler.


class _SafeUnpickler(pickle._Unpickler):
    """An Unpickler that resolves only allow-listed globals and records storage references.

    Built on pickle's pure-Python unpickler: the C one sizes its memo array by the largest
    LONG_BINPUT index, so four corrupted bytes can make it allocate tens of GB. Checkpoint
    pickles are small (tensor data lives outside them), so the speed difference is invisible.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def _refuse_bytearray8(self):
        # Protocol 5 only, never written by torch.save; the pure-Python reader would allocate
        # the 8-byte length it announces before finding out that the data is not there.
        raise CheckpointFormatError(f"{self.path}: BYTEARRAY8 opcode, not written by torch.save")

    dispatch[pickle.BYTEARRAY8[0]] = _refuse_bytearray8

    def __init__(self, file, path: str, module_classes: frozenset[str] = frozenset()):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.module_classes = module_classes
        self.storages: dict[str, _Storage] = {}
        self.views: dict[str, _Storage] = {}
        self.stubs: dict[str, type] = {}

    def find_class(self, module, name):
        # Protocol-2 pickles (torch's default) use Python 2 names (`__builtin__.set`); map them
        # back as pickle's own find_class does, so that the allow-list and messages see Python 3.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[qualified]
        if qualified in self.module_classes:
            return self._stub_class(qualified)
        raise UnsafePickleError(
            f"{self.path}: refusing to load {qualified}: not on the allow-list of pickle globals "
            "(a torch.nn.Module subclass you trust can be allowed with extra_module_classes)"
        )

    def _stub_class(self, qualified: str) -> type:
        # One fresh class per name and per load, so nothing a file does outlives its load.
        if qualified not in self.stubs:
            name = qualified.rpartition(".")[2]
            self.stubs[qualified] = type(name, (_ModuleStub,), {"torch_class": qualified})
        return self.stubs[qualified]

    def persistent_load(self, pid):
        kind = _ascii(pid[0]) if isinstance(pid, tuple) and pid else None
        if kind == "module" and len(pid) == 4 and _is_stub_class(pid[1]):
            return pid[1]  # legacy format: ('module', class, source_file, source)
        if kind == "storage" and len(pid) in (5, 6):
            return self._storage(*pid[1:])
        raise CheckpointFormatError(f"{self.path}: unsupported persistent id {pid!r:.80}")

    def _storage(self, storage_type, key, location, numel, view_metadata=None):
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self.path}: storage type {storage_type!r:.60}")
        key = _ascii(key)
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(key, storage_type.dtype, _index(numel))
        if view_metadata is None:
            return root
        view_key, offset, view_numel = view_metadata
        view_key = _ascii(view_key)
        if view_key not in self.views:
            byte_offset = _index(offset) * root.dtype.itemsize
            self.views[view_key] = _Storage(
                view_key, root.dtype, _index(view_numel), root, byte_offset
            )
        return self.views[view_key]


def _ascii(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _is_stub_class(value) -> bool:
    return isinstance(value, type) and issubclass(value, _ModuleStub)


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
    unpickler = _SafeUnpickler(file, path, module_classes)
    obj = unpickler.load()
    keys = _SafeUnpickler(file, path).load()
    if not isinstance(keys, list):
        raise CheckpointFormatError(f"{path}: storage key list is a {type(keys).__name__}")
    _attach_legacy_storages(memoryview(data), file.tell(), keys, unpickler.storages, path)
    return obj


def _check_legacy_header(file: io.BytesIO, path: str, data: bytes) -> None:
    try:
        magic = _SafeUnpickler(file, path).load()
    except Exception:  # any failure here means the header is not torch's magic number
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointFormatError(
            f"{path}: not a PyTorch checkpoint: starts with {data[:8]!r}, neither a zip archive "
            "nor the legacy magic number"
        )
    version = _SafeUnpickler(file, path).load()
    if version != _LEGACY_PROTOCOL:
        raise CheckpointFormatError(f"{path}: unknown legacy protocol version {version!r}")
    _SafeUnpickler(file, path).load()  # sys_info: byte order and C type sizes, unused by torch


def _attach_legacy_storages(view: memoryview, pos: int, keys, storages, path: str) -> None:
    for key in map(_ascii, keys):
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
        pickled = _zip_read(archive, prefix + "data.pkl", path)
        unpickler = _SafeUnpickler(io.BytesIO(pickled), path, module_classes)
        obj = unpickler.load()
        for key, storage in unpickler.storages.items():
            storage.data = _zip_storage(archive, f"{prefix}data/{key}", storage, path)
        byteorder = _zip_byteorder(archive, prefix, path)
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


def _zip_read(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise CheckpointFormatError(f"{path}: zip record {name} is missing") from None
    except _ZIP_ERRORS as err:
        raise CheckpointFormatError(f"{path}: corrupt zip record {name} ({err})") from err


def _zip_storage(archive: zipfile.ZipFile, name: str, storage: _Storage, path: str) -> memoryview:
    raw = _zip_read(archive, name, path)
    if len(raw) < storage.nbytes:
        raise CheckpointFormatError(
            f"{path}: truncated: storage {storage.key} needs {storage.nbytes} bytes, "
            f"record has {len(raw)}"
        )
    return memoryview(raw)[: storage.nbytes]


def _zip_byteorder(archive: zipfile.ZipFile, prefix: str, path: str) -> str:
    # Archives written before torch 1.13 have no byteorder record; they are little-endian.
    if prefix + "byteorder" not in archive.namelist():
        return "little"
    byteorder = _zip_read(archive, prefix + "byteorder", path).decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{path}: unknown byteorder record {byteorder!r}")
    return byteorder


# ----------------------------------------------------------------------------------------------
# From the unpickled object to the state_dict, and from lazy tensors to numpy.


def _is_tensor_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in obj.items())
    )


def _is_state_source(obj) -> bool:
    return isinstance(obj, _ModuleStub) or _is_tensor_dict(obj)


def _find_state_dict(obj, path: str) -> dict:
    """The tensor dict in `obj`: itself, a wrapper's `state_dict`/`model`/`net`, or a model."""
    if isinstance(obj, _ModuleStub):
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


def _module_state_dict(module: _ModuleStub, prefix: str, out: dict) -> dict:
    """Mirrors nn.Module.state_dict: own parameters, persistent buffers, then children."""
    state = module.state
    skipped = state.get("_non_persistent_buffers_set") or ()
    for name, value in _slots(state, "_parameters", module):
        if value is not None:
            out[prefix + name] = _expect(value, _Tensor, prefix + name)
    for name, value in _slots(state, "_buffers", module):
        if value is not None and name not in skipped:
            out[prefix + name] = _expect(value, _Tensor, prefix + name)
    for name, child in _slots(state, "_modules", module):
        if child is not None:
            _module_state_dict(_expect(child, _ModuleStub, prefix + name), f"{prefix}{name}.", out)
    return out


def _slots(state: dict, field: str, module: _ModuleStub):
    entries = state.get(field) or {}
    if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
        raise CheckpointFormatError(f"{module.torch_class}.{field} is not a dict of names")
    return entries.items()


def _expect(value, kind: type, name: str):
    if not isinstance(value, kind):
        raise CheckpointFormatError(f"{name!r} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _storage_bytes(storage: _Storage) -> memoryview:
    if storage.root is None:
        if storage.data is None:
            raise CheckpointFormatError(f"storage {storage.key} has no data in the file")
        return storage.data
    root = _storage_bytes(storage.root)
    end = storage.byte_offset + storage.nbytes
    if end > len(root):
        raise CheckpointFormatError(f"storage view {storage.key} ends past its root's bytes")
    return root[storage.byte_offset : end]


def _to_numpy(tensor: _Tensor, little_endian: bool, key: str) -> np.ndarray:
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
