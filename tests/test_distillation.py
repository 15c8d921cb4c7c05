"""PKKD (tasks/distillation.py, tasks/kernels.py): kernel transforms and losses against float64
NumPy, no leakage into the teacher, the adaptive rate applied once, exact resume, evaluate.py on
the student and the teacher, one step of every PKKD config."""

import collections
import functools
import importlib
import json
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from config_diff import differences
from flax import nnx
from jax import lax
from test_training_runs import REPO, assert_same_state, environment

from addernet_jax.cli import evaluate as evaluate_cli
from addernet_jax.layers import Adder2D, conv2d
from addernet_jax.models import create_model
from addernet_jax.ops import adder2d
from addernet_jax.optim import make_transformation
from addernet_jax.tasks import (
    Classification,
    ConfigError,
    Distillation,
    jit_train_step,
    kernels,
)
from addernet_jax.tasks.distillation import (
    compared_paths,
    module_at,
    transformation_without_adaptive_lr,
)
from addernet_jax.training import loop
from addernet_jax.training.config_checks import validate_config

# ---------------------------------------------------------------------------------------------
# Kernel transforms against explicit patches in float64.

# (N, H, W, C_in, C_out, k, stride, padding)
SHAPES = [(2, 6, 6, 3, 4, 3, 1, 1), (1, 7, 5, 2, 3, 3, 2, 1), (2, 8, 8, 4, 2, 1, 2, 0),
          (3, 5, 5, 1, 5, 5, 1, 2), (1, 9, 9, 6, 3, 3, 2, 0)]


def np_patches(x, k, stride, padding):
    """(N, H_out, W_out, k, k, C) windows of the zero-padded input, in float64."""
    xpad = np.pad(np.asarray(x, np.float64), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
    h_out = (xpad.shape[1] - k) // stride + 1
    w_out = (xpad.shape[2] - k) // stride + 1
    rows = [[xpad[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
             for j in range(w_out)] for i in range(h_out)]
    return np.stack([np.stack(row, axis=1) for row in rows], axis=1)


def np_distances(x, w, stride, padding):
    """(D1, D2): sum |patch - f_t| and sum (patch - f_t)^2 per output position and channel."""
    diff = np_patches(x, w.shape[0], stride, padding)[..., None] - np.asarray(w, np.float64)
    return np.abs(diff).sum(axis=(3, 4, 5)), np.square(diff).sum(axis=(3, 4, 5))


def random_operands(shape, seed):
    n, h, w, cin, cout, k, _, _ = shape
    kx, kw = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, (n, h, w, cin)), 0.5 * jax.random.normal(kw, (k, k, cin, cout)))


