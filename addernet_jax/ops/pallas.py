"""Pallas (Triton GPU) kernels for the adder forward and input gradient: tiled "L1 matmuls".

An adder layer is a matmul in which the multiply-add a*b + acc becomes acc + |a - b| (paper
Eq. 2). With im2col patches P (M = N*H_out*W_out rows, K = kh*kw*C_in columns, ordered (u, v, c)
like the HWIO kernel) and the kernel as a (K, C_out) matrix W,

    forward       Y[m, o]  = -sum_k |P[m, k] - W[k, o]|                      (paper Eq. 2)
    input grad    dP[m, k] =  sum_o g[m, o] * HT(W[k, o] - P[m, k])         (ADDERNET.md 2.2)

and dL/dX is dP folded back onto the input (col2im, gradients on padded positions dropped).
HT = clip(., -1, 1), or sign(.) with `input_grad='sign'`. The weight gradient is
`shifted.weight_grad_shifted` (conv weight gradient minus F * sum g, ADDERNET.md 2.1): exact and
already on the matmul units, so there is no kernel for it.

Kernel design (GPU):
- Tensor cores cannot compute |a - b|, so the kernels target CUDA-core throughput: one adder MAC
  is two FADDs (d = a - b; acc += |d|, the absolute value being a free operand modifier), one
  input-gradient term is four (subtract, max, min, FFMA). Like a CUDA-core SGEMM, each program
  owns an output tile held in float32 registers and streams the reduction axis through it as
  rank-1 updates: tile[m, o] += |P[m, k] - W[k, o]|, one k at a time, BK of them unrolled per
  loop iteration so that the loads of BK rows are in flight together. Each thread keeps a small
  sub-tile (64 accumulators at the default sizes), so every loaded value feeds ~8 FADD pairs.
- The operands are passed transposed where needed so that every load is a contiguous row:
  P^T (K, M) and W (K, C_out) for the forward; P^T, W^T (C_out, K) and g^T (C_out, M) for the
  input gradient. A row is read by the threads that need it; repeated reads of a tile's rows
  hit L1 (on Hopper the same SRAM as shared memory). Triton's software pipeliner (num_stages)
  only stages loads that feed `tl.dot`, so the unrolled BK rows, not num_stages, hide latency.
- Triton parallelises every grid axis (no sequential grid axis as on TPU), so the reduction
  axis cannot be a grid axis: a program loops over all of K (forward) or C_out (input grad)
  with `lax.fori_loop`, and its input blocks span that whole axis.
- Padding: Triton tensors need power-of-two sizes, so M, K and C_out are zero-padded to block
  multiples, with values that contribute exactly 0: padded k has P = W = 0 (|0 - 0| = 0),
  padded rows m and output channels o have g = 0 in the input gradient; padded outputs are
  sliced off.
- Accumulation is float32 whatever the input dtype (float32, bfloat16, float16); operands stay
  in the input dtype in memory and are widened after the load; the forward is stored in the
  input dtype, the patch gradient in float32 (the fold sums up to kh*kw of them).

Block sizes (`forward_blocks`, `input_grad_blocks`; all powers of two): the forward tile is
at most 128 x 128 (M x C_out) with 8 warps, i.e. 64 accumulators per thread, the shape of a
CUDA-core SGEMM; thin layers (C_out = 16/32 in ResNet-20) get a tile as wide as C_out and
taller in M (up to 16k accumulators), so no lanes are spent on padded channels. Tiles shrink in
M (to 64 rows) while the grid has fewer than `MIN_PROGRAMS` programs, to fill the SMs of an
H100. BK = 8 rows per loop iteration. The input-gradient tile is 64 x 128 (K x M; narrower in K
where that pads less, e.g. 32 for K = 144) with 8 output channels unrolled: its P tile sits in
registers beside the accumulators, so it is half the forward's. Tiles never exceed the next
power of two of the problem, and sizes whose padding would waste more than 1/8 are avoided.
These are reasoned starting points, not yet tuned on a GPU.

Patches are extracted by XLA: K * M elements written and read back (kh*kw times the input).
A fused implicit-GEMM kernel would compute P[m, k] addresses from (n, i, j, u, v, c) and read
X directly, saving that buffer (1.85 GB for a float32 ResNet-50 stage-1 3x3 layer at batch
256) and ~kh*kw times the HBM traffic of the operand; likewise the input gradient could
accumulate into dX (atomics or a phase decomposition as `shifted.input_grad_shifted`) instead
of writing dP and folding it.

Running anywhere: on a non-GPU backend the same kernels run with `interpret=True` (slow, for
tests); `INTERPRET` overrides the choice. Under `vmap`, `pallas_call`'s batching rule adds a
grid axis. Inside a mesh the kernels run per device under `jax.shard_map` (`_per_shard`): XLA
cannot partition the Triton custom call, and would run it replicated on every device after
all-gathering the batch. With explicit sharding the batch is split as x's type says; automatic
(GSPMD) shardings are invisible at trace time, so the batch is split over all automatic mesh
axes when it divides evenly (a no-op for a data-parallel layout), else the kernels run
replicated. Only the batch may be sharded.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from addernet_jax.ops.geometry import Geometry
from addernet_jax.ops.reference import extract_patches, fold_patches, local_input_grad

# None: interpret unless `jax.default_backend()` is 'gpu'. True/False forces it (tests).
INTERPRET: bool | None = None


@dataclasses.dataclass(frozen=True)
class ForwardBlocks:
    """Tiling of the forward kernel: a (block_m, block_o) output tile per program, reduced over
    K in steps of `block_k` unrolled rows. block_m and block_o must be powers of two (Triton
    tensor sizes); num_warps and num_stages go to Triton (ignored when interpreting)."""

    block_m: int = 128
    block_o: int = 128
    block_k: int = 8
    num_warps: int = 8
    num_stages: int = 1


@dataclasses.dataclass(frozen=True)
class InputGradBlocks:
    """Tiling of the input-gradient kernel: a (block_k, block_m) tile of dP^T per program,
    reduced over C_out in steps of `block_o` unrolled channels. block_k and block_m must be
    powers of two (Triton tensor sizes)."""

    block_k: int = 64
    block_m: int = 128
    block_o: int = 8
    num_warps: int = 8
    num_stages: int = 1


# Programs worth launching before tiles are shrunk: a few per SM of a 132-SM H100, so that the
# last wave is short and every SM has several CTAs' warps to hide latency with.
MIN_PROGRAMS = 512


def _round_up(size: int, block: int) -> int:
    return -(-size // block) * block


def _tile(size: int, largest: int, smallest: int = 16) -> int:
    """A power of two in [smallest, largest] for an axis of `size`: the largest one whose zero
    padding is within 1/8 of the least padding any candidate needs, and no larger than the
    next power of two of `size` (tiny problems get tiny tiles)."""
    candidates = []
    block = smallest
    while block <= largest and (block == smallest or block < 2 * size):
        candidates.append(block)
        block *= 2
    least = min(_round_up(size, b) for b in candidates)
    return max(b for b in candidates if _round_up(size, b) <= least * 9 / 8)


def forward_blocks(m: int, k: int, o: int) -> ForwardBlocks:
    """Block sizes for the forward kernel on an (M, K) x (K, C_out) problem: a 128 x 128 tile,
    or narrower in C_out with more rows (up to 16k accumulators), halved in M down to 64 rows
    while the grid has fewer than `MIN_PROGRAMS` programs; 32-64 accumulators per thread."""
    del k  # any K: padded to a multiple of block_k (8) only
    block_o = _tile(o, 128)
    block_m = _tile(m, 128 if block_o >= 64 else 16384 // block_o)
    while block_m > 64 and -(-m // block_m) * -(-o // block_o) < MIN_PROGRAMS:
        block_m //= 2
    warps = min(8, max(4, block_m * block_o // 2048))
    return ForwardBlocks(block_m=block_m, block_o=block_o, num_warps=warps)


def input_grad_blocks(m: int, k: int, o: int) -> InputGradBlocks:
    """Block sizes for the input-gradient kernel: a 64 x 128 (K x M) tile, narrower in K to
    limit padding, halved in M down to 32 while the grid has fewer than `MIN_PROGRAMS`."""
    del o  # reduced over: padded to a multiple of block_o (8) only
    block_k = _tile(k, 64)
    block_m = _tile(m, 128)
    while block_m > 32 and -(-m // block_m) * -(-k // block_k) < MIN_PROGRAMS:
        block_m //= 2
    warps = min(8, max(4, block_m * block_k // 1024))
    return InputGradBlocks(block_k=block_k, block_m=block_m, num_warps=warps)


def use_interpret(interpret: bool | None = None) -> bool:
    """Whether `pallas_call` should interpret: the argument, else `INTERPRET`, else True unless
    the default backend is a GPU (the kernels are written for the Triton lowering)."""
    if interpret is not None:
        return interpret
    if INTERPRET is not None:
        return INTERPRET
    return jax.default_backend() != "gpu"


def _pad2(a, rows: int, cols: int):
    return jnp.pad(a, ((0, rows - a.shape[0]), (0, cols - a.shape[1])))


def _forward_kernel(pt_ref, w_ref, y_ref, *, block_k: int):
    """y[m, o] = -sum_k |pt[k, m] - w[k, o]| for one (block_m, block_o) tile."""

    def step(chunk, acc):
        start = chunk * block_k
        for row in range(block_k):  # unrolled: block_k row loads in flight
            p = pt_ref[start + row, :].astype(jnp.float32)  # (block_m,)
            w = w_ref[start + row, :].astype(jnp.float32)  # (block_o,)
            acc = acc + jnp.abs(p[:, None] - w[None, :])
        return acc

    acc = jnp.zeros(y_ref.shape, jnp.float32)
    acc = lax.fori_loop(0, pt_ref.shape[0] // block_k, step, acc)
    y_ref[...] = (-acc).astype(y_ref.dtype)


def l1_matmul(patches_t, w, blocks: ForwardBlocks | None = None, *, interpret=None,
              out_dtype=None):
    """Y[m, o] = -sum_k |P[m, k] - W[k, o]|, the adder forward on patch matrices.

    Args:
      patches_t: P^T, (K, M).
      w: (K, C_out), same dtype as `patches_t`.
      blocks: tiling; `forward_blocks(M, K, C_out)` when None.
      interpret: see `use_interpret`.
      out_dtype: defaults to the operands' dtype; accumulation is float32 regardless.
    Returns:
      (M, C_out).
    """
    (k, m), o = patches_t.shape, w.shape[1]
    blocks = blocks or forward_blocks(m, k, o)
    bm, bo, bk = blocks.block_m, blocks.block_o, blocks.block_k
    mp, kp, op = _round_up(m, bm), _round_up(k, bk), _round_up(o, bo)
    y = pl.pallas_call(
        functools.partial(_forward_kernel, block_k=bk),
        out_shape=jax.ShapeDtypeStruct((mp, op), out_dtype or patches_t.dtype),
        grid=(mp // bm, op // bo),
        in_specs=[pl.BlockSpec((kp, bm), lambda i, j: (0, i)),
                  pl.BlockSpec((kp, bo), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((bm, bo), lambda i, j: (i, j)),
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps,
                                             num_stages=blocks.num_stages),
        interpret=use_interpret(interpret),
        name="adder_forward",
    )(_pad2(patches_t, kp, mp), _pad2(w, kp, op))
    return y[:m, :o]


def _input_grad_kernel(pt_ref, wt_ref, gt_ref, dpt_ref, *, block_o: int, input_grad: str):
    """dpt[k, m] = sum_o gt[o, m] * HT(wt[o, k] - pt[k, m]) for one (block_k, block_m) tile."""
    p = pt_ref[...].astype(jnp.float32)  # (block_k, block_m), reused for every o

    def step(chunk, acc):
        start = chunk * block_o
        for row in range(block_o):
            w = wt_ref[start + row, :].astype(jnp.float32)  # (block_k,)
            g = gt_ref[start + row, :].astype(jnp.float32)  # (block_m,)
            acc = acc + g[None, :] * local_input_grad(w[:, None] - p, input_grad)
        return acc

    acc = jnp.zeros(dpt_ref.shape, jnp.float32)
    acc = lax.fori_loop(0, wt_ref.shape[0] // block_o, step, acc)
    dpt_ref[...] = acc.astype(dpt_ref.dtype)


def l1_matmul_input_grad(patches_t, w, g, input_grad: str = "hardtanh",
                         blocks: InputGradBlocks | None = None, *, interpret=None):
    """dP^T[k, m] = sum_o g[m, o] * HT(W[k, o] - P[m, k])  (ADDERNET.md 2.2, before the fold).

    Args:
      patches_t: P^T, (K, M).
      w: (K, C_out).
      g: upstream gradient, (M, C_out).
      input_grad: 'hardtanh' (HT = clip(., -1, 1)) or 'sign'.
      blocks: tiling; `input_grad_blocks(M, K, C_out)` when None.
      interpret: see `use_interpret`.
    Returns:
      dP^T, (K, M), float32.
    """
    (k, m), o = patches_t.shape, w.shape[1]
    blocks = blocks or input_grad_blocks(m, k, o)
    bk, bm, bo = blocks.block_k, blocks.block_m, blocks.block_o
    mp, kp, op = _round_up(m, bm), _round_up(k, bk), _round_up(o, bo)
    dpt = pl.pallas_call(
        functools.partial(_input_grad_kernel, block_o=bo, input_grad=input_grad),
        out_shape=jax.ShapeDtypeStruct((kp, mp), jnp.float32),
        grid=(kp // bk, mp // bm),
        in_specs=[pl.BlockSpec((bk, bm), lambda i, j: (i, j)),
                  pl.BlockSpec((op, bk), lambda i, j: (0, i)),
                  pl.BlockSpec((op, bm), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((bk, bm), lambda i, j: (i, j)),
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps,
                                             num_stages=blocks.num_stages),
        interpret=use_interpret(interpret),
        name="adder_input_grad",
    )(_pad2(patches_t, kp, mp), _pad2(w.T, op, kp), _pad2(g.T, op, mp))
    return dpt[:k, :m]


def patches_transposed(x, kernel_hw: tuple[int, int], geometry: Geometry):
    """P^T, (kh*kw*C_in, N*H_out*W_out): P^T[(u, v, c), (n, i, j)] = Xpad[n, i*sh+u, j*sw+v, c],
    rows in the order of an HWIO kernel reshaped to (K, C_out)."""
    patches = extract_patches(x, kernel_hw, geometry)  # (N, H_out, W_out, kh, kw, C)
    return patches.transpose(3, 4, 5, 0, 1, 2).reshape(-1, math.prod(patches.shape[:3]))


def _batch_spec(x) -> PartitionSpec | None:
    """How to split x's batch over the devices when running the kernels per device; None
    outside a mesh (or inside a `shard_map`, where the code already runs per device).

    Explicit sharding: the axes that shard x's batch in its type (P() when replicated).
    Automatic (GSPMD) axes are not visible at trace time: the batch is split over all of them
    when it divides evenly, a no-op for the usual data-parallel layout.
    """
    sharding = jax.typeof(x).sharding
    mesh, spec = sharding.mesh, tuple(sharding.spec) + (None,) * x.ndim
    if mesh.empty or AxisType.Manual in mesh.axis_types:
        return None
    if any(axis is not None for axis in spec[1 : x.ndim]):
        raise NotImplementedError(
            f"adder2d impl='pallas' can shard the batch only; x {x.shape} has spec {spec}")
    if spec[0] is not None:
        return PartitionSpec(spec[0])
    auto = tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
                 if kind == AxisType.Auto)
    if auto and x.shape[0] % math.prod(mesh.shape[name] for name in auto) == 0:
        return PartitionSpec(auto)
    return PartitionSpec()


def _per_shard(fn, sharded, replicated):
    """fn(*sharded, *replicated), run per device under `shard_map` inside a mesh.

    XLA cannot partition the Triton custom call (under automatic sharding it would run
    replicated on every device, after an all-gather of the batch), and the interpreter's
    loops do not type-check under explicit sharding. The forward and the input gradient of
    different batch slices are independent, so each device runs the kernels on its slice:
    `sharded` (x, and g) split on the batch as `_batch_spec(x)`, `replicated` (the kernel)
    whole.
    """
    batch = _batch_spec(sharded[0])
    if batch is None:
        return fn(*sharded, *replicated)
    in_specs = (batch,) * len(sharded) + (PartitionSpec(),) * len(replicated)
    mesh = jax.typeof(sharded[0]).sharding.mesh
    if AxisType.Explicit in mesh.axis_types:  # shard_map wants the types to match its specs
        operands = [_reshard(op, spec) for op, spec in zip((*sharded, *replicated), in_specs)]
        sharded, replicated = operands[: len(sharded)], operands[len(sharded) :]
    # check_vma=False: pallas_call's out_shape carries no varying-axes type; every value in
    # `fn` is per device anyway.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=batch, check_vma=False)(
        *sharded, *replicated)


def _reshard(a, spec: PartitionSpec):
    sharding = jax.typeof(a).sharding
    current = tuple(sharding.spec) + (None,) * a.ndim
    wanted = tuple(spec) + (None,) * a.ndim
    if current[: a.ndim] == wanted[: a.ndim]:
        return a
    return jax.reshard(a, NamedSharding(sharding.mesh, spec))


def _forward(x, w, geometry: Geometry):
    kh, kw, c, o = w.shape
    h_out, w_out = geometry.output_hw(x.shape[1:3], (kh, kw))
    y = l1_matmul(patches_transposed(x, (kh, kw), geometry), w.reshape(kh * kw * c, o))
    return y.reshape(x.shape[0], h_out, w_out, o)


def forward_pallas(x, w, geometry: Geometry):
    """Y = -sum |Xpad_patch - F|  (paper Eq. 2) by the tiled L1-matmul kernel on im2col
    patches; output dtype = the operands' common dtype, float32 accumulation."""
    dtype = jnp.result_type(x, w)
    fn = functools.partial(_forward, geometry=geometry)
    return _per_shard(fn, (x.astype(dtype),), (w.astype(dtype),))


def _input_grad(x, g, w, geometry: Geometry, input_grad: str):
    kh, kw, c, o = w.shape
    n, h_out, w_out, _ = g.shape
    dpt = l1_matmul_input_grad(patches_transposed(x, (kh, kw), geometry),
                               w.reshape(kh * kw * c, o), g.reshape(-1, o), input_grad)
    patch_grads = dpt.reshape(kh, kw, c, n, h_out, w_out).transpose(3, 4, 5, 0, 1, 2)
    return fold_patches(patch_grads, x.shape, geometry)


def input_grad_pallas(x, w, g, geometry: Geometry, input_grad: str = "hardtanh"):
    """dL/dX = fold(sum_o g * HT(F - Xpad_patch))  (paper Eq. 6-7, ADDERNET.md 2.2): the
    input-gradient kernel on patches, folded back by XLA (padded positions dropped); float32.
    With `input_grad='sign'` the exact derivative sign(F - X) replaces HardTanh."""
    dtype = jnp.result_type(x, w, g)
    fn = functools.partial(_input_grad, geometry=geometry, input_grad=input_grad)
    return _per_shard(fn, (x.astype(dtype), g.astype(dtype)), (w.astype(dtype),))
