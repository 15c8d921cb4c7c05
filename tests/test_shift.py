"""Shift layers (SHIFTADDNET.md 1, 3): forward and straight-through gradients against float64
NumPy statements of the spec, the projections, op counts, and the shiftadd/deepshift models."""

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from addernet_jax.layers import (
    ShiftAdd2D,
    ShiftConv2D,
    ShiftParam,
    SignParam,
    layer_kinds,
    make_kept_conv,
    make_layer,
)
from addernet_jax.layers.shift import shift_param_type
from addernet_jax.ops.shift import (
    fixed_point_ste,
    quantize_grad,
    round_ste,
    shift_conv2d,
    shift_range,
    shift_weight,
    ternary_sign_ste,
)

# Exact rounding ties, values outside the clamp range [-14, 0], and ordinary values.
P_SPECIAL = np.array([-2.5, -3.5, -0.5, 0.5, 1.5, -14.5, -13.5, -20.0, 3.0, -7.2], np.float32)
S_SPECIAL = np.array([0.5, -0.5, 1.5, -1.5, 0.49, -0.51, 2.5, 0.0, -3.0, 0.7], np.float32)


def np_shift_weight(p, s, bits=5):
    """SHIFTADDNET.md 1.3a-d in float64: sign(round(s)) * 2^round(clip(p, lo, 0))."""
    lo, hi = shift_range(bits)
    return np.sign(np.round(np.float64(s))) * 2.0 ** np.round(np.clip(np.float64(p), lo, hi))


def np_fixed_point(x):
    """SHIFTADDNET.md 1.3e: clip(floor(x * 2^16) / 2^16, -2^15, 2^15 - 1)."""
    return np.clip(np.floor(np.float64(x) * 2.0**16) / 2.0**16, -(2.0**15), 2.0**15 - 1)


def np_conv_and_grads(x, w, c, stride, pad):
    """y = conv(x, w) (NHWC, HWIO, zero padding) and, for L = sum(c * y), dL/dx and dL/dw."""
    n, h, wd, _ = x.shape
    kh, kw, _, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, ho, wo, w.shape[3]))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for u in range(kh):
        for v in range(kw):
            window = (slice(None), slice(u, u + stride * ho, stride),
                      slice(v, v + stride * wo, stride))
            y += np.einsum("nhwc,co->nhwo", xp[window], w[u, v])
            dw[u, v] = np.einsum("nhwc,nhwo->co", xp[window], c)
            dxp[window] += np.einsum("nhwo,co->nhwc", c, w[u, v])
    return y, dxp[:, pad:pad + h, pad:pad + wd], dw


