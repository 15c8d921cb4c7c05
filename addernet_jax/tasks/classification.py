"""Image classification: AdderNet (or its CNN baseline) trained with cross-entropy.

Train state {'model', 'optimizer'}: the model of `config.model` and the optimizer of
`config.optimizer` (`adder_sgd`: the adaptive adder learning rate, paper Eq. 12-13, then
torch-style SGD; ADDERNET.md 6). Metrics: training loss, accuracy and learning rate; evaluation
top-1, top-5 and mean cross-entropy on the test split; the best checkpoint has the highest
top-1 ("accuracy").

With `config.ema_decay` > 0 the state is {'model', 'online', 'optimizer'}: the optimizer trains
'online', and 'model', the exported and evaluated one, is the exponential moving average of its
weights (optim/averaging.py); evaluations also report the online model ('online_top1', ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from addernet_jax import data
from addernet_jax.data.datasets import ORIGINS
from addernet_jax.layers import layer_kinds
from addernet_jax.loading import load_weights_into
from addernet_jax.models import create_model, get_model_info, list_models, model_spec
from addernet_jax.ops import IMPLEMENTATIONS
from addernet_jax.ops.adder2d import INPUT_GRADS
from addernet_jax.optim import (
    OPTIMIZERS,
    SCHEDULES,
    apply_projections,
    create_schedule,
    make_transformation,
    update_average,
)
from addernet_jax.runtime import parallel
from addernet_jax.tasks.base import (
    BestMetric,
    ConfigError,
    EvalData,
    Pipelines,
    Task,
    one_of,
    require,
)


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy (the official `nn.CrossEntropyLoss` before the mean)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def training_loss(logits, labels, label_smoothing: float = 0.0):
    """Per-example training loss: cross-entropy, against labels smoothed towards the uniform
    distribution by `label_smoothing` when it is > 0 (Szegedy et al. 2016; optax.smooth_labels)."""
    if not label_smoothing:
        return cross_entropy(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def classification_sums(logits, labels, mask) -> dict[str, jax.Array]:
    """Sums over the real (mask == True) examples: correct top-1 and top-5, loss, count."""
    logits, mask = logits.astype(jnp.float32), mask.astype(jnp.float32)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "correct_top1": jnp.sum((jnp.argmax(logits, axis=-1) == labels) * mask),
        "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
        "count": jnp.sum(mask),
    }


def models_sums(models: dict, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`classification_sums` of every model of `models` (in eval mode) on one batch, keyed with
    '' for the exported 'model' and '<key>_' for the others ('online_', 'teacher_')."""
    sums = {}
    for key, model in models.items():
        model.eval()
        prefix = "" if key == "model" else f"{key}_"
        sums.update({f"{prefix}{name}": value for name, value in classification_sums(
            model(batch["image"]), batch["label"], batch["mask"]).items()})
    return sums


def models_results(sums: dict[str, float]) -> dict[str, float]:
    """`classification_results` of every model whose sums `models_sums` made."""
    results = {}
    for prefix in sorted({key[: -len("count")] for key in sums if key.endswith("count")}):
        results.update(classification_results(sums, prefix))
    return results


def classification_results(sums: dict[str, float], prefix: str = "") -> dict[str, float]:
    """{'top1', 'top5' (fractions), 'loss' (mean cross-entropy), 'count'} from the sums."""
    count = float(sums["count"])
    return {f"{prefix}top1": float(sums[f"{prefix}correct_top1"]) / count,
            f"{prefix}top5": float(sums[f"{prefix}correct_top5"]) / count,
            f"{prefix}loss": float(sums[f"{prefix}loss_sum"]) / count,
            "count": int(count)}


def check_data_config(config) -> None:
    """The dataset, its origin and local path, the subset and the init checkpoint."""
    one_of(config.data.dataset, data.DATASETS, "data.dataset")
    one_of(config.data.source, ORIGINS, "data.source")
    if config.data.source == "local":
        path = Path(config.data.local_path)
        require(bool(config.data.local_path) and path.is_dir(),
                f"config.data.local_path = {config.data.local_path!r} is not a directory "
                "(needed when config.data.source = 'local')")
    require(config.data.train_subset >= 0, "config.data.train_subset must be >= 0")
    one_of(config.data.get("augmentation", ""), data.augmentation_choices(config.data.dataset),
           "data.augmentation")


