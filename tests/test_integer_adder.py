"""adder2d_int: shifted vs reference, float64 NumPy and the float adder2d; overflow; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from addernet_jax.ops import adder2d, integer
from addernet_jax.ops.integer import adder2d_int

# (N, H, W, C_in, C_out, kernel, stride, padding). Kernels 1/3/5, strides 1/2, padding 0/1/2, odd
# sizes and batch 1; C_in * k * k covers the single fused loop (<= FUSED_TERMS), the uint16 scan
# (3x3x24 = 216) and several int32 groups (3x3x40 = 360, 5x5x13 = 325), with channel counts
# that do and do not divide the blocks (2 channels per 3x3 block, 16 per 1x1 block).
GRID = [
    (1, 7, 7, 3, 5, 3, 1, 1),
    (2, 9, 8, 5, 3, 3, 2, 0),
    (1, 11, 9, 4, 7, 5, 1, 2),
    (2, 8, 10, 6, 4, 5, 2, 1),
    (2, 6, 7, 17, 33, 1, 1, 0),
    (1, 9, 9, 16, 32, 1, 2, 0),
    (1, 10, 11, 5, 6, 1, 2, 1),
    (2, 8, 8, 24, 16, 3, 1, 1),
    (1, 7, 9, 40, 9, 3, 2, 1),
    (1, 9, 8, 13, 3, 5, 1, 2),
    (1, 12, 12, 36, 64, 1, 1, 0),
    (1, 5, 6, 231, 2, 1, 1, 0),
]


def random_operands(shape, seed):
    n, h, w, c_in, c_out, k, _, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, h, w, c_in), dtype=np.int8)
    f = rng.integers(-128, 128, size=(k, k, c_in, c_out), dtype=np.int8)
    return x, f


def numpy_sum(x, f, stride, pad):
    """S = sum |Xpad - F| in float64, straight from ADDERNET.md 1.3 (padding with zeros)."""
    kh, kw, _, _ = f.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h_out = (xp.shape[1] - kh) // stride + 1
    w_out = (xp.shape[2] - kw) // stride + 1
    total = 0.0
    for u in range(kh):
        for v in range(kw):
            window = xp[:, u : u + (h_out - 1) * stride + 1 : stride,
                        v : v + (w_out - 1) * stride + 1 : stride, :]
            total = total + np.abs(window[..., None] - f[u, v].astype(np.float64)).sum(axis=3)
    return total


@pytest.mark.parametrize("shape", GRID, ids=[str(s) for s in GRID])
def test_shifted_matches_reference_and_numpy(shape):
    *_, stride, pad = shape
    x, f = random_operands(shape, seed=sum(shape))
    run = jax.jit(lambda x, f, impl: adder2d_int(x, f, stride=stride, padding=pad, impl=impl),
                  static_argnums=2)
    shifted = np.asarray(run(x, f, "shifted"))
    reference = np.asarray(run(x, f, "reference"))
    assert shifted.dtype == np.int32 and reference.dtype == np.int32
    np.testing.assert_array_equal(shifted, reference)
    np.testing.assert_array_equal(shifted, numpy_sum(x, f, stride, pad).astype(np.int64))


def test_extreme_values_bit_exact():
    """Operands at the int8 limits (|a - b| up to 255) in every combination."""
    rng = np.random.default_rng(1)
    x = rng.choice(np.array([-128, -127, 0, 126, 127], np.int8), size=(2, 6, 6, 30))
    f = rng.choice(np.array([-128, -1, 0, 1, 127], np.int8), size=(3, 3, 30, 17))
    shifted = adder2d_int(x, f, stride=1, padding=1)
    np.testing.assert_array_equal(np.asarray(shifted), numpy_sum(x, f, 1, 1).astype(np.int64))


@pytest.mark.parametrize("pad", [0, 1])
def test_overflow_worst_case(pad):
    """Every term at 255 (x = -128, w = 127) over 3x3x512 = 4608 terms: 16-bit partial sums
    would overflow many times; the int32 totals must be exact. Padded taps add |0 - 127|."""
    x = np.full((1, 3, 3, 512), -128, np.int8)
    f = np.full((3, 3, 512, 2), 127, np.int8)
    got = np.asarray(jax.jit(lambda x, f: adder2d_int(x, f, stride=1, padding=pad))(x, f))
    if pad == 0:
        np.testing.assert_array_equal(got, np.full((1, 1, 1, 2), 4608 * 255))
    else:
        inside = np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]])  # taps that land inside the image
        expected = 512 * (255 * inside + 127 * (9 - inside))
        np.testing.assert_array_equal(got[0, :, :, 0], expected)
        np.testing.assert_array_equal(got[0, :, :, 1], expected)


@pytest.mark.parametrize("impl", ["shifted", "reference"])
def test_matches_float_adder_on_dequantised_inputs(impl):
    """With scale 1 the float layer is -S; integer-valued float32 sums below 2^24 are exact."""
    shape = (2, 9, 9, 20, 12, 3, 2, 1)
    x, f = random_operands(shape, seed=3)
    s = np.asarray(adder2d_int(x, f, stride=2, padding=1, impl=impl))
    y = np.asarray(adder2d(x.astype(np.float32), f.astype(np.float32), stride=2, padding=1))
    assert s.max() < 2**24
    np.testing.assert_array_equal(s.astype(np.float32), -y)


def test_padding_forms_and_auto():
    x, f = random_operands((1, 8, 7, 3, 4, 3, 1, 1), seed=4)
    expected = np.asarray(adder2d_int(x, f, stride=1, padding=((1, 1), (1, 1)), impl="reference"))
    for padding in (1, (1, 1), "SAME"):
        got = adder2d_int(x, f, stride=(1, 1), padding=padding)
        np.testing.assert_array_equal(np.asarray(got), expected)
    valid = adder2d_int(x, f, padding="VALID", impl="auto")
    np.testing.assert_array_equal(np.asarray(valid), numpy_sum(x, f, 1, 0).astype(np.int64))


def test_scan_plan_respects_uint16_bound():
    """Every uint16 group holds at most 257 terms (257 * 255 = 65535)."""
    for taps in (1, 4, 9, 25, 49):
        for channels in (1, 2, 3, 16, 17, 64, 512, 1000):
            chunk, per_group, groups = integer._scan_plan(taps, channels)
            assert chunk * per_group * groups >= channels
            assert per_group * taps * chunk <= integer.UINT16_TERMS or per_group == 1


@pytest.mark.parametrize(
    "x_shape, x_dtype, w_shape, w_dtype, kwargs, message",
    [
        ((1, 5, 5, 3), jnp.float32, (3, 3, 3, 2), jnp.int8, {}, "int8 operands; x_q"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 3, 2), jnp.int16, {}, "int8 operands; w_q"),
        ((5, 5, 3), jnp.int8, (3, 3, 3, 2), jnp.int8, {}, "x_q of rank 4"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 3), jnp.int8, {}, "w_q of rank 4"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 4, 2), jnp.int8, {}, "channel mismatch"),
        ((1, 2, 2, 3), jnp.int8, (3, 3, 3, 2), jnp.int8, {}, "larger than the padded input"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 3, 2), jnp.int8, {"impl": "pallas"}, "unknown"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 3, 2), jnp.int8, {"stride": 0}, "stride must be"),
        ((1, 5, 5, 3), jnp.int8, (3, 3, 3, 2), jnp.int8, {"padding": -1}, "non-negative"),
    ],
)
def test_bad_inputs(x_shape, x_dtype, w_shape, w_dtype, kwargs, message):
    x, f = jnp.zeros(x_shape, x_dtype), jnp.zeros(w_shape, w_dtype)
    with pytest.raises(ValueError, match=message) as info:
        adder2d_int(x, f, **kwargs)
    assert "\n" not in str(info.value)
