"""A second task, defined here, trains, checkpoints, resumes and picks its best checkpoint
through the same loop as classification, with no change to the loop.

The toy task is linear regression on random data, y = x @ w_true + noise, with its own loss
(mean squared error) and a lower-is-better metric. Its learning rate is multiplied by 25 after
two epochs, which makes the regression overshoot: the evaluation error rises again, so the best
checkpoint (lowest error) is not the latest.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from addernet_jax import data
from addernet_jax.optim import step_decay
from addernet_jax.runtime import parallel
from addernet_jax.runtime.checkpoints import WorkdirReader
from addernet_jax.tasks import TASKS, BestMetric, EvalData, Pipelines, Task
from addernet_jax.training.loop import train_and_evaluate

W_TRUE = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)


class VectorSource:
    """n records {'x': (4,) float32, 'y': (1,) float32} of a fixed linear relation."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, 4)).astype(np.float32)
        self.y = (self.x @ W_TRUE + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index]}


class Regression(Task):
    """Least squares with one nnx.Linear; the best checkpoint has the lowest test MSE."""

    name = "toy_regression"
    best = BestMetric(split="test", key="mse", name="mse", mode="min")

    def check_config(self) -> None:
        assert self.config.batch_size > 0

    def create_pipelines(self) -> Pipelines:
        config = self.config
        train = data.make_train_loader(VectorSource(96, 0), global_batch_size=config.batch_size,
                                       seed=config.seed, transforms=[])
        test_source = VectorSource(40, 1)
        batch = parallel.device_multiple(config.eval_batch_size)
        test = data.make_eval_loader(test_source, batch_size=batch, transforms=[])
        return Pipelines(train, 96 // config.batch_size,
                         {"test": EvalData(test, data.num_eval_batches(40, batch))})

    def create_state(self, steps_per_epoch: int) -> dict:
        model = nnx.Linear(4, 1, rngs=nnx.Rngs(self.config.seed))
        self.schedule = step_decay(0.05, boundaries=[2 * steps_per_epoch], decay_factor=25.0)
        return {"model": model,
                "optimizer": nnx.Optimizer(model, optax.sgd(self.schedule), wrt=nnx.Param)}

    def model_specs(self) -> dict:
        return {"model": {"model": "toy_linear", "variant": "none"}}

    def train_step(self, state, batch):
        model, optimizer = state["model"], state["optimizer"]

        def loss_fn(model):
            return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)

        learning_rate = self.schedule(optimizer.step[...])
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return {"loss": loss, "learning_rate": learning_rate}

    def eval_step(self, models, batch, split):
        error = (models["model"](batch["x"]) - batch["y"])[:, 0] ** 2
        mask = batch["mask"].astype(jnp.float32)
        return {"squared_error": jnp.sum(error * mask), "count": jnp.sum(mask)}

    def reduce(self, sums, split):
        return {"mse": float(sums["squared_error"]) / float(sums["count"]),
                "count": int(sums["count"])}

    def format_train(self, metrics) -> str:
        return f"mse {metrics['loss']:.4f}"

    def format_eval(self, results) -> str:
        return f"mse {results['mse']:.4f}"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(TASKS, Regression.name, Regression)


def toy_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        task="toy_regression", seed=0, batch_size=8, eval_batch_size=16, num_epochs=4,
        num_train_steps=-1, eval_every_epochs=1, log_every_steps=4,
        checkpoint_every_steps=5, keep_checkpoints=1, progress_bar=False))
    config.update(overrides)
    return config


def final_model(workdir) -> list[np.ndarray]:
    with WorkdirReader(workdir) as reader:
        step = reader.steps()[-1]
        model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
        reader.restore_model(step, model)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model))]


def test_toy_task_trains_and_keeps_its_best_checkpoint_by_lowest_error(tmp_path):
    summary = train_and_evaluate(toy_config(), str(tmp_path / "run"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    test_mse = {r["step"]: r["mse"] for r in records if r["split"] == "test"}
    assert list(test_mse) == [12, 24, 36, 48]
    assert test_mse[24] < test_mse[12] and test_mse[36] > test_mse[24]  # the overshoot
    best_step = min(test_mse, key=test_mse.get)
    assert summary["best_metric"] == "mse" and summary["best_step"] == best_step == 24
    assert summary["best_mse"] == pytest.approx(test_mse[24])
    assert summary["final_mse"] == pytest.approx(test_mse[48])
    with WorkdirReader(tmp_path / "run") as reader:
        assert reader.steps() == [24, 48]  # keep 1 latest + the best (lowest), not the highest
        assert reader.best_step()[0] == 24


def test_toy_task_resumes_to_the_uninterrupted_result(tmp_path):
    train_and_evaluate(toy_config(), str(tmp_path / "whole"))
    first = train_and_evaluate(toy_config(num_train_steps=17), str(tmp_path / "split"))
    assert first["steps"] == 17
    resumed = train_and_evaluate(toy_config(), str(tmp_path / "split"))
    assert resumed["steps"] == 48
    for ours, theirs in zip(final_model(tmp_path / "split"), final_model(tmp_path / "whole")):
        np.testing.assert_array_equal(ours, theirs)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").open()
             if '"train"' in line]
    assert steps == sorted(set(steps))  # no step recorded twice across the resume