def adder_input_grad(section) -> str:
    """A model section's adder input gradient ('hardtanh' for configs without the field)."""
    return section.get("input_grad", "hardtanh")


def check_model_config(section, field: str = "model") -> None:
    """A model section's name, variant and implementation."""
    one_of(section.name, list_models(), f"{field}.name")
    one_of(section.variant, layer_kinds(), f"{field}.variant")
    one_of(section.impl, ["auto", *IMPLEMENTATIONS], f"{field}.impl")
    one_of(adder_input_grad(section), INPUT_GRADS, f"{field}.input_grad")


def check_optimizer_config(config) -> None:
    """The optimizer, its learning rate, and the schedule."""
    one_of(config.optimizer.get("name", "sgd"), OPTIMIZERS, "optimizer.name")
    require(config.optimizer.learning_rate > 0,
            f"config.optimizer.learning_rate = {config.optimizer.learning_rate} must be > 0")
    one_of(config.schedule.name, SCHEDULES, "schedule.name")


def augmentation_options(data_config) -> dict:
    """`get_transforms` keywords of `config.data`: the augmentation and, for 'affine', its
    ranges (configs written before the field existed train with the preset)."""
    name = data_config.get("augmentation", "")
    if name != "affine":
        return {"augmentation": name}
    return {"augmentation": name, "degrees": data_config.affine_degrees,
            "translate": data_config.affine_translate, "scale": tuple(data_config.affine_scale)}


def classification_pipelines(config) -> Pipelines:
    """Training batches and the test set of `config.data` for this process."""
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
        transforms=data.get_transforms(dataset, train=True, image_size=size,
                                       **augmentation_options(config.data)),
        subset=config.data.train_subset or None, **shard)
    eval_batch_size = parallel.device_multiple(config.eval_batch_size)
    evaluation = data.make_eval_loader(
        eval_source, batch_size=eval_batch_size,
        transforms=data.get_transforms(dataset, train=False, image_size=size), **shard)
    num_train = config.data.train_subset or len(train_source)
    return Pipelines(train, data.steps_per_epoch(num_train, config.batch_size),
                     {"test": EvalData(evaluation,
                                       data.num_eval_batches(len(eval_source), eval_batch_size))})


def copy_model(model: nnx.Module) -> nnx.Module:
    """A copy of `model` with arrays of its own: the jitted train step donates the state's
    buffers, and a buffer held twice (as `nnx.clone` leaves it) would be donated twice."""
    graphdef, arrays = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(jnp.copy, arrays))


def create_classifier(section, num_classes: int, seed: int, init_from: str = ""):
    """The model of a `model` config section, optionally initialised from a checkpoint."""
    model = create_model(section.name, num_classes=num_classes, variant=section.variant,
                         impl=section.impl, input_grad=adder_input_grad(section),
                         rngs=nnx.Rngs(seed))
    if init_from:
        load_weights_into(model, init_from,
                          model_spec(section.name, section.variant, num_classes=num_classes))
    return model


