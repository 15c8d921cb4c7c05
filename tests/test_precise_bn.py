"""Precise BatchNorm statistics: exact population statistics of the training batches, and on real
MNIST they remove the running-average lag that leaves early adder evaluations near chance."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from addernet_jax.tasks.batch_norm import recompute_batch_norm
from addernet_jax.training.loop import train_and_evaluate
from configs import default


class TwoBatchNorms(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.bn2 = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.bn2(jnp.square(self.bn1(self.conv(x))))


def test_statistics_are_those_of_all_the_examples():
    model = TwoBatchNorms(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    batches = [{"image": rng.normal(1.0, 2.0, size=(8, 6, 6, 3)).astype(np.float32)}
               for _ in range(4)]
    mesh = jax.make_mesh((8,), ("data",))
    used = recompute_batch_norm({"model": model}, iter(batches), mesh, lambda b: b["image"], 3)
    assert used == 3
    # bn1 sees conv(x) of the three batches: its population mean and (biased) variance.
    features = np.concatenate([np.asarray(model.conv(b["image"])) for b in batches[:3]])
    features = features.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(model.bn1.mean[...], features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bn1.var[...], features.var(0), rtol=1e-4)
    # bn2 sees bn1 in train mode (batch statistics) per batch, as during training.
    inputs = []
    for b in batches[:3]:
        y = np.asarray(model.conv(b["image"]), np.float64).reshape(-1, 4)
        inputs.append(np.square((y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)))
    inputs = np.concatenate(inputs)
    np.testing.assert_allclose(model.bn2.mean[...], inputs.mean(0), rtol=1e-4)
    np.testing.assert_allclose(model.bn2.var[...], inputs.var(0), rtol=1e-3)
    assert model.bn1.momentum == 0.99  # the model itself is not changed otherwise


def test_precise_statistics_fix_the_early_adder_evaluation_on_mnist(mnist_dir, tmp_path):
    """60 steps of LeNet-5 AdderNet: identical training, and eval-mode test accuracy from near
    chance (running averages lag the adaptive-rate updates) to close to the training one."""
    results = {}
    for batches in (0, 8):
        config = default.experiment("mnist", "lenet5")  # the official lr 0.1, wd 5e-4, eta 0.2
        config.schedule.name = "constant"
        config.data.source, config.data.local_path = "local", str(mnist_dir)
        config.batch_size, config.num_train_steps, config.log_every_steps = 64, 60, 20
        config.progress_bar, config.precise_bn_batches = False, batches
        workdir = tmp_path / f"pbn{batches}"
        summary = train_and_evaluate(config, str(workdir))
        train = [json.loads(line) for line in (workdir / "metrics.jsonl").open()
                 if '"train"' in line]
        results[batches] = (summary["final_accuracy"], train[-1]["loss"], train[-1]["accuracy"])
    assert results[8][1] == results[0][1]  # training is untouched
    assert results[0][0] < 0.4
    assert results[8][0] > 0.65 and results[8][0] > results[0][0] + 0.4
