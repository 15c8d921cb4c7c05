"""Workdirs and checkpoints that nothing can silently corrupt (issue 9), as a user meets them:
train.py and evaluate.py in subprocesses on real MNIST, and damaged or hostile files.

1. evaluate.py reading a workdir while train.py writes it: the run finishes intact.
2. A second train.py on a busy workdir is refused; a resume with another model, data or recipe
   is refused naming the fields.
3. NaN/Inf weights and negative BatchNorm variances are refused at conversion and at restore.
4. .pth files that ask for more memory than they hold are refused at once.
5. File-system failures are one line with their exit status; an unreadable latest checkpoint
   falls back to the intact one before it.
6. evaluate.py caps its batch at the dataset size.
"""

import contextlib
import json
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import nnx
from test_training_runs import REPO, environment, final_state, run_train, train_command

from addernet_jax.models import create_model
from addernet_jax.runtime.checkpoints import save_model_checkpoint

EXIT_NONFINITE, EXIT_USAGE, EXIT_FAILED = 1, 2, 3
RELEASED = "checkpoints/ResNet20-AdderNet.pth"


def one_line_error(result, program: str = "train.py") -> str:
    """The stderr of a failed command, checked to be exactly one error line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def run_script(script: str, *args, devices: int = 1, timeout: int = 600, **kwargs):
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO,
                          env=environment(devices), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def evaluate_workdir(workdir: Path, mnist_dir: Path, *extra):
    return run_script("evaluate.py", "--checkpoint", workdir, "--dataset", "mnist",
                      "--local-path", mnist_dir, "--batch-size", 3000, "--json",
                      "--no-progress", *extra)


def start_train(workdir: Path, shared_dir: Path, *overrides) -> subprocess.Popen:
    return subprocess.Popen(train_command(workdir, shared_dir, *overrides), cwd=REPO,
                            env=environment(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_checkpoint(workdir: Path, process: subprocess.Popen, step: int = 1) -> None:
    while not (workdir / "checkpoints" / str(step)).exists() and process.poll() is None:
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# 1-2. Readers never write; a workdir belongs to one run.


def test_evaluating_a_live_workdir_does_not_disturb_the_training(shared_dir, mnist_dir,
                                                                 tmp_path):
    workdir = tmp_path / "live"
    trainer = start_train(workdir, shared_dir, "--config.num_train_steps=120",
                          "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=2")
    wait_for_checkpoint(workdir, trainer)
    evaluated = []
    while trainer.poll() is None:
        result = evaluate_workdir(workdir, mnist_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        evaluated.append(json.loads(result.stdout)["step"])
    _, stderr = trainer.communicate(timeout=600)
    assert trainer.returncode == 0, stderr[-3000:]
    assert "Save failed" not in stderr
    assert evaluated, "the training ended before any evaluation"
    step, state = final_state(workdir)
    assert step == 120 and all(np.all(np.isfinite(v)) for v in jax_leaves(state))
    assert not any("tmp" in p.name for p in (workdir / "checkpoints").iterdir())


def jax_leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from jax_leaves(value)
    else:
        yield np.asarray(tree)


def test_a_second_run_on_a_busy_workdir_is_refused(shared_dir, tmp_path):
    workdir = tmp_path / "busy"
    first = start_train(workdir, shared_dir, "--config.num_train_steps=300",
                        "--config.checkpoint_every_steps=100")
    wait_for_checkpoint(workdir, first, 100)
    start = time.monotonic()
    second = run_train(workdir, shared_dir, "--config.num_train_steps=300")
    assert time.monotonic() - start < 60
    assert second.returncode == EXIT_FAILED
    assert f"workdir {workdir} is in use by train.py pid {first.pid}" in one_line_error(second)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 300
    assert final_state(workdir)[0] == 300


def test_a_killed_run_leaves_no_lock_behind(shared_dir, tmp_path):
    workdir = tmp_path / "killed"
    process = start_train(workdir, shared_dir, "--config.num_train_steps=600",
                          "--config.checkpoint_every_steps=50")
    wait_for_checkpoint(workdir, process, 50)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=600)
    resumed = run_train(workdir, shared_dir, "--config.num_train_steps=600",
                        "--config.checkpoint_every_steps=50")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def trained_workdir(shared_dir, workdir: Path, *overrides) -> Path:
    result = run_train(workdir, shared_dir, "--config.num_train_steps=4",
                       "--config.checkpoint_every_steps=1", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def cnn_workdir(shared_dir, tmp_path_factory) -> Path:
    return trained_workdir(shared_dir, tmp_path_factory.mktemp("cnn") / "run",
                           "--config.model.variant=cnn")


def copy_of(workdir: Path, tmp_path: Path) -> Path:
    target = tmp_path / workdir.name
    subprocess.run(["cp", "-a", str(workdir), str(target)], check=True)
    return target


@pytest.mark.parametrize(("override", "named"), [
    ("--config.model.variant=adder", "model.variant: 'cnn' -> 'adder'"),
    ("--config.model.name=resnet20", "model.name: 'lenet5' -> 'resnet20'"),
    ("--config.data.dataset=cifar10", "data.dataset: 'mnist' -> 'cifar10'"),
])
def test_resuming_with_another_model_or_data_is_refused(cnn_workdir, shared_dir, tmp_path,
                                                        override, named):
    workdir = copy_of(cnn_workdir, tmp_path)
    before = final_state(workdir)
    result = run_train(workdir, shared_dir, "--config.num_train_steps=8",
                       "--config.model.variant=cnn", override, "--allow_config_change")
    assert result.returncode == EXIT_USAGE
    assert named in one_line_error(result)
    step, state = final_state(workdir)
    assert step == before[0] == 4
    for ours, theirs in zip(jax_leaves(state), jax_leaves(before[1])):
        np.testing.assert_array_equal(ours, theirs)


def test_resuming_with_a_changed_recipe_needs_a_flag(cnn_workdir, shared_dir, tmp_path):
    workdir = copy_of(cnn_workdir, tmp_path)
    common = ["--config.model.variant=cnn", "--config.num_train_steps=6"]
    refused = run_train(workdir, shared_dir, *common, "--config.optimizer.learning_rate=0.05")
    assert refused.returncode == EXIT_USAGE
    message = one_line_error(refused)
    assert "optimizer.learning_rate: 0.1 -> 0.05" in message and "--allow_config_change" in message
    accepted = run_train(workdir, shared_dir, *common, "--config.optimizer.learning_rate=0.05",
                         "--allow-config-change")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    output = accepted.stdout + accepted.stderr
    assert "resuming with a changed config: optimizer.learning_rate: 0.1 -> 0.05" in output
    assert "resuming with a changed config: num_train_steps: 4 -> 6" in output
    assert final_state(workdir)[0] == 6


# ---------------------------------------------------------------------------------------------
# 3. Non-finite weights and negative variances are refused where they enter.


@pytest.fixture(scope="module")
def released_state(shared_dir):
    return torch.load(shared_dir / RELEASED, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("module.layer2.1.conv2.adder", float("nan"), "layer2/1/conv2/kernel holds 1 non-finite"),
    ("module.bn1.running_var", float("inf"), "bn1/var holds 1 non-finite"),
    ("module.layer1.0.bn1.running_var", -0.5, "layer1/0/bn1/var (a BatchNorm variance) holds "
                                               "negative values"),
])
def test_conversion_refuses_bad_values(released_state, tmp_path, key, value, named):
    state = {k: v.clone() for k, v in released_state.items()}
    state[key].view(-1)[3] = value
    torch.save(state, tmp_path / "bad.pth")
    result = run_script("convert_torch_weights.py", "--input", tmp_path / "bad.pth", "--output",
                        tmp_path / "out", "--model", "resnet20")
    assert result.returncode == EXIT_FAILED
    assert named in one_line_error(result, "convert_torch_weights.py")
    assert not (tmp_path / "out").exists()


def lenet_checkpoint(directory: Path, edit=None) -> Path:
    model = create_model("lenet5", num_classes=10, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    if edit:
        edit(state)
    save_model_checkpoint(directory, state, {"model": "lenet5", "variant": "adder",
                                             "num_classes": 10})
    return directory


def test_restore_refuses_non_finite_weights(mnist_dir, tmp_path):
    def poison(state):
        state["fc1"]["kernel"][...] = state["fc1"]["kernel"][...].at[0, 0, 0, 0].set(np.nan)

    checkpoint = lenet_checkpoint(tmp_path / "nan", poison)
    result = evaluate_workdir(checkpoint, mnist_dir)
    assert result.returncode == EXIT_FAILED
    assert "fc1/kernel holds 1 non-finite value" in one_line_error(result, "evaluate.py")


def test_init_from_refuses_a_negative_variance(shared_dir, tmp_path):
    def negative(state):
        state["bn2"]["var"][...] = -state["bn2"]["var"][...]

    checkpoint = lenet_checkpoint(tmp_path / "neg", negative)
    result = run_train(tmp_path / "run", shared_dir, f"--config.init_from={checkpoint}")
    assert result.returncode == EXIT_FAILED
    assert "bn2/var (a BatchNorm variance) holds negative values" in one_line_error(result)


def test_damaged_model_checkpoints_are_one_line_errors(mnist_dir, tmp_path):
    broken_json = lenet_checkpoint(tmp_path / "json")
    (broken_json / "model_info.json").write_text('{"model": "lenet5", "vari')
    result = evaluate_workdir(broken_json, mnist_dir)
    assert result.returncode == EXIT_FAILED
    assert "model_info.json is not readable JSON" in one_line_error(result, "evaluate.py")

    damaged = lenet_checkpoint(tmp_path / "bytes")
    for path in sorted(p for p in (damaged / "model").rglob("*") if p.is_file()):
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    result = evaluate_workdir(damaged, mnist_dir)
    assert result.returncode == EXIT_FAILED
    assert "cannot read the model checkpoint" in one_line_error(result, "evaluate.py")


# ---------------------------------------------------------------------------------------------
# 4. The safe .pth reader bounds what a file can ask for.


def limited_memory():
    """In the child: 6 GiB of address space, enough for Python and JAX, not for 2^40 floats."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


