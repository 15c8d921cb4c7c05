"""evaluate.py: the released ResNet-20 on all 10,000 CIFAR-10 test JPEGs against the PyTorch
re-implementation, the three kinds of checkpoint, exact counting with a padded last batch on 8
devices, JSON output, and clear errors."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
import optax
import pytest
import torch
import torch_official_models as official
from flax import nnx
from PIL import Image

from addernet_jax.models import create_model
from addernet_jax.runtime.checkpoints import save_model_checkpoint
from addernet_jax.training.checkpoints import TrainingCheckpoints

REPO = Path(__file__).resolve().parents[1]
RELEASED = "checkpoints/ResNet20-AdderNet.pth"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # official main.py
TORCH_CHUNK = 1000  # images per PyTorch forward: larger is faster (fewer compiled-call overheads)
JSON_KEYS = {
    "top1",
    "top5",
    "loss",
    "count",
    "images_per_sec",
    "seconds",
    "checkpoint",
    "kind",
    "step",
    "model",
    "variant",
    "num_classes",
    "dataset",
    "split",
    "batch_size",
    "devices",
    "impl",
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_cli = load_script("evaluate")
convert_cli = load_script("convert_torch_weights")


def run_json(capsys, *args: str) -> dict:
    """evaluate.py --json --no-progress in this process (8 CPU devices); the parsed output."""
    assert evaluate_cli.main([*args, "--json", "--no-progress"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one JSON object on one line
    results = json.loads(out)
    assert set(results) == JSON_KEYS
    return results


def run_error(capsys, *args: str) -> str:
    """evaluate.py with bad arguments: exit status 2 (a usage error) and one line on stderr,
    returned."""
    assert evaluate_cli.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# The released ResNet-20 on the real CIFAR-10 test set.


@pytest.fixture(scope="module")
def cifar_root(shared_dir) -> Path:
    return shared_dir / "data" / "cifar10-jpeg"


@pytest.fixture(scope="module")
def converted(shared_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("evaluate") / "resnet20"
    assert (
        convert_cli.main(
            ["--input", str(shared_dir / RELEASED), "--output", str(output), "--model", "resnet20"]
        )
        == 0
    )
    return output


def image_folder_files(split_dir: Path) -> list[tuple[Path, int]]:
    """(file, label) in ImageFolder order: sorted class folders, sorted files."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    return [(f, label) for label, c in enumerate(classes) for f in sorted(c.iterdir())]


