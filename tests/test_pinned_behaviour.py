"""The task redesign changed no result: the tiny config trains to the loss curve and parameters
recorded on `main` before it, and the classification task's step is the old step, bit for bit.

`tests/pinned/tiny_main.json` was written by `tests/pinned/record.py` on main at 86f7ac9 (before
the redesign), on the CPU it names. It was compared bit for bit on that CPU model until two CPU
speed-ups (LeNet-5's few-channel first convolution as shifted windows, its 5x5x6 adder kernel
fused whole) changed the float32 summation order; the recorded values are now compared to
float32 rounding, as they always were on other CPU models (XLA may pick other kernels there).
The second test below is bit-for-bit on any CPU: it runs the step of `main` (kept here
verbatim) and the classification task's jitted step from the same state on the same batches.
"""

import hashlib
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from addernet_jax.models import create_model
from addernet_jax.optim import adder_kernel_mask, adder_sgd
from addernet_jax.tasks import Classification, jit_train_step
from configs import default

PINNED = Path(__file__).parent / "pinned"


def load_recorder():
    spec = importlib.util.spec_from_file_location("record", PINNED / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads((PINNED / "tiny_main.json").read_text())


@pytest.mark.parametrize("variant", ["adder", "cnn"])
def test_tiny_config_reproduces_the_values_recorded_on_main(recorded, variant):
    recorder = load_recorder()
    now = recorder.record(variant)
    before = recorded["variants"][variant]
    assert len(now["losses"]) == len(before["losses"]) == recorded["steps"]
    np.testing.assert_allclose([float.fromhex(v) for v in now["losses"]],
                               [float.fromhex(v) for v in before["losses"]], rtol=1e-5)
    assert now["params_sum"].keys() == before["params_sum"].keys()
    for key, value in before["params_sum"].items():
        np.testing.assert_allclose(now["params_sum"][key], value, rtol=1e-4, atol=1e-3,
                                   err_msg=key)


def main_train_step(schedule):
    """`addernet_jax.training.steps.make_train_step` as it was on main at 86f7ac9."""

    def train_step(graphdef, state, batch):
        model, optimizer = nnx.merge(graphdef, state)
        model.train()

        def loss_fn(model):
            logits = model(batch["image"])
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch["label"])
            return loss.mean(), logits

        learning_rate = schedule(optimizer.step[...])
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"]),
            "learning_rate": learning_rate,
        }
        return nnx.state((model, optimizer)), metrics

    return train_step


def digest(tree) -> list[str]:
    return [hashlib.sha256(np.asarray(leaf).tobytes()).hexdigest()
            for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("variant", ["adder", "cnn"])
def test_classification_step_is_mains_step_bit_for_bit(variant):
    config = default.experiment("mnist", "lenet5", variant)
    task = Classification(config)
    state = task.create_state(steps_per_epoch=3)
    rng = np.random.default_rng(0)
    batches = [{"image": jnp.asarray(rng.normal(size=(16, 28, 28, 1)), jnp.float32),
                "label": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)} for _ in range(4)]

    # main: a (model, optimizer) pair with adder_sgd built from the same config.
    model = create_model("lenet5", num_classes=10, variant=variant, rngs=nnx.Rngs(config.seed))
    opt = config.optimizer
    tx = adder_sgd(task.schedule, adder_kernel_mask(model), momentum=opt.momentum,
                   weight_decay=opt.weight_decay, eta=opt.eta, nesterov=opt.nesterov)
    old_graphdef, old_state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
    old_step = jax.jit(main_train_step(task.schedule), static_argnums=0)

    new_graphdef, new_state = nnx.split(state)
    new_step = jit_train_step(task)
    assert digest(new_state["model"]) == digest(old_state[0])  # the same initial model
    for batch in batches:
        old_state, old_metrics = old_step(old_graphdef, old_state, batch)
        new_state, new_metrics = new_step(new_graphdef, new_state, batch)
        assert {k: float(v) for k, v in new_metrics.items()} == {
            k: float(v) for k, v in old_metrics.items()}
    assert digest(new_state["model"]) == digest(old_state[0])
    assert digest(new_state["optimizer"]) == digest(old_state[1])
