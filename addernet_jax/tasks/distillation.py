"""PKKD: an AdderNet student distilled from a CNN teacher trained with it in the same step
(kernel-based progressive distillation, NeurIPS 2020; ../shared/specs/PKKD.md).

Both networks have `config.model.name`'s architecture: the student `config.model` (variant
'adder'), the teacher `config.teacher` (variant 'cnn'), both randomly initialised (PKKD.md 1).
Each step, on the same batch (PKKD.md 3, [ALG1]):

  teacher   its forward pass gives its logits z_c and, from the compared layers' inputs and
            outputs, the Gaussian kernel maps h^m; it is updated with its own cross-entropy only,
            by the plain SGD of its recipe (a CNN has no adaptive-rate parameters);
  student   its forward pass gives z_a and the Laplace kernel maps g^m; its loss is
            L = beta * L_mid + L_blend, with L_mid = sum_m d(rho^m(g^m), h^m) and
            L_blend = CE(y, z_a) + tau^2 KL(softmax(z_c / tau) || softmax(z_a / tau));
            the gradient of L goes through the student's optimizer, whose adaptive adder rate
            (paper Eq. 12-13) rescales each adder kernel's TOTAL gradient once (PKKD.md 5.4).

Every teacher quantity in L is under stop_gradient: nothing of the student's loss reaches the
teacher. The linear transforms rho^m (1x1 convolutions, identity init) are trained with L and
are not part of the exported model.

Train state: 'model' (the student, the exported plain AdderNet: evaluate.py and init_from load
it as any model), 'optimizer', 'teacher', 'teacher_optimizer', 'transforms' (rho),
'transforms_optimizer'. Evaluation reports the student's and the teacher's top-1 / top-5; the
best checkpoint has the student's highest top-1. The spec's unknowns U1-U10 are the fields of
`config.pkkd` and `config.teacher` (configs/pkkd_*.py), each defaulting to the spec's choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from addernet_jax import data
from addernet_jax.layers import Adder2D, layer_kinds
from addernet_jax.models import (
    CifarResNet,
    ImageNetResNet,
    LeNet5,
    VGGSmall,
    create_model,
    get_model_info,
    model_spec,
)
from addernet_jax.models.common import torch_default_kernel_init
from addernet_jax.models.vgg import ADDER_LAYERS
from addernet_jax.ops import IMPLEMENTATIONS
from addernet_jax.optim import (
    adder_adam,
    adder_kernel_mask,
    adder_sgd,
    apply_projections,
    create_schedule,
    make_transformation,
    scale_by_adaptive_lr,
    weight_decay_mask,
)
from addernet_jax.tasks import kernels
from addernet_jax.tasks.base import BestMetric, ConfigError, Pipelines, Task, one_of, require
from addernet_jax.tasks.classification import (
    adder_input_grad,
    check_data_config,
    check_model_config,
    check_optimizer_config,
    classification_pipelines,
    create_classifier,
    cross_entropy,
    models_results,
    models_sums,
)

LayerPath = tuple[str | int, ...]

# The choices of the spec's unknowns (PKKD.md 9), the first of each being the default.
CHOICES = {
    "transform": ("conv1x1", "none"),  # U4
    "transform_side": ("student", "teacher"),  # U4
    "transform_init": ("identity", "torch_default"),  # U4
    "blend_schedule": ("constant", "shift_to_teacher"),  # U6
    "teacher_features": ("before_update", "after_update"),  # U9
    "adaptive_lr_scope": ("total", "per_term"),  # U10
}


# ---------------------------------------------------------------------------------------------
# The compared layers (PKKD.md U1).


def stage_end_paths(model: nnx.Module) -> list[LayerPath]:
    """U1's default set: the last adder layer of each residual stage (its output before BN;
    conv2 of a BasicBlock, conv3 of a Bottleneck), for VGG-small the layers before each
    max-pool, for LeNet-5 its convolutional adder (conv2, before its max-pool)."""
    if isinstance(model, CifarResNet | ImageNetResNet):
        paths, index = [], 1
        while isinstance(getattr(model, f"layer{index}", None), nnx.List):
            stage = getattr(model, f"layer{index}")
            last = len(stage) - 1
            paths.append((f"layer{index}", last, "conv3" if hasattr(stage[last], "conv3")
                          else "conv2"))
            index += 1
        return paths
    if isinstance(model, VGGSmall):
        return [(f"conv{i}",) for i, (_, _, pool) in enumerate(ADDER_LAYERS, start=1) if pool]
    if isinstance(model, LeNet5):
        return [("conv2",)]
    raise ConfigError(f"config.pkkd.layers = 'stage_ends' is not defined for a "
                      f"{type(model).__name__}; list the layers by path")


def parse_path(text: str) -> LayerPath:
    """'layer1.2.conv2' -> ('layer1', 2, 'conv2')."""
    return tuple(int(part) if part.isdigit() else part for part in text.strip().split("."))


def format_path(path: LayerPath) -> str:
    return ".".join(map(str, path))


def compared_paths(model: nnx.Module, choice: str) -> list[LayerPath]:
    """The compared layers' paths for `config.pkkd.layers`: 'stage_ends' (U1 default), 'all'
    (every adder layer of the student) or comma-separated paths ('layer3.2.conv2,...')."""
    if choice == "stage_ends":
        return stage_end_paths(model)
    if choice == "all":
        return [tuple(path) for path, module in nnx.iter_modules(model)
                if isinstance(module, Adder2D)]
    return [parse_path(text) for text in choice.split(",") if text.strip()]


def module_at(model: nnx.Module, path: LayerPath) -> nnx.Module:
    """The submodule of `model` at `path`; ConfigError naming the path if there is none."""
    node = model
    try:
        for part in path:
            node = node[part] if isinstance(part, int) else getattr(node, part)
    except (AttributeError, IndexError, TypeError):
        node = None
    if not isinstance(node, nnx.Module):
        raise ConfigError(f"config.pkkd.layers: {type(model).__name__} has no layer "
                          f"{format_path(path)!r}")
    return node


def one_call(record: list[tuple], path: LayerPath) -> tuple[jax.Array, jax.Array]:
    """The (input, output) of a compared layer's single call in one forward pass."""
    if len(record) != 1:
        raise ValueError(f"compared layer {format_path(path)} ran {len(record)} times in one "
                         "forward pass; PKKD compares layers that run once")
    return record[0]