@pytest.fixture(scope="module")
def torch_predictions(shared_dir, cifar_root):
    """The official PyTorch ResNet-20 (fast adder formulation) on all 10,000 test JPEGs, decoded
    with PIL and normalised as the official main.py: (predicted classes, labels)."""
    files = image_folder_files(cifar_root / "test")
    labels = np.array([label for _, label in files])
    model = official.resnet20()
    state = torch.load(shared_dir / RELEASED, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    official.set_formulation(model.eval(), "fast")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    predictions = []
    with torch.no_grad():
        for start in range(0, len(files), TORCH_CHUNK):
            images = np.stack(
                [
                    np.asarray(Image.open(f).convert("RGB"))
                    for f, _ in files[start : start + TORCH_CHUNK]
                ]
            )
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
            predictions.append(model(((x - mean) / std).contiguous()).argmax(1).numpy())
    return np.concatenate(predictions), labels


def test_released_resnet20_top1_on_all_10000_test_images_equals_pytorch(
    converted, cifar_root, torch_predictions, capsys
):
    # Batch 256 over 8 devices: 39 full batches and a last one with 16 real images.
    results = run_json(
        capsys,
        "--checkpoint",
        str(converted),
        "--dataset",
        "cifar10",
        "--local-path",
        str(cifar_root),
        "--batch-size",
        "256",
    )
    predicted, labels = torch_predictions
    torch_top1 = float(np.mean(predicted == labels))
    print(
        f"\nJAX top-1 {results['top1']:.4%} (top-5 {results['top5']:.4%}), PyTorch top-1 "
        f"{torch_top1:.4%}, {results['images_per_sec']:.0f} images/s"
    )
    assert results["count"] == 10_000 and results["devices"] == 8
    assert round(results["top1"] * 10_000) == round(torch_top1 * 10_000)
    # 80.83%: the paper's 91.84% is on the original pixels; JPEG (quality 75, 4:2:0 chroma) of
    # 32x32 images costs ~11 points (the same model gets ~85% on the training JPEGs).
    assert 0.79 < results["top1"] < 0.83
    assert results["top5"] > results["top1"] + 0.1


def test_pth_file_is_evaluated_in_memory(
    shared_dir, cifar_root, torch_predictions, tmp_path, capsys
):
    # A 100-image ImageFolder: the first 10 test images of every class (links, not copies).
    files = image_folder_files(cifar_root / "test")
    chosen = [i for i, (f, label) in enumerate(files) if i - 1000 * label < 10]
    for i in chosen:
        link = tmp_path / "data" / "test" / files[i][0].parent.name / files[i][0].name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(files[i][0])
    results = run_json(
        capsys,
        "--checkpoint",
        str(shared_dir / RELEASED),
        "--model",
        "resnet20",
        "--dataset",
        "cifar10",
        "--local-path",
        str(tmp_path / "data"),
        "--batch-size",
        "32",
    )
    predicted, labels = torch_predictions
    assert results["count"] == 100 and results["kind"] == "pytorch file"
    assert results["top1"] == pytest.approx(np.mean(predicted[chosen] == labels[chosen]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing was written


# ---------------------------------------------------------------------------------------------
# MNIST with LeNet-5: exact counting, model checkpoints and training workdirs.


def lenet_state(seed: int, num_classes: int = 10) -> nnx.State:
    model = create_model("lenet5", num_classes=num_classes, rngs=nnx.Rngs(seed))
    return nnx.state(model)


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("lenet") / "lenet5"
    save_model_checkpoint(
        directory, lenet_state(seed=1), {"model": "lenet5", "variant": "adder", "num_classes": 10}
    )
    return directory


def test_partial_last_batch_counts_exactly_and_json_parses(lenet_checkpoint, mnist_dir, capsys):
    args = (
        "--checkpoint",
        str(lenet_checkpoint),
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
    )
    padded = run_json(capsys, *args, "--batch-size", "256")  # 11 full batches + 184 real images
    exact = run_json(capsys, *args, "--batch-size", "200")  # 15 full batches
    assert padded["count"] == exact["count"] == 3000
    assert padded["top1"] == exact["top1"] and padded["top5"] == exact["top5"]
    assert padded["loss"] == pytest.approx(exact["loss"], rel=1e-5)
    assert padded["top1"] * 3000 == pytest.approx(round(padded["top1"] * 3000))
    assert padded["kind"] == "model checkpoint" and padded["model"] == "lenet5"


def test_training_workdir_uses_its_best_step(lenet_checkpoint, mnist_dir, tmp_path, capsys):
    # Step 1 scored best; steps 2 and 3 hold other weights. Meta as train.py writes it.
    config = {"model": {"name": "lenet5", "variant": "adder"}, "data": {"dataset": "mnist"}}
    store = TrainingCheckpoints(tmp_path / "run")
    iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
    model = create_model("lenet5", num_classes=10, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    for step, seed, accuracy in ((1, 1, 0.9), (2, 2, 0.5), (3, 3, None)):
        meta = {"step": step, "best_accuracy": 0.9, "best_step": 1, "config": config}
        state = {"model": lenet_state(seed), "optimizer": nnx.state(optimizer)}
        store.save(step, state, iterator, meta, accuracy)
    store.close()
    args = ("--dataset", "mnist", "--local-path", str(mnist_dir), "--batch-size", "400")
    from_workdir = run_json(capsys, "--checkpoint", str(tmp_path / "run"), *args)
    same_weights = run_json(capsys, "--checkpoint", str(lenet_checkpoint), *args)  # seed 1
    assert from_workdir["kind"] == "training workdir" and from_workdir["step"] == 1
    assert from_workdir["top1"] == same_weights["top1"]
    assert from_workdir["loss"] == pytest.approx(same_weights["loss"], rel=1e-6)


def test_human_readable_output(lenet_checkpoint, mnist_dir, capsys):
    assert (
        evaluate_cli.main(
            [
                "--checkpoint",
                str(lenet_checkpoint),
                "--dataset",
                "mnist",
                "--local-path",
                str(mnist_dir),
                "--batch-size",
                "1000",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lenet5 (adder, 10 classes)" in out and "mnist test: 3000 images" in out
    assert "top-1 " in out and "top-5 " in out and "images/s" in out


def test_imagenet_image_folder_val_split(tmp_path, capsys):
    # An ImageFolder with 1000 class folders and val/ (as ImageNet's), 8 images of odd sizes; a
    # random ResNet-18 at --image-size 32 (resize 37, center crop 32) to keep it cheap.
    rng = np.random.default_rng(0)
    for label in range(1000):
        (tmp_path / "imagenet" / "val" / f"n{label:08d}").mkdir(parents=True)
    for i, label in enumerate((0, 1, 2, 3, 500, 998, 999, 999)):
        pixels = rng.integers(0, 256, (40 + i, 50 - i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "imagenet" / "val" / f"n{label:08d}" / f"{i}.png")
    model = create_model("resnet18", num_classes=1000, rngs=nnx.Rngs(0))
    save_model_checkpoint(
        tmp_path / "resnet18",
        nnx.state(model),
        {"model": "resnet18", "variant": "adder", "num_classes": 1000},
    )
    results = run_json(
        capsys,
        "--checkpoint",
        str(tmp_path / "resnet18"),
        "--dataset",
        "imagenet2012",
        "--split",
        "val",
        "--local-path",
        str(tmp_path / "imagenet"),
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--impl",
        "reference",
    )
    assert results["count"] == 8 and results["num_classes"] == 1000
    assert 0 <= results["top1"] <= results["top5"] <= 1


# ---------------------------------------------------------------------------------------------
# Errors: one line naming the problem, exit status 2 for a usage error.


def test_missing_checkpoint(mnist_dir, tmp_path, capsys):
    err = run_error(
        capsys,
        "--checkpoint",
        str(tmp_path / "nothing"),
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
        "--batch-size",
        "8",
    )
    assert f"checkpoint {tmp_path / 'nothing'} does not exist" in err


def test_directory_that_is_no_checkpoint(mnist_dir, tmp_path, capsys):
    err = run_error(
        capsys,
        "--checkpoint",
        str(tmp_path),
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
        "--batch-size",
        "8",
    )
    assert "is neither a model checkpoint" in err and "nor a training workdir" in err


def test_unknown_dataset(lenet_checkpoint, capsys):
    with pytest.raises(SystemExit) as info:
        evaluate_cli.main(["--checkpoint", str(lenet_checkpoint), "--dataset", "cifar11"])
    assert info.value.code == 2
    assert "invalid choice: 'cifar11'" in capsys.readouterr().err


def test_any_batch_size_counts_every_image_once(lenet_checkpoint, mnist_dir, capsys):
    """100 and 7 are not multiples of the 8 devices: batches are padded up, padding masked."""
    counts = []
    for batch_size in ("100", "7"):
        results = run_json(capsys, "--checkpoint", str(lenet_checkpoint), "--dataset", "mnist",
                           "--local-path", str(mnist_dir), "--batch-size", batch_size)
        counts.append((results["count"], results["top1"]))
    assert counts[0] == counts[1] and counts[0][0] == 3000
    assert "batch size must be positive" in run_error(
        capsys, "--checkpoint", str(lenet_checkpoint), "--dataset", "mnist", "--local-path",
        str(mnist_dir), "--batch-size", "0")


def test_number_of_classes_mismatch(mnist_dir, tmp_path, capsys):
    save_model_checkpoint(
        tmp_path / "lenet100",
        lenet_state(seed=0, num_classes=100),
        {"model": "lenet5", "variant": "adder", "num_classes": 100},
    )
    err = run_error(
        capsys,
        "--checkpoint",
        str(tmp_path / "lenet100"),
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
        "--batch-size",
        "8",
    )
    assert "has 100 classes but mnist has 10" in err


def test_pth_needs_a_model_name(shared_dir, mnist_dir, capsys):
    err = run_error(
        capsys,
        "--checkpoint",
        str(shared_dir / RELEASED),
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
        "--batch-size",
        "8",
    )
    assert "pass --model NAME" in err


def test_model_and_dataset_channels_must_agree(shared_dir, mnist_dir, capsys):
    err = run_error(
        capsys,
        "--checkpoint",
        str(shared_dir / RELEASED),
        "--model",
        "resnet20",
        "--dataset",
        "mnist",
        "--local-path",
        str(mnist_dir),
        "--batch-size",
        "8",
    )
    assert "resnet20 takes 3-channel images but mnist has 1" in err


def test_missing_local_data(lenet_checkpoint, tmp_path, capsys):
    err = run_error(
        capsys,
        "--checkpoint",
        str(lenet_checkpoint),
        "--dataset",
        "mnist",
        "--local-path",
        str(tmp_path / "nowhere"),
        "--batch-size",
        "8",
    )
    assert "nowhere is not a directory" in err


def test_no_traceback_from_the_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "evaluate.py"),
            "--checkpoint",
            str(tmp_path / "none"),
            "--dataset",
            "cifar10",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("does not exist") and "Traceback" not in result.stderr
