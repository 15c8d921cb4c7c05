"""`train_and_evaluate(config, workdir)`: the function behind train.py.

Stages: check the config; data; model and optimizer; sharding; restore; loop (train steps,
logging, checkpoints, evaluation each epoch); summary. Running the same command again resumes
from the latest checkpoint in the workdir, with the data iterator where it was.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from addernet_jax import data
from addernet_jax.models import create_model
from addernet_jax.training import checkpoints, parallel
from addernet_jax.training.config_checks import validate_config
from addernet_jax.training.evaluation import evaluate
from addernet_jax.training.metrics import MetricWriter, log, progress
from addernet_jax.training.optimizer import adder_kernel_mask, adder_sgd
from addernet_jax.training.schedule import create_schedule
from addernet_jax.training.steps import make_train_step


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the run stopped without saving that state."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was saved and the same command resumes the run."""


@dataclasses.dataclass
class Pipelines:
    """The run's data: training and evaluation loaders and their sizes."""

    train: grain.IterDataset
    eval: grain.IterDataset
    steps_per_epoch: int
    eval_batches: int
    num_classes: int


def create_pipelines(config: ml_collections.ConfigDict) -> Pipelines:
    """Sources, transforms and loaders for this process's shard of every global batch."""
    dataset = config.data.dataset
    where = dict(source=config.data.source, data_dir=config.data.data_dir or None,
                 local_path=config.data.local_path or None)
    train_source = data.get_source(dataset, "train", **where)
    eval_source = data.get_source(dataset, "test", **where)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count(),
                 worker_count=config.data.worker_count)
    size = config.data.image_size
    train = data.make_train_loader(
        train_source, global_batch_size=config.batch_size, seed=config.seed,
        transforms=data.get_transforms(dataset, train=True, image_size=size),
        subset=config.data.train_subset or None, **shard)
    eval_batch_size = parallel.device_multiple(config.eval_batch_size)
    evaluation = data.make_eval_loader(
        eval_source, batch_size=eval_batch_size,
        transforms=data.get_transforms(dataset, train=False, image_size=size), **shard)
    num_train = config.data.train_subset or len(train_source)
    return Pipelines(train, evaluation, data.steps_per_epoch(num_train, config.batch_size),
                     data.num_eval_batches(len(eval_source), eval_batch_size),
                     data.dataset_info(dataset).num_classes)


def create_model_and_optimizer(config, num_classes: int, steps_per_epoch: int):
    """The model (optionally initialised from a model checkpoint) and its `adder_sgd`."""
    model = create_model(config.model.name, num_classes=num_classes, variant=config.model.variant,
                         impl=config.model.impl, rngs=nnx.Rngs(config.seed))
    if config.init_from:
        checkpoints.load_model_checkpoint(config.init_from, model)
    schedule = create_schedule(config, steps_per_epoch)
    opt = config.optimizer
    tx = adder_sgd(schedule, adder_kernel_mask(model), momentum=opt.momentum,
                   weight_decay=opt.weight_decay, eta=opt.eta, nesterov=opt.nesterov)
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param), schedule