# Test data comes from NumPy and layers from 'rbg' keys: eager threefry draws compile once per
# shape, which made these tests several times slower.
def normal(seed, shape, scale=1.0):
    """float32 N(0, scale^2) test data."""
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def fast_rngs(seed):
    """NNX streams on an 'rbg' key (fast to compile on CPU) for layers whose init is not tested."""
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def random_latents(seed, shape, spread=1.0):
    """p around and beyond [-14, 0] and s around [-1, 1], with the special values mixed in."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-16 * spread, 2 * spread, shape).astype(np.float32)
    s = rng.uniform(-2 * spread, 2 * spread, shape).astype(np.float32)
    p.reshape(-1)[:P_SPECIAL.size] = P_SPECIAL
    s.reshape(-1)[:S_SPECIAL.size] = S_SPECIAL
    return p, s


def is_signed_power_of_two(w, lo, hi):
    """Every element is exactly 0 or +-2^k with integer k in [lo, hi]."""
    magnitudes = np.abs(np.asarray(w, np.float64))
    allowed = 2.0 ** np.arange(lo, hi + 1)
    return bool(np.all((magnitudes == 0) | np.isin(magnitudes, allowed)))


@pytest.mark.parametrize("bits", [5, 3])
def test_shift_weight_forward_is_exact(bits):
    p, s = random_latents(0, (3, 3, 4, 5))
    w = shift_weight(jnp.asarray(p), jnp.asarray(s), bits)
    np.testing.assert_array_equal(np.float64(w), np_shift_weight(p, s, bits))
    assert is_signed_power_of_two(w, *shift_range(bits))
    # Ties go to even as torch.round: p = -2.5 -> 2^-2, -3.5 -> 2^-4; s = +-0.5 -> 0.
    w_ties = shift_weight(jnp.array([-2.5, -3.5, -1.0, -1.0]), jnp.array([1.0, 1.0, 0.5, -0.5]))
    np.testing.assert_array_equal(w_ties, [0.25, 0.0625, 0.0, 0.0])


def test_round_and_sign_are_straight_through():
    x = jnp.asarray(np.concatenate([P_SPECIAL, S_SPECIAL]))
    np.testing.assert_array_equal(round_ste(x), np.round(np.float64(x)))
    np.testing.assert_array_equal(ternary_sign_ste(x), np.sign(np.round(np.float64(x))))
    c = normal(1, x.shape)
    for fn in (round_ste, ternary_sign_ste):
        np.testing.assert_array_equal(jax.grad(lambda v, f=fn: jnp.sum(c * f(v)))(x), c)


def test_shift_weight_gradient_is_the_asymmetric_rule():
    p, s = random_latents(2, (2, 2, 3, 4))
    g = normal(3, p.shape)
    dp, ds = jax.grad(lambda a, b: jnp.sum(g * shift_weight(a, b)), (0, 1))(p, s)
    sign = np.sign(np.round(np.float64(s)))
    expected_dp = g * sign * 2.0 ** np.round(np.clip(np.float64(p), -14, 0)) * math.log(2)
    np.testing.assert_allclose(dp, expected_dp, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(ds, g)  # not multiplied by 2^p_r (SHIFTADDNET.md 1.4)


@pytest.mark.parametrize(("kernel", "stride", "pad"), [(3, 1, 1), (3, 2, 1), (3, 2, 0), (1, 2, 0)])
def test_shift_conv_forward_and_gradients_match_numpy(kernel, stride, pad):
    p, s = random_latents(4, (kernel, kernel, 3, 4))
    x = normal(5, (2, 7, 6, 3), scale=3.0)
    x.reshape(-1)[:4] = [2.0**-17, -(2.0**-17), 1 / 3, -1 / 3]
    conv = jax.jit(lambda a, b, c: shift_conv2d(a, b, c, stride=stride, padding=pad))
    y = conv(x, p, s)
    w = np_shift_weight(p, s)
    y_np, dx_np, dw_np = np_conv_and_grads(np_fixed_point(x), w, np.zeros(y.shape), stride, pad)
    np.testing.assert_allclose(y, y_np, rtol=1e-5, atol=1e-5)
    c = normal(6, y.shape)
    dx, dp, ds = jax.grad(lambda *a: jnp.sum(c * conv(*a)), (0, 1, 2))(x, p, s)
    _, dx_np, dw_np = np_conv_and_grads(np_fixed_point(x), w, np.float64(c), stride, pad)
    np.testing.assert_allclose(dx, dx_np, rtol=1e-5, atol=1e-5)  # straight through x_q
    np.testing.assert_allclose(ds, dw_np, rtol=1e-5, atol=1e-5)  # dL/ds = dL/dW
    np.testing.assert_allclose(dp, dw_np * w * math.log(2), rtol=1e-5, atol=1e-5)


def test_fixed_point_input_values_clip_and_gradient():
    x = jnp.array([0.1, -0.1, 1 / 3, 2.0**-17, -(2.0**-17), 2.0**-16, 40000.0, -40000.0,
                   32766.75, -32767.5, 0.0], jnp.float32)
    y = fixed_point_ste(x)
    np.testing.assert_array_equal(y, np_fixed_point(x))
    assert float(y[3]) == 0.0 and float(y[4]) == -(2.0**-16)  # floor, not round
    assert float(y[6]) == 2.0**15 - 1 and float(y[7]) == -(2.0**15)  # clip range
    np.testing.assert_array_equal(np.asarray(y) * 2.0**16 % 1, 0)  # on the 2^-16 grid
    c = jnp.arange(1.0, x.size + 1)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(c * fixed_point_ste(v)))(x), c)


def _quantized_cotangent(g, key, bits):
    _, vjp = jax.vjp(lambda v: quantize_grad(v, key, bits), jnp.zeros_like(g))
    return vjp(g)[0]


def test_gradient_quantizer_bound_grid_and_determinism():
    g = jnp.asarray(normal(6, (4, 5, 5, 8), scale=5.0))
    key = jax.random.key(7)
    q16 = _quantized_cotangent(g, key, 16)
    span = float(g.max() - g.min())
    assert float(jnp.max(jnp.abs(q16 - g))) <= span / (2**16 - 1) * (1 + 1e-3)
    assert not np.array_equal(q16, g)
    np.testing.assert_array_equal(q16, _quantized_cotangent(g, key, 16))  # same key, same
    assert not np.array_equal(q16, _quantized_cotangent(g, jax.random.key(8), 16))
    q3 = np.float64(_quantized_cotangent(g, key, 3))  # 8 levels from min to max
    levels = (q3 - float(g.min())) / (span / 7)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert set(np.round(levels).astype(int).ravel()) <= set(range(8))
    np.testing.assert_array_equal(quantize_grad(g, key, 16), g)  # forward: identity


def test_gradient_quantizer_flag_in_the_layer():
    x = normal(9, (2, 6, 6, 3))
    off = ShiftConv2D(3, 4, 3, padding=1, rngs=fast_rngs(0))
    on = ShiftConv2D(3, 4, 3, padding=1, grad_bits=16, rngs=fast_rngs(0))
    assert off.grad_rngs is None
    np.testing.assert_array_equal(on(x), off(x))
    c = normal(10, (2, 6, 6, 4))

    def grad_x(layer):
        return nnx.grad(lambda m, v: jnp.sum(c * m(v)), argnums=1)(layer, x)

    exact = jax.grad(lambda v: jnp.sum(c * shift_conv2d(v, off.shift[...], off.sign[...],
                                                        padding=1)))(x)
    np.testing.assert_array_equal(grad_x(off), exact)  # off: no quantiser at all
    quantized = grad_x(on)
    assert not np.array_equal(quantized, exact)
    np.testing.assert_allclose(quantized, exact, atol=1e-3 * float(jnp.abs(exact).max()))
    with pytest.raises(ValueError, match="PRNG key"):
        shift_conv2d(x, off.shift[...], off.sign[...], grad_bits=16)


def test_init_and_parameter_types():
    layer = ShiftConv2D(32, 64, 3, rngs=nnx.Rngs(0))
    p, s = np.asarray(layer.shift[...]), np.asarray(layer.sign[...])
    assert p.shape == s.shape == (3, 3, 32, 64) and layer.bias is None
    assert type(layer.shift) is ShiftParam and type(layer.sign) is SignParam
    assert p.min() >= -14 and p.max() <= 0 and abs(p.mean() + 7) < 0.1  # U(-14, 0)
    assert s.min() >= -1 and s.max() <= 1 and abs(s.mean()) < 0.02  # U(-1, 1)
    three = ShiftConv2D(4, 4, 3, weight_bits=3, rngs=fast_rngs(0))
    assert type(three.shift) is shift_param_type(3) and isinstance(three.shift, ShiftParam)
    assert three.shift[...].min() >= -2 and three.shift[...].max() <= 0
    for cls in (ShiftParam, SignParam, shift_param_type(3)):
        assert cls.weight_decay is False and issubclass(cls, nnx.Param)
    assert not hasattr(SignParam, "project")
    restored = pickle.loads(pickle.dumps(three.shift))  # the per-width type resolves by name
    assert type(restored) is shift_param_type(3)
    np.testing.assert_array_equal(restored[...], three.shift[...])


@pytest.mark.parametrize("bits", [5, 3])
def test_projection_and_epoch_end_keep_signed_powers_of_two(bits):
    layer = ShiftConv2D(4, 5, 3, weight_bits=bits, rngs=fast_rngs(1))
    p, s = random_latents(11, layer.shift.shape, spread=2.0)
    layer.shift[...], layer.sign[...] = jnp.asarray(p), jnp.asarray(s)
    lo, hi = shift_range(bits)
    # The optimizer calls type(v).project(value) after each update (SHIFTADDNET.md 7).
    layer.shift[...] = type(layer.shift).project(layer.shift[...])
    projected = np.asarray(layer.shift[...])
    np.testing.assert_array_equal(projected, np.clip(p, lo, hi))
    w = shift_weight(layer.shift[...], layer.sign[...], bits)
    np.testing.assert_array_equal(w, shift_weight(jnp.asarray(p), jnp.asarray(s), bits))
    assert is_signed_power_of_two(w, lo, hi)
    for v in (layer.shift, layer.sign):  # end of epoch (SHIFTADDNET.md 1.6)
        v[...] = type(v).epoch_end(v[...])
    np.testing.assert_array_equal(layer.shift[...], np.round(projected))
    np.testing.assert_array_equal(layer.sign[...], np.sign(np.round(s)))
    assert set(np.unique(layer.sign[...])) <= {-1.0, 0.0, 1.0}
    w_epoch = shift_weight(layer.shift[...], layer.sign[...], bits)
    np.testing.assert_array_equal(w_epoch, w)  # re-projection leaves the weights unchanged
    assert is_signed_power_of_two(w_epoch, lo, hi)


@pytest.mark.parametrize(("kernel", "stride", "pad", "out_hw"),
                         [(3, 1, 1, (8, 6)), (3, 2, 1, (4, 3)), (1, 1, 0, (8, 6)),
                          (1, 2, 0, (4, 3)), (5, 1, 0, (4, 2))])
def test_shiftadd_unit_shapes(kernel, stride, pad, out_hw):
    unit = ShiftAdd2D(3, 5, kernel, stride, padding=pad, impl="reference", rngs=fast_rngs(0))
    assert unit.shift.shift.shape == (kernel, kernel, 3, 5)
    assert unit.adder.kernel.shape == (kernel, kernel, 5, 5) and unit.adder.strides == (1, 1)
    assert unit.shift.bias is None and unit.adder.bias is None
    # The adder keeps the size: the replaced conv's output shape (its padding is 'SAME', which
    # is the official unit's p for 3x3 / p = 1 and 1x1 / p = 0).
    assert unit.adder.padding == "SAME"
    x = normal(0, (2, 8, 6, 3))
    y = unit(x)
    assert y.shape == (2, *out_hw, 5)
    np.testing.assert_array_equal(y, unit.adder(unit.shift(x)))


class _Holder(nnx.Module):
    """One layer under a name, as the op counter expects of a model."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)


