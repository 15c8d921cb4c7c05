"""The restricted unpickler behind `load_torch_state_dict`: allow-list, inert stand-ins, errors.

No code from a checkpoint runs: `SafeUnpickler.find_class` resolves only an explicit allow-list
of globals, each to an inert stand-in defined here (never the real torch object), and everything
else raises `UnsafePickleError`. Tensors come out as lazy `TensorRef`s over `StorageRef`s whose
bytes the format readers (`torch_pickle`) attach afterwards. Allow-listed nn.Module classes of a
whole pickled model become `ModuleStub` placeholders that only record the pickled `__dict__`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle

import ml_dtypes
import numpy as np

__all__ = [
    "DEFAULT_MODULE_CLASSES",
    "CheckpointFormatError",
    "ModuleStub",
    "SafeUnpickler",
    "StorageRef",
    "TensorRef",
    "UnsafePickleError",
    "as_text",
    "is_module_stub_class",
]


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint: corrupt, truncated, empty or foreign."""


class UnsafePickleError(CheckpointFormatError):
    """The checkpoint's pickle names a global that is not on the allow-list."""


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


class StorageRef(_Inert):
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


class TensorRef(_Inert):
    """A lazy tensor: storage, element offset, size, stride (in elements) and dtype."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "metadata")

    def __init__(self, storage, offset, size, stride, dtype, metadata=None):
        if not isinstance(storage, StorageRef):
            raise CheckpointFormatError(f"tensor rebuilt from {type(storage).__name__}")
        self.storage, self.dtype, self.metadata = storage, dtype, metadata or {}
        self.offset, self.size = check_index(offset), check_dims(size)
        self.stride = check_dims(stride)
        if len(self.size) != len(self.stride):
            raise CheckpointFormatError(f"tensor size {self.size} and stride {self.stride}")


class ModuleStub:
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


def check_index(value) -> int:
    if type(value) is not int or value < 0:
        raise CheckpointFormatError(f"expected a non-negative int, got {value!r}")
    return value


def check_dims(values) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)):
        raise CheckpointFormatError(f"expected a tuple of ints, got {type(values).__name__}")
    return tuple(check_index(v) for v in values)


def _rebuild_tensor(storage, offset, size, stride):
    return TensorRef(storage, offset, size, stride, getattr(storage, "dtype", None))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    return TensorRef(storage, offset, size, stride, getattr(storage, "dtype", None), meta)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, meta=None):
    if not isinstance(dtype, _TorchDtype):
        raise CheckpointFormatError(f"_rebuild_tensor_v3 dtype is {type(dtype).__name__}")
    return TensorRef(storage, offset, size, stride, dtype.dtype, meta)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    # A Parameter is its data for a state_dict; hooks and Python attributes are dropped.
    if not isinstance(data, TensorRef):
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
    "torch.Size": lambda dims=(): check_dims(dims),
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


class SafeUnpickler(pickle._Unpickler):
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
        self.storages: dict[str, StorageRef] = {}
        self.views: dict[str, StorageRef] = {}
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
            self.stubs[qualified] = type(name, (ModuleStub,), {"torch_class": qualified})
        return self.stubs[qualified]

    def persistent_load(self, pid):
        kind = as_text(pid[0]) if isinstance(pid, tuple) and pid else None
        if kind == "module" and len(pid) == 4 and is_module_stub_class(pid[1]):
            return pid[1]  # legacy format: ('module', class, source_file, source)
        if kind == "storage" and len(pid) in (5, 6):
            return self._storage(*pid[1:])
        raise CheckpointFormatError(f"{self.path}: unsupported persistent id {pid!r:.80}")

    def _storage(self, storage_type, key, location, numel, view_metadata=None):
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self.path}: storage type {storage_type!r:.60}")
        key = as_text(key)
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = StorageRef(key, storage_type.dtype, check_index(numel))
        if view_metadata is None:
            return root
        view_key, offset, view_numel = view_metadata
        view_key = as_text(view_key)
        if view_key not in self.views:
            byte_offset = check_index(offset) * root.dtype.itemsize
            self.views[view_key] = StorageRef(
                view_key, root.dtype, check_index(view_numel), root, byte_offset
            )
        return self.views[view_key]


def as_text(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def is_module_stub_class(value) -> bool:
    return isinstance(value, type) and issubclass(value, ModuleStub)
