"""The super_resolution task: exact tiled evaluation (sharded over 8 devices) against
whole-image metrics, training steps of every SR config, resume after a kill, evaluate.py on an SR
checkpoint end to end on Set5, and the config checks."""

import importlib
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
import pytest
from flax import nnx
from PIL import Image

from addernet_jax.data import PairedSRSource, downscale
from addernet_jax.metrics import psnr_y, ssim_y
from addernet_jax.models import create_model
from addernet_jax.models.sr import EDSR, VDSR
from addernet_jax.runtime import parallel
from addernet_jax.runtime.checkpoints import save_model_checkpoint
from addernet_jax.tasks import ConfigError, evaluate_set, get_task, jit_train_step
from addernet_jax.tasks.sr_tiles import (
    eval_margin,
    plan_axis,
    super_resolve,
    tiled_eval_data,
)
from addernet_jax.tasks.super_resolution import SuperResolution
from addernet_jax.training.config_checks import validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sr_root(shared_dir) -> Path:
    return shared_dir / "data" / "sr-benchmark"


@pytest.fixture(scope="module")
def mini_root(sr_root, tmp_path_factory) -> Path:
    """A three-image benchmark set in EDSR's layout: crops of Set5 HR images of different sizes
    (36x48, 48x48, 60x48), LR made by MATLAB bicubic at x2, x3, x4."""
    root = tmp_path_factory.mktemp("sr")
    for k, path in enumerate(sorted((sr_root / "Set5" / "HR").glob("*.png"))[:3]):
        hr = np.asarray(Image.open(path).convert("RGB"))[40 : 76 + 12 * k, 50:98]
        (root / "Mini" / "HR").mkdir(parents=True, exist_ok=True)
        Image.fromarray(hr).save(root / "Mini" / "HR" / path.name)
        for s in (2, 3, 4):
            folder = root / "Mini" / "LR_bicubic" / f"X{s}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(downscale(hr, s)).save(folder / f"{path.stem}x{s}.png")
    return root


def config_of(module: str, argument: str, mini_root: Path, **overrides):
    """configs/<module>.py:<argument> on tiny inputs (the Mini set, 8x8 LR patches)."""
    config = importlib.import_module(f"configs.{module}").get_config(argument)
    config.data.train_source = "paired"
    config.data.train_path = str(mini_root / "Mini")
    config.data.eval_root = str(mini_root)
    config.data.eval_sets = ("Mini",)
    config.data.patch_size = 8
    config.data.cache_images = True
    config.data.steps_per_epoch = 2
    config.batch_size = 8
    config.init_from = ""
    config.progress_bar = False
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


# ---------------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("length", [1, 5, 17, 40, 97])
@pytest.mark.parametrize("core,margin", [(0, 3), (1, 0), (4, 2), (7, 5), (16, 16), (50, 1)])
def test_tiles_partition_the_axis_and_hold_their_context(length, core, margin):
    window, tiles = plan_axis(length, core, margin)
    assert window == min((core or length) + 2 * margin, length)
    covered = []
    for start, end, left in tiles:
        covered += range(start, end)
        assert 0 <= left and left + window <= length
        assert start - left >= margin or left == 0
        assert left + window - end >= margin or left + window == length
    assert covered == list(range(length))


def small_models():
    """Random small models of both families, with nonzero outputs everywhere."""
    small = dict(features=8, variant="adder", impl="reference", rngs=nnx.Rngs(0))
    vdsr = VDSR(scale=2, depth=5, **small)
    vdsr.output = nnx.Conv(8, 1, (3, 3), padding=1, use_bias=False, rngs=nnx.Rngs(1))
    edsr = EDSR(scale=2, num_blocks=1, **small)
    for model in (vdsr, edsr):
        model.eval()
    return {"vdsr": vdsr, "edsr": edsr}


def whole_image_metrics(model, records, scale):
    outputs = [model(jnp.asarray(r["lr"][None], jnp.float32))[0] for r in records]
    psnr = np.mean([float(psnr_y(o, r["hr"], scale)) for o, r in zip(outputs, records)])
    ssim = np.mean([float(ssim_y(o, r["hr"], scale)) for o, r in zip(outputs, records)])
    return outputs, psnr, ssim


