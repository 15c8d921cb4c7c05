"""ShiftAddNet end to end (SHIFTADDNET.md 3-4): the VGG19-small and ResNet-20 topologies against
PyTorch restatements of the official models, the recipe configs, weight decay per parameter
type, the end-of-epoch re-projection in real runs (and across a kill), and the op counter."""

import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
import torch
from config_diff import differences
from flax import nnx
from torch import nn as tnn

from addernet_jax.layers import Adder2D, ShiftAdd2D, ShiftConv2D, ShiftParam, SignParam
from addernet_jax.models import create_model, get_model_info
from addernet_jax.opcount import compare_variants, param_count
from addernet_jax.ops.shift import shift_range, shift_weight
from addernet_jax.optim import create_schedule
from addernet_jax.tasks import Classification
from addernet_jax.training import loop
from addernet_jax.training.config_checks import validate_config

REPO = Path(__file__).resolve().parents[1]
KINDS = ("cnn", "adder", "shiftadd", "deepshift")
VGG19_E = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
           512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

# ---------------------------------------------------------------------------------------------
# PyTorch restatements of the official models (structure only, on the meta device).


class TorchShift(tnn.Module):
    """deepshift Conv2dShift's parameters: latent shift and sign, (O, I, k, k) each."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.shift = tnn.Parameter(torch.empty(cout, cin, k, k))
        self.sign = tnn.Parameter(torch.empty(cout, cin, k, k))


class TorchAdder(tnn.Module):
    """adder.Adder2D's filters, named `adder`."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.adder = tnn.Parameter(torch.empty(cout, cin, k, k))


def torch_unit(kind, cin, cout, k):
    """What each official model puts where its base network has a conv (SHIFTADDNET.md 3.1)."""
    if kind == "shiftadd":
        return tnn.Sequential(TorchShift(cin, cout, k), TorchAdder(cout, cout, k))
    return {"cnn": lambda: tnn.Conv2d(cin, cout, k, bias=False),
            "adder": lambda: TorchAdder(cin, cout, k),
            "deepshift": lambda: TorchShift(cin, cout, k)}[kind]()


def torch_vgg19_small(kind, num_classes):
    """models/vgg_{shiftadd,add,shift,mult}.py vgg19_small_*: make_layers(cfg['E']) with BN,
    then VGG(small=True, dropout=False): Linear(512, 512), ReLU, Linear(512, classes)."""
    layers, cin = [], 3
    for v in VGG19_E:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            layers += [torch_unit(kind, cin, v, 3), tnn.BatchNorm2d(v), tnn.ReLU()]
            cin = v
    model = tnn.Module()
    model.features = tnn.Sequential(*layers)
    model.classifier = tnn.Sequential(tnn.Linear(512, 512), tnn.ReLU(),
                                      tnn.Linear(512, num_classes))
    return model


def torch_resnet20(kind, num_classes):
    """SHIFTADDNET.md 3.2 for 'shiftadd' (every conv converted: the stem and the 1x1 fc conv to
    shift layers, the others to shift + adder units); the AdderNet topology for the others."""
    kept = {"shiftadd": "deepshift", "deepshift": "deepshift"}.get(kind, "cnn")
    model = tnn.Module()
    model.conv1, model.bn1 = torch_unit(kept, 3, 16, 3), tnn.BatchNorm2d(16)
    cin = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        blocks = []
        for index in range(3):
            block = tnn.Module()
            block.conv1, block.bn1 = torch_unit(kind, cin, width, 3), tnn.BatchNorm2d(width)
            block.conv2, block.bn2 = torch_unit(kind, width, width, 3), tnn.BatchNorm2d(width)
            if index == 0 and stage > 1:
                block.downsample = tnn.Sequential(torch_unit(kind, cin, width, 1),
                                                  tnn.BatchNorm2d(width))
            blocks.append(block)
            cin = width
        setattr(model, f"layer{stage}", tnn.Sequential(*blocks))
    model.fc, model.bn2 = torch_unit(kept, 64, num_classes, 1), tnn.BatchNorm2d(num_classes)
    return model


BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def torch_entries(model):
    """{our path: our shape}: OIHW -> HWIO, Linear (out, in) -> (in, out), BN names, and the
    official unit nn.Sequential(shift, adder)'s entries 0 / 1 -> our ShiftAdd2D's shift / adder."""
    modules = dict(model.named_modules())
    entries = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        shape = tuple(value.shape)
        if isinstance(modules[owner], tnn.BatchNorm2d):
            leaf = BN_NAMES[leaf]
        elif leaf in ("weight", "adder"):
            leaf = "kernel"
            shape = shape[2:] + shape[1::-1] if len(shape) == 4 else shape[::-1]
        else:  # shift / sign
            shape = shape[2:] + shape[1::-1]
        parent, _, index = owner.rpartition(".")
        if isinstance(modules.get(parent), tnn.Sequential) and isinstance(
                modules[owner], (TorchShift, TorchAdder)) and len(modules[parent]) == 2 and \
                isinstance(modules[parent][1], TorchAdder):
            owner = f"{parent}.{('shift', 'adder')[int(index)]}"
        entries[f"{owner}.{leaf}"] = shape
    return entries


def our_entries(model):
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    return {".".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(state)}


def abstract(name, variant, num_classes=10):
    return nnx.eval_shape(lambda: create_model(name, num_classes=num_classes, variant=variant,
                                               impl="reference", rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("kind", KINDS)
def test_models_match_the_official_definitions(kind, num_classes):
    with torch.device("meta"):
        references = {"vgg19_small": torch_vgg19_small(kind, num_classes),
                      "resnet20": torch_resnet20(kind, num_classes)}
    for name, reference in references.items():
        ours = abstract(name, kind, num_classes)
        assert param_count(ours) == sum(p.numel() for p in reference.parameters()), name
        assert our_entries(ours) == torch_entries(reference), name


def test_parameter_counts_by_hand():
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), *[(256, 256)] * 3,
             (256, 512), *[(512, 512)] * 7]
    conv = sum(9 * cin * cout for cin, cout in convs)
    adders = sum(9 * cout * cout for _, cout in convs)  # the unit's square adders
    head = 2 * sum(c for _, c in convs) + 512 * 512 + 512 + 512 * 10 + 10  # BN, classifier
    assert conv == 20_018_880
    expected = {"cnn": conv + head, "adder": conv + head, "deepshift": 2 * conv + head,
                "shiftadd": 2 * conv + adders + head}
    assert expected["cnn"] == 20_297_674 and expected["shiftadd"] == 61_918_858
    for kind, count in expected.items():
        assert param_count(abstract("vgg19_small", kind)) == count, kind
    # ResNet-20: 0.27M; shiftadd doubles every conv (p and s) and adds the square adders.
    assert param_count(abstract("resnet20", "cnn")) == 272_484
    assert param_count(abstract("resnet20", "shiftadd")) == 838_804


def test_layer_types_of_each_kind():
    first = {"cnn": nnx.Conv, "adder": Adder2D, "shiftadd": ShiftAdd2D, "deepshift": ShiftConv2D}
    for kind, layer_type in first.items():
        vgg = abstract("vgg19_small", kind)
        # Every one of the 16 convs, the first (3 -> 64) included, is the kind's layer.
        convs = [m for m in vgg.features if isinstance(m, nnx.Module)
                 and not isinstance(m, nnx.BatchNorm)]
        assert len(convs) == 16 and all(type(m) is layer_type for m in convs), kind
        assert all(type(vgg.classifier[i]) is nnx.Linear for i in (0, 2))
        assert vgg.classifier[1] is nnx.relu
    resnet = abstract("resnet20", "shiftadd")  # SHIFTADDNET.md 3.2
    assert type(resnet.conv1) is ShiftConv2D and resnet.conv1.shift.shape == (3, 3, 3, 16)
    assert type(resnet.fc) is ShiftConv2D and resnet.fc.shift.shape == (1, 1, 64, 10)
    assert resnet.fc.bias is None and type(resnet.conv1.shift) is ShiftParam  # 5-bit
    down = resnet.layer3[0].downsample[0]
    assert type(down) is ShiftAdd2D and down.shift.strides == (2, 2)
    assert down.shift.shift.shape == (1, 1, 32, 64) and down.adder.kernel.shape == (1, 1, 64, 64)
    unit = resnet.layer2[0].conv1
    assert unit.shift.strides == (2, 2) and unit.adder.strides == (1, 1)
    assert unit.shift.shift.shape == (3, 3, 16, 32) and unit.adder.kernel.shape == (3, 3, 32, 32)


