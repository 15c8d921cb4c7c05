"""load_torch_state_dict: the released checkpoint and torch-written files against torch.load,
whole pickled models, refused malicious pickles, and clear errors for broken files."""

import collections
import contextlib
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

from addernet_jax.convert import CheckpointFormatError, UnsafePickleError, load_torch_state_dict

FORMATS = ["zip", "legacy"]

RELEASED = "checkpoints/ResNet20-AdderNet.pth"

ADDER_PY = """
import torch
import torch.nn as nn


class adder2d(nn.Module):
    # As huawei-noah/AdderNet adder.py: the kernel is a Parameter called `adder`, (O, I, k, k).
    def __init__(self, input_channel, output_channel, kernel_size, stride=1, padding=0, bias=False):
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.input_channel = input_channel
        self.output_channel = output_channel
        self.kernel_size = kernel_size
        self.adder = nn.Parameter(
            nn.init.normal_(torch.randn(output_channel, input_channel, kernel_size, kernel_size))
        )
        self.bias = bias
        if bias:
            self.b = nn.Parameter(nn.init.uniform_(torch.zeros(output_channel)))
        # Not part of the official layer: checks that non-persistent buffers are left out.
        self.register_buffer("scratch", torch.zeros(3), persistent=False)
"""

RESNET20_PY = """
import torch.nn as nn

import adder


def conv3x3(in_planes, out_planes, stride=1):
    return adder.adder2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=10):
        super().__init__()
        self.inplanes = 4
        self.conv1 = nn.Conv2d(3, 4, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 4, layers[0])
        self.layer2 = self._make_layer(block, 8, layers[1], stride=2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Conv2d(8, num_classes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                adder.adder2d(self.inplanes, planes, kernel_size=1, stride=stride),
                nn.BatchNorm2d(planes),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [block(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def resnet20(**kwargs):
    return ResNet(BasicBlock, [2, 1], **kwargs)
"""

MYNET_PY = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.ModuleList([nn.Linear(3, 4), nn.LayerNorm(4)])
        self.head = nn.ModuleDict({"out": nn.Linear(4, 2)})
"""


def save(obj, path: Path, fmt: str) -> Path:
    """torch.save in the zip or the legacy (pre-1.6) format."""
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def assert_state_equal(ours, reference) -> None:
    """Same keys in the same order; same dtype, shape and values; C-contiguous arrays."""
    assert list(ours) == list(reference)
    for key, tensor in reference.items():
        array, tensor = ours[key], tensor.detach()
        assert array.flags.c_contiguous, key
        if tensor.dtype == torch.bfloat16:
            assert array.dtype == ml_dtypes.bfloat16, key
            array, expected = array.astype(np.float32), tensor.float().numpy()
        else:
            expected = tensor.numpy()
            assert array.dtype == expected.dtype, key
        assert array.shape == expected.shape, key
        np.testing.assert_array_equal(array, expected, err_msg=key)


@contextlib.contextmanager
def temporary_modules(directory: Path, sources: dict):
    """Top-level modules written to `directory` and importable only inside the block."""
    for name, source in sources.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        yield [importlib.import_module(name) for name in sources]
    finally:
        sys.path.remove(str(directory))
        for name in sources:
            sys.modules.pop(name, None)


def randomize_buffers(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that a swapped buffer would show."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)


def legacy_file(path: Path, payload: bytes, storage_keys=()) -> Path:
    """A legacy-format file whose object pickle is `payload`, up to the storages' bytes."""
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    parts = [pickle.dumps(obj, protocol=2) for obj in header]
    path.write_bytes(b"".join(parts) + payload + pickle.dumps(list(storage_keys), protocol=2))
    return path


