"""Shift-layer ops of ShiftAddNet / DeepShift-PS (SHIFTADDNET.md 1.3-1.4, 7), custom VJPs.

A shift layer keeps two real latent tensors per weight, shift p and sign s, and convolves a
fixed-point copy of its input with the signed power of two they encode:

    W   = 2^round(clip(p, -(2^(b-1) - 2), 0)) * sign(round(s))       in {0, +-2^k}, 1.3a-d
    x_q = clip(floor(x * 2^16) / 2^16, -2^15, 2^15 - 1)                               1.3e
    y   = conv2d(x_q, W, stride, padding) (+ x_q-style fixed-point bias)              1.3f

Every rounding is straight-through (identity gradient, 1.4); the product of the power of two
and the sign has the official asymmetric rule (`deepshift/ste.py` `unsym_grad_mul`):
dL/dp = dL/dW * W * ln 2 and dL/ds = dL/dW, not multiplied by 2^p_r. Rounding is round-half-to-
even, as torch.round. Powers of two are built with `ldexp`, so W is exact (`exp2` is not).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from addernet_jax.ops.geometry import PaddingLike, resolve_geometry

LN2 = math.log(2.0)
FRACTION_BITS = 16  # fixed-point input: 16 fractional and 16 integer bits (SHIFTADDNET.md 1.3e)
INTEGER_BITS = 16
CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def shift_range(weight_bits: int) -> tuple[int, int]:
    """The allowed shifts (lo, 0), lo = -(2^(b-1) - 2): [-14, 0] for b = 5, [-2, 0] for b = 3.

    One of the b bits is the sign's, and the official code keeps the sign ternary, so the
    magnitudes use 2^(b-1) - 1 codes (SHIFTADDNET.md 1.1, `deepshift/modules.py`).
    """
    if not isinstance(weight_bits, int) or weight_bits < 2:
        raise ValueError(f"weight_bits must be an int >= 2, got {weight_bits!r}")
    return -(2 ** (weight_bits - 1) - 2), 0


@jax.custom_vjp
def round_ste(x: jax.Array) -> jax.Array:
    """Round half to even with an identity gradient (SHIFTADDNET.md 1.3b, 1.4).

    NumPy: forward `np.round(x)`; backward `dx = g`.
    """
    return jnp.round(x)


round_ste.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g,))


def _ternary_sign(s):
    return jnp.sign(jnp.round(s))


@jax.custom_vjp
def ternary_sign_ste(s: jax.Array) -> jax.Array:
    """sign(round(s)) in {-1, 0, +1} with an identity gradient (SHIFTADDNET.md 1.3c, 1.4).

    |s| <= 0.5 gives 0 (ties round to even), which prunes the weight.
    NumPy: forward `np.sign(np.round(s))`; backward `ds = g`.
    """
    return _ternary_sign(s)


ternary_sign_ste.defvjp(lambda s: (_ternary_sign(s), None), lambda _, g: (g,))


def _shift_weight_value(p, s, weight_bits):
    lo, hi = shift_range(weight_bits)
    exponent = jnp.round(jnp.clip(p, lo, hi)).astype(jnp.int32)
    return jnp.ldexp(_ternary_sign(s).astype(p.dtype), exponent)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def shift_weight(p: jax.Array, s: jax.Array, weight_bits: int = 5) -> jax.Array:
    """The effective weight W = 2^round(clip(p)) * sign(round(s)) (SHIFTADDNET.md 1.3a-d, 1.4).

    The gradient is the chain of the official straight-through pieces: clamp, round and sign
    pass the gradient unchanged, d2^q/dq = 2^q ln 2, and the product uses the asymmetric rule
    (d/d(2^q) = g * sign, d/ds = g without the 2^q factor). With s_t = sign(round(s)) and
    p_r = round(clip(p, lo, 0)), NumPy:

        W  = s_t * 2.0 ** p_r
        dp = g * s_t * 2.0 ** p_r * np.log(2)  (= g * W * ln 2; zero where s_t = 0)
        ds = g

    Args:
      p: latent shifts, any shape, float.
      s: latent signs, the shape of `p`.
      weight_bits: b; the shifts are clipped to `shift_range(b)` (static).
    Returns:
      W, the shape and dtype of `p`: exactly 0 or +-2^k with k in `shift_range(b)`.
    """
    return _shift_weight_value(p, s, weight_bits)


def _shift_weight_fwd(p, s, weight_bits):
    w = _shift_weight_value(p, s, weight_bits)
    return w, w


def _shift_weight_bwd(weight_bits, w, g):
    del weight_bits
    return (g * w * LN2).astype(w.dtype), g


shift_weight.defvjp(_shift_weight_fwd, _shift_weight_bwd)


def _fixed_point(x, fraction_bits, integer_bits):
    scale = 2.0**fraction_bits
    bound = 2.0 ** (integer_bits - 1)
    return jnp.clip(jnp.floor(x * scale) / scale, -bound, bound - 1).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def fixed_point_ste(
    x: jax.Array, fraction_bits: int = FRACTION_BITS, integer_bits: int = INTEGER_BITS
) -> jax.Array:
    """Fixed-point rounding (floor) and clipping, straight-through (SHIFTADDNET.md 1.3e, 1.4).

    As the official `round_to_fixed(x, fraction=16, integer=16)`. NumPy:

        forward  np.clip(np.floor(x * 2**f) / 2**f, -2**(i - 1), 2**(i - 1) - 1)
        backward dx = g  (also outside the clip range)

    Exact in float32 for |x| < 2^15 (scaling by a power of two and flooring are exact).
    """
    return _fixed_point(x, fraction_bits, integer_bits)


fixed_point_ste.defvjp(
    lambda x, f, i: (_fixed_point(x, f, i), None), lambda f, i, _, g: (g,)
)


def quantize_uniform_stochastic(g: jax.Array, key: jax.Array, bits: int) -> jax.Array:
    """Uniform `bits`-bit quantisation of `g` between its min and max, stochastic rounding.

    As the official `UniformQuantize(stochastic=True)` on a gradient (`adder/quantize.py`),
    NumPy (u ~ U[0, 1) per element, drawn from `key`):

        lo, hi = g.min(), g.max(); step = (hi - lo) / (2**bits - 1)
        q = np.clip(np.floor((g - lo) / step + u), 0, 2**bits - 1)
        return q * step + lo          (g itself when hi == lo)

    The result is unbiased and within one step of g.
    """
    lo, hi = jnp.min(g), jnp.max(g)
    levels = 2.0**bits - 1
    step = (hi - lo) / levels
    safe_step = jnp.where(step > 0, step, 1.0)
    u = jax.random.uniform(key, g.shape, g.dtype)
    q = jnp.clip(jnp.floor((g - lo) / safe_step + u), 0, levels)
    return jnp.where(step > 0, q * safe_step + lo, g).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def quantize_grad(x: jax.Array, key: jax.Array, bits: int = 16) -> jax.Array:
    """Identity forward; in backward the incoming gradient is quantised by
    `quantize_uniform_stochastic(g, key, bits)` (SHIFTADDNET.md 1.3g, official `quantize_grad`
    on every shift layer's output).

    NumPy: forward `x`; backward `dx = quantize_uniform_stochastic(g, key, bits)`, no gradient
    for `key`. Off by default in `shift_conv2d` (`grad_bits=None`): the official code draws the
    rounding noise from torch's global RNG, here it needs a fresh key per call; and 16 bits
    change a float32 gradient by at most one step, range / (2^16 - 1), numerically minor for
    training, while the min/max reductions and the noise cost a full pass over the gradient.
    It exists to reproduce the official training in spirit, not for accuracy.
    """
    del key, bits
    return x


quantize_grad.defvjp(
    lambda x, key, bits: (x, key),
    lambda bits, key, g: (quantize_uniform_stochastic(g, key, bits), None),
)


def shift_conv2d(
    x: jax.Array,
    shift: jax.Array,
    sign: jax.Array,
    bias: jax.Array | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = 0,
    weight_bits: int = 5,
    grad_bits: int | None = None,
    key: jax.Array | None = None,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Shift convolution (SHIFTADDNET.md 1.3, official `Conv2dShift.forward`), NHWC / HWIO.

    y = conv2d(fixed_point_ste(x), shift_weight(shift, sign, weight_bits)) (+ fixed-point bias),
    then `quantize_grad(y, key, grad_bits)` when `grad_bits` is set.

    Args:
      x: input, (N, H, W, C_in).
      shift: latent shifts p, HWIO (kh, kw, C_in, C_out).
      sign: latent signs s, the shape of `shift`.
      bias: optional (C_out,), fixed-point rounded as the official layer's.
      stride: int or (sh, sw).
      padding: int (each side, as the official layer), (ph, pw), pairs, 'SAME' or 'VALID'.
      weight_bits: b of `shift_range`.
      grad_bits: None (default) or the bits of the backward gradient quantiser (16 official).
      key: PRNG key of the gradient quantiser; required when `grad_bits` is set.
      precision: `lax.conv_general_dilated` precision (None: the backend default, as nnx.Conv).
    Returns:
      (N, H_out, W_out, C_out).
    Raises:
      ValueError: naming the shapes when the operands do not fit, or for a missing key.
    """
    if jnp.ndim(x) != 4 or jnp.shape(shift) != jnp.shape(sign) or jnp.ndim(shift) != 4:
        raise ValueError(f"shift_conv2d expects x (N, H, W, C_in) and shift/sign of one HWIO "
                         f"shape, got x {jnp.shape(x)}, shift {jnp.shape(shift)}, "
                         f"sign {jnp.shape(sign)}")
    if x.shape[3] != shift.shape[2]:
        raise ValueError(f"channel mismatch: x {x.shape} has {x.shape[3]} channels but the "
                         f"kernel {shift.shape} expects C_in = {shift.shape[2]}")
    if grad_bits is not None and key is None:
        raise ValueError("shift_conv2d(grad_bits=...) needs a PRNG key for stochastic rounding")
    geometry = resolve_geometry(stride, padding, x.shape[1:3], shift.shape[:2])
    w = shift_weight(shift, sign, weight_bits).astype(x.dtype)
    y = lax.conv_general_dilated(fixed_point_ste(x), w, geometry.strides, geometry.pads,
                                 dimension_numbers=CONV_DIMENSIONS, precision=precision)
    if bias is not None:
        y = y + fixed_point_ste(bias).astype(y.dtype)
    return y if grad_bits is None else quantize_grad(y, key, grad_bits)