def test_vgg19_small_cnn_inits():
    # An 'rbg' key: eager threefry draws compile once per kernel shape (20 s here).
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
    model = create_model("vgg19_small", num_classes=10, variant="cnn", rngs=rngs)
    # The official init loop: conv weights normal(0, sqrt(2 / (k * k * C_out))).
    for index, channels in ((0, 64), (17, 256), (49, 512)):
        kernel = model.features[index].kernel[...]
        assert kernel.shape[-1] == channels
        np.testing.assert_allclose(jnp.std(kernel), (2 / (9 * channels)) ** 0.5, rtol=0.05)
    bias = model.classifier[0].bias[...]  # nn.Linear default: U(+-1/sqrt(512))
    assert float(jnp.max(jnp.abs(bias))) <= 512**-0.5 and float(jnp.std(bias)) > 0.01


def test_vgg19_small_forward_shapes():
    for kind in KINDS:
        model = abstract("vgg19_small", kind, num_classes=100)
        y = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 32, 32, 3)))
        assert y.shape == (2, 100)
    assert get_model_info("vgg19_small").input_shape == (32, 32, 3)


# ---------------------------------------------------------------------------------------------
# Configs: the official recipe, every variant, one step each.

CONFIGS = ["shiftaddnet_cifar10_resnet20", "shiftaddnet_cifar100_resnet20",
           "shiftaddnet_cifar10_vgg19_small", "shiftaddnet_cifar100_vgg19_small",
           "shiftaddnet_cifar10_resnet20_quick", "shiftaddnet_tiny"]


def load_config(name, *variant):
    return importlib.import_module(f"configs.{name}").get_config(*variant)


def test_every_config_and_variant_validates():
    for name in CONFIGS:
        assert load_config(name).model.variant == "shiftadd"
        for kind in KINDS:
            config = load_config(name, kind)
            assert config.model.variant == kind
            validate_config(config)


def test_the_official_recipe():
    config = load_config("shiftaddnet_cifar100_vgg19_small")
    assert (config.data.dataset, config.model.name) == ("cifar100", "vgg19_small")
    optimizer = config.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.momentum) == ("sgd", 0.1, 0.9)
    assert (optimizer.weight_decay, optimizer.eta, optimizer.nesterov) == (1e-4, 0.2, False)
    assert (config.batch_size, config.num_epochs, config.seed) == (256, 160, 1)
    assert config.schedule.name == "multistep" and config.epoch_end_projection
    assert tuple(config.schedule.milestones) == (80, 120) and config.schedule.decay_factor == 0.1
    quick = load_config("shiftaddnet_cifar10_resnet20_quick", "cnn")
    assert (quick.data.train_subset, quick.num_epochs) == (10_000, 5)
    assert tuple(quick.schedule.milestones) == (3, 4) and quick.optimizer.weight_decay == 1e-4


def recipe_rates(config, steps_per_epoch, counts):
    schedule = create_schedule(config, steps_per_epoch)
    return [float(schedule(count)) for count in counts]


