"""PyTorch checkpoints -> our models: the released ResNet-20 (with and without torch, against
torch.load and against a PyTorch re-implementation of the official model on real CIFAR-10
images), a torch-saved ResNet-50, the name table for every model, and every kind of bad input."""

import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torch_official_models as official
from flax import nnx
from PIL import Image
from torch import nn

from addernet_jax.convert import torch_entries, torch_state_dict_to_nnx
from addernet_jax.convert.converter import convert_torch_checkpoint
from addernet_jax.loading import describe_checkpoint, load_checkpoint
from addernet_jax.models import create_model, get_model_info, list_models

REPO = Path(__file__).resolve().parents[1]
RELEASED = "checkpoints/ResNet20-AdderNet.pth"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # official main.py


def load_script(name: str):
    """An entry point at the repository root (e.g. convert_torch_weights.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_cli = load_script("convert_torch_weights")

# A fresh interpreter in which `import torch` (and any torch submodule) fails.
NO_TORCH = """
import importlib.abc, runpy, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    script = [sys.executable, "-c", NO_TORCH, str(REPO / "convert_torch_weights.py"), *args]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(script, capture_output=True, text=True, cwd=REPO, env=env)


def stored_arrays(directory: Path) -> dict[str, np.ndarray]:
    """The arrays of a model checkpoint as written, by dotted path (read with orbax alone)."""
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.restore(Path(directory).absolute() / "model")
    return {
        ".".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def torch_layout_to_ours(key: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """The documented table, restated: names and transposes from a PyTorch key to ours."""
    owner, _, leaf = key.removeprefix("module.").rpartition(".")
    if leaf in ("adder", "weight") and array.ndim == 4:
        return f"{owner}.kernel", array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf == "weight" and array.ndim == 2:
        return f"{owner}.kernel", array.T  # Linear (out, in) -> (in, out)
    renamed = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    return f"{owner}.{renamed[leaf]}", array


@pytest.fixture(scope="module")
def released(shared_dir) -> Path:
    return shared_dir / RELEASED


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory) -> Path:
    """The released checkpoint converted in this process (torch importable)."""
    output = tmp_path_factory.mktemp("converted") / "resnet20"
    assert (
        convert_cli.main(["--input", str(released), "--output", str(output), "--model", "resnet20"])
        == 0
    )
    return output


# ---------------------------------------------------------------------------------------------
# The released ResNet-20.


def test_released_checkpoint_converts_without_torch_to_the_same_arrays(
    released, converted, tmp_path
):
    output = tmp_path / "new_folder" / "no_torch"  # missing parents are created
    result = run_without_torch(
        "--input", str(released), "--output", str(output), "--model", "resnet20"
    )
    assert result.returncode == 0, result.stderr
    with_torch, without = stored_arrays(converted), stored_arrays(output)
    assert len(with_torch) == 110  # 132 tensors less 22 num_batches_tracked
    assert with_torch.keys() == without.keys()
    for key in with_torch:
        np.testing.assert_array_equal(with_torch[key], without[key], err_msg=key)
    info = json.loads((output / "model_info.json").read_text())
    assert info["model"] == "resnet20" and info["variant"] == "adder"
    assert info["num_classes"] == 10
    assert info["source"] == {
        "file": "ResNet20-AdderNet.pth",
        "sha256": "fe3ad7c15573d34cddd9b3ec2eed12d9c2c818e59cd7d0797a954d6f76ea375b",
    }


def test_converted_arrays_equal_torch_load_after_the_documented_transposes(released, converted):
    reference = torch.load(released, map_location="cpu", weights_only=True)
    ours = stored_arrays(converted)
    expected = dict(
        torch_layout_to_ours(key, tensor.numpy())
        for key, tensor in reference.items()
        if not key.endswith("num_batches_tracked")
    )
    assert ours.keys() == expected.keys()
    for key, array in expected.items():
        assert ours[key].dtype == np.float32, key
        np.testing.assert_array_equal(ours[key], array, err_msg=key)
    assert ours["layer1.0.conv1.kernel"].shape == (3, 3, 16, 16)
    assert ours["fc.kernel"].shape == (1, 1, 64, 10)


def cifar_test_images(shared_dir: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` test JPEGs of every class, decoded with PIL: uint8 NHWC, labels."""
    root = shared_dir / "data" / "cifar10-jpeg" / "test"
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.iterdir())[:per_class]:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def normalise(images: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize of the official main.py, NHWC float32."""
    x = images.astype(np.float32) / np.float32(255)
    return (x - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)


def nchw(images: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> contiguous NCHW torch (the official adder code views its input)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def official_resnet20(released: Path) -> nn.Module:
    model = official.resnet20()
    state = torch.load(released, map_location="cpu", weights_only=True)
    model.load_state_dict(OrderedDict((k.removeprefix("module."), v) for k, v in state.items()))
    return model.eval()


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def real_batch(shared_dir, released):
    """40 real CIFAR-10 test images (4 per class), normalised NHWC, their labels, and the
    official PyTorch model's logits on them (the official formulation: ~10 s on 2 cores)."""
    images, labels = cifar_test_images(shared_dir, per_class=4)
    x = normalise(images)
    with torch.no_grad():
        logits = official_resnet20(released)(nchw(x)).numpy()
    return x, labels, logits


def test_resnet20_logits_match_the_official_pytorch_model_on_real_images(converted, real_batch):
    x, labels, reference = real_batch
    loaded = load_checkpoint(describe_checkpoint(converted))
    assert loaded.name == "resnet20" and loaded.model.bn2.use_running_average  # eval mode
    ours = np.asarray(nnx.jit(lambda m, x: m(x))(loaded.model, x))
    print(
        f"\nResNet-20 logits, max relative difference: {relative_difference(ours, reference):.2e}"
    )
    assert relative_difference(ours, reference) < 1e-4
    np.testing.assert_array_equal(ours.argmax(1), reference.argmax(1))
    assert (reference.argmax(1) == labels).mean() > 0.8  # a trained network, not noise


def test_fast_torch_adder_equals_the_official_formulation():
    torch.manual_seed(0)
    geometries = [(16, 32, 3, 2, 1, 32), (16, 32, 1, 2, 0, 32), (6, 16, 5, 1, 0, 14)]
    for cin, cout, k, stride, padding, size in geometries:
        x = torch.relu(torch.randn(3, cin, size, size))
        w = torch.randn(cout, cin, k, k)
        fast = official.adder2d_fast(x, w, stride, padding)
        exact = official.adder2d_official(x, w, stride, padding)
        torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())


def test_fast_torch_resnet20_equals_the_official_formulation(released, real_batch):
    x, _, exact = real_batch
    model = official.set_formulation(official_resnet20(released), "fast")
    with torch.no_grad():
        fast = model(nchw(x)).numpy()
    # Both float32, summed in different orders; BN after every adder then subtracts means of
    # large negative sums, so the logits agree to ~1e-4 of their range, not to 1e-7.
    assert relative_difference(fast, exact) < 1e-4
    np.testing.assert_array_equal(fast.argmax(1), exact.argmax(1))


# ---------------------------------------------------------------------------------------------
# A torch-saved ResNet-50 (zip format, DataParallel names) and LeNet-5.


def randomise_batch_norms(model: nn.Module, x: torch.Tensor) -> None:
    """Running statistics of the right scale (from a training-mode pass), then perturbed, and
    random affine parameters, so that a swapped or untransposed array would show."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative: running stats = this batch's statistics
    with torch.no_grad():
        model.train()(x)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                std = module.running_var.sqrt()
                module.running_mean.add_(0.3 * std * torch.randn_like(std))
                module.running_var.mul_(torch.empty_like(std).uniform_(0.5, 2.0))
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.3)
    model.eval()


def test_torch_saved_resnet50_converts_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = official.resnet50(num_classes=1000)
    randomise_batch_norms(model, torch.randn(2, 3, 32, 32))  # statistics' scale: any size
    x = torch.randn(1, 3, 64, 64)
    state = OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items())
    torch.save(state, tmp_path / "resnet50.pth")  # zip format, as torch >= 1.6 writes
    assert (tmp_path / "resnet50.pth").read_bytes()[:2] == b"PK"
    output = tmp_path / "resnet50"
    assert (
        convert_cli.main(
            [
                "--input",
                str(tmp_path / "resnet50.pth"),
                "--output",
                str(output),
                "--model",
                "resnet50",
            ]
        )
        == 0
    )
    with torch.no_grad():
        reference = model(x).numpy()
    # The 'reference' adder op compiles fastest; the ops' own tests compare implementations.
    loaded = load_checkpoint(describe_checkpoint(output), impl="reference")
    ours = np.asarray(nnx.jit(lambda m, x: m(x))(loaded.model, x.permute(0, 2, 3, 1).numpy()))
    assert relative_difference(ours, reference) < 1e-4


@pytest.mark.parametrize("variant", ["adder", "cnn"])
def test_lenet5_state_dict_gives_the_same_logits(variant):
    torch.manual_seed(1)
    model = official.lenet5(num_classes=10, variant=variant)
    x = torch.randn(16, 1, 28, 28)
    randomise_batch_norms(model, x)
    with torch.no_grad():
        reference = model(x[:4]).numpy()
    ours = create_model("lenet5", num_classes=10, variant=variant, rngs=nnx.Rngs(0))
    nnx.update(ours, torch_state_dict_to_nnx({k: v.numpy() for k, v in model.state_dict().items()},
                                             ours))
    ours.eval()
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(ours, x[:4].permute(0, 2, 3, 1).numpy()))
    assert relative_difference(logits, reference) < 1e-4


# ---------------------------------------------------------------------------------------------
# The name table, for every model of the registry that has a PyTorch definition (the official
# AdderNet models, tests/torch_official_models.py), in both variants.


@pytest.mark.parametrize("variant", ["adder", "cnn"])
@pytest.mark.parametrize("name", [n for n in list_models() if n in official.BUILDERS])
def test_every_model_maps_from_its_pytorch_state_dict(name, variant):
    num_classes = get_model_info(name).num_classes
    with torch.device("meta"):  # names and shapes only
        reference = official.build(name, num_classes, variant)
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    rng = np.random.default_rng(0)
    state_dict = {
        f"module.{k}": rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()
    }
    model = nnx.eval_shape(
        lambda: create_model(
            name, num_classes=num_classes, variant=variant, impl="reference", rngs=nnx.Rngs(0)
        )
    )
    assert set(torch_entries(model)) == {k for k in shapes if "num_batches" not in k}
    state = torch_state_dict_to_nnx(state_dict, model)
    ours = {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}
    for key, array in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            path, expected = torch_layout_to_ours(key, array)
            np.testing.assert_array_equal(ours[path], expected, err_msg=key)


def test_a_variant_mismatch_is_named():
    model = nnx.eval_shape(
        lambda: create_model(
            "resnet20", num_classes=10, variant="cnn", impl="reference", rngs=nnx.Rngs(0)
        )
    )
    with torch.device("meta"):
        reference = official.build("resnet20", 10, "adder")
    state_dict = {k: np.zeros(v.shape, np.float32) for k, v in reference.state_dict().items()}
    with pytest.raises(ValueError, match="20 missing.*20 unexpected.*variant='adder' checkpoint"):
        torch_state_dict_to_nnx(state_dict, model)


# ---------------------------------------------------------------------------------------------
# Bad inputs: one clear message, a non-zero exit, no output left behind.


class Exploit:
    """Pickles as a call of `function(argument)`: what a malicious checkpoint contains."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def misshaped_state_dict(released: Path, path: Path) -> Path:
    state = torch.load(released, map_location="cpu", weights_only=True)
    state["module.layer2.1.conv2.adder"] = torch.zeros(32, 32, 3, 5)
    torch.save(state, path)
    return path


RANDOM_BYTES = np.random.default_rng(0).bytes(4096)
BAD_INPUTS = {
    # case: (how to make the input, extra flags, what the message must say); the exit status is
    # 2 (usage) for a missing input and 3 (failed run) for a file that cannot be used.
    "missing": (lambda released, tmp: tmp / "nowhere.pth", [], r"No such file.*nowhere\.pth"),
    "corrupt": (
        lambda released, tmp: _write(tmp / "corrupt.pth", RANDOM_BYTES),
        [],
        r"corrupt\.pth: not a PyTorch checkpoint",
    ),
    "empty": (lambda released, tmp: _write(tmp / "empty.pth", b""), [], r"empty\.pth: empty file"),
    "truncated": (
        lambda released, tmp: _write(tmp / "cut.pth", released.read_bytes()[:-100]),
        [],
        r"cut\.pth: truncated: storage \d+ needs",
    ),
    "wrong architecture": (
        lambda released, tmp: released,
        ["--model", "resnet32"],
        r"does not fit resnet32 .*60 missing: layer1\.3\.bn1\.bias.*"
        r"0 unexpected; 0 mis-shaped",
    ),
    "wrong classes": (
        lambda released, tmp: released,
        ["--num-classes", "100"],
        r"mis-shaped: fc\.weight \(10, 64, 1, 1\) \(model: \(100, 64, 1, 1\)\), "
        r"bn2\.weight \(10,\) \(model: \(100,\)\)",
    ),
    "mis-shaped tensor": (
        lambda released, tmp: misshaped_state_dict(released, tmp / "bad.pth"),
        [],
        r"0 missing; 0 unexpected; 1 mis-shaped: layer2\.1\.conv2\.adder "
        r"\(32, 32, 3, 5\) \(model: \(32, 32, 3, 3\)\)",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_nothing_written(directory: Path, before: set) -> None:
    assert set(directory.iterdir()) == before, "the conversion left files behind"


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_error_and_writes_nothing(case, released, tmp_path, capsys):
    make, flags, message = BAD_INPUTS[case]
    path = make(released, tmp_path)
    before = set(tmp_path.iterdir())
    output = tmp_path / "out"
    rc = convert_cli.main(
        ["--input", str(path), "--output", str(output), "--model", "resnet20", *flags]
    )
    err = capsys.readouterr().err
    assert rc == (2 if case == "missing" else 3)
    assert err.startswith("convert_torch_weights.py: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not output.exists()
    assert_nothing_written(tmp_path, before)


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "MARKER"
    payload = Exploit(os.system, f"touch {marker}")
    torch.save({"conv1.weight": torch.ones(16, 3, 3, 3), "payload": payload}, tmp_path / "x.pth")
    result = run_without_torch(
        "--input", str(tmp_path / "x.pth"), "--output", str(tmp_path / "out"), "--model", "resnet20"
    )
    assert result.returncode == 3
    assert "refusing to load posix.system" in result.stderr or "os.system" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
    # And the file really is an exploit: plain pickle would have run it.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "x.pth", weights_only=True)


def test_existing_output_is_never_overwritten(released, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    rc = convert_cli.main(
        ["--input", str(released), "--output", str(output), "--model", "resnet20"]
    )
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_unknown_model_is_a_usage_error(released, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        convert_cli.main(
            ["--input", str(released), "--output", str(tmp_path / "o"), "--model", "resnet21"]
        )
    assert info.value.code == 2
    assert "invalid choice: 'resnet21'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_failure_while_writing_leaves_no_partial_output(released, tmp_path, monkeypatch):
    from addernet_jax.convert import converter

    def fail_midway(directory, state, info):
        (Path(directory) / "model").mkdir(parents=True)
        raise OSError("disk full")

    monkeypatch.setattr(converter, "save_model_checkpoint", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        convert_torch_checkpoint(released, tmp_path / "out", model="resnet20")
    assert list(tmp_path.iterdir()) == []


def test_whole_pickled_official_model_converts_with_an_allowed_class(tmp_path):
    # torch.save(model) pickles the classes by name: torch_official_models.LeNet5 and .Adder2d.
    torch.manual_seed(2)
    model = official.lenet5(num_classes=10, variant="adder")
    torch.save(model, tmp_path / "whole.pth")
    output = tmp_path / "whole"
    rc = convert_cli.main(
        [
            "--input",
            str(tmp_path / "whole.pth"),
            "--output",
            str(output),
            "--model",
            "lenet5",
            "--allow-module-class",
            "torch_official_models.LeNet5",
            "--allow-module-class",
            "torch_official_models.Adder2d",
        ]
    )
    assert rc == 0
    ours = stored_arrays(output)
    np.testing.assert_array_equal(ours["fc3.kernel"], model.fc3.weight.detach().numpy().T)
