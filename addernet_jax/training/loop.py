"""`train_and_evaluate(config, workdir)`: the generic loop behind train.py, for any task.

Stages: check the config; take the workdir; data; train state; sharding; restore; loop (train
steps, logging, checkpoints, evaluation each epoch); summary. Running the same command again
resumes from the latest checkpoint in the workdir, with the data iterator where it was. What is
trained, and how, is the task's (`addernet_jax.tasks`, chosen by `config.task`).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from addernet_jax.runtime import parallel
from addernet_jax.runtime.checkpoints import (
    CheckpointError,
    DamagedCheckpointError,
    WorkdirReader,
    is_training_workdir,
)
from addernet_jax.tasks import (
    ConfigError,
    Task,
    evaluate_set,
    get_task,
    jit_eval_step,
    jit_train_step,
)
from addernet_jax.tasks.base import Pipelines
from addernet_jax.tasks.batch_norm import recompute_batch_norm
from addernet_jax.training.checkpoints import TrainingCheckpoints
from addernet_jax.training.config_checks import validate_config
from addernet_jax.training.metrics import (
    MetricBuffer,
    MetricWriter,
    NonFiniteLossError,
    log,
    progress,
)
from addernet_jax.training.workdir import WorkdirLock, check_resume_config

__all__ = ["NonFiniteLossError", "Preempted", "train_and_evaluate"]


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was saved and the same command resumes the run."""


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
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(value, indent=1) + "\n")
        temporary.replace(path)


def _saved_config(meta: dict) -> dict:
    saved = dict(meta.get("config") or {})
    saved.setdefault("task", "classification")  # runs from before config.task existed
    return saved


def _check_resume(workdir: Path, task: Task, config, allow_config_change: bool) -> None:
    """Before any work: the config of the workdir's newest readable checkpoint against this
    one (ConfigError naming refused fields); accepted changes are logged."""
    if not is_training_workdir(workdir):
        return
    reader = WorkdirReader(workdir)
    for step in reversed(reader.steps()):
        try:
            meta = reader.meta(step)
        except (CheckpointError, FileNotFoundError):
            continue
        for change in check_resume_config(_saved_config(meta), config.to_dict(),
                                          task.defining_fields,
                                          allow_changes=allow_config_change):
            log(f"resuming with a changed config: {change}")
        return


def _restore(store, task, arrays, train_iter, config, allow_config_change) -> dict:
    """The meta to start from: the latest usable checkpoint's (its config checked against
    `config` first, then restored in place into `arrays`, the split train state, and into the
    iterator), or a fresh one. A step that cannot be read is set aside, saying so, and the one
    before it is used."""
    for step in reversed(store.all_steps()):
        try:
            check_resume_config(_saved_config(store.restore_meta(step)), config.to_dict(),
                                task.defining_fields, allow_changes=allow_config_change)
            restored = store.restore(step, {name: arrays[name] for name in arrays}, train_iter)
        except DamagedCheckpointError as e:
            moved = store.set_aside(step)
            log(f"warning: {e}; moved it to {moved.name} and resuming from the step before")
            continue
        return {"best_value": None, "best_step": None, **restored}
    return {"step": 0, "best_value": None, "best_step": None}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict:
    """Trains `config` in `workdir`, evaluating every `eval_every_epochs`; resumes if possible.

    Args:
      config: the run's config (`configs/*.py`); `config.task` names the task.
      workdir: the run's directory (created; locked while training).
      allow_config_change: on resume, accept config changes other than those to the model,
        the data and the loop's bookkeeping (which are refused or always accepted).

    Returns:
      The run summary (also written to <workdir>/summary.json): steps, epochs, the best and
      final value of the task's metric (`best_<name>`, `final_<name>`), its best step, the
      final evaluation, training images per second.
    Raises:
      ConfigError: a bad field (before any work), or a resume with a changed model or data.
      WorkdirBusyError: another run trains in `workdir`.
      CheckpointError: the checkpoint to resume from cannot be used.
      NonFiniteLossError: NaN/Inf loss; nothing after the last good checkpoint is saved.
      Preempted: after SIGTERM, once the checkpoint is written.
    """
    # Checks: fail before any work.
    validate_config(config)
    task = get_task(config.get("task", "classification"))(config)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is not a directory")
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir).acquire() if jax.process_index() == 0 else None
    try:
        return _train_in(task, config, workdir, allow_config_change)
    finally:
        if lock is not None:
            lock.release()


