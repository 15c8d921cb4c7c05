"""Fast XLA formulation of the adder convolution: shifted-window accumulation.

Instead of building patches, every output is accumulated term by term from shifted, strided
views of the padded input,

    Y[n, i, j, :] -= |Xpad[n, i*sh + u, j*sw + v, c] - F[u, v, c, :]|   for each (u, v, c),

with the terms unrolled in Python so that XLA fuses a block of them into a single elementwise
loop whose innermost (vectorised) axis is the output channel. Blocks are chained with
`lax.scan`, which XLA cannot fuse across: LLVM stops vectorising a fused loop body of more than
about 200 terms (seen on XLA:CPU with jax 0.10: 216 terms vectorised, 252 did not, a 10x drop),
so a block holds at most `TERM_BUDGET` terms. Nothing larger than the output is materialised:
in particular never the official (C_out, C_in*k*k, N*H*W) difference tensor, nor patches.

The input gradient is the same kind of sum over the transposed (flipped) kernel with the HardTanh
term of ADDERNET.md 2.2; the weight gradient reduces to a convolution weight gradient plus a
correction (ADDERNET.md 2.1), so it runs on the matmul units.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from addernet_jax.ops.geometry import Geometry
from addernet_jax.ops.reference import local_input_grad, pad_input, place, window

# Terms fused per loop body. Measured on a 2-core Zen 5 over the ResNet-20/50 layer shapes
# (benchmarks/adder_layer.py; best of 15 runs, time / lax.conv): 16 is best or tied on every
# shape, forward and input gradient; 32 and 64 lose up to 1.5x and 2.3x on wide layers (C = 512:
# forward 2.8x / 3.3x / 6.4x of conv for 16 / 32 / 64) and 8 or 12 lose 6-10x everywhere (the
# fused loop is no longer vectorised). Smaller bodies also compile faster.
TERM_BUDGET = 16

# A kernel with fewer channels than TERM_BUDGET would be cut into blocks of only `channels` terms,
# too few to vectorise: LeNet-5's conv2 (6 channels, 5x5) ran as 25 blocks of 6 terms, 20 ms per
# batch of 128 against 1.7 ms as one fused body of 150 terms (Xeon, one core). Such a kernel is
# fused whole when it has at most this many terms (below the ~216-term vectoriser limit above).
WHOLE_KERNEL_TERMS = 200

Term = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]


def accumulation_dtype(*arrays):
    """float32 for half-precision inputs (sums of hundreds of terms), else the input dtype."""
    dtype = jnp.result_type(*arrays)
    return jnp.promote_types(dtype, jnp.float32)


def _sum_terms(src, weights, out_hw, strides, term: Term, context):
    """sum_{u,v,e} term(window_{u,v}[..., e], weights[u, v, e, :], context), fully unrolled."""
    kh, kw, channels, _ = weights.shape
    total = None
    for u, v in itertools.product(range(kh), range(kw)):
        view = window(src, u, v, out_hw, strides)
        for e in range(channels):
            value = term(view[..., e : e + 1], weights[u, v, e], context)
            total = value if total is None else total + value
    return total


def _channel_chunk(kh, kw, channels, budget, whole_kernel_terms=0):
    """Channels summed per loop body when the whole kernel exceeds the budget: one kernel tap
    and an equal share of the channels (at most `budget`). None when the kernel fits, or when
    it has fewer channels than `budget` and at most `whole_kernel_terms` terms in all.

    (Blocks of whole kernel rows, tried for C * kw <= budget, hit an XLA:CPU codegen failure
    under vmap in jax 0.10, "Incorrect number of arguments passed to called function" in a fused
    dynamic slice, and would only ever be chosen for layers with a handful of channels.)
    """
    terms = kh * kw * channels
    if terms <= budget or (channels < budget and terms <= whole_kernel_terms):
        return None
    return math.ceil(channels / math.ceil(channels / budget))


def fuses_whole_kernel(kh: int, kw: int, channels: int) -> bool:
    """Whether `shifted_sum` sums a (kh, kw, channels, D) kernel in one loop body (no scan)."""
    return _channel_chunk(kh, kw, channels, TERM_BUDGET, WHOLE_KERNEL_TERMS) is None


def shifted_sum(src, weights, out_hw, strides, term: Term, context=None):
    """out[n,i,j,d] = sum_{u,v,e} term(src[n, i*sh+u, j*sw+v, e], weights[u,v,e,d], context).

    `term(a, b, context)` gets a (N, H_out, W_out, 1) column of `src`, a (D,) row of `weights`
    and `context` ((N, H_out, W_out, D) or None) and must return 0 when a and b are 0: the
    channel axis is zero-padded up to a multiple of the block size. At most `TERM_BUDGET` terms
    are fused into one loop body, or the whole kernel when it has few channels
    (`WHOLE_KERNEL_TERMS`).

    Args:
      src: (N, H_src, W_src, E), already padded so that every window is in range.
      weights: (kh, kw, E, D).
      out_hw: (H_out, W_out).
      strides: (sh, sw).
      term: the per-term contribution.
      context: passed through to `term`.
    Returns:
      (N, H_out, W_out, D).
    """
    kh, kw, channels, depth = weights.shape
    chunk = _channel_chunk(kh, kw, channels, TERM_BUDGET, WHOLE_KERNEL_TERMS)
    if chunk is None:
        return _sum_terms(src, weights, out_hw, strides, term, context)

    padded_channels = math.ceil(channels / chunk) * chunk
    if padded_channels != channels:
        extra = padded_channels - channels
        src = jnp.pad(src, ((0, 0), (0, 0), (0, 0), (0, extra)))
        weights = jnp.pad(weights, ((0, 0), (0, 0), (0, extra), (0, 0)))
    starts = jnp.array(list(itertools.product(range(kh), range(kw),
                                              range(0, padded_channels, chunk))), jnp.int32)
    (h_out, w_out), (sh, sw) = out_hw, strides
    src_block = (src.shape[0], (h_out - 1) * sh + 1, (w_out - 1) * sw + 1, chunk)

    def block_sum(start):
        u, v, e = start[0], start[1], start[2]
        src_view = lax.dynamic_slice(src, (0, u, v, e), src_block)
        weight_view = lax.dynamic_slice(weights, (u, v, e, 0), (1, 1, chunk, depth))
        return _sum_terms(src_view, weight_view, out_hw, strides, term, context)

    # The first block seeds the carry (rather than zeros) so that the carry has the sharding
    # of the data under explicit-sharding meshes.
    total, _ = lax.scan(lambda total, start: (total + block_sum(start), None),
                        block_sum(starts[0]), starts[1:])
    return total


def _abs_difference(a, b, _):
    return jnp.abs(a - b)


def forward_shifted(x, w, geometry: Geometry):
    """Y = -sum |Xpad_patch - F|  (paper Eq. 2) by shifted-window accumulation."""
    dtype = accumulation_dtype(x, w)
    xp = pad_input(x.astype(dtype), geometry)
    out_hw = geometry.output_hw(x.shape[1:3], w.shape[:2])
    total = shifted_sum(xp, w.astype(dtype), out_hw, geometry.strides, _abs_difference)
    return (-total).astype(jnp.result_type(x, w))


def _local_input_grad(input_grad: str) -> Term:
    def term(g_col, w_row, x):
        return g_col * local_input_grad(w_row - x, input_grad)

    return term


def _phase_taps(phase: int, pad_lo: int, stride: int, kernel: int) -> tuple[int, int, int]:
    """The kernel taps u = first + m * stride (m < count) that reach input rows y = phase
    (mod stride), and the offset q with i = a + q - m for y = a * stride + phase:
    y + pad_lo = i * stride + u. Returns (first, count, q)."""
    first = (phase + pad_lo) % stride
    return first, len(range(first, kernel, stride)), (phase + pad_lo - first) // stride


def _phase_input_grad(x, w, g, geometry: Geometry, phase: tuple[int, int], term: Term):
    """dL/dX at the input positions (phase_h + a*sh, phase_w + b*sw): a stride-1 window sum of
    g (not dilated) over the flipped sub-kernel of the taps that reach this phase."""
    firsts, sizes, pads = [], [], [(0, 0, 0)]
    for r, size, (lo, _), s, k, g_size in zip(phase, x.shape[1:3], geometry.pads,
                                              geometry.strides, w.shape[:2], g.shape[1:3]):
        first, count, offset = _phase_taps(r, lo, s, k)
        out_size = len(range(r, size, s))
        if not count or not out_size:
            return None
        low = count - 1 - offset  # so that src[a + m'] = g[a + q - m], m' = count - 1 - m
        firsts.append(first)
        sizes.append(out_size)
        pads.append((low, out_size + count - 1 - g_size - low, 0))
    pads.append((0, 0, 0))
    g_src = lax.pad(g, jnp.zeros((), g.dtype), pads)
    (sh, sw) = geometry.strides
    w_phase = w[firsts[0] :: sh, firsts[1] :: sw]
    w_transposed = jnp.flip(w_phase, axis=(0, 1)).transpose(0, 1, 3, 2)  # (k', k', C_out, C_in)
    x_phase = x[:, phase[0] :: sh, phase[1] :: sw, :]
    return shifted_sum(g_src, w_transposed, tuple(sizes), (1, 1), term, context=x_phase)


def input_grad_shifted(x, w, g, geometry: Geometry, input_grad: str = "hardtanh"):
    """dL/dX[n,y,x,c] = sum_{u,v,o} g[n,i,j,o] * HT(F[u,v,c,o] - X[n,y,x,c]) over the outputs
    (i, j) whose window covers (y, x)  (ADDERNET.md 2.2); padded positions are never computed.

    With stride s > 1 the input is split into s*s phases (y mod s, x mod s); each phase is
    reached by a fixed subset of kernel taps, so each is a dense stride-1 sum with no wasted
    terms (a dilated g would waste (s^2 - 1) / s^2 of them).
    """
    dtype = accumulation_dtype(x, w, g)
    x, w, g = x.astype(dtype), w.astype(dtype), g.astype(dtype)
    term = _local_input_grad(input_grad)
    total = jnp.zeros_like(x)
    for phase in itertools.product(*(range(s) for s in geometry.strides)):
        part = _phase_input_grad(x, w, g, geometry, phase, term)
        if part is not None:
            total = total + place(part, phase, geometry.strides, x.shape[1:3])
    return total


def conv_weight_grad(x, g, kernel, geometry: Geometry):
    """sum_{n,i,j} Xpad[n, i*s+u, j*s+v, c] * g[n,i,j,o]: a convolution's weight gradient.

    HIGHEST precision so that GPUs and TPUs do not round it through TF32/bfloat16.
    """

    def conv(kernel):
        return lax.conv_general_dilated(
            x, kernel, window_strides=geometry.strides, padding=geometry.pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST,
        )

    # conv is linear in the kernel, so the primal only fixes the kernel's type and sharding.
    _, pullback = jax.vjp(conv, kernel)
    return pullback(g)[0]


def weight_grad_shifted(x, w, g, geometry: Geometry):
    """dL/dF = sum (Xpad_patch - F) g = ConvWeightGrad(Xpad, g) - F * sum_{n,i,j} g
    (full-precision gradient, paper Eq. 5; the exact rewrite of ADDERNET.md 2.1)."""
    dtype = accumulation_dtype(x, w, g)
    x, w, g = x.astype(dtype), w.astype(dtype), g.astype(dtype)
    return conv_weight_grad(x, g, w, geometry) - w * jnp.sum(g, axis=(0, 1, 2))
