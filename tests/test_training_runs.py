"""train.py as a user runs it, in subprocesses: device counts, two processes, kill and resume,
SIGTERM, NaN, bad flags, offline without data."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = Path(__file__).resolve().parents[1]


def train_command(workdir, shared_dir, *overrides, config="configs/tiny.py"):
    return [
        sys.executable,
        str(REPO / "train.py"),
        f"--config={config}",
        f"--workdir={workdir}",
        "--config.data.source=local",
        f"--config.data.local_path={shared_dir / 'data' / 'mnist'}",
        *overrides,
    ]


def environment(devices: int) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


def run_train(workdir, shared_dir, *overrides, devices=1, timeout=600, **kwargs):
    return subprocess.run(
        train_command(workdir, shared_dir, *overrides),
        cwd=REPO,
        env=environment(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def final_state(workdir: Path):
    """The model arrays of the latest checkpoint, as numpy."""
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(steps[-1]) / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return steps[-1], state["model"]


def train_losses(workdir: Path) -> list[float]:
    return [
        record["loss"]
        for record in map(json.loads, (workdir / "metrics.jsonl").open())
        if record["split"] == "train"
    ]


def assert_same_state(a, b, **tolerance):
    flat_a = {k: v for k, v in _flatten(a)}
    flat_b = {k: v for k, v in _flatten(b)}
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        if tolerance:
            np.testing.assert_allclose(flat_a[key], flat_b[key], err_msg=key, **tolerance)
        else:
            np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}")
    else:
        yield prefix, np.asarray(tree)


def test_one_device_and_eight_devices_give_the_same_loss_curve(shared_dir, tmp_path):
    steps = ["--config.num_train_steps=5", "--config.checkpoint_every_steps=100"]
    for devices in (1, 8):
        result = run_train(tmp_path / f"d{devices}", shared_dir, *steps, devices=devices)
        assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        train_losses(tmp_path / "d8"), train_losses(tmp_path / "d1"), rtol=1e-5
    )
    assert len(train_losses(tmp_path / "d1")) == 5
    assert_same_state(
        final_state(tmp_path / "d8")[1], final_state(tmp_path / "d1")[1], rtol=1e-4, atol=1e-5
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(shared_dir, tmp_path):
    """Two processes (coordinator on 127.0.0.1), one CPU device each, each feeding its half of
    every global batch, end with the parameters of one process with two devices."""
    steps = ["--config.num_train_steps=4", "--config.checkpoint_every_steps=2"]
    port = free_port()
    processes = [
        subprocess.Popen(
            train_command(
                tmp_path / "multi",
                shared_dir,
                *steps,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            cwd=REPO,
            env=environment(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    single = run_train(tmp_path / "single", shared_dir, *steps, devices=2)
    assert single.returncode == 0, single.stderr[-3000:]
    np.testing.assert_allclose(
        train_losses(tmp_path / "multi"), train_losses(tmp_path / "single"), rtol=1e-5
    )
    step, multi_state = final_state(tmp_path / "multi")
    assert step == 4
    assert_same_state(multi_state, final_state(tmp_path / "single")[1], rtol=1e-5, atol=1e-6)


LONG_RUN = [
    "--config.num_train_steps=600",
    "--config.checkpoint_every_steps=50",
    "--config.log_every_steps=50",
]


@pytest.fixture(scope="module")
def uninterrupted(shared_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run_train(workdir, shared_dir, *LONG_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return final_state(workdir)


def interrupt_after_first_checkpoint(workdir, shared_dir, signum):
    """Starts the long run, sends `signum` once its first checkpoint is complete; returns the
    finished process and its stderr."""
    process = subprocess.Popen(
        train_command(workdir, shared_dir, *LONG_RUN),
        cwd=REPO,
        env=environment(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = workdir / "checkpoints" / "50"
    while not first.exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=600)
    return process, stderr


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "sigterm"])
def test_interrupted_run_resumes_to_the_same_parameters(
    uninterrupted, shared_dir, tmp_path, signum
):
    workdir = tmp_path / "run"
    process, stderr = interrupt_after_first_checkpoint(workdir, shared_dir, signum)
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    else:
        assert process.returncode == 143, stderr[-3000:]
        assert "SIGTERM at step" in stderr and "checkpoint saved" in stderr
    interrupted_at, _ = final_state(workdir)
    assert 50 <= interrupted_at < 600
    resumed = run_train(workdir, shared_dir, *LONG_RUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {interrupted_at}" in resumed.stderr + resumed.stdout
    step, state = final_state(workdir)
    assert step == uninterrupted[0] == 600
    assert_same_state(state, uninterrupted[1])


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(shared_dir, tmp_path):
    result = run_train(
        tmp_path / "run",
        shared_dir,
        "--config.num_train_steps=20",
        "--config.optimizer.learning_rate=1e30",
        "--config.schedule.name=constant",
    )
    assert result.returncode == 1
    assert "non-finite" in result.stderr or "training loss is" in result.stderr
    assert "at step" in result.stderr
    steps = sorted(
        int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()
    )
    _, state = final_state(tmp_path / "run")
    assert all(np.all(np.isfinite(v)) for _, v in _flatten(state))
    assert steps and steps[-1] < 20


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.bach_size=8", 'Did you mean "batch_size"'),
        ("--config.model.name=resnet21", "config.model.name = 'resnet21' is not one of"),
        ("--config.batch_size=abc", "flag --config.batch_size=abc"),
    ],
)
def test_bad_flags_exit_2_with_one_line(shared_dir, tmp_path, override, message):
    result = run_train(tmp_path / "run", shared_dir, override, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_offline_without_local_data_fails_fast_saying_how_to_use_local_files(tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config=configs/mnist_lenet5.py",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.data_dir={tmp_path / 'empty'}",
        ],
        cwd=REPO,
        env=dict(environment(1), ADDERNET_MNIST_DIR=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "local_path" in result.stderr and "not prepared" in result.stderr
    assert time.monotonic() - start < 60