def test_released_checkpoint_matches_torch_load(shared_dir):
    path = shared_dir / RELEASED
    start = time.perf_counter()
    ours = load_torch_state_dict(path)
    elapsed = time.perf_counter() - start
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert len(ours) == 132
    assert all(key.startswith("module.") for key in ours)
    assert ours["module.layer1.0.conv1.adder"].shape == (16, 16, 3, 3)
    assert_state_equal(ours, reference)
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_reader_never_imports_torch(shared_dir):
    # A fresh interpreter where importing torch fails: the module and a load must still work.
    module_path = Path(__file__).parents[1] / "addernet_jax" / "convert" / "torch_pickle.py"
    script = f"""
        import importlib.abc, importlib.util, sys
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch was imported")
        sys.meta_path.insert(0, NoTorch())
        spec = importlib.util.spec_from_file_location("torch_pickle", {str(module_path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(len(module.load_torch_state_dict({str(shared_dir / RELEASED)!r})))
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "132"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_matches_torch_load(tmp_path, fmt):
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=generator)
    state = {
        str(dtype).removeprefix("torch."): (base * 50).to(dtype)
        for dtype in (
            torch.float32,
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
            torch.bool,
            torch.complex64,
        )
    }
    state["scalar"] = torch.tensor(2.5)
    state["empty"] = torch.zeros(0, 4)
    # Dtypes without a typed storage are pickled as UntypedStorage + dtype; torch itself cannot
    # read them back from the legacy format.
    if fmt == "zip":
        state["uint16"] = torch.arange(12).to(torch.uint16).reshape(3, 4)
    path = save(state, tmp_path / "dtypes.pth", fmt)
    assert_state_equal(load_torch_state_dict(path), torch.load(path, weights_only=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_and_strides_match_torch_load(tmp_path, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "base": base,
        "transposed": base.t(),  # shares base's storage, strides (1, 10)
        "slice": base[2:5, 3:7],  # storage offset 23
        "every_third_column": base[:, ::3],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),  # stride 0
        "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        "tagged_parameter": nn.Parameter(torch.randn(2, 2)),
    }
    state["tagged_parameter"].note = "pickled through _rebuild_parameter_with_state"
    path = save(state, tmp_path / "views.pth", fmt)
    ours = load_torch_state_dict(path)
    assert_state_equal(ours, torch.load(path, weights_only=True))
    ours["slice"][0, 0] = -1.0  # each array owns its memory
    assert ours["base"][2, 3] == 23.0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrapper_key", ["state_dict", "model", "net"])
def test_wrapped_state_dict_is_returned(tmp_path, fmt, wrapper_key):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    checkpoint = {"epoch": 3, "best_acc": 91.5, wrapper_key: model.state_dict(), "lr": [0.1]}
    path = save(checkpoint, tmp_path / "wrapped.pth", fmt)
    ours = load_torch_state_dict(path)
    assert_state_equal(ours, torch.load(path, weights_only=True)[wrapper_key])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("data_parallel", [False, True])
def test_whole_pickled_model_gives_its_state_dict(tmp_path, fmt, data_parallel):
    with temporary_modules(tmp_path, {"adder": ADDER_PY, "resnet20": RESNET20_PY}) as modules:
        net = modules[1].resnet20()
        randomize_buffers(net)
        if data_parallel:
            net = nn.DataParallel(net)
            # As saved from a GPU run by the official main.py (DataParallel on CPU keeps none).
            net.device_ids, net.output_device = [0], 0
            net.src_device_obj = torch.device("cuda", 0)
        expected = net.state_dict()
        path = save(net, tmp_path / "model.pth", fmt)
    assert "resnet20" not in sys.modules and "adder" not in sys.modules
    ours = load_torch_state_dict(path)
    prefix = "module." if data_parallel else ""
    assert f"{prefix}layer2.0.downsample.0.adder" in ours
    assert not any(key.endswith("scratch") for key in ours)
    assert_state_equal(ours, expected)


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_module_classes_allows_a_custom_model(tmp_path, fmt):
    with temporary_modules(tmp_path, {"mynet": MYNET_PY}) as (mynet,):
        net = mynet.Net()
        expected = net.state_dict()
        path = save(net, tmp_path / "mynet.pth", fmt)
    with pytest.raises(UnsafePickleError, match=r"refusing to load mynet\.Net"):
        load_torch_state_dict(path)
    assert_state_equal(load_torch_state_dict(path, extra_module_classes=["mynet.Net"]), expected)


class Exploit:
    """Pickles as a call to `function(argument)`, the classic pickle code-execution gadget."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("gadget", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_without_running(tmp_path, fmt, gadget):
    marker = tmp_path / "MARKER"
    exploit = {
        "os.system": Exploit(os.system, f"touch {marker}"),
        "builtins.eval": Exploit(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": Exploit(subprocess.call, ["touch", str(marker)]),
    }[gadget]
    path = save({"weight": torch.ones(2), "payload": exploit}, tmp_path / "evil.pth", fmt)
    expected_name = {"os.system": r"(os|posix)\.system"}.get(gadget, re.escape(gadget))
    with pytest.raises(UnsafePickleError, match=f"refusing to load {expected_name}") as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_pickle_cannot_modify_the_allow_listed_stand_ins(tmp_path):
    # BUILD on the FloatStorage stand-in would change how later files are read.
    payload = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeK\x01sb."
    with pytest.raises(UnsafePickleError, match="refusing to set the state"):
        load_torch_state_dict(legacy_file(tmp_path / "build.pth", payload))


def test_allowed_function_with_bad_arguments_is_a_format_error(tmp_path):
    # _rebuild_tensor_v2 handed a string instead of a storage.
    payload = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00xK\x00))\x89NtR."
    with pytest.raises(CheckpointFormatError, match="tensor rebuilt from str"):
        load_torch_state_dict(legacy_file(tmp_path / "args.pth", payload))