def _train_in(task: Task, config, workdir: Path, allow_config_change: bool) -> dict:
    """The loop's stages once the workdir is ours."""
    _check_resume(workdir, task, config, allow_config_change)

    # Data.
    pipes = task.create_pipelines()
    total_steps = (config.num_train_steps if config.num_train_steps > 0
                   else config.num_epochs * pipes.steps_per_epoch)

    # Train state: named models and optimizers.
    state = task.create_state(pipes.steps_per_epoch)
    graphdef, arrays = nnx.split(state)
    train_iter = iter(pipes.train)

    # Restore the latest checkpoint of this workdir, if any (its config checked first).
    store = TrainingCheckpoints(workdir, keep=config.keep_checkpoints, mode=task.best.mode)
    try:
        meta = _restore(store, task, arrays, train_iter, config, allow_config_change)
    except BaseException:
        store.close()
        raise
    resumed = meta["step"] > 0
    if resumed:
        log(f"resumed from step {meta['step']} in {store.directory}")
    _write_json(workdir / "config.json", config.to_dict())

    # Sharding: batch along 'data', state replicated.
    mesh = parallel.create_mesh()
    arrays = parallel.replicate(mesh, arrays)

    run = _Run(task, config, pipes, mesh, graphdef, store, meta,
               MetricWriter(workdir, resume_step=meta["step"] if resumed else None))
    sigterm = SigtermFlag()
    try:
        arrays = run.loop(arrays, jit_train_step(task), train_iter, total_steps, sigterm)
    finally:
        sigterm.restore()
        run.writer.close()
        store.close()
    summary = run.summary(total_steps)
    _write_json(workdir / "summary.json", summary)
    return summary


