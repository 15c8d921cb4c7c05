"""adder2d_int(impl='ffi'): the sum S = sum |Xpad_q - W_q| by x86's vpsadbw, through XLA's FFI.

The kernel (csrc/adder_sad.cc, built by `sad_kernel`) computes one thing: for uint8 operands in
16-channel granules, S[n,i,j,o] = sum_{u,v,c} |xpad[n, i*sh+u, j*S+v, c] - w[o,u,v,c]|. This
module turns any int8 layer into that form with XLA ops around the call:

  - uint8 by an offset of 128 (x ^ 0x80): |(x + 128) - (w + 128)| = |x - w|. Spatial padding
    holds the zero point + 128; channel padding holds 128 in both operands, adding 0.
  - small C_in wastes most of a 16-byte granule (C_in = 3: 81%), so the kw horizontal taps are
    folded into the channels when that needs fewer granules (x_ext[.., j, v*C + c] =
    xpad[.., j*sw + v, c], filters (kh, 1, kw*C, O)), and then the kh vertical taps too when
    all of them fit one granule (an im2col of a tiny layer, 3x3x1). Folding further (LeNet's
    5x5x6 conv2 into 10 granules instead of 25) measured no faster: the granule transpose
    below, done by XLA, then costs what the kernel saves;
  - a 1x1 layer (or a fully folded one) is subsampled by its stride and flattened to one row of
    N*H*W pixels, which the kernel's threads split (they split rows and pixel tiles);
  - the stride along W becomes S phases of the padded width (x[.., q*S + p] -> phase p, column
    q), so every tap reads consecutive granules; the output is padded to whole tiles (4, 8 or
    16 pixels, 4 filters) and sliced back.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from addernet_jax.ops import sad_kernel
from addernet_jax.ops.geometry import Geometry

GRANULE = 16  # channel bytes per 128-bit lane
OFFSET = 128  # int8 -> uint8
# Fold taps into channels only while a pixel's folded row stays this small (bytes): the folded
# input is kh*kw times larger, worthwhile for small C_in only.
MAX_FOLDED_BYTES = 1024


def to_uint8(a: jax.Array) -> jax.Array:
    """int8 -> uint8 plus 128 (x ^ 0x80, reinterpreted): order and differences preserved."""
    return lax.bitcast_convert_type(a ^ jnp.int8(-OFFSET), jnp.uint8)


def granules(channels: int) -> int:
    return math.ceil(channels / GRANULE)


def fold_columns(xp, kw: int, sw: int, wo: int):
    """(N, H, Wp, C) -> (N, H, wo, kw*C): x_ext[.., j, v*C + c] = xp[.., j*sw + v, c]."""
    taps = [xp[:, :, v : v + (wo - 1) * sw + 1 : sw, :] for v in range(kw)]
    return jnp.concatenate(taps, axis=3)


def fold_rows(xp, kh: int, sh: int, ho: int):
    """(N, Hp, W, K) -> (N, ho, W, kh*K): x_ext[n, i, .., u*K + k] = xp[n, i*sh + u, .., k]."""
    taps = [xp[:, u : u + (ho - 1) * sh + 1 : sh] for u in range(kh)]
    return jnp.concatenate(taps, axis=3)


def pixel_block(wo: int) -> int:
    """Vectors of 4 pixels per tile (4, 2 or 1): the least output padding, then the largest."""
    return min((4, 2, 1), key=lambda b: (math.ceil(wo / (4 * b)) * 4 * b, -b))


def _granule_transpose(x, perm):
    """Transposes an (..., 16) uint8 array over its leading axes in 4-byte words (XLA moves
    words much faster than bytes)."""
    words = lax.bitcast_convert_type(x.reshape(*x.shape[:-1], 4, 4), jnp.uint32)
    words = words.transpose(*perm, len(perm))
    return lax.bitcast_convert_type(words, jnp.uint8).reshape(*words.shape[:-1], GRANULE)


def kernel_input(xp, kw: int, sw: int, wo_pad: int):
    """Padded uint8 (N, Hp, Wp, C) -> the kernel's (N, Hp, CG, S, Wq, 16) layout."""
    n, hp, wp, c = xp.shape
    cg = granules(c)
    wq = wo_pad + (kw - 1) // sw + 1
    width = wq * sw
    xp = xp[:, :, :width]  # columns past the last window are never read
    xp = jnp.pad(xp, ((0, 0), (0, 0), (0, width - xp.shape[2]), (0, cg * GRANULE - c)),
                 constant_values=OFFSET)
    xp = xp.reshape(n, hp, wq, sw, cg, GRANULE)
    if cg == 1 and sw == 1:
        return xp.reshape(n, hp, 1, 1, wq, GRANULE)
    return _granule_transpose(xp, (0, 1, 4, 3, 2))