def conv(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, (stride,) * 2, ((padding,) * 2,) * 2,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("shape", SHAPES)
def test_distances_from_layer_outputs_match_explicit_patches(shape):
    x, w = random_operands(shape, seed=sum(shape))
    stride, padding = shape[6], shape[7]
    d1, d2 = np_distances(x, w, stride, padding)
    ours_d1 = kernels.laplace_distance(adder2d(x, w, stride=stride, padding=padding))
    ours_d2 = kernels.gaussian_distance(x, conv(x, w, stride, padding), w, stride, padding)
    np.testing.assert_allclose(ours_d1, d1, rtol=1e-5)
    np.testing.assert_allclose(ours_d2, d2, rtol=1e-4, atol=1e-4 * d2.mean())
    squares = np_patches(x, w.shape[0], stride, padding) ** 2
    np.testing.assert_allclose(
        kernels.patch_sum_of_squares(x, w.shape[:2], stride, padding)[..., 0],
        squares.sum(axis=(3, 4, 5)), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_kernel_maps_of_layers_match_float64_kernels(shape):
    n, h, w_, cin, cout, k, stride, padding = shape
    x = jax.random.normal(jax.random.key(7), (n, h, w_, cin))
    adder = Adder2D(cin, cout, k, stride, padding=padding, rngs=nnx.Rngs(0))
    convolution = conv2d(cin, cout, k, stride, padding=padding, rngs=nnx.Rngs(1),
                         kernel_init=jax.nn.initializers.normal(0.5))
    d1 = np_distances(x, adder.kernel[...], stride, padding)[0]
    d2 = np_distances(x, convolution.kernel[...], stride, padding)[1]
    y_c = np.asarray(conv(x, convolution.kernel[...], stride, padding), np.float64)
    expected = {
        ("adder", "proper"): np.exp(-d1 / d1.mean()),
        ("conv", "proper"): np.exp(-d2 / d2.mean()),
        ("conv", "notes_literal"): np.exp(-y_c / np.abs(y_c).mean()),
    }
    for (kind, form), want in expected.items():
        layer = adder if kind == "adder" else convolution
        got = kernels.kernel_map(layer, x, layer(x), form=form)
        assert got.shape == (n, *want.shape[1:3], cout)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6, err_msg=f"{kind} {form}")
    # Fixed widths instead of the batch statistic (U3).
    np.testing.assert_allclose(kernels.kernel_map(adder, x, adder(x), sigma_a=3.0),
                               np.exp(-d1 / 3.0), rtol=2e-4, atol=1e-30)
    np.testing.assert_allclose(kernels.kernel_map(convolution, x, convolution(x), sigma_c=4.0),
                               np.exp(-d2 / 32.0), rtol=2e-4, atol=1e-6)


def test_kernel_widths_are_not_differentiated():
    d = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    grad = jax.grad(lambda d: jnp.sum(kernels.laplace_kernel(d)))(d)
    np.testing.assert_allclose(grad, -np.exp(-np.asarray(d) / 3.0) / 3.0, rtol=1e-6)


def test_kernel_map_names_what_it_cannot_transform():
    with pytest.raises(ValueError, match="no kernel for a Linear layer"):
        kernels.kernel_map(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2)), jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="kernel_form must be one of"):
        kernels.kernel_map(None, None, None, form="gaussian")


# ---------------------------------------------------------------------------------------------
# Losses against NumPy.


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize(("tau", "gt_weight", "kd_weight"), [(1.0, 1.0, 1.0), (4.0, 0.3, 2.0)])
def test_blend_loss_matches_numpy(tau, gt_weight, kd_weight):
    rng = np.random.default_rng(0)
    z_a, z_c = rng.normal(size=(2, 6, 10)) * 3
    labels = rng.integers(0, 10, 6)
    ce = -np_log_softmax(z_a)[np.arange(6), labels]
    log_p, log_q = np_log_softmax(z_c / tau), np_log_softmax(z_a / tau)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    want = np.mean(gt_weight * ce + kd_weight * tau**2 * kl)
    loss, parts = kernels.blend_loss(jnp.asarray(z_a), jnp.asarray(z_c), jnp.asarray(labels),
                                     tau=tau, gt_weight=gt_weight, kd_weight=kd_weight)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(parts["kl"], kl.mean(), rtol=1e-5)
    teacher_grad = jax.grad(lambda z: kernels.blend_loss(
        jnp.asarray(z_a), z, jnp.asarray(labels), tau=tau)[0])(jnp.asarray(z_c))
    assert not np.any(teacher_grad)  # the teacher's logits are under stop_gradient


@pytest.mark.parametrize("norm", ["mse", "sum_squares", "l2"])
def test_mid_loss_matches_numpy(norm):
    rng = np.random.default_rng(1)
    shapes = [(4, 8, 8, 3), (4, 4, 4, 5)]
    a = [rng.random(s) for s in shapes]
    c = [rng.random(s) for s in shapes]
    weights = (0.5, 2.0)
    per_layer = []
    for x, y in zip(a, c):
        squares = ((x - y) ** 2).reshape(4, -1)
        per_layer.append({"mse": squares.mean(), "sum_squares": squares.sum(1).mean(),
                          "l2": np.sqrt(squares.sum(1)).mean()}[norm])
    got = kernels.mid_loss([jnp.asarray(x) for x in a], [jnp.asarray(y) for y in c],
                           norm=norm, weights=weights)
    np.testing.assert_allclose(got, np.dot(weights, per_layer), rtol=1e-5)
    with pytest.raises(ValueError, match="2 student maps, 2 teacher maps and 1 layer weights"):
        kernels.mid_loss(a, c, weights=(1.0,))


