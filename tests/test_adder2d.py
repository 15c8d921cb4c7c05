"""adder2d: every implementation against float64 NumPy and the official PyTorch backward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from official_torch import official_adder2d

from addernet_jax.ops import IMPLEMENTATIONS, adder2d, shifted

IMPLS = sorted(IMPLEMENTATIONS)

# (N, H, W, C_in, C_out, kernel, stride, padding): kernels 1/3/5/7 x strides 1/2 x padding
# 0/1/3, odd and even sizes, batch 1 and 2.
GRID = [
    (1 + (k + s + p) % 2, 9 + (k % 2) * 2, 8 + p, 3 + k % 3, 2 + s, k, s, p)
    for k in (1, 3, 5, 7)
    for s in (1, 2)
    for p in (0, 1, 3)
]


def numpy_windows(x, kh, kw, stride, pad):
    """Yields (u, v, Xpad[:, i*s+u, j*s+v, :]) in float64, plus the padded shape."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h_out = (xp.shape[1] - kh) // stride + 1
    w_out = (xp.shape[2] - kw) // stride + 1
    for u in range(kh):
        for v in range(kw):
            rows = slice(u, u + (h_out - 1) * stride + 1, stride)
            cols = slice(v, v + (w_out - 1) * stride + 1, stride)
            yield u, v, rows, cols, xp[:, rows, cols, :]


def numpy_forward(x, w, stride, pad):
    """Y = -sum |Xpad - F|, float64, straight from ADDERNET.md 1.3."""
    kh, kw, _, _ = w.shape
    total = 0.0
    for u, v, _, _, window in numpy_windows(x, kh, kw, stride, pad):
        total = total + np.abs(window[..., :, None] - w[u, v].astype(np.float64)).sum(axis=3)
    return -total


def numpy_grads(x, w, g, stride, pad, input_grad="hardtanh"):
    """(dL/dX, dL/dF) from ADDERNET.md 2.1-2.2, float64."""
    kh, kw, _, _ = w.shape
    g = g.astype(np.float64)
    dxp = np.zeros((x.shape[0], x.shape[1] + 2 * pad, x.shape[2] + 2 * pad, x.shape[3]))
    dw = np.zeros(w.shape)
    for u, v, rows, cols, window in numpy_windows(x, kh, kw, stride, pad):
        diff = window[..., :, None] - w[u, v].astype(np.float64)  # X - F, (N, Ho, Wo, C, O)
        dw[u, v] = (diff * g[..., None, :]).sum(axis=(0, 1, 2))
        local = np.clip(-diff, -1, 1) if input_grad == "hardtanh" else np.sign(-diff)
        dxp[:, rows, cols, :] += (local * g[..., None, :]).sum(axis=-1)
    return dxp[:, pad : pad + x.shape[1], pad : pad + x.shape[2], :], dw


def random_operands(shape, seed=0):
    n, h, w, c, o, k, _, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    kernel = rng.normal(size=(k, k, c, o)).astype(np.float32)
    return x, kernel


def jitted(impl, stride, pad, input_grad="hardtanh"):
    """adder2d with static settings, jitted, and its VJP for a given cotangent."""
    fn = functools.partial(adder2d, stride=stride, padding=pad, impl=impl, input_grad=input_grad)

    @jax.jit
    def value_and_vjp(x, w, g):
        y, pullback = jax.vjp(fn, x, w)
        return (y, *pullback(g))

    return value_and_vjp


def assert_close(actual, expected, terms):
    """float32 result of sums of `terms` O(1) values against float64."""
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=2e-5, atol=2e-6 * terms)


# Every implementation, plus `shifted` with a tiny fusion budget that forces every block layout
# of `shifted_sum` (row blocks, channel chunks, channel padding) on small shapes.
IMPL_VARIANTS = [(impl, None) for impl in IMPLS] + [("shifted", 4)]


