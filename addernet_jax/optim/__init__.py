"""Optimizers and learning-rate schedules, built from what the parameters declare.

Below the tasks (every task's train state holds optimizers) and above the layers (whose
variable types declare the rules: `AdderKernel.adaptive_lr`, ...).
"""

from addernet_jax.optim.averaging import average_decay, update_average
from addernet_jax.optim.optimizer import (
    ETA,
    OPTIMIZERS,
    adder_adam,
    adder_kernel_mask,
    adder_sgd,
    apply_epoch_end,
    apply_projections,
    create_optimizer,
    make_transformation,
    rule_mask,
    scale_by_adaptive_lr,
    weight_decay_mask,
)
from addernet_jax.optim.schedule import SCHEDULES, create_schedule, per_epoch_cosine, step_decay

__all__ = [
    "ETA",
    "OPTIMIZERS",
    "SCHEDULES",
    "adder_adam",
    "adder_kernel_mask",
    "adder_sgd",
    "average_decay",
    "apply_epoch_end",
    "apply_projections",
    "create_optimizer",
    "create_schedule",
    "make_transformation",
    "per_epoch_cosine",
    "rule_mask",
    "scale_by_adaptive_lr",
    "step_decay",
    "update_average",
    "weight_decay_mask",
]