# ---------------------------------------------------------------------------------------------
# Capturing the compared layers.


def test_record_calls_captures_the_forward_pass_and_restores_the_layers():
    model = create_model("resnet20", num_classes=10, rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    paths = compared_paths(model, "stage_ends")
    assert paths == [("layer1", 2, "conv2"), ("layer2", 2, "conv2"), ("layer3", 2, "conv2")]
    layers = [module_at(model, p) for p in paths]
    with kernels.record_calls(layers) as records:
        logits = model(x)
    assert all(type(layer) is Adder2D for layer in layers)
    np.testing.assert_array_equal(logits, model(x))
    for layer, record in zip(layers, records):
        (inputs, outputs), = record
        np.testing.assert_array_equal(outputs, layer(inputs))
    assert records[2][0][1].shape == (2, 8, 8, 64)


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet32", ["layer1.4.conv2", "layer2.4.conv2", "layer3.4.conv2"]),
    ("resnet18", ["layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2"]),
    ("resnet50", ["layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3", "layer4.2.conv3"]),
    ("vgg_small", ["conv1", "conv3", "conv5"]),
    ("lenet5", ["conv2"]),
])
def test_default_compared_layers_are_the_stage_ends(name, expected):
    model = nnx.eval_shape(lambda: create_model(name, num_classes=10, rngs=nnx.Rngs(0)))
    paths = [".".join(map(str, p)) for p in compared_paths(model, "stage_ends")]
    assert paths == expected


# ---------------------------------------------------------------------------------------------
# The train step: no leakage, the adaptive rate once.


def tiny_pkkd(**pkkd_fields) -> ml_collections.ConfigDict:
    config = importlib.import_module("configs.pkkd_tiny").get_config()
    config.pkkd.update(pkkd_fields)
    return config