@pytest.mark.parametrize("shape", GRID, ids=str)
@pytest.mark.parametrize(("impl", "budget"), IMPL_VARIANTS, ids=lambda v: str(v))
def test_forward_and_grads_match_float64_numpy(impl, budget, shape, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(shifted, "TERM_BUDGET", budget)
        monkeypatch.setattr(shifted, "WHOLE_KERNEL_TERMS", 0)
    x, w = random_operands(shape)
    stride, pad = shape[6], shape[7]
    expected = numpy_forward(x, w, stride, pad)
    g = np.random.default_rng(1).normal(size=expected.shape).astype(np.float32)
    y, dx, dw = jitted(impl, stride, pad)(x, w, g)
    k, c, o = shape[5], shape[3], shape[4]
    assert y.shape == expected.shape
    assert_close(y, expected, k * k * c)
    expected_dx, expected_dw = numpy_grads(x, w, g, stride, pad)
    assert_close(dx, expected_dx, k * k * o)
    assert_close(dw, expected_dw, expected.shape[0] * expected.shape[1] * expected.shape[2])


@pytest.mark.parametrize("impl", IMPLS)
def test_sign_input_grad_matches_numpy(impl):
    shape = (2, 7, 6, 5, 4, 3, 2, 1)
    x, w = random_operands(shape, seed=3)
    expected = numpy_forward(x, w, 2, 1)
    g = np.random.default_rng(4).normal(size=expected.shape).astype(np.float32)
    _, dx, _ = jitted(impl, 2, 1, input_grad="sign")(x, w, g)
    assert_close(dx, numpy_grads(x, w, g, 2, 1, input_grad="sign")[0], 9 * 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_large_channel_counts_use_scan_blocks(impl):
    """C_in = 70 and C_out = 130 exceed the default budget: channel chunks with zero padding."""
    shape = (1, 5, 5, 70, 130, 3, 1, 1)
    x, w = random_operands(shape, seed=5)
    expected = numpy_forward(x, w, 1, 1)
    g = np.random.default_rng(6).normal(size=expected.shape).astype(np.float32)
    y, dx, dw = jitted(impl, 1, 1)(x, w, g)
    assert_close(y, expected, 9 * 70)
    expected_dx, expected_dw = numpy_grads(x, w, g, 1, 1)
    assert_close(dx, expected_dx, 9 * 130)
    assert_close(dw, expected_dw, 25)


@pytest.mark.parametrize(
    "shape",
    [(2, 8, 8, 4, 6, 3, 1, 1), (3, 9, 9, 5, 3, 3, 2, 1), (2, 8, 8, 4, 8, 1, 2, 0),
     (1, 10, 7, 3, 4, 5, 1, 2)],
    ids=str,
)
@pytest.mark.parametrize("impl", IMPLS)
def test_grads_match_official_torch_backward(impl, shape):
    x, w = random_operands(shape, seed=7)
    stride, pad = shape[6], shape[7]
    xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w.transpose(3, 2, 0, 1), dtype=torch.float64, requires_grad=True)
    yt = official_adder2d(xt, wt, stride, pad)
    g = np.random.default_rng(8).normal(size=yt.shape).astype(np.float32)  # NCHW
    yt.backward(torch.tensor(g, dtype=torch.float64))
    y, dx, dw = jitted(impl, stride, pad)(x, w, g.transpose(0, 2, 3, 1))
    k, c, o = shape[5], shape[3], shape[4]
    assert_close(y, yt.detach().numpy().transpose(0, 2, 3, 1), k * k * c)
    assert_close(dx, xt.grad.numpy().transpose(0, 2, 3, 1), k * k * o)
    assert_close(dw, wt.grad.numpy().transpose(2, 3, 1, 0), y.size)


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_is_added_and_differentiated(impl):
    x, w = random_operands((2, 6, 6, 3, 4, 3, 1, 1))
    bias = jnp.arange(4.0)
    y = adder2d(x, w, bias, padding=1, impl=impl)
    without_bias = adder2d(x, w, padding=1, impl=impl)
    np.testing.assert_allclose(y - without_bias, np.broadcast_to(bias, y.shape), atol=1e-5)
    grad = jax.grad(lambda b: jnp.sum(adder2d(x, w, b, padding=1, impl=impl) ** 2))(bias)
    np.testing.assert_allclose(grad, jnp.sum(2 * y, axis=(0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 40])  # one fused block; a scan over channel chunks
@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_matches_a_loop(impl, channels):
    x = np.random.default_rng(0).normal(size=(3, 2, 7, 7, channels)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(3, 3, channels, 5)).astype(np.float32)

    def loss(x_one):
        return jnp.sum(jnp.tanh(adder2d(x_one, w, stride=2, padding=1, impl=impl)))

    batched = jax.jit(jax.vmap(jax.value_and_grad(loss)))(x)
    for i in range(3):
        single = jax.value_and_grad(loss)(x[i])
        np.testing.assert_allclose(batched[0][i], single[0], rtol=1e-5)
        np.testing.assert_allclose(batched[1][i], single[1], rtol=1e-5, atol=1e-6)


def test_implementations_agree_on_padding_modes():
    x, w = random_operands((2, 9, 8, 3, 4, 3, 2, 0))
    for padding in ["SAME", "VALID", ((0, 2), (1, 0)), (2, 1)]:
        outs = [adder2d(x, w, stride=2, padding=padding, impl=impl) for impl in IMPLS]
        for out in outs[1:]:
            np.testing.assert_allclose(out, outs[0], rtol=1e-5)
    same = adder2d(x, w, stride=1, padding="SAME")
    assert same.shape == (2, 9, 8, 4)
    np.testing.assert_allclose(same, numpy_forward(x, w, 1, 1), rtol=1e-5)


def test_bfloat16_accumulates_in_float32():
    x, w = random_operands((2, 8, 8, 16, 8, 3, 1, 1))
    y16 = adder2d(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), padding=1)
    assert y16.dtype == jnp.bfloat16
    expected = numpy_forward(
        np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32),
        np.asarray(jnp.asarray(w, jnp.bfloat16), np.float32), 1, 1)
    np.testing.assert_allclose(np.asarray(y16, np.float32), expected, rtol=1e-2)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "message"),
    [
        ((8, 8, 3), (3, 3, 3, 4), {}, r"rank 4 \(N, H, W, C_in\), got shape \(8, 8, 3\)"),
        ((1, 8, 8, 3), (3, 3, 4), {}, r"kernel of rank 4.*got shape \(3, 3, 4\)"),
        ((1, 8, 8, 3), (3, 3, 5, 4), {}, r"x \(1, 8, 8, 3\) has 3 channels.*\(3, 3, 5, 4\)"),
        ((1, 4, 4, 3), (7, 7, 3, 4), {"padding": 1},
         r"kernel \(7, 7\) is larger than the padded input \(6, 6\)"),
        ((1, 8, 8, 3), (3, 3, 3, 4), {"stride": 0}, r"stride must be >= 1"),
        ((1, 8, 8, 3), (3, 3, 3, 4), {"padding": -1}, r"padding must be non-negative"),
        ((1, 8, 8, 3), (3, 3, 3, 4), {"impl": "cuda"}, r"unknown adder2d impl 'cuda'"),
        ((1, 8, 8, 3), (3, 3, 3, 4), {"input_grad": "ste"}, r"unknown input_grad 'ste'"),
    ],
)
def test_bad_input_raises_value_error_naming_shapes(x_shape, w_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adder2d(jnp.zeros(x_shape), jnp.zeros(w_shape), **kwargs)


def test_integer_operands_are_refused():
    with pytest.raises(ValueError, match=r"floating-point.*x has dtype int32.*\(1, 8, 8, 3\)"):
        adder2d(jnp.zeros((1, 8, 8, 3), jnp.int32), jnp.zeros((3, 3, 3, 4)))
    with pytest.raises(ValueError, match=r"kernel has dtype int32"):
        adder2d(jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 4), jnp.int32))