# ---------------------------------------------------------------------------------------------
# The linear transforms rho (PKKD.md 4.4, U4).


def identity_init(key, shape, dtype=jnp.float32):
    """A square kernel initialised to the identity (rho^m starts as no transform)."""
    del key
    return jnp.eye(shape[0], shape[1], dtype=dtype)


class KernelTransforms(nnx.Module):
    """rho^m: one learnable 1x1 convolution (C_m -> C_m, no bias) per compared layer, applied to
    the kernel maps of one side (PKKD.md 4.4). A 1x1 convolution of an NHWC map is a matrix
    product over the channel axis, which is what `nnx.Linear` computes on the last axis.

    Args:
      channels: C_m of each compared layer (empty with `config.pkkd.transform = 'none'`).
      init: 'identity' (U4 default) or 'torch_default' (PyTorch's conv init).
      rngs: NNX random streams.
    """

    def __init__(self, channels: list[int], *, init: str = "identity", rngs: nnx.Rngs):
        kernel_init = identity_init if init == "identity" else torch_default_kernel_init
        self.layers = nnx.List([nnx.Linear(c, c, use_bias=False, kernel_init=kernel_init,
                                           rngs=rngs) for c in channels])

    def __call__(self, maps: list[jax.Array]) -> list[jax.Array]:
        if not self.layers:
            return list(maps)
        return [layer(m) for layer, m in zip(self.layers, maps)]


# ---------------------------------------------------------------------------------------------
# Optimizers.


def teacher_recipe(config) -> ml_collections.ConfigDict:
    """The config whose optimizer and schedule train the teacher: the student's (U8 default),
    with `config.teacher.learning_rate` (> 0) and `config.teacher.weight_decay` (>= 0)
    replacing the student's values when set."""
    recipe = ml_collections.ConfigDict(config.to_dict())
    if config.teacher.learning_rate > 0:
        recipe.optimizer.learning_rate = config.teacher.learning_rate
    if config.teacher.weight_decay >= 0:
        recipe.optimizer.weight_decay = config.teacher.weight_decay
    return recipe


def transformation_without_adaptive_lr(model: nnx.Module, learning_rate, optimizer_config
                                       ) -> optax.GradientTransformation:
    """`make_transformation` with the adaptive adder rate masked off everywhere: the student's
    optimizer when the task rescales each loss term's gradient itself (U10 'per_term')."""
    no_adaptive = jax.tree.map(lambda _: False, adder_kernel_mask(model))
    decay = weight_decay_mask(model)
    if optimizer_config.get("name", "sgd") == "adam":
        return adder_adam(learning_rate, no_adaptive, b1=optimizer_config.b1,
                          b2=optimizer_config.b2, eps=optimizer_config.eps,
                          weight_decay=optimizer_config.weight_decay, decay_mask=decay)
    return adder_sgd(learning_rate, no_adaptive, momentum=optimizer_config.momentum,
                     weight_decay=optimizer_config.weight_decay,
                     nesterov=optimizer_config.nesterov, decay_mask=decay)