@pytest.mark.parametrize("family", ["vdsr", "edsr"])
def test_tiled_evaluation_equals_whole_image_evaluation(family, mini_root):
    """The task's jitted tile sums, sharded over 8 devices, give the whole images' PSNR and
    SSIM for any tile size; and assembled tiles are the whole image's output."""
    model = small_models()[family]
    source = PairedSRSource(mini_root / "Mini", 2)
    records = [source[i] for i in range(len(source))]
    outputs, psnr, ssim = whole_image_metrics(model, records, 2)
    task = SuperResolution(config_of("sr_tiny", "adder", mini_root))
    task.eval_sizes["Mini"] = len(records)
    mesh = parallel.create_mesh()
    margin = eval_margin(model.receptive_radius, 2)
    for tile in (0, 5):
        evaluation = tiled_eval_data(records, 2, core=tile, margin=margin, batch_size=5)
        results = evaluate_set(task, {"model": model}, evaluation, mesh, "Mini")
        assert results["count"] == 3
        assert results["psnr"] == pytest.approx(psnr, abs=1e-4), tile
        assert results["ssim"] == pytest.approx(ssim, abs=1e-6), tile
        tiled = super_resolve(model, [r["lr"] for r in records], 2, core=tile,
                              margin=model.receptive_radius, batch_size=3, mesh=mesh)
        for ours, whole in zip(tiled, outputs):
            np.testing.assert_allclose(ours, whole, atol=2e-3)


def test_too_small_a_margin_is_not_exact(mini_root):
    """The check above can fail: with margin 0 the tile borders show."""
    model = small_models()["edsr"]
    record = PairedSRSource(mini_root / "Mini", 2)[2]
    whole = model(jnp.asarray(record["lr"][None], jnp.float32))[0]
    tiled = super_resolve(model, [record["lr"]], 2, core=4, margin=0, batch_size=8,
                          mesh=parallel.create_mesh())[0]
    assert np.abs(tiled - np.asarray(whole)).max() > 1.0


# ---------------------------------------------------------------------------- training steps
def make_task(config):
    validate_config(config)
    task = get_task(config.task)(config)
    pipes = task.create_pipelines()
    return task, pipes, task.create_state(pipes.steps_per_epoch)


def first_batch(pipes):
    return parallel.global_batch(parallel.create_mesh(), next(iter(pipes.train)))


@pytest.mark.parametrize("argument", ["adder", "cnn"])
def test_one_training_step_lowers_the_loss_on_its_batch(argument, mini_root):
    """sr_tiny: two real steps on one batch (8 devices); the second loss is lower. (A small
    rate: Adam's first step is lr * sign(gradient), a descent step only while it is small.)"""
    task, pipes, state = make_task(config_of("sr_tiny", argument, mini_root,
                                             **{"optimizer.learning_rate": 1e-5}))
    batch = first_batch(pipes)
    assert batch["lr"].shape == (8, 8, 8, 3) and batch["hr"].shape == (8, 16, 16, 3)
    step = jit_train_step(task)
    graphdef, arrays = nnx.split(state)
    arrays, first = step(graphdef, arrays, batch)
    arrays, second = step(graphdef, arrays, batch)
    assert np.isfinite(float(first["loss"])) and float(second["loss"]) < float(first["loss"])
    alphas = [v for p, v in nnx.to_flat_state(arrays["model"]) if p[-1] == "alpha"]
    assert len(alphas) == (18 if argument == "adder" else 0)
    if argument == "adder":  # alpha trained, within its clip range
        values = np.array([float(a.get_value()) for a in alphas])
        assert np.all((values >= 0.1) & (values <= 3.0)) and np.any(values != 1.0)


