"""Post-training quantisation: grids, the exact filter clipping, BatchNorm folding, finding the
adder layers, the released ResNet-20 on real images, quantize.py -> evaluate.py, bad input."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from addernet_jax import data
from addernet_jax.layers import Adder2D
from addernet_jax.loading import describe_checkpoint, load_checkpoint, load_weights_into
from addernet_jax.models import abstract_model, create_model
from addernet_jax.models.common import batch_norm
from addernet_jax.quantize import (
    FoldedBatchNorm,
    Grid,
    QuantizedAdder2D,
    calibration_images,
    find_adder_sites,
    grid_for_range,
    quantize_model,
)
from addernet_jax.quantize.calibrate import fold_layer
from addernet_jax.quantize.layers import quantize_values
from addernet_jax.runtime.checkpoints import CheckpointError, save_model_checkpoint

REPO = Path(__file__).resolve().parents[1]
RELEASED = "checkpoints/ResNet20-AdderNet.pth"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quantize_cli = load_script("quantize")
evaluate_cli = load_script("evaluate")
convert_cli = load_script("convert_torch_weights")


# ---------------------------------------------------------------------------------------------
# Grids and the integer layer.


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("low, high", [(0.0, 3.7), (-1.3, 2.2), (-2.0, 0.0), (0.5, 4.0)])
def test_grid_spans_the_range_with_zero_on_a_level(bits, low, high):
    grid = grid_for_range(low, high, bits)
    assert grid.qmin == -(2 ** (bits - 1)) and grid.qmax == 2 ** (bits - 1) - 1
    assert grid.qmin <= grid.zero_point <= grid.qmax
    step = grid.scale
    assert grid.low <= min(low, 0) + step / 2 and grid.high >= max(high, 0) - step / 2
    assert grid.high - grid.low == pytest.approx(step * (2**bits - 1))
    # Zero is exactly a level: it quantises to the zero point and back to 0.
    q = quantize_values(jnp.zeros(3), grid.scale, grid.zero_point, bits)
    assert (np.asarray(q) == grid.zero_point).all()
    if low >= 0:
        assert grid.zero_point == grid.qmin  # a non-negative range uses every level


def test_quantize_values_rounds_and_clips():
    q = quantize_values(jnp.array([-5.0, 0.24, 0.26, 0.75, 100.0]), 0.5, -2, 4)
    np.testing.assert_array_equal(np.asarray(q), [-8, -2, -1, 0, 7])  # 0.75/0.5 = 1.5 -> 2


def float_layer_and_bn(key, c_in=5, c_out=7, k=3, stride=1, padding=1):
    adder = Adder2D(c_in, c_out, k, stride, padding=padding, rngs=nnx.Rngs(key))
    bn = batch_norm(c_out, rngs=nnx.Rngs(key))
    rng = np.random.default_rng(key)
    bn.mean[...] = jnp.asarray(rng.normal(-40, 5, c_out), jnp.float32)
    bn.var[...] = jnp.asarray(rng.uniform(20, 80, c_out), jnp.float32)
    bn.scale[...] = jnp.asarray(rng.uniform(0.5, 2, c_out), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.normal(0, 1, c_out), jnp.float32)
    bn.eval()
    return adder, bn


@pytest.mark.parametrize("low, high, stride, padding", [(0.0, 2.0, 1, 1), (-1.0, 1.5, 2, 2),
                                                        (0.0, 0.6, 1, 0)])
def test_clipped_filters_and_folded_bn_are_exact_on_grid_inputs(low, high, stride, padding):
    """Inputs on grid levels and filters on levels or anywhere outside the grid (N(0, 1) filters
    mostly are): the integer layer equals BN(adder(x)) up to float32 rounding, because the
    clipping correction c_o is exact (calibrate.py)."""
    adder, bn = float_layer_and_bn(0, stride=stride, padding=padding)
    grid = grid_for_range(low, high, 8)
    rng = np.random.default_rng(1)
    w = np.asarray(adder.kernel[...])
    inside = (w > grid.low) & (w < grid.high)
    on_levels = grid.scale * (np.round(w / grid.scale + grid.zero_point) - grid.zero_point)
    adder.kernel[...] = jnp.asarray(np.where(inside, on_levels, w), jnp.float32)
    assert inside.mean() < 0.9 and (~inside).any()  # both kinds of filter values occur
    levels = rng.integers(grid.qmin, grid.qmax + 1, size=(2, 9, 8, 5))
    x = jnp.asarray(grid.scale * (levels - grid.zero_point), jnp.float32)
    layer = fold_layer(adder, bn, grid)
    expected = np.asarray(nnx.jit(lambda a, b, x: b(a(x)))(adder, bn, x))
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(layer, x)), expected,
                               rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def test_without_bn_the_layer_is_minus_scale_times_the_sum():
    adder, _ = float_layer_and_bn(2)
    grid = Grid(0.25, -128, 8)
    layer = fold_layer(adder, None, grid, impl="shifted")
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 3, (1, 6, 6, 5)), jnp.float32)
    x_q = layer.quantize_input(x)
    s = np.asarray(layer.integer_sum(x_q), np.float64)
    clipped = np.clip(np.asarray(adder.kernel[...]), grid.low, grid.high)
    correction = np.abs(np.asarray(adder.kernel[...]) - clipped).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(layer(x)), -(0.25 * s + correction), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Which layers are quantised, and which BatchNorms fold.


def test_resnet20_sites_fold_every_batchnorm():
    sites = find_adder_sites(abstract_model("resnet20", num_classes=10), (32, 32, 3))
    assert len(sites) == 20  # 18 3x3 adders and 2 1x1 projections
    pairs = {s.path: s.bn_path for s in sites}
    assert pairs[("layer1", 0, "conv1")] == ("layer1", 0, "bn1")
    assert pairs[("layer3", 2, "conv2")] == ("layer3", 2, "bn2")
    assert pairs[("layer2", 0, "downsample", 0)] == ("layer2", 0, "downsample", 1)
    assert all(bn is not None for bn in pairs.values())


def test_lenet_sites_and_vgg_pool_before_bn_is_not_folded():
    lenet = find_adder_sites(abstract_model("lenet5", num_classes=10), (28, 28, 1))
    assert [(s.path, s.bn_path) for s in lenet] == [
        (("conv2",), ("bn2",)), (("fc1",), ("bn3",)), (("fc2",), ("bn4",))]
    vgg = find_adder_sites(abstract_model("vgg_small", num_classes=10), (32, 32, 3))
    folded = [s.bn_path is not None for s in vgg]
    assert len(vgg) == 5 and any(folded) and not all(folded)  # c1/c3/c5: max-pool, then BN


# ---------------------------------------------------------------------------------------------
# The released ResNet-20 on real CIFAR-10 images.


@pytest.fixture(scope="module")
def released_resnet20(shared_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("quantize") / "resnet20"
    assert convert_cli.main(["--input", str(shared_dir / RELEASED), "--output", str(output),
                             "--model", "resnet20"]) == 0
    return output


def cifar_test_images(cifar10_jpeg_dir, count):
    source = data.get_source("cifar10", "test", source="local", local_path=cifar10_jpeg_dir)
    subset = data.SubsetSource(source, np.arange(0, 10000, 10000 // count))
    batch = next(iter(data.make_eval_loader(
        subset, batch_size=count, transforms=data.get_transforms("cifar10", train=False))))
    return np.asarray(batch["image"]), np.asarray(batch["label"])


def test_released_resnet20_int8_logits_close_to_float(released_resnet20, cifar10_jpeg_dir):
    float_model = load_checkpoint(describe_checkpoint(released_resnet20)).model
    calibration = calibration_images("cifar10", 32, source="local",
                                     local_path=cifar10_jpeg_dir)
    quantized, record = quantize_model(float_model, calibration, bits=8)
    assert record["bits"] == 8 and len(record["layers"]) == 20
    assert all(layer["relative_error"] < 0.05 for layer in record["layers"])
    assert isinstance(quantized.layer1[0].conv1, QuantizedAdder2D)
    assert isinstance(quantized.layer1[0].bn1, FoldedBatchNorm)
    assert isinstance(float_model.layer1[0].conv1, Adder2D)  # the float model is untouched
    images, labels = cifar_test_images(cifar10_jpeg_dir, 100)
    logits_f = np.asarray(nnx.jit(lambda m, x: m(x))(float_model, images))
    logits_q = np.asarray(nnx.jit(lambda m, x: m(x))(quantized, images))
    relative = np.sqrt(np.mean((logits_q - logits_f) ** 2) / np.mean(logits_f**2))
    assert relative < 0.05, relative
    assert np.mean(logits_q.argmax(1) == logits_f.argmax(1)) >= 0.95
    assert abs(np.mean(logits_q.argmax(1) == labels) - np.mean(logits_f.argmax(1) == labels)) \
        <= 0.03


# ---------------------------------------------------------------------------------------------
# quantize.py -> checkpoint -> evaluate.py, on LeNet-5 and MNIST.


@pytest.fixture(scope="module")
def lenet_checkpoint(mnist_dir, tmp_path_factory) -> Path:
    """A LeNet-5 AdderNet with random filters and BatchNorm statistics of real digits (so that
    no layer is dead), as a model checkpoint."""
    model = create_model("lenet5", num_classes=10, rngs=nnx.Rngs(0))
    images = calibration_images("mnist", 256, source="local", local_path=mnist_dir, seed=5)
    model.train()
    forward = nnx.jit(lambda m, x: m(x))
    for _ in range(40):  # running averages with momentum 0.9 converge to the batch statistics
        forward(model, images)
    directory = tmp_path_factory.mktemp("lenet") / "lenet5"
    save_model_checkpoint(directory, nnx.state(model),
                          {"model": "lenet5", "variant": "adder", "num_classes": 10})
    return directory


def run_quantize(capsys, *args) -> tuple[int, str, str]:
    """quantize.py in this process: (exit status, stdout, stderr); a flag error exits in
    argparse, before `run_main`."""
    try:
        status = quantize_cli.main(list(args))
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_quantize_save_load_evaluate_round_trip(lenet_checkpoint, mnist_dir, tmp_path, capsys):
    output = tmp_path / "lenet5_int8"
    status, out, err = run_quantize(
        capsys, "--checkpoint", str(lenet_checkpoint), "--output", str(output), "--dataset",
        "mnist", "--local-path", str(mnist_dir), "--calibration-images", "64", "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["model"] == "lenet5" and info["quantization"]["bits"] == 8
    assert [layer["path"] for layer in info["quantization"]["layers"]] == ["conv2", "fc1", "fc2"]
    assert json.loads((output / "model_info.json").read_text()) == info

    # The checkpoint loads onto the integer path and equals the in-memory quantisation.
    loaded = load_checkpoint(describe_checkpoint(output)).model
    assert isinstance(loaded.fc1, QuantizedAdder2D) and loaded.fc1.kernel[...].dtype == jnp.int8
    float_model = load_checkpoint(describe_checkpoint(lenet_checkpoint)).model
    calibration = calibration_images("mnist", 64, source="local", local_path=mnist_dir)
    in_memory, _ = quantize_model(float_model, calibration)
    batch = next(iter(data.make_eval_loader(
        data.get_source("mnist", "test", source="local", local_path=mnist_dir),
        batch_size=3000, transforms=data.get_transforms("mnist", train=False))))
    forward = nnx.jit(lambda m, x: m(x))
    logits = np.asarray(forward(loaded, batch["image"]))
    np.testing.assert_array_equal(logits, np.asarray(forward(in_memory, batch["image"])))
    float_logits = np.asarray(forward(float_model, batch["image"]))
    assert np.mean(logits.argmax(1) == float_logits.argmax(1)) >= 0.95

    # evaluate.py reads it unchanged, on 8 devices, and counts what the loaded model predicts.
    assert evaluate_cli.main(["--checkpoint", str(output), "--dataset", "mnist", "--local-path",
                              str(mnist_dir), "--json", "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["count"] == 3000 and results["kind"] == "model checkpoint"
    assert results["top1"] == pytest.approx(np.mean(logits.argmax(1) == batch["label"]))

    # Quantising it again is refused.
    status, _, err = run_quantize(capsys, "--checkpoint", str(output), "--output",
                                  str(tmp_path / "again"), "--dataset", "mnist")
    assert status == 2 and "already quantised" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Bad input: one line, the right exit status.


def test_cnn_checkpoint_is_refused(mnist_dir, tmp_path, capsys):
    cnn = tmp_path / "lenet_cnn"
    model = create_model("lenet5", num_classes=10, variant="cnn", rngs=nnx.Rngs(0))
    save_model_checkpoint(cnn, nnx.state(model),
                          {"model": "lenet5", "variant": "cnn", "num_classes": 10})
    status, _, err = run_quantize(capsys, "--checkpoint", str(cnn), "--output",
                                  str(tmp_path / "out"), "--dataset", "mnist", "--local-path",
                                  str(mnist_dir))
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("quantize.py: error: ") and "only AdderNets" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no adder layer to quantise"):
        quantize_model(model, np.zeros((2, 28, 28, 1), np.float32))


@pytest.mark.parametrize("bits", ["3", "9", "eight"])
def test_unknown_bit_width(lenet_checkpoint, mnist_dir, tmp_path, capsys, bits):
    status, _, err = run_quantize(capsys, "--checkpoint", str(lenet_checkpoint), "--output",
                                  str(tmp_path / "out"), "--dataset", "mnist", "--bits", bits)
    assert status == 2 and err.count("\n") == 1 and "--bits" in err


def test_unknown_bit_width_in_the_api(lenet_checkpoint):
    model = load_checkpoint(describe_checkpoint(lenet_checkpoint)).model
    for bits in (3, 9, 8.0, True):
        with pytest.raises(ValueError, match="bit width must be one of 4, 5, 6, 7, 8"):
            quantize_model(model, np.zeros((2, 28, 28, 1), np.float32), bits=bits)


def test_empty_calibration_set(lenet_checkpoint, mnist_dir, tmp_path, capsys):
    status, _, err = run_quantize(capsys, "--checkpoint", str(lenet_checkpoint), "--output",
                                  str(tmp_path / "out"), "--dataset", "mnist", "--local-path",
                                  str(mnist_dir), "--calibration-images", "0")
    assert status == 2 and err.count("\n") == 1 and "calibration set is empty" in err
    model = load_checkpoint(describe_checkpoint(lenet_checkpoint)).model
    with pytest.raises(ValueError, match="calibration set is empty"):
        quantize_model(model, np.zeros((0, 28, 28, 1), np.float32))


def test_damaged_record_and_init_from_a_quantized_checkpoint(lenet_checkpoint, mnist_dir,
                                                             tmp_path, capsys):
    output = tmp_path / "q"
    status, _, err = run_quantize(capsys, "--checkpoint", str(lenet_checkpoint), "--output",
                                  str(output), "--dataset", "mnist", "--local-path",
                                  str(mnist_dir), "--calibration-images", "16", "--bits", "4")
    assert status == 0, err
    with pytest.raises(CheckpointError, match="quantised \\(inference-only\\) checkpoint"):
        load_weights_into(create_model("lenet5", num_classes=10, rngs=nnx.Rngs(0)), output,
                          {"model": "lenet5", "variant": "adder", "num_classes": 10})
    info = json.loads((output / "model_info.json").read_text())
    info["quantization"]["layers"][0]["path"] = "conv9"
    (output / "model_info.json").write_text(json.dumps(info))
    assert evaluate_cli.main(["--checkpoint", str(output), "--dataset", "mnist",
                              "--local-path", str(mnist_dir), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no layer 'conv9'" in err


def test_existing_output(lenet_checkpoint, mnist_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    status, _, err = run_quantize(capsys, "--checkpoint", str(lenet_checkpoint), "--output",
                                  str(taken), "--dataset", "mnist", "--local-path",
                                  str(mnist_dir), "--calibration-images", "8")
    assert status == 2 and "already exists" in err and err.count("\n") == 1
    assert jax.device_count() == 8  # conftest: the CLI ran on 8 fake devices
