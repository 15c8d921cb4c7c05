"""AdderSR's learnable power activation P_alpha(z) = sign(z) |z|^alpha (ADDERSR.md 2.4, paper
Eq. 11), its exponent's parameter type and its op counts.

The activation follows the ReLU of every AdderSR unit (ADDERSR.md 2.1), so in the models z >= 0
and P_alpha(z) = z^alpha; the signed form is kept so that the function is defined everywhere.
Defaults (ADDERSR.md U2): one scalar alpha per unit, initialised to 1.0 (the identity), trained
with the other parameters but without weight decay; optionally per channel.

Numerics (`signed_power`, a `jax.custom_jvp`): the value is exact for every z (|z|^alpha as
exp(alpha log|z|) where z != 0, and 0 at z = 0); the derivatives are
    d/dz     = alpha * max(|z|, eps)^(alpha - 1)     exact for |z| >= eps; for alpha < 1 the true
                                                     derivative is unbounded at 0, so it is
                                                     held at its value at eps (1e-6) below
    d/dalpha = sign(z) |z|^alpha log|z|             exact, and 0 at z = 0 (its limit)
so both are finite at and near zero, which the spec's where/log/eps formulation does not give
exactly (it also changes the value below eps).

Optimizer rules on the parameter type (`addernet_jax.optim.optimizer` reads them): no weight
decay; with a clip range (the default [0.1, 3], an implementation safeguard the spec suggests,
not from the paper) alpha is projected into it after every update, which keeps the activation
monotone and its derivative near zero bounded.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.layers.base import Counts, OpCounter, param_count, register_op_counter

GRAD_EPS = 1e-6  # below this |z|, d/dz is evaluated at eps (ADDERSR.md 2.4)
ALPHA_INIT = 1.0  # the identity at initialisation (ADDERSR.md U2)
ALPHA_CLIP = (0.1, 3.0)  # ADDERSR.md 2.4's optional safeguard; None turns it off

# What one |z|^alpha = exp(alpha * log|z|) costs, counted honestly as the float32 arithmetic of
# its usual software evaluation (Cephes / glibc logf, expf): a range reduction and a degree-7
# polynomial in Horner form each, i.e. about 8 multiplications and 8 additions for the log and
# as many for the exp, plus the multiplication by alpha. Hardware with log/exp units would pay
# less; an adder network cannot make it an addition.
LOG_OR_EXP_MULS, LOG_OR_EXP_ADDS = 8, 8
POWER_MULS = 2 * LOG_OR_EXP_MULS + 1
POWER_ADDS = 2 * LOG_OR_EXP_ADDS


@jax.custom_jvp
def signed_power(z: jax.Array, alpha: jax.Array) -> jax.Array:
    """sign(z) * |z|^alpha, elementwise, with `alpha` broadcast against `z` (module docstring).

    Args:
      z: any float array.
      alpha: exponent(s), broadcastable to `z` (a scalar, or (C,) for NHWC per channel).

    Returns:
      An array of z's shape: 0 where z == 0, exact elsewhere (inf only where the true value
      overflows).
    """
    magnitude, safe = _magnitude(z)
    return jnp.sign(z) * jnp.where(magnitude > 0, jnp.exp(alpha * jnp.log(safe)), 0.0)


def _magnitude(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(|z|, |z| with zeros replaced by 1): log() of the second is finite everywhere."""
    magnitude = jnp.abs(z)
    return magnitude, jnp.where(magnitude > 0, magnitude, 1.0)


@signed_power.defjvp
def _signed_power_jvp(primals, tangents):
    z, alpha = primals
    dz, dalpha = tangents
    magnitude, safe = _magnitude(z)
    log_safe = jnp.log(safe)  # 0 where z == 0
    power = jnp.where(magnitude > 0, jnp.exp(alpha * log_safe), 0.0)
    out = jnp.sign(z) * power
    d_dz = alpha * jnp.exp((alpha - 1.0) * jnp.log(jnp.maximum(magnitude, GRAD_EPS)))
    d_dalpha = out * log_safe  # sign(z) |z|^alpha log|z|; 0 at z == 0
    return out, d_dz * dz + d_dalpha * dalpha