CONFIGS = [("sr_vdsr_x2", "adder"), ("sr_vdsr_x2", "cnn"), ("sr_vdsr_x3", "adder"),
           ("sr_vdsr_x4", "cnn"), ("sr_edsr_baseline_x2", "adder"),
           ("sr_edsr_baseline_x2", "cnn"), ("sr_edsr_x2", "adder"), ("sr_edsr_x2", "cnn"),
           ("sr_vdsr_x2_cpu", "adder"), ("sr_vdsr_x2_cpu", "cnn"), ("sr_tiny", "cnn,edsr_baseline")]


@pytest.mark.parametrize("module,argument", CONFIGS)
def test_every_config_builds_and_traces_a_training_step(module, argument, mini_root):
    """Every SR config on tiny inputs: its checks, data, state and train step (traced, not
    compiled: the adder EDSR's compile alone takes minutes on 2 CPU cores)."""
    task, pipes, state = make_task(config_of(module, argument, mini_root))
    batch = first_batch(pipes)
    scale = task.config.data.scale
    assert batch["hr"].shape[1:] == (8 * scale, 8 * scale, 3)
    graphdef, arrays = nnx.split(state)
    _, metrics = jax.eval_shape(jit_train_step(task), graphdef, arrays, batch)
    assert metrics["loss"].shape == () and task.model_inputs(batch) is batch["lr"]


def test_edsr_baseline_adder_step_runs(mini_root):
    task, pipes, state = make_task(config_of("sr_tiny", "adder,edsr_baseline", mini_root))
    graphdef, arrays = nnx.split(state)
    _, metrics = jit_train_step(task)(graphdef, arrays, first_batch(pipes))
    assert np.isfinite(float(metrics["loss"]))


# ----------------------------------------------------------------------------- config checks
@pytest.mark.parametrize("override,message", [
    ({"model.name": "resnet20"}, "is not a super-resolution model"),
    ({"model.name": "edsr_baseline", "data.scale": 5}, "scale of 3 or a power of 2"),
    ({"data.train_path": "/nonexistent"}, "config.data.train_path = '/nonexistent' is not a"),
    ({"data.train_source": "web"}, "config.data.train_source = 'web' is not one of"),
    ({"data.eval_sets": ("Set6",)}, "Set6 is not a directory"),
    ({"data.eval_tile": -1}, "config.data.eval_tile = -1 must be >= 0"),
    ({"model.colour": "lab"}, "colour must be one of"),
])
def test_config_errors_name_the_field(override, message, mini_root):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(config_of("sr_tiny", "adder", mini_root, **override))


def test_best_checkpoint_metric_is_psnr_on_the_first_set(mini_root):
    task = SuperResolution(config_of("sr_tiny", "adder", mini_root))
    assert (task.best.split, task.best.key, task.best.mode) == ("Mini", "psnr", "max")
    assert task.model_specs()["model"] == {"model": "vdsr", "variant": "adder", "scale": 2,
                                           "colour": "y", "per_channel_alpha": False}


# ----------------------------------------------------------------------- resume after a kill
def environment(cache: Path) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)
    return env


def train_command(workdir: Path, mini_root: Path) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--config=configs/sr_tiny.py:adder",
            f"--workdir={workdir}", f"--config.data.train_path={mini_root / 'Mini'}",
            f"--config.data.eval_root={mini_root}", "--config.data.eval_sets=('Mini',)",
            "--config.num_train_steps=8", "--config.checkpoint_every_steps=2"]


def model_arrays(workdir: Path) -> dict:
    from addernet_jax.runtime.checkpoints import WorkdirReader

    with WorkdirReader(workdir) as reader:
        step = reader.steps()[-1]
        model = create_model("vdsr", variant="adder", scale=2, rngs=nnx.Rngs(5))
        reader.restore_model(step, model)
    return step, {"/".join(map(str, p)): np.asarray(v.get_value())
                  for p, v in nnx.to_flat_state(nnx.state(model))}