def random_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(n, 28, 28, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


def as_numpy(tree):
    return jax.tree.map(np.array, tree)


def run_step(task, state, batch):
    graphdef, arrays = nnx.split(state)
    arrays, metrics = jit_train_step(task)(graphdef, arrays, batch)
    return nnx.merge(graphdef, arrays), metrics


@pytest.mark.parametrize("fields", [{}, {"teacher_features": "after_update"},
                                    {"transform_side": "teacher", "adaptive_lr_scope": "per_term"}],
                         ids=["defaults", "after_update", "teacher_side_per_term"])
def test_teacher_after_a_pkkd_step_equals_a_plain_cnn_step(fields):
    """Bit for bit: the teacher's parameters and BatchNorm statistics after one PKKD step are
    those of one classification step of the CNN from the same state on the same batch."""
    config, batch = tiny_pkkd(**fields), random_batch()
    task = Distillation(config)
    state = task.create_state(steps_per_epoch=10)
    initial_teacher = as_numpy(nnx.state(state["teacher"]))
    initial_params = as_numpy(nnx.to_pure_dict(nnx.state(state["teacher"], nnx.Param)))
    state, metrics = run_step(task, state, batch)

    plain_config = ml_collections.ConfigDict(config.to_dict())
    plain_config.task, plain_config.model.variant = "classification", "cnn"
    plain = Classification(plain_config)
    plain_state = plain.create_state(steps_per_epoch=10)
    nnx.update(plain_state["model"], jax.tree.map(jnp.asarray, initial_teacher))
    plain_state, plain_metrics = run_step(plain, plain_state, batch)
    assert float(metrics["teacher_loss"]) == float(plain_metrics["loss"])
    assert_same_state(nnx.to_pure_dict(nnx.state(state["teacher"])),
                      nnx.to_pure_dict(nnx.state(plain_state["model"])))
    changed = jax.tree.map(lambda a, b: np.any(a != b), nnx.to_pure_dict(nnx.state(
        state["teacher"], nnx.Param)), initial_params)
    assert all(jax.tree.leaves(changed))  # the step did move the teacher


def reference_update(task, state, batch):
    """The student after its optimizer takes the separately computed gradients of beta * L_mid
    and of L_blend (each from its own nnx.grad; the teacher's targets from its own loss before
    any update): summed ('total'), or each rescaled by the adaptive rate first ('per_term')."""
    state["model"].train(), state["teacher"].train()
    _, targets = task._teacher_loss(state["teacher"], batch)
    targets, weights = jax.lax.stop_gradient(targets), task._blend_weights(0)
    grads = []
    for index in range(2):
        def term(student, transforms, index=index):
            return task._student_terms(student, transforms, batch, targets, weights)[0][index]
        student_grads = nnx.grad(term)(nnx.clone(state["model"]), state["transforms"])
        if task.pkkd.adaptive_lr_scope == "per_term":
            adaptive = task.adaptive_lr
            student_grads = adaptive.update(student_grads, adaptive.init(student_grads))[0]
        grads.append(student_grads)
    state["optimizer"].update(state["model"], jax.tree.map(jnp.add, *grads))


def test_adaptive_rate_is_applied_once_to_the_total_gradient():
    """'total' (the default): the student's update is its optimizer (adaptive rate inside) on
    the sum of the two terms' gradients; 'per_term' rescales each term's gradient first. The
    two differ, so each comparison could fail."""
    batch, before, stepped, expected = random_batch(seed=1), None, {}, {}
    for scope in ("total", "per_term"):
        task = Distillation(tiny_pkkd(adaptive_lr_scope=scope, beta=5.0))
        state = task.create_state(10)
        before = as_numpy(nnx.to_pure_dict(nnx.state(state["model"], nnx.Param)))
        after, _ = run_step(task, state, batch)
        stepped[scope] = nnx.to_pure_dict(nnx.state(after["model"], nnx.Param))
        state = task.create_state(10)
        nnx.jit(functools.partial(reference_update, task))(state, batch)
        expected[scope] = nnx.to_pure_dict(nnx.state(state["model"], nnx.Param))

    def update(params):
        return jax.tree.map(lambda a, b: np.asarray(a) - b, params, before)

    for scope, other in (("total", "per_term"), ("per_term", "total")):
        # Differences of float32 parameters: 1e-6 is a few ulp of |w| ~ 4 (updates ~1e-2).
        assert_same_state(update(stepped[scope]), update(expected[scope]), rtol=1e-4,
                          atol=1e-6)
        gap = update(expected[other])["conv2"]["kernel"] - update(stepped[scope])["conv2"][
            "kernel"]  # an adder kernel: the two scopes move it differently
        assert np.abs(gap).max() > 1e-3


def primitive_counts(task, state, batch) -> collections.Counter:
    """How often each primitive occurs in the jaxpr of `task`'s train step (sub-jaxprs
    included)."""
    graphdef, arrays = nnx.split(state)

    def walk(jaxpr, counts):
        for equation in jaxpr.eqns:
            counts[equation.primitive.name] += 1
            for param in equation.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    walk(inner, counts)
        return counts

    closed = jax.make_jaxpr(lambda a, b: task.train_step(nnx.merge(graphdef, a), b))(arrays,
                                                                                        batch)
    return walk(closed.jaxpr, collections.Counter())


def test_no_layer_is_computed_twice():
    """The PKKD step holds exactly the adder calls and convolutions of a plain adder step and a
    plain CNN step, plus one patch-sum convolution (S_x) per compared layer: the features come
    from the networks' own forward passes."""
    config, batch = tiny_pkkd(), random_batch()
    task = Distillation(config)
    pkkd = primitive_counts(task, task.create_state(10), batch)
    plain = collections.Counter()
    for variant in ("adder", "cnn"):
        plain_config = ml_collections.ConfigDict(config.to_dict())
        plain_config.task, plain_config.model.variant = "classification", variant
        classification = Classification(plain_config)
        plain += primitive_counts(classification, classification.create_state(10), batch)
    # LeNet-5's three adders, and the two max pools (ops/pooling.py) of each of the two networks
    assert pkkd["custom_vjp_call"] == plain["custom_vjp_call"] == 3 + 2 * 2
    assert pkkd["conv_general_dilated"] == plain["conv_general_dilated"] + len(task.paths)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_per_term_optimizer_is_the_recipe_without_the_adaptive_rate(name):
    """U10 'per_term': the student's optimizer must not rescale again. On a CNN (no adder
    kernels) it is the recipe itself; on the AdderNet its first SGD step is -lr (g + wd w)."""
    config = tiny_pkkd().optimizer
    config.name = name
    for variant in ("cnn", "adder"):
        model = create_model("lenet5", num_classes=10, variant=variant, rngs=nnx.Rngs(0))
        params = nnx.state(model, nnx.Param)
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
        ours = transformation_without_adaptive_lr(model, 0.1, config)
        updates = ours.update(grads, ours.init(params), params)[0]
        if variant == "cnn":
            recipe = make_transformation(model, 0.1, config)
            assert_same_state(nnx.to_pure_dict(updates), nnx.to_pure_dict(
                recipe.update(grads, recipe.init(params), params)[0]))
        elif name == "sgd":
            np.testing.assert_allclose(
                updates["conv2"]["kernel"][...],
                -0.1 * (0.5 + config.weight_decay * params["conv2"]["kernel"][...]), rtol=1e-6)


def test_transforms_start_as_the_identity_and_learn():
    task = Distillation(tiny_pkkd())
    state = task.create_state(10)
    kernel = state["transforms"].layers[0].kernel[...]
    np.testing.assert_array_equal(kernel, np.eye(16))
    state, metrics = run_step(task, state, random_batch())
    assert np.abs(state["transforms"].layers[0].kernel[...] - np.eye(16)).max() > 0
    assert {"loss", "mid_loss", "blend_loss", "teacher_loss", "accuracy",
            "teacher_accuracy", "learning_rate"} <= set(metrics)
    np.testing.assert_allclose(metrics["loss"], metrics["mid_loss"] + metrics["blend_loss"],
                               rtol=1e-6)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("pkkd.kernel_form", "gauss", r"config.pkkd.kernel_form = 'gauss' is not one of"),
    ("pkkd.layers", "conv9", r"config.pkkd.layers: LeNet5 has no layer 'conv9'"),
    ("pkkd.layers", "bn2", r"the student's bn2 is a BatchNorm, not an adder layer or a conv"),
    ("pkkd.layer_weights", (1.0, 2.0), r"layer_weights has 2 entries for 1 compared layers"),
    ("pkkd.tau", 0.0, r"config.pkkd.tau = 0.0 must be > 0"),
    ("teacher.variant", "mult", r"config.teacher.variant = 'mult' is not one of"),
    ("pkkd.adaptive_lr_scope", "once", r"config.pkkd.adaptive_lr_scope = 'once'"),
])
def test_bad_pkkd_fields_are_named(field, value, message, shared_dir):
    config = tiny_pkkd()
    config.data.source, config.data.local_path = "local", str(shared_dir / "data" / "mnist")
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_a_classification_config_without_pkkd_sections_is_refused(shared_dir):
    config = importlib.import_module("configs.tiny").get_config()
    config.data.source, config.data.local_path = "local", str(shared_dir / "data" / "mnist")
    config.task = "distillation"
    with pytest.raises(ConfigError, match="needs the config.teacher and config.pkkd sections"):
        validate_config(config)


