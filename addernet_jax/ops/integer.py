"""Integer adder convolution for inference: S = sum |Xpad_q - W_q| on int8 operands, exact int32.

With activations and filters quantised onto one integer grid (x ~ s * (x_q - z),
F ~ s * (w_q - z): one scale s and one zero point z, since only x - F = s * (x_q - w_q) enters
the layer), the float layer (paper Eq. 2) is Y = -s * S with

    S[n,i,j,o] = sum_{u,v,c} |Xpad_q[n, i*sh + u, j*sw + v, c] - W_q[u, v, c, o]|  >= 0,

where padded positions hold the zero point z (the integer of the real 0), so they contribute
|z - W_q| exactly as the float op's zero padding contributes |0 - F| (ADDERNET.md 1.2).
`adder2d_int` returns S as int32; the caller negates, scales and folds BatchNorm
(`addernet_jax.quantize`). Inference only: there is no gradient.

Three implementations:
  'reference'  explicit patches, int32 arithmetic throughout: the specification in code.
  'shifted'    the shifted-window accumulation of ops/shifted.py (vectorised along C_out), in
               16-bit lanes: a term |a - b| <= 255 fits int16 and a 512-bit vector holds 32 of
               them, twice the float32 lanes. Partial sums are kept in uint16, exact while a sum
               has at most 257 terms (257 * 255 = 65535), and widened to int32 between blocks.
               Runs on every backend.
  'ffi'        x86's vpsadbw (64 absolute byte differences summed per instruction) in a
               register-blocked C++ kernel called through XLA's FFI (integer_sad.py,
               csrc/adder_sad.cc), on CPUs with AVX-512BW; built on first use (sad_kernel.py).
'auto' is 'ffi' where that kernel runs, else 'shifted' (`select_int_implementation`).

Speed (benchmarks/integer_adder.py, benchmarks/RESULTS.md): XLA never emits vpsadbw for
this pattern, and 'shifted' spends three vector instructions (vpsubw, vpabsw, vpaddw) per 32
terms, so over ResNet-20's adder layers it takes about 0.6x the time of the float32 adder but
1.8x that of the float32 `lax.conv`; 'ffi' spends about one instruction pair per 64 terms and
beats the float32 convolution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from addernet_jax.ops import integer_sad, sad_kernel
from addernet_jax.ops.geometry import Geometry, PaddingLike, resolve_geometry
from addernet_jax.ops.reference import extract_patches, pad_input, window

# Terms one uint16 partial sum may hold exactly: 257 * 255 = 65535 = 2^16 - 1.
UINT16_TERMS = 257
# A layer with at most this many terms per output and fewer than WIDE_OUTPUTS output channels is
# one fused loop, no scan: on ResNet-20's 3x3x16 -> 16 layer (benchmarks/integer_adder.py) that
# 144-term loop is up to 2x faster than scanned blocks (no carry round trips, no block copies).
# LLVM still vectorises such a loop at 234 terms and stops at 261 (XLA:CPU, jax 0.10).
FUSED_TERMS = 200
# From this many output channels on, the scanned blocks win even for a small layer (3x3x16 -> 32
# stride 2: 0.56 against 0.82 of the float adder): their loops are 16-bit only and get 32 lanes
# per 512-bit vector, while the fused loop's int32 result makes LLVM pick 16 lanes for it all.
WIDE_OUTPUTS = 32
# Terms per scanned block (at least). Blocks are all kernel taps of a few channels; with fewer
# than 16 terms XLA fuses the block's dynamic slice into the loop, which then loses its vector
# code (XLA:CPU fuses a producer that its consumer indexes at most 15 different ways).
BLOCK_TERMS = 16
_IntImpl = Callable[[jax.Array, jax.Array, Geometry, int], jax.Array]


def check_int_operands(x_q, w_q, stride, padding: PaddingLike) -> Geometry:
    """Validates int8 adder operands (NHWC input, HWIO kernel) and returns the `Geometry`.

    Raises:
      ValueError: one line naming the problem: rank, dtype, channel mismatch, or a kernel larger
        than the padded input.
    """
    x_shape, w_shape = jnp.shape(x_q), jnp.shape(w_q)
    if len(x_shape) != 4:
        raise ValueError(f"adder2d_int expects x_q of rank 4 (N, H, W, C_in), got {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(f"adder2d_int expects w_q of rank 4 (kh, kw, C_in, C_out), got {w_shape}")
    for name, arr in (("x_q", x_q), ("w_q", w_q)):
        if jnp.result_type(arr) != jnp.int8:
            raise ValueError(f"adder2d_int needs int8 operands; {name} has dtype "
                             f"{jnp.result_type(arr)}")
    if x_shape[3] != w_shape[2]:
        raise ValueError(f"channel mismatch: x_q {x_shape} has {x_shape[3]} channels but w_q "
                         f"{w_shape} expects C_in = {w_shape[2]}")
    geometry = resolve_geometry(stride, padding, x_shape[1:3], w_shape[:2])
    padded = [size + lo + hi for size, (lo, hi) in zip(x_shape[1:3], geometry.pads)]
    if w_shape[0] > padded[0] or w_shape[1] > padded[1]:
        raise ValueError(f"kernel {w_shape[:2]} is larger than the padded input {tuple(padded)} "
                         f"(x_q {x_shape}, padding {geometry.pads})")
    return geometry


def forward_int_reference(x_q, w_q, geometry: Geometry, zero_point: int = 0):
    """S[n,i,j,o] = sum_{u,v,c} |Xpad_q[n, i*s+u, j*s+v, c] - W_q[u,v,c,o]|, all in int32, with
    Xpad_q = `zero_point` at padded positions.

    Materialises the (N, H_out, W_out, kh, kw, C_in, C_out) difference tensor: small shapes only.
    """
    # |x - w| = |(x - z) - (w - z)|: shifting both by the zero point makes the padding 0.
    x, w = x_q.astype(jnp.int32) - zero_point, w_q.astype(jnp.int32) - zero_point
    patches = extract_patches(x, w_q.shape[:2], geometry)
    return jnp.sum(jnp.abs(patches[..., None] - w), axis=(3, 4, 5))


def _block_sum(xp, w, out_hw, strides):
    """sum_{u,v,e} |window_{u,v}(xp)[..., e] - w[u, v, e, :]|, fully unrolled.

    xp: (N, H_pad, W_pad, E) int16; w: (kh, kw, E, D) int16. Each term is a broadcast input
    column against a filter row (vector along D = C_out). The sum is uint16 (exact up to
    UINT16_TERMS terms), int32 for the rare block that has more (a kernel of over 257 taps).
    """
    kh, kw, channels, _ = w.shape
    dtype = jnp.uint16 if kh * kw * channels <= UINT16_TERMS else jnp.int32
    total = None
    for u, v in itertools.product(range(kh), range(kw)):
        view = window(xp, u, v, out_hw, strides)
        for e in range(channels):
            term = jnp.abs(view[..., e : e + 1] - w[u, v, e]).astype(dtype)
            total = term if total is None else total + term
    return total


def _scan_plan(taps: int, channels: int) -> tuple[int, int, int]:
    """(chunk, blocks per group, groups): blocks are all taps of `chunk` channels (at least
    BLOCK_TERMS terms when the kernel allows), groups hold at most UINT16_TERMS terms."""
    chunk = min(channels, max(1, math.ceil(BLOCK_TERMS / taps)))
    blocks = math.ceil(channels / chunk)
    per_group = max(1, UINT16_TERMS // (taps * chunk))
    groups = math.ceil(blocks / per_group)
    return chunk, math.ceil(blocks / groups), groups


def _scanned_sum(xp, w, out_hw, strides):
    """The shifted-window sum of all but the small narrow layers: a uint16 scan over channel
    blocks inside an int32 scan over groups of them. Channels are zero-padded to whole
    blocks (|0 - 0| = 0 adds nothing)."""
    kh, kw, channels, depth = w.shape
    chunk, per_group, groups = _scan_plan(kh * kw, channels)
    extra = chunk * per_group * groups - channels
    xp = jnp.pad(xp, ((0, 0), (0, 0), (0, 0), (0, extra)))
    w = jnp.pad(w, ((0, 0), (0, 0), (0, extra), (0, 0)))
    n, hp, wp, _ = xp.shape
    out_shape = (n, *out_hw, depth)
    group_dtype = jnp.uint16 if per_group * kh * kw * chunk <= UINT16_TERMS else jnp.int32

    def block(start):
        xs = lax.dynamic_slice(xp, (0, 0, 0, start), (n, hp, wp, chunk))
        ws = lax.dynamic_slice(w, (0, 0, start, 0), (kh, kw, chunk, depth))
        return _block_sum(xs, ws, out_hw, strides)

    def group(starts):
        total, _ = lax.scan(lambda acc, s: (acc + block(s), None),
                            jnp.zeros(out_shape, group_dtype), starts)
        return total.astype(jnp.int32)

    starts = jnp.arange(groups * per_group, dtype=jnp.int32).reshape(groups, per_group) * chunk
    if groups == 1:
        return group(starts[0])
    total, _ = lax.scan(lambda acc, s: (acc + group(s), None),
                        jnp.zeros(out_shape, jnp.int32), starts)
    return total


def forward_int_shifted(x_q, w_q, geometry: Geometry, zero_point: int = 0):
    """S by shifted-window accumulation in 16-bit lanes (see the module docstring)."""
    kh, kw, channels, _ = w_q.shape
    # Shifted by the zero point (padding becomes 0), both operands lie in [-255, 255] and every
    # term |x - w| is still at most 255.
    x, w = x_q.astype(jnp.int16) - zero_point, w_q.astype(jnp.int16) - zero_point
    if (kh, kw) == (1, 1) and geometry.strides != (1, 1):
        # A strided 1x1 layer only reads every s-th pixel: subsample once, then stride 1.
        sh, sw = geometry.strides
        x = pad_input(x, geometry)[:, ::sh, ::sw]
        geometry = Geometry(strides=(1, 1), pads=((0, 0), (0, 0)))
    xp = pad_input(x, geometry)
    out_hw = geometry.output_hw(x.shape[1:3], (kh, kw))
    narrow = w_q.shape[3] < WIDE_OUTPUTS or _scan_plan(kh * kw, channels)[0] == channels
    if kh * kw * channels <= FUSED_TERMS and narrow:  # narrow: or the scan would be one block
        return _fused_sum(xp, w, out_hw, geometry.strides)
    return _scanned_sum(xp, w, out_hw, geometry.strides)


def _fused_sum(xp, w, out_hw, strides):
    """`_block_sum` as one fused loop, run as a two-step loop over halves of the batch.

    The loop boundary keeps S materialised: in a network, XLA would otherwise fuse this loop
    into its consumers, e.g. recompute a block's sum inside the next block's loop through the
    float residual (an 8x slower quantised ResNet-20 forward; `lax.optimization_barrier` does
    not stop XLA:CPU's fusion). A one-step loop would be inlined, so a batch of one runs bare.
    """
    n = xp.shape[0]
    if n < 2:
        return _block_sum(xp, w, out_hw, strides).astype(jnp.int32)
    half = -(-n // 2)
    xp = jnp.pad(xp, ((0, 2 * half - n), (0, 0), (0, 0), (0, 0)))
    halves = xp.reshape(2, half, *xp.shape[1:])
    _, total = lax.scan(
        lambda _, part: (None, _block_sum(part, w, out_hw, strides).astype(jnp.int32)),
        None, halves)
    return total.reshape(2 * half, *total.shape[2:])[:n]


INT_IMPLEMENTATIONS: dict[str, _IntImpl] = {
    "reference": forward_int_reference,
    "shifted": forward_int_shifted,
    "ffi": integer_sad.forward_int_ffi,
}


def select_int_implementation() -> str:
    """What impl='auto' runs: 'ffi' on a CPU backend where the vpsadbw kernel builds and runs
    (x86-64 with AVX-512BW, a C++ compiler), else 'shifted'."""
    if jax.default_backend() == "cpu" and sad_kernel.available():
        return "ffi"
    return "shifted"


def check_zero_point(zero_point) -> int:
    """The zero point as an int in the int8 range; ValueError naming it otherwise."""
    if isinstance(zero_point, bool) or not isinstance(zero_point, int | np.integer) \
            or not -128 <= zero_point <= 127:
        raise ValueError(f"adder2d_int zero_point must be an int in [-128, 127], got "
                         f"{zero_point!r}")
    return int(zero_point)


def adder2d_int(
    x_q: jax.Array,
    w_q: jax.Array,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = 0,
    zero_point: int = 0,
    impl: str = "auto",
) -> jax.Array:
    """Integer adder convolution: the L1 distance of each zero-padded int8 patch to each filter.

    Args:
      x_q: int8 input, NHWC, sharing one quantisation grid (scale and zero point) with `w_q`.
      w_q: int8 filters, HWIO (kh, kw, C_in, C_out).
      stride: int or (sh, sw).
      padding: as `adder2d`: int, (ph, pw), ((top, bottom), (left, right)), 'SAME' or 'VALID'.
        Padded positions hold `zero_point`, the integer of the real value 0, and contribute
        |zero_point - w_q| as the float layer's zero padding contributes |0 - w| (ADDERNET.md
        1.2).
      zero_point: the integer that represents 0 on the shared grid (static), in [-128, 127].
      impl: 'auto' (`select_int_implementation()`) or one of `INT_IMPLEMENTATIONS`.
    Returns:
      int32 (N, H_out, W_out, C_out), S = sum |Xpad_q - W_q| >= 0; the float layer output is
      -scale * S. Exact for any layer (S < 2^31 needs fewer than 8.4 million terms).
    Raises:
      ValueError: one line naming the problem with the operands, the zero point or the
        implementation (also when 'ffi' cannot run here, saying why).
    """
    geometry = check_int_operands(x_q, w_q, stride, padding)
    zero_point = check_zero_point(zero_point)
    if impl == "auto":
        impl = select_int_implementation()
    if impl not in INT_IMPLEMENTATIONS:
        raise ValueError(f"unknown adder2d_int impl {impl!r}; choose 'auto' or one of "
                         f"{sorted(INT_IMPLEMENTATIONS)}")
    if impl == "ffi" and (reason := sad_kernel.unavailable_reason()):
        raise ValueError(f"adder2d_int impl 'ffi' cannot run here: {reason}")
    return INT_IMPLEMENTATIONS[impl](x_q, w_q, geometry, zero_point)