def test_resume_after_a_kill_equals_an_uninterrupted_run(mini_root, tmp_path):
    env = environment(tmp_path / "cache")
    whole = subprocess.run(train_command(tmp_path / "whole", mini_root), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    process = subprocess.Popen(train_command(tmp_path / "run", mini_root), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = tmp_path / "run" / "checkpoints" / "2"
    while not first.exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(train_command(tmp_path / "run", mini_root), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr + resumed.stdout
    (step, ours), (whole_step, theirs) = model_arrays(tmp_path / "run"), model_arrays(
        tmp_path / "whole")
    assert step == whole_step == 8 and ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("run", "whole")]
    assert summaries[0]["final_psnr"] == summaries[1]["final_psnr"]


# ------------------------------------------------------------------------------- evaluate.py
@pytest.fixture(scope="module")
def edsr_checkpoint(tmp_path_factory) -> Path:
    """A random EDSR baseline (cnn) as a model checkpoint: its output is not bicubic."""
    directory = tmp_path_factory.mktemp("edsr") / "edsr_baseline"
    model = create_model("edsr_baseline", variant="cnn", scale=2, rngs=nnx.Rngs(0))
    save_model_checkpoint(directory, nnx.state(model), {
        "model": "edsr_baseline", "variant": "cnn", "scale": 2, "per_channel_alpha": False})
    return directory


def run_evaluate(capsys, *args):
    evaluate_cli = importlib.import_module("addernet_jax.cli.evaluate")
    status = evaluate_cli.main([*args, "--no-progress"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_evaluate_sr_checkpoint_on_set5_end_to_end(edsr_checkpoint, sr_root, tmp_path, capsys):
    common = ["--checkpoint", str(edsr_checkpoint), "--local-path", str(sr_root),
              "--sets", "Set5"]
    status, out, err = run_evaluate(capsys, *common, "--tile-size", "0", "--json",
                                    "--output-dir", str(tmp_path / "out"), "--save-images")
    assert status == 0, err
    whole = json.loads(out)
    set5 = whole["sets"][0]
    assert set5["set"] == "Set5" and set5["images"] == 5 and whole["scale"] == 2
    # Bicubic: the published Set5 x2 baseline, as tests/test_sr_metrics.py measures it.
    assert set5["bicubic_psnr"] == pytest.approx(33.6734, abs=0.01)
    assert set5["bicubic_ssim"] == pytest.approx(0.93029, abs=1e-4)
    assert 5 < set5["psnr"] < set5["bicubic_psnr"]  # a random EDSR is far worse than bicubic
    written = sorted(Path(p).relative_to(tmp_path / "out").as_posix() for p in whole["written"])
    assert written[0] == "Set5/x2/baby.png" and written[-1] == "Set5_x2_comparison.png"
    assert len(written) == 6
    with Image.open(tmp_path / "out" / "Set5" / "x2" / "bird.png") as image:
        assert image.size == (288, 288) and image.mode == "RGB"
    # Tiles of 40 LR pixels: the same numbers as whole images.
    status, out, err = run_evaluate(capsys, *common, "--tile-size", "40", "--json")
    assert status == 0, err
    tiled = json.loads(out)["sets"][0]
    assert tiled["psnr"] == pytest.approx(set5["psnr"], abs=1e-4)
    assert tiled["ssim"] == pytest.approx(set5["ssim"], abs=1e-6)
    # The human-readable table, laid out as the seed README's.
    status, out, err = run_evaluate(capsys, *common, "--tile-size", "40")
    assert status == 0, err
    assert "| Scale | Model | Method | Set5 |" in out
    assert "| x2 | EDSR baseline | Bicubic | 33.67/0.9303 |" in out
    assert "| x2 | EDSR baseline | CNN | " in out


def test_evaluate_sr_errors_are_one_line(edsr_checkpoint, sr_root, capsys):
    status, _, err = run_evaluate(capsys, "--checkpoint", str(edsr_checkpoint))
    assert status == 2 and "needs --local-path" in err and err.count("\n") == 1
    status, _, err = run_evaluate(capsys, "--checkpoint", str(edsr_checkpoint), "--local-path",
                                  str(sr_root), "--sets", "Set6")
    assert status == 2 and "Set6 is not a directory" in err and err.count("\n") == 1