# ---------------------------------------------------------------------------------------------
# The task.


class Distillation(Task):
    """PKKD training of an AdderNet with a CNN teacher (module docstring)."""

    name = "distillation"
    best = BestMetric(split="test", key="top1", name="accuracy", mode="max")
    defining_fields = (*Task.defining_fields, "teacher.variant", "pkkd.layers",
                       "pkkd.transform")

    @property
    def num_classes(self) -> int:
        return data.dataset_info(self.config.data.dataset).num_classes

    @property
    def pkkd(self) -> ml_collections.ConfigDict:
        return self.config.pkkd

    # Checks ------------------------------------------------------------------------------

    def check_config(self) -> None:
        config = self.config
        require("pkkd" in config and "teacher" in config, "config.task = 'distillation' needs "
                "the config.teacher and config.pkkd sections (configs/pkkd_*.py, with_pkkd)")
        check_model_config(config.model)
        require(not config.get("ema_decay", 0.0), "config.ema_decay is supported by the "
                "classification task only; set it to 0 for distillation")
        one_of(config.teacher.variant, layer_kinds(), "teacher.variant")
        one_of(config.teacher.impl, ["auto", *IMPLEMENTATIONS], "teacher.impl")
        check_data_config(config)
        check_optimizer_config(config)
        info = get_model_info(config.model.name)
        require(info.task == "classification", f"config.model.name = {config.model.name!r} "
                f"is a {info.task} model; PKKD distils classifiers")
        if config.init_from:
            require(Path(config.init_from).exists(),
                    f"config.init_from = {config.init_from!r} does not exist")
        self._check_pkkd_fields()
        self._check_compared_layers()

    def _check_pkkd_fields(self) -> None:
        pkkd = self.pkkd
        for field, choices in CHOICES.items():
            one_of(pkkd[field], choices, f"pkkd.{field}")
        one_of(pkkd.kernel_form, kernels.KERNEL_FORMS, "pkkd.kernel_form")
        one_of(pkkd.mid_loss, kernels.MID_LOSSES, "pkkd.mid_loss")
        for field in ("beta", "gt_weight", "kd_weight", "sigma_a", "sigma_c"):
            require(pkkd[field] >= 0, f"config.pkkd.{field} = {pkkd[field]} must be >= 0")
        require(pkkd.tau > 0, f"config.pkkd.tau = {pkkd.tau} must be > 0")

    def _check_compared_layers(self) -> None:
        """Every compared layer exists in both networks, has a kernel (adder or conv) and the
        same output channels; `pkkd.layer_weights` has one weight per layer (or none)."""
        student, teacher = (nnx.eval_shape(lambda s=section: self._create(s, 0))
                            for section in (self.config.model, self.config.teacher))
        paths = compared_paths(student, self.pkkd.layers)
        require(bool(paths), f"config.pkkd.layers = {self.pkkd.layers!r} selects no layer")
        for path in paths:
            pair = [module_at(model, path) for model in (student, teacher)]
            for which, layer in zip(("student", "teacher"), pair):
                require(isinstance(layer, Adder2D | nnx.Conv),
                        f"config.pkkd.layers: the {which}'s {format_path(path)} is a "
                        f"{type(layer).__name__}, not an adder layer or a convolution")
            require(pair[0].out_features == pair[1].out_features,
                    f"config.pkkd.layers: {format_path(path)} has {pair[0].out_features} "
                    f"channels in the student and {pair[1].out_features} in the teacher")
        weights = tuple(self.pkkd.layer_weights)
        require(len(weights) in (0, len(paths)), f"config.pkkd.layer_weights has "
                f"{len(weights)} entries for {len(paths)} compared layers")

    # State -------------------------------------------------------------------------------

    def _create(self, section, seed: int) -> nnx.Module:
        return create_model(self.config.model.name, num_classes=self.num_classes,
                            variant=section.variant, impl=section.impl,
                            input_grad=adder_input_grad(section),
                            rngs=nnx.Rngs(seed))

    def create_pipelines(self) -> Pipelines:
        return classification_pipelines(self.config)

    def create_state(self, steps_per_epoch: int) -> dict[str, Any]:
        config = self.config
        student = create_classifier(config.model, self.num_classes, config.seed,
                                    config.init_from)
        teacher = self._create(config.teacher, config.seed + 1)
        self.paths = compared_paths(student, self.pkkd.layers)
        channels = ([module_at(student, p).out_features for p in self.paths]
                    if self.pkkd.transform == "conv1x1" else [])
        transforms = KernelTransforms(channels, init=self.pkkd.transform_init,
                                      rngs=nnx.Rngs(config.seed + 2))
        self.total_steps = (config.num_train_steps if config.num_train_steps > 0
                            else config.num_epochs * steps_per_epoch)
        self.schedule = create_schedule(config, steps_per_epoch)
        recipe = teacher_recipe(config)
        teacher_tx = make_transformation(teacher, create_schedule(recipe, steps_per_epoch),
                                         recipe.optimizer)
        if self.pkkd.adaptive_lr_scope == "total":
            student_tx = make_transformation(student, self.schedule, config.optimizer)
        else:
            student_tx = transformation_without_adaptive_lr(student, self.schedule,
                                                            config.optimizer)
        self.adaptive_lr = optax.masked(scale_by_adaptive_lr(config.optimizer.eta),
                                        adder_kernel_mask(student))
        return {
            "model": student,
            "optimizer": nnx.Optimizer(student, student_tx, wrt=nnx.Param),
            "teacher": teacher,
            "teacher_optimizer": nnx.Optimizer(teacher, teacher_tx, wrt=nnx.Param),
            "transforms": transforms,
            "transforms_optimizer": nnx.Optimizer(
                transforms, make_transformation(transforms, self.schedule, config.optimizer),
                wrt=nnx.Param),
        }

    def model_specs(self) -> dict[str, dict]:
        config = self.config
        return {key: model_spec(config.model.name, section.variant, num_classes=self.num_classes)
                for key, section in (("model", config.model), ("teacher", config.teacher))}

    # Training ----------------------------------------------------------------------------

    def _kernel_maps(self, model: nnx.Module, records) -> list[jax.Array]:
        """The kernel map of every compared layer from its recorded call (kernels.kernel_map)."""
        return [kernels.kernel_map(module_at(model, path), *one_call(record, path),
                                   form=self.pkkd.kernel_form, sigma_a=self.pkkd.sigma_a,
                                   sigma_c=self.pkkd.sigma_c)
                for path, record in zip(self.paths, records)]

    def _forward(self, model: nnx.Module, images: jax.Array):
        """(logits, kernel maps of the compared layers) from one forward pass."""
        with kernels.record_calls([module_at(model, p) for p in self.paths]) as records:
            logits = model(images)
        return logits, self._kernel_maps(model, records)

    def _teacher_loss(self, teacher: nnx.Module, batch):
        """The teacher's own cross-entropy ([ALG1] step 6); its logits and kernel maps, taken
        from the same forward pass, come back as auxiliary outputs."""
        logits, maps = self._forward(teacher, batch["image"])
        return cross_entropy(logits, batch["label"]).mean(), (logits, maps)

    def _blend_weights(self, step) -> tuple[jax.Array, jax.Array]:
        """(ground-truth weight, teacher weight) of L_blend at `step` (U6): constant, or
        'shift_to_teacher' (linearly from (gt_weight, 0) to (0, kd_weight) over the run)."""
        gt, kd = self.pkkd.gt_weight, self.pkkd.kd_weight
        if self.pkkd.blend_schedule == "constant":
            return jnp.float32(gt), jnp.float32(kd)
        progress = jnp.minimum(step / max(self.total_steps, 1), 1.0).astype(jnp.float32)
        return gt * (1.0 - progress), kd * progress

    def _student_terms(self, student, transforms, batch, targets, blend_weights):
        """(beta * L_mid, L_blend) of the student and its metrics (PKKD.md 5)."""
        teacher_logits, teacher_maps = targets
        logits, maps = self._forward(student, batch["image"])
        if self.pkkd.transform_side == "student":
            maps = transforms(maps)
        else:
            teacher_maps = transforms(teacher_maps)
        l_mid = kernels.mid_loss(maps, teacher_maps, norm=self.pkkd.mid_loss,
                                 weights=tuple(self.pkkd.layer_weights))
        l_blend, parts = kernels.blend_loss(logits, teacher_logits, batch["label"],
                                            tau=self.pkkd.tau, gt_weight=blend_weights[0],
                                            kd_weight=blend_weights[1])
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"])
        return (jnp.stack([self.pkkd.beta * l_mid, l_blend]),
                {"mid_loss": l_mid, "blend_loss": l_blend, "kl": parts["kl"],
                 "accuracy": accuracy})

    def _student_gradients(self, student, transforms, batch, targets, blend_weights):
        """Gradients of the student's loss terms w.r.t. the student's and the transforms'
        parameters from one forward pass (jax.vjp; BatchNorm statistics updated once).

        Returns ((student grads, transform grads), values of the two terms, metrics): the
        gradient of their sum (U10 'total'), or the sum of each term's gradient rescaled by
        the adaptive adder rate ('per_term').
        """
        graphdef, params, rest = nnx.split((student, transforms), nnx.Param, ...)

        def terms(params):
            models = nnx.merge(graphdef, params, rest, copy=True)
            values, metrics = self._student_terms(*models, batch, targets, blend_weights)
            return values, (metrics, nnx.state(models, nnx.Not(nnx.Param)))

        values, vjp_fn, (metrics, updated) = jax.vjp(terms, params, has_aux=True)
        nnx.update((student, transforms), updated)
        if self.pkkd.adaptive_lr_scope == "total":
            (grads,) = vjp_fn(jnp.ones(2, values.dtype))
            return (grads[0], grads[1]), values, metrics
        (mid,), (blend,) = (vjp_fn(jnp.eye(2, dtype=values.dtype)[i]) for i in range(2))

        def rescale(grads):
            return self.adaptive_lr.update(grads, self.adaptive_lr.init(grads))[0]

        student_grads = jax.tree.map(jnp.add, rescale(mid[0]), rescale(blend[0]))
        return (student_grads, jax.tree.map(jnp.add, mid[1], blend[1])), values, metrics

    def _teacher_step(self, state, batch):
        """The teacher's update from its own cross-entropy; returns its loss, logits and
        kernel maps, all under stop_gradient (taken before its update, or after it: U9)."""
        teacher = state["teacher"]
        (loss, (logits, maps)), grads = nnx.value_and_grad(self._teacher_loss, has_aux=True)(
            teacher, batch)
        state["teacher_optimizer"].update(teacher, grads)
        apply_projections(teacher)
        if self.pkkd.teacher_features == "after_update":
            # A copy, so that its BatchNorm running averages move once per step, as they do
            # with the default.
            logits, maps = self._forward(nnx.clone(teacher), batch["image"])
        return jax.lax.stop_gradient((loss, logits, maps))

    def train_step(self, state, batch):
        student, transforms = state["model"], state["transforms"]
        student.train()
        state["teacher"].train()
        step = state["optimizer"].step[...]
        teacher_loss, teacher_logits, teacher_maps = self._teacher_step(state, batch)
        (student_grads, transform_grads), values, metrics = self._student_gradients(
            student, transforms, batch, (teacher_logits, teacher_maps), self._blend_weights(step))
        state["optimizer"].update(student, student_grads)
        apply_projections(student)
        state["transforms_optimizer"].update(transforms, transform_grads)
        return {"loss": jnp.sum(values), **metrics, "teacher_loss": teacher_loss,
                "teacher_accuracy": jnp.mean(jnp.argmax(teacher_logits, -1) == batch["label"]),
                "learning_rate": self.schedule(step)}

    # Evaluation --------------------------------------------------------------------------

    def eval_models(self, state):
        return {"model": state["model"], "teacher": state["teacher"]}

    def eval_step(self, models, batch, split):
        del split
        return models_sums(models, batch)

    def reduce(self, sums, split):
        del split
        return models_results(sums)

    def format_train(self, metrics) -> str:
        return (f"loss {metrics['loss']:.4f} (mid {metrics['mid_loss']:.4f} blend "
                f"{metrics['blend_loss']:.4f}) acc {100 * metrics['accuracy']:.2f}% | teacher "
                f"ce {metrics['teacher_loss']:.4f} acc {100 * metrics['teacher_accuracy']:.2f}%"
                f" | lr {metrics['learning_rate']:.5f}")

    def format_eval(self, results) -> str:
        return (f"top-1 {100 * results['top1']:.2f}% top-5 {100 * results['top5']:.2f}% "
                f"(teacher {100 * results['teacher_top1']:.2f}% / "
                f"{100 * results['teacher_top5']:.2f}%)")

    def format_best(self, value: float) -> str:
        return f"{100 * value:.2f}%"


__all__ = ["Distillation", "KernelTransforms", "compared_paths", "stage_end_paths",
           "teacher_recipe"]