class _Run:
    """The loop's state and its stages: steps, log flushes, checkpoints, evaluations."""

    def __init__(self, task: Task, config, pipes: Pipelines, mesh, graphdef, store, meta,
                 writer: MetricWriter):
        self.task, self.config, self.pipes, self.mesh = task, config, pipes, mesh
        self.graphdef, self.store, self.meta, self.writer = graphdef, store, dict(meta), writer
        self.buffer = MetricBuffer(config.batch_size)
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, dict[str, float]] = {}
        self.train_speeds: list[float] = []
        self.eval_steps = {split: jit_eval_step(task, split) for split in pipes.evals}

    def loop(self, arrays, train_step, train_iter, total_steps: int, sigterm: SigtermFlag):
        step, spe = int(self.meta["step"]), self.pipes.steps_per_epoch
        first_step = step + 1
        while step < total_steps:
            epoch = step // spe
            epoch_end = min((epoch + 1) * spe, total_steps)
            bar = progress(total=epoch_end - epoch * spe,
                           description=f"epoch {epoch + 1}/{self.config.num_epochs}",
                           enabled=self.config.progress_bar, initial=step - epoch * spe)
            while step < epoch_end:
                batch = parallel.global_batch(self.mesh, next(train_iter))
                arrays, metrics = train_step(self.graphdef, arrays, batch)
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
                    self.save(step, arrays, train_iter, None)
                    bar.close()
                    raise Preempted(f"SIGTERM at step {step}: checkpoint saved in "
                                    f"{self.store.directory}; run the same command to resume")
                if step % self.config.checkpoint_every_steps == 0 and step < epoch_end:
                    self.flush(step, bar)
                    self.save(step, arrays, train_iter, None)
            self.flush(step, bar)
            bar.close()
            if step % spe == 0:  # a whole epoch: the task's end-of-epoch hook
                arrays = self.end_of_epoch(arrays)
            value = None
            if self.should_evaluate(step, epoch_end == total_steps):
                arrays = self.recompute_batch_norm(arrays)
                value = self.evaluate(arrays, step)
            self.save(step, arrays, train_iter, value)
        return arrays

    def end_of_epoch(self, arrays):
        state = nnx.merge(self.graphdef, arrays)
        self.task.end_of_epoch(state)
        return nnx.state(state)

    def flush(self, step: int, bar) -> None:
        """Fetches the buffered metrics, checks them, writes them and updates the bar."""
        means = self.buffer.flush()
        if means is None:
            return
        self.last_train = means
        self.train_speeds.append(means["images_per_sec"])
        self.writer.write(step, "train", means)
        bar.set_postfix_str(f"{self.task.format_train(means)} "
                            f"{means['images_per_sec']:.0f} img/s")

    def should_evaluate(self, step: int, last: bool) -> bool:
        """At epoch ends: every `eval_every_epochs` epochs, and after the last step."""
        epoch = -(-step // self.pipes.steps_per_epoch)  # the epoch just finished, from 1
        return last or epoch % self.config.eval_every_epochs == 0

    def recompute_batch_norm(self, arrays):
        """With `config.precise_bn_batches` > 0: the evaluated models' BatchNorm statistics
        recomputed over that many training batches (tasks/batch_norm.py), kept in the state
        (so checkpoints and evaluate.py see them). The batches are the first ones of a fresh
        pass over the training data, so the training iterator (and resuming) is untouched."""
        num_batches = self.config.get("precise_bn_batches", 0)
        if num_batches <= 0:
            return arrays
        state = nnx.merge(self.graphdef, arrays)
        recompute_batch_norm(self.task.eval_models(state), iter(self.pipes.train), self.mesh,
                             self.task.model_inputs, num_batches)
        return nnx.state(state)

    def evaluate(self, arrays, step: int) -> float:
        """Evaluates every set; returns the task's best-metric value."""
        epoch = -(-step // self.pipes.steps_per_epoch)
        models = self.task.eval_models(nnx.merge(self.graphdef, arrays))
        for split, data in self.pipes.evals.items():
            results = evaluate_set(self.task, models, data, self.mesh, split,
                                   step_fn=self.eval_steps[split])
            self.writer.write(step, split, results)
            self.last_eval[split] = results
        best = self.task.best
        value = self.last_eval[best.split][best.key]
        if best.better(value, self.meta["best_value"]):
            self.meta.update(best_value=value, best_step=step)
        self.log_epoch(epoch)
        return value

    def log_epoch(self, epoch: int) -> None:
        train = self.last_train
        evals = " | ".join(f"{split} {self.task.format_eval(results)}"
                           for split, results in self.last_eval.items())
        speed = train.get("images_per_sec", float("nan"))
        log(f"epoch {epoch}: train {self.task.format_train(train) if train else '-'} | {evals} | "
            f"best {self.task.format_best(self.meta['best_value'])} | {speed:.0f} train img/s")

    def save(self, step: int, arrays, train_iter, value: float | None) -> None:
        """Saves a checkpoint, unless the state is no longer finite (then it raises, so that
        the latest checkpoint stays the last good state)."""
        if not bool(_all_finite(arrays)):
            raise NonFiniteLossError(f"training state is not finite after step {step}")
        self.meta.update(step=step, epoch=step / self.pipes.steps_per_epoch,
                         config=self.config.to_dict(), task=self.task.name,
                         best_metric=self.task.best.name, models=self.task.model_specs())
        self.store.save(step, {name: arrays[name] for name in arrays}, train_iter, self.meta,
                        value)

    def summary(self, total_steps: int) -> dict:
        name, best = self.task.best.name, self.task.best
        final = self.last_eval.get(best.split, {})
        return {
            "steps": int(self.meta["step"]),
            "total_steps": total_steps,
            "epochs": self.meta["step"] / self.pipes.steps_per_epoch,
            "task": self.task.name,
            "best_metric": name,
            f"best_{name}": self.meta["best_value"],
            "best_step": self.meta["best_step"],
            f"final_{name}": final.get(best.key),
            "final": self.last_eval,
            "train_images_per_sec": float(np.median(self.train_speeds)) if self.train_speeds
            else None,
        }