class StorageView:
    """A pre-1.0 storage view: `numel` elements of the float storage `root` from `offset`."""

    def __init__(self, key, offset, numel):
        self.key, self.offset, self.numel = key, offset, numel


class ViewTensor:
    """Pickles as _rebuild_tensor_v2 over a StorageView, as torch 0.4 could write."""

    def __init__(self, view, size, stride):
        self.view, self.size, self.stride = view, size, stride

    def __reduce__(self):
        args = (self.view, 0, self.size, self.stride, False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class ViewPickler(pickle.Pickler):
    """Writes StorageViews as legacy persistent ids with view_metadata, over storage 'root'."""

    def persistent_id(self, obj):
        if isinstance(obj, StorageView):
            view_metadata = (obj.key, obj.offset, obj.numel)
            return ("storage", torch.FloatStorage, "root", "cpu", 10, view_metadata)
        return None


def test_legacy_storage_views_match_torch_load(tmp_path):
    state = collections.OrderedDict(
        matrix=ViewTensor(StorageView("v1", 2, 6), (2, 3), (3, 1)),
        tail=ViewTensor(StorageView("v2", 5, 5), (5,), (1,)),
    )
    buffer = io.BytesIO()
    ViewPickler(buffer, protocol=2).dump(state)
    path = legacy_file(tmp_path / "views.pth", buffer.getvalue(), ["root"])
    with path.open("ab") as file:
        file.write(np.int64(10).tobytes() + np.arange(10, dtype="<f4").tobytes())
    ours = load_torch_state_dict(path)
    np.testing.assert_array_equal(ours["tail"], [5, 6, 7, 8, 9])
    assert_state_equal(ours, torch.load(path, weights_only=True))


def test_big_endian_zip_is_byteswapped(tmp_path):
    generator = torch.Generator().manual_seed(1)
    state = {
        "float32": torch.randn(3, 4, generator=generator),
        "complex64": torch.randn(2, 3, dtype=torch.complex64, generator=generator),
        "bfloat16": torch.randn(5, generator=generator).bfloat16(),
        "int16": torch.arange(-3, 3, dtype=torch.int16).reshape(2, 3).t(),
        "bool": torch.tensor([True, False]),
    }
    source = zipfile.ZipFile(save(state, tmp_path / "little.pth", "zip"))
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name and not name.endswith("serialization_id"):
                # Storage keys are numbered in pickling order, i.e. the dict's order.
                tensor = list(state.values())[int(name.rpartition("/")[2])]
                unit = tensor.element_size() // (2 if tensor.is_complex() else 1)
                data = np.frombuffer(data, f"u{unit}").byteswap().tobytes()
            target.writestr(name, data)
    path = tmp_path / "big.pth"
    path.write_bytes(buffer.getvalue())
    assert_state_equal(load_torch_state_dict(path), state)


def test_truncated_in_half_names_the_storage(shared_dir, tmp_path):
    data = (shared_dir / RELEASED).read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match=r"half\.pth: truncated: storage \d+ needs"):
        load_torch_state_dict(path)


def test_truncated_by_a_few_bytes_says_how_many_are_left(shared_dir, tmp_path):
    data = (shared_dir / RELEASED).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointFormatError) as info:
        load_torch_state_dict(path)
    found = re.search(
        r"truncated: storage \d+ needs (\d+) bytes, file has (\d+) left", str(info.value)
    )
    assert found, str(info.value)
    assert int(found[1]) - int(found[2]) == 5


def test_truncated_zip_is_reported(tmp_path):
    data = save({"w": torch.ones(100)}, tmp_path / "full.pth", "zip").read_bytes()
    path = tmp_path / "cut_zip.pth"
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(CheckpointFormatError, match="cut_zip.pth: corrupt or truncated zip"):
        load_torch_state_dict(path)


def test_zip_without_a_storage_record_is_reported(tmp_path):
    source = zipfile.ZipFile(save({"w": torch.ones(4)}, tmp_path / "full.pth", "zip"))
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w") as target:
        for name in source.namelist():
            if not name.endswith("/data/0"):
                target.writestr(name, source.read(name))
    path = tmp_path / "no_storage.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointFormatError, match=r"zip record \w+/data/0 is missing"):
        load_torch_state_dict(path)


def test_zip_without_data_pkl_is_reported(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match="other.zip: zip archive has no .*data.pkl"):
        load_torch_state_dict(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointFormatError, match="noise.bin: not a PyTorch checkpoint"):
        load_torch_state_dict(path)


def test_empty_file_is_reported(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="empty.pth: empty file"):
        load_torch_state_dict(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_torch_state_dict(path)


def test_errors_are_value_errors():
    assert issubclass(UnsafePickleError, CheckpointFormatError)
    assert issubclass(CheckpointFormatError, ValueError)