@pytest.mark.parametrize("elements", [2**40, 2**28])
def test_a_tensor_declaring_huge_storage_is_refused_at_once(tmp_path, elements):
    torch.save({"conv1.weight": torch.zeros(1).expand(elements)}, tmp_path / "huge.pth")
    assert (tmp_path / "huge.pth").stat().st_size < 4096
    start = time.monotonic()
    code = ("from addernet_jax.convert.torch_pickle import load_torch_state_dict as load\n"
            f"load({str(tmp_path / 'huge.pth')!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            preexec_fn=limited_memory, timeout=120)
    assert "refusing to expand it" in result.stderr and "MemoryError" not in result.stderr
    assert time.monotonic() - start < 30  # mostly the interpreter start


def test_a_zip_record_declaring_gigabytes_is_refused_before_reading(released_state, tmp_path):
    torch.save({"fc.weight": torch.zeros(10, 64, 1, 1)}, tmp_path / "small.pth")
    with zipfile.ZipFile(tmp_path / "small.pth") as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    raw = bytearray(bomb.read_bytes())
    central = raw.find(b"PK\x01\x02")  # the central directory: one entry per record
    while not raw[central + 46: central + 46 + int.from_bytes(raw[central + 28: central + 30],
                                                               "little")].endswith(b"data.pkl"):
        central = raw.find(b"PK\x01\x02", central + 4)
    raw[central + 24: central + 28] = (2 << 30).to_bytes(4, "little")  # 2 GiB declared
    bomb.write_bytes(bytes(raw))
    from addernet_jax.convert.torch_pickle import CheckpointFormatError, load_torch_state_dict

    start = time.monotonic()
    with pytest.raises(CheckpointFormatError, match="declares 2147483648 bytes, implausible"):
        load_torch_state_dict(bomb)
    assert time.monotonic() - start < 1


# ---------------------------------------------------------------------------------------------
# 5. File-system failures: one line, the documented exit status.


def test_workdir_that_is_a_file(shared_dir, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = run_train(tmp_path / "file", shared_dir)
    assert result.returncode == EXIT_USAGE
    assert "is not a directory" in one_line_error(result)


def test_missing_config_file(shared_dir, tmp_path):
    result = run_script("train.py", "--config=configs/nowhere.py", f"--workdir={tmp_path}/run")
    assert result.returncode == EXIT_USAGE
    assert "configs/nowhere.py" in one_line_error(result)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "512k", read_only: bool = False):
    """A tmpfs of `size` mounted at `path` (the test machines run as root)."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_workdir(shared_dir, tmp_path):
    with small_filesystem(tmp_path / "ro", read_only=True) as mount:
        result = run_train(mount / "run", shared_dir)
    assert result.returncode == EXIT_FAILED
    assert "not writable" in one_line_error(result)


def test_full_disk(shared_dir, tmp_path):
    with small_filesystem(tmp_path / "full", size="400k") as mount:
        result = run_train(mount / "run", shared_dir, "--config.num_train_steps=20")
        assert result.returncode == EXIT_FAILED
        assert "no space left on the device" in one_line_error(result)


def test_truncated_latest_checkpoint_falls_back_to_the_previous_step(shared_dir, mnist_dir,
                                                                     tmp_path):
    workdir = trained_workdir(shared_dir, tmp_path / "run")
    latest = workdir / "checkpoints" / "4" / "state"
    for path in sorted(p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 100):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    evaluated = evaluate_workdir(workdir, mnist_dir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["step"] == 3
    assert "checkpoint step 4" in evaluated.stderr and "trying the previous one" in evaluated.stderr
    resumed = run_train(workdir, shared_dir, "--config.num_train_steps=6",
                        "--config.checkpoint_every_steps=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "resumed from step 3" in output and "4.unreadable-0" in output
    assert (workdir / "checkpoints" / "4.unreadable-0").is_dir()  # kept, not deleted
    assert final_state(workdir)[0] == 6


def test_no_orbax_tracked_metric_warning_and_no_duplicate_records(cnn_workdir, shared_dir,
                                                                  tmp_path):
    workdir = copy_of(cnn_workdir, tmp_path)
    result = run_train(workdir, shared_dir, "--config.model.variant=cnn",
                       "--config.num_train_steps=6", "--config.checkpoint_every_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tracked_metric" not in result.stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------
# 6-7. evaluate.py: the batch is capped at the dataset; its hints name its own flags.


def test_batch_larger_than_the_dataset_is_capped(mnist_dir, tmp_path):
    checkpoint = lenet_checkpoint(tmp_path / "lenet")
    start = time.monotonic()
    result = run_script("evaluate.py", "--checkpoint", checkpoint, "--dataset", "mnist",
                        "--local-path", mnist_dir, "--batch-size", 1_000_000, "--json",
                        "--no-progress", devices=8, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    assert results["batch_size"] == 3000 and results["count"] == 3000
    assert time.monotonic() - start < 180


def test_offline_hint_names_evaluate_flags(tmp_path):
    checkpoint = lenet_checkpoint(tmp_path / "lenet")
    result = run_script("evaluate.py", "--checkpoint", checkpoint, "--dataset", "mnist",
                        "--data-dir", tmp_path / "empty", "--no-progress")
    assert result.returncode == EXIT_USAGE
    message = one_line_error(result, "evaluate.py")
    assert "--local-path=/path/to/mnist" in message and "--data-dir=DIR" in message
    assert "--config." not in message


def test_usage_and_failure_codes_are_documented():
    readme = (REPO / "README.md").read_text()
    for line in ("| 1 |", "| 2 |", "| 3 |", "| 143 |"):
        assert line in readme
