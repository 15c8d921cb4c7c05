"""adder2d_int: shifted and the vpsadbw kernel ('ffi') vs reference, float64 NumPy and the float
adder2d; zero points; overflow; the kernel's build and its fallback; errors."""

import ctypes

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from addernet_jax.ops import adder2d, integer, sad_kernel
from addernet_jax.ops.integer import adder2d_int


def cpu_has_avx512bw() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "avx512bw" in line.split() for line in f)
    except OSError:
        return False


# On an AVX-512BW machine the kernel must build and run (the tests below compare it with the
# reference); elsewhere the same tests check that 'ffi' is refused in one line and 'auto' falls
# back to the XLA path.
KERNEL = sad_kernel.available()

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
    (3, 7, 6, 5, 4, 3, 1, 1),  # the fused loop over batch halves, with an odd batch
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


def test_kernel_available_where_the_cpu_has_avx512bw():
    assert KERNEL == cpu_has_avx512bw(), sad_kernel.unavailable_reason()
    assert integer.select_int_implementation() == ("ffi" if KERNEL else "shifted")


# (N, H, W, C_in, C_out, kernel, stride, padding, zero point) for the kernel: kernels 1/3/5,
# strides 1/2, padding 0/1/2, odd sizes, batch 1, C_in 1/3/6/16/17/64 (granule padding, the
# tap folds: 3x3x1 folds fully, 3x3x3, 5x5x6 and 3x3x17 fold their columns only, 3x3x16 and
# 3x3x64 not at all), C_out not a multiple of 4, widths that are not whole pixel tiles.
FFI_GRID = [
    (1, 7, 9, 1, 5, 3, 1, 1, 0),
    (2, 9, 8, 3, 4, 3, 2, 1, -128),
    (1, 10, 10, 6, 16, 5, 1, 0, 0),
    (2, 11, 7, 6, 3, 5, 2, 2, 17),
    (1, 13, 13, 16, 16, 3, 1, 1, -128),
    (2, 16, 16, 16, 32, 3, 2, 1, 0),
    (1, 9, 11, 17, 7, 3, 1, 2, -5),
    (2, 8, 8, 17, 9, 3, 2, 0, 0),
    (1, 8, 8, 64, 64, 3, 1, 1, -128),
    (1, 5, 7, 64, 6, 5, 2, 2, 100),
    (2, 9, 9, 16, 32, 1, 2, 0, -128),
    (1, 7, 5, 3, 5, 1, 1, 1, 3),
    (3, 1, 1, 400, 120, 1, 1, 0, -128),
    (1, 6, 9, 17, 33, 1, 2, 0, 0),
]


@pytest.mark.parametrize("shape", FFI_GRID, ids=[str(s) for s in FFI_GRID])
def test_ffi_matches_reference(shape):
    *dims, stride, pad, zero_point = shape
    x, f = random_operands((*dims, stride, pad), seed=sum(map(abs, shape)))
    run = jax.jit(lambda x, f, impl: adder2d_int(x, f, stride=stride, padding=pad,
                                                 zero_point=zero_point, impl=impl),
                  static_argnums=2)
    reference = np.asarray(run(x, f, "reference"))
    if not KERNEL:
        with pytest.raises(ValueError, match="'ffi' cannot run here") as info:
            run(x, f, "ffi")
        assert "\n" not in str(info.value)
        np.testing.assert_array_equal(np.asarray(run(x, f, "auto")), reference)
        return
    got = np.asarray(run(x, f, "ffi"))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, reference)


@pytest.mark.parametrize("impl", ["shifted", "reference", "ffi"])
def test_zero_point_is_the_padding_value(impl):
    """With zero point z, padded positions hold z: the same as padding x - z and w - z by 0."""
    if impl == "ffi" and not KERNEL:
        impl = "auto"
    x, f = random_operands((2, 6, 7, 5, 6, 3, 1, 1), seed=8)
    z = -100
    got = np.asarray(adder2d_int(x, f, stride=1, padding=1, zero_point=z, impl=impl))
    expected = numpy_sum(x.astype(np.int64) - z, f.astype(np.int64) - z, 1, 1)
    np.testing.assert_array_equal(got, expected.astype(np.int64))


@pytest.mark.parametrize("pad", [0, 1])
def test_ffi_all_terms_255(pad):
    """The kernel on the worst case: every |x - w| = 255 over 3x3x512 terms."""
    x = np.full((1, 3, 3, 512), -128, np.int8)
    f = np.full((3, 3, 512, 2), 127, np.int8)
    impl = "ffi" if KERNEL else "auto"
    got = np.asarray(jax.jit(lambda x, f: adder2d_int(x, f, padding=pad, impl=impl))(x, f))
    np.testing.assert_array_equal(got, numpy_sum(x, f, 1, pad).astype(np.int64))
    if pad == 0:
        assert got.max() == 4608 * 255


def test_fallback_when_the_kernel_is_missing(monkeypatch):
    """'auto' runs the XLA path and 'ffi' is refused, in one line saying why."""
    monkeypatch.setattr(sad_kernel, "_state", {"reason": "no C++ compiler found (test)"})
    assert integer.select_int_implementation() == "shifted"
    x, f = random_operands((1, 6, 6, 4, 3, 3, 1, 1), seed=9)
    np.testing.assert_array_equal(np.asarray(adder2d_int(x, f, padding=1)),
                                  numpy_sum(x, f, 1, 1).astype(np.int64))
    with pytest.raises(ValueError, match="cannot run here: no C\\+\\+ compiler") as info:
        adder2d_int(x, f, padding=1, impl="ffi")
    assert "\n" not in str(info.value)


def test_kernel_builds_from_scratch(tmp_path, monkeypatch):
    """A fresh cache: the source compiles, the library exports the handler and says whether
    this CPU runs it; a failing compiler gives one line."""
    monkeypatch.setenv("ADDERNET_CACHE_DIR", str(tmp_path))
    if sad_kernel.platform_problem():  # not x86-64: never built, the reason says so
        assert sad_kernel.unavailable_reason() == sad_kernel.platform_problem()
        return
    path = sad_kernel.build()
    assert path.parent == tmp_path and path.is_file()
    library = ctypes.CDLL(str(path))
    assert library.AdderSadSupported() == int(cpu_has_avx512bw())
    assert hasattr(library, "AdderSad")
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(sad_kernel.KernelUnavailable, match="compiling adder_sad.cc") as info:
        sad_kernel.build()
    assert "\n" not in str(info.value)
    monkeypatch.delenv("CXX")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ADDERNET_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(sad_kernel.KernelUnavailable, match="cannot write the kernel cache"):
        sad_kernel.build()


def test_bad_zero_point():
    x, f = random_operands((1, 5, 5, 3, 2, 3, 1, 0), seed=10)
    for bad in (128, -129, 1.5, True):
        with pytest.raises(ValueError, match="zero_point must be an int"):
            adder2d_int(x, f, zero_point=bad)