class MetricBuffer:
    """Per-step metrics kept on device until `flush` (one host transfer per log interval)."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.steps, self.metrics = [], []
        self.start = time.perf_counter()

    def add(self, step: int, metrics) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def flush(self) -> dict[str, float] | None:
        """Means since the last flush, with images/s; raises NonFiniteLossError at a bad step."""
        if not self.steps:
            return None
        values = jax.device_get(self.metrics)
        elapsed = time.perf_counter() - self.start
        for step, value in zip(self.steps, values):
            if not np.isfinite(value["loss"]):
                raise NonFiniteLossError(f"training loss is {value['loss']} at step {step}")
        means = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
        means["learning_rate"] = float(values[-1]["learning_rate"])
        means["images_per_sec"] = len(values) * self.images_per_step / max(elapsed, 1e-9)
        self.steps, self.metrics = [], []
        self.restart_clock()
        return means


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


class SigtermFlag:
    """Records SIGTERM (a scheduler's preemption notice) so the loop can save and stop."""

    def __init__(self):
        self.received = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _write_json(path: Path, value) -> None:
    if jax.process_index() == 0:
        path.write_text(json.dumps(value, indent=1) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir`, evaluating every `eval_every_epochs`; resumes if possible.

    Returns:
      The run summary (also written to <workdir>/summary.json): best and final test accuracy,
      steps, epochs, training images per second.
    Raises:
      ConfigError: a bad field, before any work.
      NonFiniteLossError: NaN/Inf loss; nothing after the last good checkpoint is saved.
      Preempted: after SIGTERM, once the checkpoint is written.
    """
    # Checks: fail before any work.
    validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / "config.json", config.to_dict())

    # Data.
    pipes = create_pipelines(config)
    total_steps = (config.num_train_steps if config.num_train_steps > 0
                   else config.num_epochs * pipes.steps_per_epoch)

    # Model and optimizer.
    model, optimizer, schedule = create_model_and_optimizer(
        config, pipes.num_classes, pipes.steps_per_epoch)

    # Sharding: batch along 'data', state replicated.
    mesh = parallel.create_mesh()
    graphdef, state = nnx.split((model, optimizer))
    train_iter = iter(pipes.train)

    # Restore the latest checkpoint of this workdir, if any.
    store = checkpoints.TrainingCheckpoints(workdir, keep=config.keep_checkpoints)
    meta = {"step": 0, "best_accuracy": None, "best_step": None}
    if store.latest_step() is not None:
        meta = store.restore(store.latest_step(), state[0], state[1], train_iter)
        log(f"resumed from step {meta['step']} in {store.directory}")
    state = parallel.replicate(mesh, state)

    run = _Run(config, pipes, mesh, graphdef, store, meta, MetricWriter(workdir))
    sigterm = SigtermFlag()
    try:
        state = run.loop(state, jax.jit(make_train_step(schedule), static_argnums=0,
                                        donate_argnums=1), train_iter, total_steps, sigterm)
    finally:
        sigterm.restore()
        run.writer.close()
        store.close()
    summary = run.summary(total_steps)
    _write_json(workdir / "summary.json", summary)
    return summary


class _Run:
    """The loop's state and its stages: steps, log flushes, checkpoints, evaluations."""

    def __init__(self, config, pipes: Pipelines, mesh, graphdef, store, meta, writer):
        self.config, self.pipes, self.mesh, self.graphdef = config, pipes, mesh, graphdef
        self.store, self.meta, self.writer = store, dict(meta), writer
        self.buffer = MetricBuffer(config.batch_size)
        self.last_train: dict[str, float] = {}
        self.last_accuracy: float | None = None
        self.train_speeds: list[float] = []

    def loop(self, state, train_step, train_iter, total_steps: int, sigterm: SigtermFlag):
        step, spe = int(self.meta["step"]), self.pipes.steps_per_epoch
        first_step = step + 1
        while step < total_steps:
            epoch = step // spe
            epoch_end = min((epoch + 1) * spe, total_steps)
            bar = progress(total=epoch_end - epoch * spe,
                           description=f"epoch {epoch + 1}/{self.config.num_epochs}",
                           enabled=self.config.progress_bar)
            bar.update(step - epoch * spe)
            while step < epoch_end:
                batch = parallel.global_batch(self.mesh, next(train_iter))
                state, metrics = train_step(self.graphdef, state, batch)
                step += 1
                self.buffer.add(step, metrics)
                bar.update(1)
                if step == first_step:  # exclude compilation from images/s
                    jax.block_until_ready(metrics)
                    self.buffer.restart_clock()
                if step % self.config.log_every_steps == 0:
                    self.flush(step, bar)
                if sigterm.received:
                    self.flush(step, bar)
                    self.save(step, state, train_iter, None)
                    bar.close()
                    raise Preempted(f"SIGTERM at step {step}: checkpoint saved in "
                                    f"{self.store.directory}; run the same command to resume")
                if step % self.config.checkpoint_every_steps == 0 and step < epoch_end:
                    self.flush(step, bar)
                    self.save(step, state, train_iter, None)
            self.flush(step, bar)
            bar.close()
            accuracy = self.maybe_evaluate(state, step, epoch_end == total_steps)
            self.save(step, state, train_iter, accuracy)
        return state

    def flush(self, step: int, bar) -> None:
        """Fetches the buffered metrics, checks them, writes them and updates the bar."""
        means = self.buffer.flush()
        if means is None:
            return
        self.last_train = means
        self.train_speeds.append(means["images_per_sec"])
        self.writer.write(step, "train", means)
        bar.set_postfix_str(f"loss {means['loss']:.4f} acc {100 * means['accuracy']:.2f}% "
                            f"lr {means['learning_rate']:.5f} {means['images_per_sec']:.0f} img/s")

    def maybe_evaluate(self, state, step: int, last: bool) -> float | None:
        epoch = -(-step // self.pipes.steps_per_epoch)  # the epoch just finished, from 1
        if not (last or epoch % self.config.eval_every_epochs == 0):
            return None
        model, _ = nnx.merge(self.graphdef, state)
        results = evaluate(model, self.pipes.eval, self.mesh, num_batches=self.pipes.eval_batches,
                           show_progress=False)
        self.writer.write(step, "test", results)
        accuracy = results["top1"]
        if self.meta["best_accuracy"] is None or accuracy > self.meta["best_accuracy"]:
            self.meta.update(best_accuracy=accuracy, best_step=step)
        self.last_accuracy = accuracy
        train = self.last_train
        log(f"epoch {epoch}: train loss {train.get('loss', float('nan')):.4f} "
            f"acc {100 * train.get('accuracy', float('nan')):.2f}% | test top-1 "
            f"{100 * accuracy:.2f}% top-5 {100 * results['top5']:.2f}% loss {results['loss']:.4f}"
            f" | best {100 * self.meta['best_accuracy']:.2f}% | "
            f"{train.get('images_per_sec', float('nan')):.0f} train img/s")
        return accuracy

    def save(self, step: int, state, train_iter, accuracy: float | None) -> None:
        """Saves a checkpoint, unless the parameters are no longer finite (then it raises, so
        that the latest checkpoint stays the last good state)."""
        if not bool(_all_finite(state[0])):
            raise NonFiniteLossError(f"model state is not finite after step {step}")
        self.meta.update(step=step, epoch=step / self.pipes.steps_per_epoch,
                         config=self.config.to_dict())
        self.store.save(step, state[0], state[1], train_iter, self.meta, accuracy)

    def summary(self, total_steps: int) -> dict:
        return {
            "steps": int(self.meta["step"]),
            "total_steps": total_steps,
            "epochs": self.meta["step"] / self.pipes.steps_per_epoch,
            "best_accuracy": self.meta["best_accuracy"],
            "best_step": self.meta["best_step"],
            "final_accuracy": self.last_accuracy,
            "train_images_per_sec": float(np.median(self.train_speeds)) if self.train_speeds
            else None,
        }