def test_bias_shape_is_checked():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\).*got \(3,\)"):
        adder2d(jnp.zeros((1, 8, 8, 3)), jnp.zeros((3, 3, 3, 4)), jnp.zeros(3))


def test_auto_runs_the_documented_choice():
    from addernet_jax.ops import select_implementation

    x, w = random_operands((2, 6, 6, 3, 4, 3, 1, 1))
    chosen = select_implementation(jax.default_backend(), None, w.shape)
    assert chosen == "shifted"
    np.testing.assert_array_equal(adder2d(x, w, padding=1),
                                  adder2d(x, w, padding=1, impl=chosen))


def test_few_channel_kernels_are_fused_whole():
    """Blocks of fewer than TERM_BUDGET terms do not vectorise: a kernel with few channels is one
    loop body when it fits WHOLE_KERNEL_TERMS (LeNet-5's 5x5x6 conv2), chunked otherwise."""
    budget, whole = shifted.TERM_BUDGET, shifted.WHOLE_KERNEL_TERMS
    assert shifted._channel_chunk(5, 5, 6, budget, whole) is None
    assert shifted._channel_chunk(3, 3, 16, budget, whole) == 16  # ResNet shapes: unchanged
    assert shifted._channel_chunk(3, 3, 64, budget, whole) == 16
    assert shifted._channel_chunk(7, 7, 5, budget, whole) == 5  # 245 terms: per-tap blocks