class Classification(Task):
    """Cross-entropy training of one classifier (module docstring)."""

    name = "classification"
    best = BestMetric(split="test", key="top1", name="accuracy", mode="max")
    defining_fields = (*Task.defining_fields, "ema_decay")

    def check_config(self) -> None:
        config = self.config
        check_model_config(config.model)
        check_data_config(config)
        check_optimizer_config(config)
        require(0.0 <= config.get("label_smoothing", 0.0) < 1.0,
                "config.label_smoothing must be in [0, 1)")
        require(0.0 <= self.ema_decay < 1.0,
                f"config.ema_decay = {self.ema_decay} must be in [0, 1) (0: no averaging)")
        info = get_model_info(config.model.name)
        require(info.task == "classification",
                f"config.model.name = {config.model.name!r} is a {info.task} model, not a "
                "classifier")
        if config.init_from:
            require(Path(config.init_from).exists(),
                    f"config.init_from = {config.init_from!r} does not exist")

    @property
    def ema_decay(self) -> float:
        return self.config.get("ema_decay", 0.0)

    @property
    def num_classes(self) -> int:
        return data.dataset_info(self.config.data.dataset).num_classes

    def create_pipelines(self) -> Pipelines:
        return classification_pipelines(self.config)

    def create_state(self, steps_per_epoch: int) -> dict[str, Any]:
        config = self.config
        model = create_classifier(config.model, self.num_classes, config.seed, config.init_from)
        self.schedule = create_schedule(config, steps_per_epoch)
        tx = make_transformation(model, self.schedule, config.optimizer)
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        if not self.ema_decay:
            return {"model": model, "optimizer": optimizer}
        return {"model": copy_model(model), "online": model, "optimizer": optimizer}

    def model_specs(self) -> dict[str, dict]:
        model = self.config.model
        spec = model_spec(model.name, model.variant, num_classes=self.num_classes)
        return {"model": spec, "online": spec} if self.ema_decay else {"model": spec}

    def train_step(self, state, batch):
        model, optimizer = state.get("online", state["model"]), state["optimizer"]
        model.train()

        smoothing = self.config.get("label_smoothing", 0.0)

        def loss_fn(model):
            logits = model(batch["image"])
            return training_loss(logits, batch["label"], smoothing).mean(), logits

        learning_rate = self.schedule(optimizer.step[...])
        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        apply_projections(model)
        if self.ema_decay:
            update_average(state["model"], model, optimizer.step[...], self.ema_decay)
        return {"loss": loss,
                "accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"]),
                "learning_rate": learning_rate}

    def eval_models(self, state):
        if "online" in state:
            return {"model": state["model"], "online": state["online"]}
        return {"model": state["model"]}

    def eval_step(self, models, batch, split):
        del split
        return models_sums(models, batch)

    def reduce(self, sums, split):
        del split
        return models_results(sums)

    def format_train(self, metrics) -> str:
        return (f"loss {metrics['loss']:.4f} acc {100 * metrics['accuracy']:.2f}% "
                f"lr {metrics['learning_rate']:.5f}")

    def format_eval(self, results) -> str:
        line = (f"top-1 {100 * results['top1']:.2f}% top-5 {100 * results['top5']:.2f}% "
                f"loss {results['loss']:.4f}")
        if "online_top1" in results:
            line += (f" (online model {100 * results['online_top1']:.2f}% / "
                     f"{100 * results['online_top5']:.2f}%)")
        return line

    def format_best(self, value: float) -> str:
        return f"{100 * value:.2f}%"


def check_model_fits_dataset(spec: dict, dataset: str, where: str) -> None:
    """ValueError when a classifier cannot be evaluated on `dataset` (classes, channels)."""
    expected = data.dataset_info(dataset).num_classes
    if spec["num_classes"] != expected:
        raise ValueError(f"{where} has {spec['num_classes']} classes but {dataset} has "
                         f"{expected}; evaluate it on a dataset with {spec['num_classes']} "
                         "classes")
    model_channels = get_model_info(spec["model"]).input_shape[-1]
    data_channels = data.dataset_info(dataset).image_shape[-1]
    if model_channels != data_channels:
        raise ValueError(f"{spec['model']} takes {model_channels}-channel images but {dataset} "
                         f"has {data_channels}")


def evaluation_set(dataset: str, *, split: str = "test", source: str = "tfds",
                   local_path=None, data_dir=None, batch_size: int = 100,
                   image_size: int = 0, local_flag: str | None = None) -> tuple[EvalData, int]:
    """(EvalData, global batch size) of a dataset split with its evaluation preset.

    The batch is capped at the split's size (no padding beyond one batch of real images) and
    rounded up to a multiple of the devices; the last batch is padded and masked. `local_flag`
    is the flag that error messages tell the user to pass for local files.
    """
    records = data.get_source(dataset, split, source=source, data_dir=data_dir,
                              local_path=local_path, local_flag=local_flag)
    batch_size = parallel.device_multiple(min(batch_size, len(records)))
    loader = data.make_eval_loader(
        records, batch_size=batch_size,
        transforms=data.get_transforms(dataset, train=False, image_size=image_size),
        process_index=jax.process_index(), process_count=jax.process_count())
    return EvalData(loader, data.num_eval_batches(len(records), batch_size)), batch_size


__all__ = ["Classification", "ConfigError", "check_model_fits_dataset", "classification_sums",
           "cross_entropy", "evaluation_set"]