def test_step_decay_at_the_start_of_epochs_80_and_120():
    # lr x0.1 at the start of 0-based epochs 80 and 120 (official train.py's epoch loop).
    spe = 196
    counts = [0, 80 * spe - 1, 80 * spe, 80 * spe + 1, 120 * spe - 1, 120 * spe, 160 * spe - 1]
    rates = recipe_rates(load_config("shiftaddnet_cifar10_resnet20"), spe, counts)
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_step_decay_with_the_optimizers_step_counter():
    # nnx.Optimizer's step is uint32; optax's piecewise schedule subtracts it from the boundaries.
    spe, config = 5, load_config("shiftaddnet_tiny")
    counts = [jnp.asarray(c, jnp.uint32) for c in (9, 10, 11, 14, 15, 16)]
    rates = recipe_rates(config, spe, counts)
    np.testing.assert_allclose(rates, [0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def tiny(config, tmp_path):
    """One step, batch 8 (one per fake device), tfds mock data. The configs' own adder op: the
    reference one materialises every |x - w| term and needs 19 GB for VGG19-small."""
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps = 1
    config.progress_bar = False
    config.data.source, config.data.train_subset = "tfds", 0
    config.data.data_dir = str(tmp_path / "tfds")
    return config


@pytest.mark.parametrize("kind", KINDS)
def test_derived_configs_change_only_their_own_fields(kind):
    """The CIFAR-100 and quick configs are their CIFAR-10 base with these fields changed and
    nothing else, so the one-step runs below (of the bases) cover them; the CIFAR-100 models
    are compared with the official ones above, and the data pipeline by tests/test_training.py."""
    for model in ("resnet20", "vgg19_small"):
        assert differences(load_config(f"shiftaddnet_cifar100_{model}", kind),
                           load_config(f"shiftaddnet_cifar10_{model}", kind)) == {
            "data.dataset": ("cifar100", "cifar10")}
    quick = differences(load_config("shiftaddnet_cifar10_resnet20_quick", kind),
                        load_config("shiftaddnet_cifar10_resnet20", kind))
    assert quick == {"data.source": ("local", "tfds"),
                     "data.local_path": ("../shared/data/cifar10-jpeg", ""),
                     "data.train_subset": (10_000, 0), "num_epochs": (5, 160),
                     "schedule.milestones": ((3, 4), (80, 120)),
                     "checkpoint_every_steps": (20, 500)}


# The configs that differ in more than the dataset, and the one kind without adders.
@pytest.mark.parametrize(("name", "variant"), [("shiftaddnet_cifar10_resnet20", "shiftadd"),
                                               ("shiftaddnet_cifar10_vgg19_small", "shiftadd"),
                                               ("shiftaddnet_cifar10_resnet20", "deepshift")])
def test_one_step_of_the_base_configs_on_mock_data(name, variant, tmp_path):
    config = tiny(load_config(name, variant), tmp_path)
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["steps"] == 1 and 0.0 <= summary["final_accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [r for r in records if r["split"] == "train"]
    assert np.isfinite(train[0]["loss"]) and train[0]["learning_rate"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# Optimizer rules by parameter type: weight decay, projection, epoch-end re-projection.


def tiny_state(weight_decay=1e-4, **fields):
    """The classification task's train state of the tiny shiftadd config (LeNet-5, MNIST)."""
    config = load_config("shiftaddnet_tiny")
    config.optimizer.weight_decay = weight_decay
    config.model.impl = "reference"  # compiles fastest; the ops' tests compare the others
    config.update(fields)
    task = Classification(config)
    return task, task.create_state(steps_per_epoch=5)


def flat(tree):
    return {".".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(tree)}


# One jitted function: its compilations are cached per weight decay (the optimizer's graphdef).
update = nnx.jit(lambda model, optimizer, grads: optimizer.update(model, grads))


def one_update(weight_decay, grads_of):
    """(params before, params after one optimizer update with `grads_of(param)` gradients)."""
    _, state = tiny_state(weight_decay)
    model, optimizer = state["model"], state["optimizer"]
    before = flat(nnx.state(model, nnx.Param))
    grads = jax.tree.map(grads_of, nnx.state(model, nnx.Param))
    update(model, optimizer, grads)
    return before, flat(nnx.state(model, nnx.Param))


def test_weight_decay_is_zero_on_shift_and_sign_parameters_only():
    _, state = tiny_state()
    types = {".".join(map(str, p)): type(v)
             for p, v in nnx.to_flat_state(nnx.state(state["model"], nnx.Param))}
    free = {k for k, t in types.items() if issubclass(t, (ShiftParam, SignParam))}
    assert len(free) == 2 * 4  # p and s of conv1, conv2, fc1, fc2
    # Zero gradient, first step of torch SGD: v = wd * w, w <- w - lr * v; decay 0: no change.
    before, decayed = one_update(1e-4, jnp.zeros_like)
    _, undecayed = one_update(0.0, jnp.zeros_like)
    for key, value in decayed.items():
        np.testing.assert_array_equal(undecayed[key], before[key], err_msg=key)
        expected = before[key] if key in free else before[key] - 0.1 * (1e-4 * before[key])
        np.testing.assert_allclose(value, expected, rtol=3e-7, atol=0, err_msg=key)
        moved = not np.array_equal(value, before[key])  # zero-initialised BN biases cannot
        assert moved == (key not in free and bool(np.any(before[key]))), key
    # A random gradient: with and without decay, shift and sign parameters move identically.
    rng = np.random.default_rng(0)
    draws = lambda v: rng.standard_normal(v.shape).astype(np.float32)  # noqa: E731
    _, decayed = one_update(1e-4, draws)
    rng = np.random.default_rng(0)
    _, undecayed = one_update(0.0, draws)
    for key in free:
        np.testing.assert_array_equal(decayed[key], undecayed[key], err_msg=key)
    assert not np.array_equal(decayed["fc3.kernel"], undecayed["fc3.kernel"])


def tree_items(tree):
    """(dotted path, array) of an nnx State or of a checkpoint's nested dicts."""
    if isinstance(tree, nnx.State):
        yield from flat(tree).items()
        return
    for key, value in tree.items():
        for path, leaf in tree_items(value) if isinstance(value, dict) else [("", value)]:
            yield f"{key}.{path}".rstrip("."), np.asarray(leaf)


def latents(tree):
    """{path: array} of the latent shifts p and signs s (leaves named 'shift' / 'sign')."""
    return {k: v for k, v in tree_items(tree) if k.rsplit(".", 1)[-1] in ("shift", "sign")}


def assert_reprojected(model_tree, bits=5):
    """Every latent p is an integer in range and s in {-1, 0, 1}, so the stored latents are
    the effective weights exactly: W = s * 2^p, a signed power of two or zero."""
    values = latents(model_tree)
    lo, hi = shift_range(bits)
    for key, p in values.items():
        if not key.endswith("shift"):
            continue
        s = values[key[:-len("shift")] + "sign"]
        assert np.all(p == np.round(p)) and p.min() >= lo and p.max() <= hi, key
        assert set(np.unique(s)) <= {-1.0, 0.0, 1.0}, key
        np.testing.assert_array_equal(shift_weight(jnp.asarray(p), jnp.asarray(s), bits),
                                      s * 2.0 ** p, err_msg=key)


def is_integral(model_tree):
    return all(np.all(v == np.round(v)) for v in latents(model_tree).values())


def test_projection_after_every_step_and_the_epoch_end_flag():
    task, state = tiny_state()
    model = state["model"]
    model.conv2.shift.shift[...] = model.conv2.shift.shift[...].at[0, 0, 0, :3].set(
        jnp.array([-16.0, 0.7, -3.2]))
    rng = np.random.default_rng(1)
    batch = {"image": rng.standard_normal((8, 28, 28, 1)).astype(np.float32),
             "label": np.arange(8) % 10}
    nnx.jit(task.train_step)(state, batch)
    p = np.asarray(model.conv2.shift.shift[...])
    assert p.min() >= -14 and p.max() <= 0 and p[0, 0, 0, 0] == -14
    assert not is_integral(nnx.state(model))
    # The flag off: end_of_epoch leaves the latents alone; on: re-projects them (1.6, U6).
    before = latents(nnx.state(model))
    task.config.epoch_end_projection = False
    task.end_of_epoch(state)
    assert all(np.array_equal(v, before[k]) for k, v in latents(nnx.state(model)).items())
    task.config.epoch_end_projection = True
    task.end_of_epoch(state)
    assert_reprojected(nnx.state(model))
    for key, value in latents(nnx.state(model)).items():
        expected = np.round(before[key]) if key.endswith("shift") else np.sign(
            np.round(before[key]))
        np.testing.assert_array_equal(value, expected, err_msg=key)


# ---------------------------------------------------------------------------------------------
# Real runs of train.py (LeNet-5 shiftadd on an 80-image MNIST subset, 5 steps per epoch).


def train_process(workdir, shared_dir, **popen):
    command = [sys.executable, str(REPO / "train.py"), "--config=configs/shiftaddnet_tiny.py",
               f"--workdir={workdir}", "--config.data.source=local",
               f"--config.data.local_path={shared_dir / 'data' / 'mnist'}"]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def model_at(workdir, step):
    path = workdir / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            restore_args=as_numpy))["model"]


@pytest.fixture(scope="module")
def uninterrupted(shared_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    process = train_process(workdir, shared_dir)
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    return workdir


def test_reprojection_runs_at_every_epoch_end(uninterrupted):
    steps = checkpoint_steps(uninterrupted)
    assert steps == [2, 4, 5, 6, 8, 10, 12, 14, 15, 16, 18, 20]  # every 2 steps + epoch ends
    for step in steps:
        model = model_at(uninterrupted, step)
        if step % 5 == 0:  # saved after the epoch's re-projection
            assert_reprojected(model)
        else:  # mid-epoch: SGD has moved the latents off the integers
            assert not is_integral(model), step


def test_killed_run_resumes_to_the_same_reprojected_parameters(uninterrupted, shared_dir,
                                                                tmp_path):
    workdir = tmp_path / "run"
    process = train_process(workdir, shared_dir)
    while not (workdir / "checkpoints" / "2").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = checkpoint_steps(workdir)[-1]
    assert 2 <= killed_at < 20
    resumed = train_process(workdir, shared_dir)
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"resumed from step {killed_at}" in stdout + stderr
    final, reference = model_at(workdir, 20), model_at(uninterrupted, 20)
    assert_reprojected(final)
    final, reference = dict(tree_items(final)), dict(tree_items(reference))
    assert final.keys() == reference.keys()
    for key, value in final.items():
        np.testing.assert_array_equal(value, reference[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# Op counts: shifts as their own operation.


def load_count_ops():
    spec = importlib.util.spec_from_file_location("count_ops", REPO / "count_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resnet20_units():
    """(name, C_in, C_out, k, output side) of every conv of ResNet-20 but the stem and fc."""
    units = []
    for stage, (size, cin, width) in enumerate(((32, 16, 16), (16, 16, 32), (8, 32, 64)), 1):
        for block in range(3):
            units.append((f"layer{stage}.{block}.conv1", cin if block == 0 else width, width,
                          3, size))
            units.append((f"layer{stage}.{block}.conv2", width, width, 3, size))
        if stage > 1:
            units.append((f"layer{stage}.0.downsample.0", cin, width, 1, size))
    return units


def test_resnet20_op_counts_by_hand():
    counts = compare_variants("resnet20", KINDS)
    units = resnet20_units()
    shift_terms = sum(s * s * cout * k * k * cin for _, cin, cout, k, s in units)
    adder_terms = sum(s * s * cout * k * k * cout for _, _, cout, k, s in units)
    kept = 32 * 32 * 16 * 27 + 10 * 64  # stem and fc: shift layers in both shift kinds
    assert shift_terms + kept == 40_813_184  # every conv of the CNN becomes one shift term
    paper = {kind: counts[kind].paper_total() for kind in KINDS}
    assert (paper["shiftadd"].mults, paper["shiftadd"].shifts) == (0, 40_813_184)
    assert paper["shiftadd"].adds == 40_813_184 + 2 * adder_terms
    assert (paper["deepshift"].mults, paper["deepshift"].adds) == (0, 40_813_184)
    assert paper["deepshift"].shifts == 40_813_184
    assert paper["adder"].shifts == paper["cnn"].shifts == 0
    layers = {l.name: l for l in counts["shiftadd"].layers}
    assert layers["conv1"].kind == layers["fc"].kind == "shift"
    assert [l.kind for n, l in layers.items() if n.startswith("layer1.0.conv1")] == [
        "shift", "adder"]


def test_cli_shows_shifts_in_their_own_column_and_never_prices_them_unasked(capsys):
    cli = load_count_ops()
    assert cli.main(["--model", "resnet20", "--variants", "cnn,adder,shiftadd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:]] == ["cnn", "adder", "shiftadd"]
    assert lines[2].split("|")[1].split() == ["mults", "adds", "shifts", "params", "uJ"]
    paper = {line.split("|")[0].strip(): line.split("|")[1:] for line in lines if "|" in line}
    cnn, adder, shiftadd = (cells.split() for cells in paper["paper"])
    assert cnn == ["40.81M", "40.81M", "0", "270.90K", "187.741"]
    assert shiftadd[:3] == ["0", "126.80M", "40.81M"] and shiftadd[4].endswith("+")
    assert any("shifts are not priced" in line for line in lines)
    assert cli.main(["--model", "vgg19_small", "--variants", "all", "--energy-shift", "0.5",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shifts_priced"] and report["energy_pj"]["shift_pj"] == 0.5
    row = report["variants"]["deepshift"]["rows"]["paper"]
    assert row["energy_uj"] == pytest.approx(
        (row["adds"] * 0.9 + row["mults"] * 3.7 + row["shifts"] * 0.5) * 1e-6)
    groups = list(report["variants"]["cnn"]["rows"])
    assert groups == ["block1", "block2", "block3", "block4", "block5", "classifier",
                      "batchnorm", "total", "paper"]
    assert report["variants"]["cnn"]["rows"]["block1"]["mults"] == 32 * 32 * 9 * (3 * 64
                                                                                 + 64 * 64)


def test_cli_json_marks_unpriced_shifts_and_rejects_negative_energy(capsys):
    cli = load_count_ops()
    assert cli.main(["--model", "vgg_small", "--variants", "shiftadd", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["shifts_priced"] and report["energy_pj"]["shift_pj"] is None
    rows = report["variants"]["shiftadd"]["rows"]
    assert rows["paper"]["energy_excludes_shifts"] and rows["paper"]["shifts"] > 0
    assert "energy_excludes_shifts" not in rows["batchnorm"]
    assert rows["paper"]["energy_uj"] == pytest.approx(rows["paper"]["adds"] * 0.9e-6
                                                       + rows["paper"]["mults"] * 3.7e-6)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", "resnet20", "--energy-shift", "-1"])
    assert exit_info.value.code == 2
    assert "argument --energy-shift: must be a number >= 0" in capsys.readouterr().err
