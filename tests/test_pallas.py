"""The Pallas adder kernels (interpret mode on CPU) against plain jnp, float64 NumPy and the
reference implementation; jit, vmap, grad, bfloat16, sharding, and the Triton lowering."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from test_adder2d import assert_close, jitted, numpy_forward, numpy_grads, random_operands

from addernet_jax.ops import adder2d, pallas
from addernet_jax.ops.pallas import ForwardBlocks, InputGradBlocks

# Small enough that M, K and C_out of the small test problems span several blocks.
TINY_FORWARD = ForwardBlocks(block_m=16, block_o=8, block_k=4, num_warps=4)
TINY_INPUT_GRAD = InputGradBlocks(block_k=8, block_m=16, block_o=2, num_warps=4)


def patch_problem(m, k, o, seed=0, integer=False):
    """P^T (K, M), W (K, O), g (M, O). Integer values make float32 sums exact and hit the
    HardTanh corners |W - P| = 1 and the sign ties W = P."""
    rng = np.random.default_rng(seed)
    if integer:
        draw = lambda *shape: rng.integers(-3, 4, size=shape).astype(np.float32)  # noqa: E731
    else:
        draw = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return draw(k, m), draw(k, o), draw(m, o)


def numpy_l1_matmul(pt, w):
    return -np.abs(pt.T.astype(np.float64)[:, :, None] - w.astype(np.float64)).sum(axis=1)


def numpy_l1_input_grad(pt, w, g, input_grad):
    diff = w.astype(np.float64)[:, None, :] - pt.astype(np.float64)[:, :, None]  # (K, M, O)
    local = np.clip(diff, -1, 1) if input_grad == "hardtanh" else np.sign(diff)
    return (local * g.astype(np.float64)[None]).sum(axis=-1)


# (M, K, O): M, K and O each span several tiny blocks and none is a multiple of them.
KERNEL_SHAPES = [(37, 27, 5), (70, 45, 33), (16, 8, 16), (1, 1, 1)]


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
@pytest.mark.parametrize(
    "blocks",
    [None, TINY_FORWARD, ForwardBlocks(block_m=32, block_o=16, block_k=8, num_warps=4),
     ForwardBlocks(block_m=16, block_o=64, block_k=1, num_warps=4)],
    ids=["auto", "16x8x4", "32x16x8", "16x64x1"],
)
def test_forward_kernel_matches_numpy(shape, blocks):
    pt, w, _ = patch_problem(*shape)
    y = pallas.l1_matmul(jnp.asarray(pt), jnp.asarray(w), blocks)
    assert y.shape == (shape[0], shape[2]) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, numpy_l1_matmul(pt, w), rtol=2e-6, atol=2e-6 * shape[1])


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
@pytest.mark.parametrize(
    "blocks",
    [None, TINY_INPUT_GRAD, InputGradBlocks(block_k=32, block_m=16, block_o=8, num_warps=4),
     InputGradBlocks(block_k=16, block_m=64, block_o=1, num_warps=4)],
    ids=["auto", "8x16x2", "32x16x8", "16x64x1"],
)
@pytest.mark.parametrize("input_grad", ["hardtanh", "sign"])
def test_input_grad_kernel_is_exact_on_integers(shape, blocks, input_grad):
    """Integer operands: every term is exact, so the kernel must equal NumPy bit for bit,
    including sign(0) = 0 and the clip corners."""
    pt, w, g = patch_problem(*shape, seed=1, integer=True)
    dpt = pallas.l1_matmul_input_grad(*map(jnp.asarray, (pt, w, g)), input_grad, blocks)
    assert dpt.shape == pt.shape and dpt.dtype == jnp.float32
    np.testing.assert_array_equal(dpt, numpy_l1_input_grad(pt, w, g, input_grad))


def test_input_grad_kernel_matches_jnp_on_normal_values():
    pt, w, g = patch_problem(70, 45, 33, seed=2)
    dpt = pallas.l1_matmul_input_grad(*map(jnp.asarray, (pt, w, g)), "hardtanh", TINY_INPUT_GRAD)
    expected = jnp.einsum("kmo,mo->km", jnp.clip(w[:, None, :] - pt[:, :, None], -1, 1), g)
    np.testing.assert_allclose(dpt, expected, rtol=1e-5, atol=1e-5)


def test_block_sizes_are_powers_of_two_and_fit_the_problem():
    for m, k, o in [(262144, 144, 16), (65536, 288, 32), (16384, 576, 64), (3136, 4608, 512),
                    (37, 27, 5)]:
        fwd, bwd = pallas.forward_blocks(m, k, o), pallas.input_grad_blocks(m, k, o)
        for size in (fwd.block_m, fwd.block_o, fwd.block_k, bwd.block_k, bwd.block_m,
                     bwd.block_o, fwd.num_warps, bwd.num_warps):
            assert size & (size - 1) == 0, (m, k, o, fwd, bwd)
        assert fwd.block_m * fwd.block_o <= 16384 and bwd.block_m * bwd.block_k <= 8192
    # ResNet-20 stage 1 at batch 256: a 16-wide tile that wastes no lanes on padded channels.
    assert pallas.forward_blocks(262144, 144, 16) == ForwardBlocks(block_m=512, block_o=16,
                                                                    num_warps=4)
    assert pallas.forward_blocks(3136, 4608, 512) == ForwardBlocks(block_m=64, block_o=128,
                                                                    num_warps=4)
    assert pallas.input_grad_blocks(262144, 144, 16).block_k == 32  # 144 = 4.5 x 32, not 64
    assert pallas.forward_blocks(37, 27, 5) == ForwardBlocks(block_m=16, block_o=16, num_warps=4)


@pytest.fixture(params=["auto-blocks", "tiny-blocks"])
def blocks(request, monkeypatch):
    """Default block sizes, and tiny ones so that M, K and C_out of every small op test span
    several blocks and end in a partial (zero-padded) one."""
    if request.param == "tiny-blocks":
        monkeypatch.setattr(pallas, "forward_blocks", lambda *_: TINY_FORWARD)
        monkeypatch.setattr(pallas, "input_grad_blocks", lambda *_: TINY_INPUT_GRAD)
    return request.param


# (N, H, W, C_in, C_out, kernel, stride, padding): kernels 1/3/5, strides 1/2, padding 0/1/2,
# odd sizes, batch 1, channel counts that are not multiples of any block.
OP_SHAPES = [
    (1, 7, 9, 3, 5, 3, 1, 1),
    (2, 9, 8, 5, 7, 3, 2, 1),
    (1, 11, 11, 6, 9, 5, 2, 2),
    (2, 8, 7, 3, 10, 5, 1, 0),
    (1, 9, 9, 17, 3, 1, 2, 0),
    (2, 6, 5, 4, 20, 1, 1, 2),
    (1, 5, 7, 9, 6, 3, 1, 2),
]


@pytest.mark.parametrize("shape", OP_SHAPES, ids=str)
def test_op_matches_reference_and_float64_numpy(shape, blocks):
    x, w = random_operands(shape, seed=3)
    stride, pad = shape[6], shape[7]
    expected = numpy_forward(x, w, stride, pad)
    g = np.random.default_rng(4).normal(size=expected.shape).astype(np.float32)
    y, dx, dw = jitted("pallas", stride, pad)(x, w, g)
    k, c, o = shape[5], shape[3], shape[4]
    assert_close(y, expected, k * k * c)
    expected_dx, expected_dw = numpy_grads(x, w, g, stride, pad)
    assert_close(dx, expected_dx, k * k * o)
    assert_close(dw, expected_dw, y.shape[0] * y.shape[1] * y.shape[2])
    for ours, theirs in zip((y, dx, dw), jitted("reference", stride, pad)(x, w, g)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * k * k * max(c, o))


@pytest.mark.parametrize("shape", [OP_SHAPES[1], OP_SHAPES[4]], ids=str)
def test_sign_input_grad_matches_float64_numpy(shape, blocks):
    x, w = random_operands(shape, seed=5)
    stride, pad = shape[6], shape[7]
    g = np.random.default_rng(6).normal(size=numpy_forward(x, w, stride, pad).shape)
    _, dx, _ = jitted("pallas", stride, pad, input_grad="sign")(x, w, g.astype(np.float32))
    expected = numpy_grads(x, w, g.astype(np.float32), stride, pad, input_grad="sign")[0]
    assert_close(dx, expected, shape[5] ** 2 * shape[4])


def test_grad_of_a_loss_matches_reference():
    x, w = random_operands((2, 7, 7, 4, 6, 3, 2, 1), seed=7)

    def loss(impl, x, w):
        return jnp.sum(jnp.sin(adder2d(x, w, stride=2, padding=1, impl=impl)))

    ours = jax.jit(jax.grad(functools.partial(loss, "pallas"), argnums=(0, 1)))(x, w)
    theirs = jax.grad(functools.partial(loss, "reference"), argnums=(0, 1))(x, w)
    for a, b in zip(ours, theirs):  # float32 sums of 9 * 6 (dx) and 2 * 4 * 4 (dw) terms
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_vmap_of_value_and_grad_matches_a_loop():
    """vmap over a leading axis: pallas_call's batching rule adds a grid axis to both kernels."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 2, 6, 5, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)

    def loss(x_one):
        return jnp.sum(jnp.tanh(adder2d(x_one, w, stride=(1, 2), padding=1, impl="pallas")))

    values, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(x)
    single = jax.jit(jax.value_and_grad(loss))
    for i in range(3):
        value, grad = single(x[i])
        np.testing.assert_allclose(values[i], value, rtol=1e-5)
        np.testing.assert_allclose(grads[i], grad, rtol=1e-5, atol=1e-6)