def test_op_counts_against_hand_counts():
    from addernet_jax.opcount import count_ops

    conv = count_ops(_Holder(ShiftConv2D(3, 4, 3, padding=1, rngs=nnx.Rngs(0))), (8, 8, 3))
    (layer,) = conv.layers
    terms = 8 * 8 * 4 * (3 * 3 * 3)  # outputs * kh*kw*C_in
    assert layer.kind == "shift" and layer.macs == terms and not layer.multiplicative
    assert (layer.counts.mults, layer.counts.adds, layer.counts.shifts) == (0, terms, terms)
    assert layer.counts.params == 2 * 3 * 3 * 3 * 4  # p and s
    unit = count_ops(_Holder(ShiftAdd2D(3, 4, 3, 2, padding=1, rngs=nnx.Rngs(0))), (8, 8, 3))
    shift_terms, adder_terms = 4 * 4 * 4 * 27, 4 * 4 * 4 * 36
    assert [l.kind for l in unit.layers] == ["shift", "adder"]
    total = unit.total()
    assert (total.mults, total.shifts) == (0, shift_terms)
    assert total.adds == shift_terms + 2 * adder_terms
    assert total.params == 2 * 108 + 144


def test_registered_kinds_and_builders():
    assert layer_kinds()[:4] == ("adder", "cnn", "shiftadd", "deepshift")
    init = jax.nn.initializers.lecun_normal()
    kw = dict(padding=1, impl="reference", kernel_init=init, rngs=fast_rngs(0))
    assert isinstance(make_layer("shiftadd", 3, 4, 3, 2, **kw), ShiftAdd2D)
    deep = make_layer("deepshift", 3, 4, 3, 2, **kw)
    assert type(deep) is ShiftConv2D and deep.weight_bits == 3
    kept = make_kept_conv("shiftadd", 3, 4, 3, **kw)
    assert type(kept) is ShiftConv2D and kept.weight_bits == 5 and kept.bias is None
    head = make_kept_conv("deepshift", 6, 4, 1, padding=0, kernel_init=init, rngs=fast_rngs(0),
                          use_bias=True, bias_init=jax.nn.initializers.ones)
    np.testing.assert_array_equal(head.bias[...], np.ones(4))
    x = normal(1, (2, 1, 1, 6))
    no_bias = shift_conv2d(x, head.shift[...], head.sign[...], weight_bits=3)
    np.testing.assert_allclose(head(x), no_bias + 1.0, rtol=1e-6)


@pytest.mark.parametrize("variant", ["shiftadd", "deepshift"])
def test_resnet20_builds_and_trains_one_gradient(variant):
    from addernet_jax.models import create_model

    model = create_model("resnet20", num_classes=10, variant=variant, impl="reference",
                         rngs=fast_rngs(0))
    assert type(model.conv1) is ShiftConv2D and type(model.fc) is ShiftConv2D
    block = ShiftAdd2D if variant == "shiftadd" else ShiftConv2D
    assert type(model.layer2[0].conv1) is block and type(model.layer2[0].downsample[0]) is block
    x = normal(0, (2, 8, 8, 3))  # global pooling: any size works
    labels = jnp.array([1, 7])

    @nnx.jit
    def loss_and_grad(m):
        def loss(m):
            logits = m(x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

        return nnx.value_and_grad(loss)(m)

    loss, grads = loss_and_grad(model)
    assert np.isfinite(float(loss))
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(grads, nnx.Param))]
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    shift_grads = [np.asarray(g) for g in jax.tree.leaves(nnx.state(grads, ShiftParam))]
    assert shift_grads and any(np.abs(g).max() > 0 for g in shift_grads)
