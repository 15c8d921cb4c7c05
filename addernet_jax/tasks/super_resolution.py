"""Single-image super-resolution: AdderSR VDSR / EDSR (or their CNNs) trained with L1.

Train state {'model', 'optimizer'}. The recipe defaults are EDSR's (ADDERSR.md 4, U5, U6; see
configs/sr_base.py): L1 loss on RGB in [0, 255], Adam (0.9, 0.999, 1e-8) after AdderNet's
adaptive adder learning rate (`optimizer.name = 'adam'`), learning rate 1e-4 halved every 2e5
updates, random 48x48 LR patches with flips and rotations, batch 16, an "epoch" of 1000 batches
(EDSR's --test_every; the training set is repeated to fill it). Evaluation on benchmark sets
(EDSR's benchmark layout, `config.data.eval_root`/<set>/{HR, LR_bicubic/X<s>}) after every
epoch: PSNR and SSIM on Y with a `scale`-pixel border crop (ADDERSR.md 5), computed tile by tile
and exactly equal to whole-image values (`sr_tiles`); the best checkpoint has the highest PSNR
on the first set.

Training data (`config.data.train_source`):
  paired    `<train_path>/HR` + `<train_path>/LR_bicubic/X<s>` (EDSR's benchmark layout; DIV2K
            with data.hr_dir / data.lr_dir)
  hr_folder a folder of HR images; LR made by MATLAB-style bicubic downscaling
  div2k     DIV2K through tfds (`data.data_dir`), for users who have it prepared
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax import data
from addernet_jax.loading import load_weights_into
from addernet_jax.models import create_model, get_model_info, model_spec
from addernet_jax.optim import apply_projections, create_schedule, make_transformation
from addernet_jax.tasks.base import (
    BestMetric,
    ConfigError,
    EvalData,
    Pipelines,
    Task,
    one_of,
    require,
)
from addernet_jax.tasks.classification import (
    adder_input_grad,
    check_model_config,
    check_optimizer_config,
)
from addernet_jax.tasks.sr_tiles import eval_margin, sums_to_metrics, tile_sums, tiled_eval_data

TRAIN_SOURCES = ("paired", "hr_folder", "div2k")


def model_arguments(config) -> dict[str, Any]:
    """The model constructor's arguments from a config: the spec fields (scale, colour,
    per_channel_alpha) and the power exponent's clip (training-only)."""
    clip = tuple(config.model.alpha_clip)
    return {"scale": config.data.scale, "colour": config.model.colour,
            "per_channel_alpha": config.model.per_channel_alpha,
            "alpha_clip": clip if clip else None}


def sr_model_spec(config) -> dict:
    """The model spec of an SR config (the spec fields its model records)."""
    info = get_model_info(config.model.name)
    arguments = model_arguments(config)
    return model_spec(config.model.name, config.model.variant,
                      **{k: arguments[k] for k in info.spec_fields})


def create_sr_model(config, *, abstract: bool = False) -> nnx.Module:
    """The model of an SR config (`abstract`: shapes only, nothing allocated)."""
    info = get_model_info(config.model.name)
    arguments = model_arguments(config)
    kwargs = {k: v for k, v in arguments.items() if k in info.spec_fields or k == "alpha_clip"}

    def build():
        return create_model(config.model.name, variant=config.model.variant,
                            impl=config.model.impl, rngs=nnx.Rngs(config.seed),
                            input_grad=adder_input_grad(config.model), **kwargs)

    return nnx.eval_shape(build) if abstract else build()


def with_warmup(schedule, warmup_steps: int):
    """`schedule` times min(1, (step + 1) / warmup_steps): a linear warm-up (none for 0).

    Not in EDSR's recipe (default 0). For short runs: Adam's first updates move every weight by
    about the learning rate in the direction of its gradient's sign, coherently across a layer;
    on the AdderSR VDSR's large non-negative features (about sqrt(depth), see `VDSR`) the first
    steps then move the zero-initialised residual by tens of grey levels.
    """
    if warmup_steps <= 0:
        return schedule
    return lambda step: schedule(step) * jnp.minimum(1.0, (step + 1) / warmup_steps)


def train_source(config):
    """The training records of `config.data` (cached in memory with data.cache_images)."""
    section, scale = config.data, config.data.scale
    if section.train_source == "paired":
        source = data.PairedSRSource(section.train_path, scale, hr_dir=section.hr_dir,
                                     lr_dir=section.lr_dir)
    elif section.train_source == "hr_folder":
        source = data.HRFolderSource(section.train_path, scale)
    else:
        source = data.div2k_source(scale, "train", data_dir=section.data_dir or None)
    return data.CachedSource(source) if section.cache_images else source


def eval_records(config, name: str) -> list[dict[str, Any]]:
    """The decoded records of benchmark set `name` under `config.data.eval_root`."""
    source = data.PairedSRSource(Path(config.data.eval_root) / name, config.data.scale)
    return [source[i] for i in range(len(source))]


