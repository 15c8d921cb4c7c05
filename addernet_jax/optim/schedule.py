"""Learning-rate schedules that are constant within an epoch, as the official scripts set them.

The official CIFAR `main.py` sets, at the start of every epoch e = 1 ... 399,
    lr(e) = 0.05 * (1 + cos(pi * e / 400))          (ADDERNET.md 6.1)
i.e. base_lr / 2 * (1 + cos(pi * (e0 + k) / period)) for the k-th epoch (k = 0, 1, ...) with
e0 = 1 and period 400. torch's CosineAnnealingLR(T_max) stepped per epoch (the MNIST recipe,
ADDERNET.md 6.2; the ImageNet example) is the same with e0 = 0 and period T_max.

`multistep` multiplies the rate by `decay_factor` at the start of each epoch in `milestones` (torch
MultiStepLR stepped per epoch: ShiftAddNet's x0.1 at epochs 80 and 120, SHIFTADDNET.md 4.1);
with `every_steps` > 0 it decays every that many optimizer steps instead (EDSR's halving every
2e5 updates, ADDERSR.md 4).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax


def cosine_epoch_lr(epoch_index, *, base_lr: float, period_epochs: float, epoch_offset: int):
    """base_lr / 2 * (1 + cos(pi * (epoch_offset + epoch_index) / period_epochs))."""
    phase = (epoch_offset + epoch_index) / period_epochs
    return 0.5 * base_lr * (1.0 + jnp.cos(math.pi * phase))


def per_epoch_cosine(
    base_lr: float, *, steps_per_epoch: int, period_epochs: float, epoch_offset: int = 1
) -> optax.Schedule:
    """An optax schedule (of the step count) holding `cosine_epoch_lr` constant per epoch.

    Args:
      base_lr: the initial learning rate (0.1 official).
      steps_per_epoch: optimizer steps in one epoch.
      period_epochs: the cosine period in epochs (400 official for CIFAR).
      epoch_offset: the epoch number of the first epoch in the formula (1 official CIFAR,
        0 for torch CosineAnnealingLR).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def schedule(count):
        return cosine_epoch_lr(count // steps_per_epoch, base_lr=base_lr,
                               period_epochs=period_epochs, epoch_offset=epoch_offset)

    return schedule


def step_decay(base_lr: float, *, boundaries: list[int], decay_factor: float) -> optax.Schedule:
    """base_lr * decay_factor^k after the k-th of the (sorted) step `boundaries`.

    The step is taken as int32 first: optax's piecewise schedule computes `boundary - count`,
    which wraps around for an unsigned counter (nnx.Optimizer's step is uint32), so the rate
    read from it would return to `base_lr` after every boundary."""
    scales = {int(b): decay_factor for b in sorted(boundaries) if b > 0}
    schedule = optax.piecewise_constant_schedule(base_lr, scales)
    return lambda count: schedule(jnp.asarray(count, jnp.int32))


SCHEDULES = ("per_epoch_cosine", "constant", "multistep")


def create_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """The schedule named by `config.schedule.name` (one of `SCHEDULES`)."""
    name, section = config.schedule.name, config.schedule
    if name == "per_epoch_cosine":
        period = section.period_epochs or config.num_epochs + section.epoch_offset
        return per_epoch_cosine(config.optimizer.learning_rate, steps_per_epoch=steps_per_epoch,
                                period_epochs=period, epoch_offset=section.epoch_offset)
    if name == "constant":
        return optax.constant_schedule(config.optimizer.learning_rate)
    if name == "multistep":
        every = section.get("every_steps", 0)
        if every > 0:
            total = max(config.num_epochs * steps_per_epoch, config.num_train_steps)
            boundaries = list(range(every, total + 1, every))
        else:
            boundaries = [m * steps_per_epoch for m in section.get("milestones", ())]
        return step_decay(config.optimizer.learning_rate, boundaries=boundaries,
                          decay_factor=section.get("decay_factor", 0.1))
    raise ValueError(f"unknown config.schedule.name {name!r}; choose one of {SCHEDULES}")