def signed_power_reference(z: jax.Array, alpha: jax.Array) -> jax.Array:
    """The plain formula sign(z) * |z| ** alpha (tests compare `signed_power` with it where it
    is well defined: z != 0)."""
    return jnp.sign(z) * jnp.abs(z) ** alpha


class PowerExponent(nnx.Param):
    """The exponent alpha of a power activation: no weight decay (ADDERSR.md 2.4); no clip
    (see `power_exponent_type` for the clipped types)."""

    weight_decay = False


@functools.cache
def power_exponent_type(clip: tuple[float, float] | None) -> type[PowerExponent]:
    """The `PowerExponent` type that projects alpha into `clip` = (lo, hi) after every update
    (PowerExponent itself for None), one type per range so that the optimizer's type-level rule
    needs nothing but the value."""
    if clip is None:
        return PowerExponent
    lo, hi = (float(c) for c in clip)
    if not 0.0 < lo < hi:
        raise ValueError(f"power activation clip must be (lo, hi) with 0 < lo < hi, got {clip}")

    def project(value: jax.Array) -> jax.Array:
        return jnp.clip(value, lo, hi)

    name = f"PowerExponentClipped_{lo:g}_{hi:g}".replace(".", "p").replace("-", "m")
    return type(name, (PowerExponent,), {"project": staticmethod(project), "clip": (lo, hi),
                                         "__doc__": f"alpha kept in [{lo:g}, {hi:g}]."})


class PowerActivation(nnx.Module):
    """P_alpha(z) = sign(z) |z|^alpha with a learnable alpha (ADDERSR.md 2.4, paper Eq. 11).

    Args:
      num_features: channels of the NHWC input (used when `per_channel`).
      per_channel: one alpha per channel instead of one per unit (ADDERSR.md U2's sweep).
      init: alpha's initial value (1.0: the identity).
      clip: (lo, hi) range alpha is projected into after every update, or None.
      rngs: unused (alpha has a constant init); accepted for the NNX constructor convention.
    """

    def __init__(self, num_features: int, *, per_channel: bool = False,
                 init: float = ALPHA_INIT, clip: tuple[float, float] | None = ALPHA_CLIP,
                 rngs: nnx.Rngs | None = None):
        del rngs
        if num_features < 1:
            raise ValueError(f"power activation needs num_features >= 1, got {num_features}")
        self.num_features, self.per_channel = num_features, per_channel
        shape = (num_features,) if per_channel else ()
        clip = None if clip is None else tuple(clip)
        self.alpha = power_exponent_type(clip)(jnp.full(shape, init, jnp.float32))

    def __call__(self, z: jax.Array) -> jax.Array:
        """Applies the activation to an NHWC array (any shape when alpha is a scalar)."""
        if self.per_channel and z.shape[-1] != self.num_features:
            raise ValueError(f"power activation has {self.num_features} channels, input has "
                             f"shape {z.shape}")
        return signed_power(z, self.alpha[...].astype(z.dtype))


def _count_power(module: PowerActivation, out_shape) -> tuple[int, Counts]:
    """One power per output element, POWER_MULS multiplications and POWER_ADDS additions
    (module constants: a software log and exp, and the product with alpha)."""
    elements = math.prod(out_shape)
    return elements, Counts(POWER_MULS * elements, POWER_ADDS * elements, param_count(module))


register_op_counter(PowerActivation, OpCounter("power", _count_power))

__all__ = ["ALPHA_CLIP", "GRAD_EPS", "POWER_ADDS", "POWER_MULS", "PowerActivation",
           "PowerExponent", "power_exponent_type", "signed_power", "signed_power_reference"]