# ---------------------------------------------------------------------------------------------
# Real runs (subprocesses on real MNIST): exact resume, evaluate.py on both models.


def pkkd_command(workdir, shared_dir):
    return [sys.executable, str(REPO / "train.py"), "--config=configs/pkkd_tiny.py",
            f"--workdir={workdir}", "--config.data.source=local",
            f"--config.data.local_path={shared_dir / 'data' / 'mnist'}"]


def full_state(workdir, step=None):
    """(step, the whole train state of that checkpoint (every model and optimizer) as numpy);
    the latest checkpoint by default."""
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    step = steps[-1] if step is None else step
    path = workdir / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return step, checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            restore_args=as_numpy_args))


@pytest.fixture(scope="module")
def uninterrupted(shared_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pkkd_uninterrupted")
    result = subprocess.run(pkkd_command(workdir, shared_dir), cwd=REPO, env=environment(1),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_killed_pkkd_run_resumes_to_the_same_state_bit_for_bit(uninterrupted, shared_dir,
                                                                tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(pkkd_command(workdir, shared_dir), cwd=REPO, env=environment(1),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (workdir / "checkpoints" / "4").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at, _ = full_state(workdir)
    assert 4 <= killed_at < 20
    resumed = subprocess.run(pkkd_command(workdir, shared_dir), cwd=REPO, env=environment(1),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {killed_at}" in resumed.stderr + resumed.stdout
    step, state = full_state(workdir)
    reference_step, reference = full_state(uninterrupted)
    assert step == reference_step == 20
    assert set(state) == {"model", "optimizer", "teacher", "teacher_optimizer", "transforms",
                          "transforms_optimizer"}
    assert_same_state(state, reference)


@pytest.mark.parametrize(("key", "variant", "metric"), [("model", "adder", "top1"),
                                                        ("teacher", "cnn", "teacher_top1")])
def test_evaluate_loads_the_exported_student_and_the_teacher(uninterrupted, shared_dir, capsys,
                                                             key, variant, metric):
    summary = json.loads((uninterrupted / "summary.json").read_text())
    records = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").open()]
    at_best = next(r for r in records if r["split"] == "test" and r["step"] == summary["best_step"])
    code = evaluate_cli.main(["--checkpoint", str(uninterrupted), "--dataset", "mnist",
                              "--local-path", str(shared_dir / "data" / "mnist"),
                              "--state-key", key, "--batch-size", "16", "--json",
                              "--no-progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["model"], result["variant"], result["step"]) == (
        "lenet5", variant, summary["best_step"])
    assert result["top1"] == pytest.approx(at_best[metric], abs=1e-9)


def test_init_from_a_pkkd_workdir_starts_from_the_student(uninterrupted):
    config = importlib.import_module("configs.tiny").get_config()
    config.init_from = str(uninterrupted)
    model = Classification(config).create_state(steps_per_epoch=10)["model"]
    best_step = json.loads((uninterrupted / "summary.json").read_text())["best_step"]
    _, saved = full_state(uninterrupted, best_step)
    assert_same_state(as_numpy(nnx.to_pure_dict(nnx.state(model))), saved["model"])


# ---------------------------------------------------------------------------------------------
# One step of every PKKD config on tfds mock data.

# The CIFAR-100 configs are their CIFAR-10 twins with another dataset, and the ResNet-50 one is
# the ResNet-18 one with another model (checked below; its compared layers are checked above),
# so one step of the others covers them (ResNet-50's step alone took 2.5 minutes of the suite).
CONFIGS = ["pkkd_cifar10_resnet20", "pkkd_cifar10_resnet32", "pkkd_cifar10_vgg_small",
           "pkkd_imagenet_resnet18", "pkkd_cifar10_resnet20_quick"]


def _pkkd_config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def test_imagenet_resnet50_pkkd_config_differs_from_resnet18_only_in_the_model():
    assert differences(_pkkd_config("pkkd_imagenet_resnet50"),
                       _pkkd_config("pkkd_imagenet_resnet18")) == {
        "model.name": ("resnet50", "resnet18")}


@pytest.mark.parametrize("model", ["resnet20", "resnet32", "vgg_small"])
def test_cifar100_pkkd_configs_differ_from_cifar10_only_in_the_dataset(model):
    assert differences(_pkkd_config(f"pkkd_cifar100_{model}"),
                       _pkkd_config(f"pkkd_cifar10_{model}")) == {
        "data.dataset": ("cifar100", "cifar10")}


@pytest.mark.parametrize("name", CONFIGS)
def test_one_step_of_every_pkkd_config_on_mock_data(name, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert (config.task, config.model.variant, config.teacher.variant) == (
        "distillation", "adder", "cnn")
    config.data.source, config.data.data_dir = "tfds", str(tmp_path / "tfds")
    config.data.train_subset = 0
    config.batch_size = config.eval_batch_size = 8
    config.num_train_steps, config.progress_bar = 1, False
    if config.data.dataset == "imagenet2012":
        config.data.image_size = 32
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["steps"] == 1 and 0.0 <= summary["final_accuracy"] <= 1.0
    final = summary["final"]["test"]
    assert 0.0 <= final["teacher_top1"] <= 1.0 and final["count"] == 8
    train = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()
             if '"train"' in line]
    assert all(np.isfinite(train[0][k]) for k in ("loss", "mid_loss", "blend_loss",
                                                   "teacher_loss"))
