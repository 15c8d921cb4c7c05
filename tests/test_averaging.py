"""The moving average of the weights (config.ema_decay): the update rule against numpy, and a tiny
classification run whose exported and evaluated model is the average of the trained one."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from addernet_jax.loading import describe_checkpoint, load_checkpoint
from addernet_jax.optim import average_decay, update_average
from addernet_jax.tasks import ConfigError
from addernet_jax.training.config_checks import validate_config
from addernet_jax.training.loop import train_and_evaluate
from configs import default


class Small(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.dense(x))


def _leaves(model, kind):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, kind))]


def test_decay_follows_the_model_at_first_then_settles():
    np.testing.assert_allclose(average_decay(1, 0.999), 2 / 11, rtol=1e-6)
    np.testing.assert_allclose(average_decay(90, 0.999), 91 / 100, rtol=1e-6)
    assert float(average_decay(10**6, 0.999)) == pytest.approx(0.999)


def test_update_averages_parameters_and_batch_statistics():
    average, model = Small(nnx.Rngs(0)), Small(nnx.Rngs(1))
    model.bn.mean[...] = jnp.arange(4.0)
    before = {kind: (_leaves(average, kind), _leaves(model, kind))
              for kind in (nnx.Param, nnx.BatchStat)}
    update_average(average, model, step=1000, decay=0.9)
    for kind, (old_average, live) in before.items():
        for a, m, new in zip(old_average, live, _leaves(average, kind), strict=True):
            np.testing.assert_allclose(new, 0.9 * a + 0.1 * m, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(_leaves(model, nnx.Param)[0], before[nnx.Param][1][0])


def _tiny_config(mnist_dir, ema_decay):
    config = default.experiment("mnist", "lenet5")
    config.data.source, config.data.local_path = "local", str(mnist_dir)
    config.data.train_subset = 640
    config.batch_size, config.num_epochs, config.log_every_steps = 64, 2, 4
    config.progress_bar, config.ema_decay = False, ema_decay
    return config


def test_a_run_exports_and_evaluates_the_average(mnist_dir, tmp_path):
    workdir = tmp_path / "ema"
    summary = train_and_evaluate(_tiny_config(mnist_dir, 0.9), str(workdir))
    test = [json.loads(line) for line in (workdir / "metrics.jsonl").open()
            if '"test"' in line][-1]
    assert {"top1", "online_top1", "loss", "online_loss"} <= set(test)
    assert test["count"] == 3000
    assert summary["final_accuracy"] == test["top1"]
    exported = load_checkpoint(describe_checkpoint(workdir)).model
    online = load_checkpoint(describe_checkpoint(workdir, key="online")).model
    exported_kernel = np.asarray(exported.conv1.kernel[...])
    online_kernel = np.asarray(online.conv1.kernel[...])
    assert not np.allclose(exported_kernel, online_kernel)  # 20 steps at d <= 0.9 lag behind


def test_decay_out_of_range_is_a_config_error(mnist_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"config.ema_decay = 1.0 must be in \[0, 1\)"):
        train_and_evaluate(_tiny_config(mnist_dir, 1.0), str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["pkkd_tiny", "sr_vdsr_x2_cpu"])
def test_tasks_without_averaging_refuse_the_field(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    config.ema_decay = 0.999
    with pytest.raises(ConfigError, match="config.ema_decay is supported by the classification"):
        validate_config(config)