def kernel_filters(w_q, o_pad: int):
    """int8 HWIO (kh, kw, C, O) -> uint8 (O_pad, kh, kw, CG, 16), padding 128."""
    kh, kw, c, o = w_q.shape
    cg = granules(c)
    w = jnp.pad(to_uint8(w_q), ((0, 0), (0, 0), (0, cg * GRANULE - c), (0, o_pad - o)),
                constant_values=OFFSET)
    return w.reshape(kh, kw, cg, GRANULE, o_pad).transpose(4, 0, 1, 2, 3)


def sad_call(xp, w_q, strides, out_hw):
    """S of a padded uint8 input (N, Hp, Wp, C) and int8 HWIO filters, by the kernel."""
    n, o = xp.shape[0], w_q.shape[3]
    (sh, sw), (ho, wo) = strides, out_hw
    if n * ho * wo * o == 0:
        return jnp.zeros((n, ho, wo, o), jnp.int32)
    sad_kernel.ensure_loaded()
    pb = pixel_block(wo)
    wo_pad, o_pad = math.ceil(wo / (4 * pb)) * 4 * pb, math.ceil(o / 4) * 4
    x = kernel_input(xp, w_q.shape[1], sw, wo_pad)
    w = kernel_filters(w_q, o_pad)
    result = jax.ShapeDtypeStruct((n, ho, wo_pad, o_pad), jnp.int32)
    out = jax.ffi.ffi_call(sad_kernel.TARGET_NAME, result, vmap_method="sequential")(
        x, w, stride_h=np.int64(sh), pixel_block=np.int64(pb))
    return out[:, :, :wo, :o]


def _pays_to_fold(before: int, after: int, folded_bytes: int) -> bool:
    """Whether folding taps into channels turns `before` granules per output into fewer."""
    return after < before and folded_bytes <= MAX_FOLDED_BYTES


def forward_int_ffi(x_q, w_q, geometry: Geometry, zero_point: int = 0):
    """S = sum |Xpad_q - W_q| (padding = `zero_point`) by the vpsadbw kernel (module docstring).

    Raises:
      sad_kernel.KernelUnavailable: the kernel cannot be built or run on this machine.
    """
    kh, kw, c, o = w_q.shape
    (sh, sw), pads = geometry.strides, geometry.pads
    ho, wo = geometry.output_hw(x_q.shape[1:3], (kh, kw))
    xp = jnp.pad(to_uint8(x_q), ((0, 0), *pads, (0, 0)), constant_values=zero_point + OFFSET)
    if kw > 1 and _pays_to_fold(kw * granules(c), granules(kw * c), kw * c):
        xp, w_q = fold_columns(xp, kw, sw, wo), w_q.reshape(kh, 1, kw * c, o)
        kw, sw, c = 1, 1, kw * c
    if kw == 1 and kh > 1 and granules(kh * c) == 1:
        xp, w_q = fold_rows(xp, kh, sh, ho), w_q.reshape(1, 1, kh * c, o)
        kh, sh, c = 1, 1, kh * c
    if (kh, kw) != (1, 1):
        return sad_call(xp, w_q, (sh, sw), (ho, wo))
    # Pointwise: the pixels each output reads, as one row that the kernel's threads split.
    xs = xp[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    out = sad_call(xs.reshape(1, 1, -1, c), w_q, (1, 1), (1, xs.shape[0] * ho * wo))
    return out.reshape(xs.shape[0], ho, wo, o)