def test_bfloat16_operands_give_bfloat16_with_float32_accumulation():
    x, w = random_operands((2, 6, 6, 16, 8, 3, 1, 1), seed=9)
    x16, w16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    g16 = jnp.ones((2, 6, 6, 8), jnp.bfloat16)
    y, dx, dw = jitted("pallas", 1, 1)(x16, w16, g16)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16,) * 3
    rounded = [np.asarray(a, np.float32) for a in (x16, w16, g16)]
    expected_dx, expected_dw = numpy_grads(*rounded, 1, 1)
    # Only the final rounding to bfloat16 (8 bits) remains: float32 sums of 144 terms.
    np.testing.assert_allclose(np.float32(y), numpy_forward(*rounded[:2], 1, 1), rtol=8e-3)
    np.testing.assert_allclose(np.float32(dx), expected_dx, rtol=8e-3, atol=0.1)
    np.testing.assert_allclose(np.float32(dw), expected_dw, rtol=8e-3, atol=0.5)


@pytest.mark.parametrize(
    ("axis_types", "mesh_shape", "x_spec", "expected_spec"),
    [
        ((AxisType.Explicit,), (8,), P(), P(None, None, None, None)),
        ((AxisType.Auto, AxisType.Auto), (4, 2), P("data"), P(("data", "model"))),
    ],
    ids=["explicit-replicated", "auto-2d"],
)
def test_sharded_meshes_run_per_device(axis_types, mesh_shape, x_spec, expected_spec):
    """Batch sharding on 1-D meshes is covered by test_sharding.py; here a replicated batch on
    an explicit mesh, and a 2-D automatic mesh whose batch is split over both axes."""
    names = ("data", "model")[: len(mesh_shape)]
    mesh = jax.make_mesh(mesh_shape, names, axis_types=axis_types)
    x, w = random_operands((16, 6, 6, 3, 4, 3, 1, 1), seed=10)
    fn = jitted("pallas", 1, 1)
    g = np.ones((16, 6, 6, 4), np.float32)
    single = fn(x, w, g)
    place = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))  # noqa: E731
    sharded = fn(place(x, x_spec), place(w, P()), place(g, x_spec))
    assert sharded[1].sharding.spec == expected_spec
    for a, b in zip(sharded, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_to_triton_for_cuda(monkeypatch, dtype):
    """Without a GPU: the full op (forward and VJP) lowers for CUDA, both kernels through the
    Pallas Triton lowering (power-of-two tensors, supported primitives) into Triton calls."""
    monkeypatch.setattr(pallas, "INTERPRET", False)
    x = jnp.zeros((2, 9, 9, 5), dtype)
    w = jnp.zeros((3, 3, 5, 7), dtype)

    def value_and_vjp(x, w, g):
        y, pullback = jax.vjp(
            lambda x, w: adder2d(x, w, stride=2, padding=1, impl="pallas", input_grad="sign"),
            x, w)
        return y, *pullback(g)

    g = jnp.zeros((2, 5, 5, 7), dtype)
    lowered = jax.jit(value_and_vjp).trace(x, w, g).lower(lowering_platforms=("cuda",))
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 2