class SuperResolution(Task):
    """L1 training of one SR model, PSNR-selected (module docstring)."""

    name = "super_resolution"
    best = BestMetric(split="Set5", key="psnr", name="psnr", mode="max")
    defining_fields = ("task", "model.name", "model.variant", "model.colour",
                       "model.per_channel_alpha", "data.scale", "data.train_source",
                       "data.train_path")

    def __init__(self, config):
        super().__init__(config)
        if config is not None and config.data.get("eval_sets"):
            self.best = BestMetric(split=config.data.eval_sets[0], key="psnr", name="psnr")
        self.eval_sizes: dict[str, int] = {}

    def check_config(self) -> None:
        config = self.config
        check_model_config(config.model)
        require(not config.get("ema_decay", 0.0), "config.ema_decay is supported by the "
                "classification task only; set it to 0 for super-resolution")
        require(get_model_info(config.model.name).task == self.name,
                f"config.model.name = {config.model.name!r} is not a super-resolution model")
        try:
            create_sr_model(config, abstract=True)
        except ValueError as e:
            raise ConfigError(f"config.model / config.data.scale: {e}") from None
        check_optimizer_config(config)
        self._check_data()
        if config.init_from:
            require(Path(config.init_from).exists(),
                    f"config.init_from = {config.init_from!r} does not exist")

    def _check_data(self) -> None:
        section = self.config.data
        one_of(section.train_source, TRAIN_SOURCES, "data.train_source")
        if section.train_source != "div2k":
            require(Path(section.train_path).is_dir(),
                    f"config.data.train_path = {section.train_path!r} is not a directory")
        require(section.patch_size >= 1, f"config.data.patch_size = {section.patch_size} must be "
                ">= 1")
        require(section.steps_per_epoch >= 1,
                f"config.data.steps_per_epoch = {section.steps_per_epoch} must be >= 1")
        require(section.eval_tile >= 0, f"config.data.eval_tile = {section.eval_tile} must be "
                ">= 0 (0: whole images)")
        require(len(section.eval_sets) >= 1, "config.data.eval_sets must name at least one set")
        for name in section.eval_sets:
            folder = Path(section.eval_root) / name
            require(folder.is_dir(), f"config.data.eval_sets: {folder} is not a directory "
                    "(config.data.eval_root/<set>)")

    def create_pipelines(self) -> Pipelines:
        config = self.config
        source = train_source(config)
        repeats = max(1, math.ceil(config.data.steps_per_epoch * config.batch_size / len(source)))
        train = data.make_train_loader(
            data.RepeatedSource(source, repeats), global_batch_size=config.batch_size,
            seed=config.seed,
            transforms=data.sr_train_transforms(config.data.scale, config.data.patch_size),
            process_index=jax.process_index(), process_count=jax.process_count(),
            worker_count=config.data.worker_count)
        steps = data.steps_per_epoch(len(source) * repeats, config.batch_size)
        return Pipelines(train, steps, {name: self._eval_set(name)
                                        for name in config.data.eval_sets})

    def _eval_set(self, name: str) -> EvalData:
        config = self.config
        records = eval_records(config, name)
        self.eval_sizes[name] = len(records)
        model = create_sr_model(config, abstract=True)
        margin = eval_margin(model.receptive_radius, config.data.scale)
        return tiled_eval_data(records, config.data.scale, core=config.data.eval_tile,
                               margin=margin, batch_size=config.eval_batch_size)

    def create_state(self, steps_per_epoch: int) -> dict[str, Any]:
        config = self.config
        model = create_sr_model(config)
        if config.init_from:
            load_weights_into(model, config.init_from, sr_model_spec(config))
        self.schedule = with_warmup(create_schedule(config, steps_per_epoch),
                                    config.schedule.get("warmup_steps", 0))
        tx = make_transformation(model, self.schedule, config.optimizer)
        return {"model": model, "optimizer": nnx.Optimizer(model, tx, wrt=nnx.Param)}

    def model_specs(self) -> dict[str, dict]:
        return {"model": sr_model_spec(self.config)}

    def model_inputs(self, batch: dict[str, jax.Array]) -> jax.Array:
        return batch["lr"]

    def train_step(self, state, batch):
        model, optimizer = state["model"], state["optimizer"]
        model.train()

        def loss_fn(model):
            return jnp.mean(jnp.abs(model(batch["lr"]) - batch["hr"]))  # L1 (EDSR)

        learning_rate = self.schedule(optimizer.step[...])
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        apply_projections(model)
        return {"loss": loss, "learning_rate": learning_rate}

    def eval_step(self, models, batch, split):
        model = models["model"]
        model.eval()
        return tile_sums(model(batch["lr"]), batch, self.config.data.scale,
                         self.eval_sizes[split])

    def reduce(self, sums, split):
        del split
        return sums_to_metrics(sums)

    def format_train(self, metrics) -> str:
        return f"L1 {metrics['loss']:.3f} lr {metrics['learning_rate']:.2e}"

    def format_eval(self, results) -> str:
        return f"PSNR {results['psnr']:.2f} dB SSIM {results['ssim']:.4f}"

    def format_best(self, value: float) -> str:
        return "-" if value is None else f"{value:.2f} dB"


__all__ = ["SuperResolution", "create_sr_model", "eval_records", "model_arguments",
           "sr_model_spec", "train_source", "with_warmup"]
