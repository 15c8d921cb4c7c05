"""Calibration: which adder layers a model has, what they see, and each one's integer grid.

Range handling (the weights' and activations' different ranges, AdderNet issues #42/#55: filters
lie roughly in [-7, 6], inputs after BN + ReLU are >= 0). The grid spans the *activation* range
[a, b] only, every level spent where inputs are, and filter values outside it are clipped with
an exact per-output-channel correction: an input quantised onto the grid lies in [a, b], so for
a filter value w < a, |x - w| = |x - a| + (a - w), and for w > b, |x - w| = |x - b| + (w - b).
Hence

    sum |x - w| = sum |x - clip(w, a, b)| + c_o,   c_o = sum |w - clip(w, a, b)|,

exactly, where c_o depends on the filter only and folds into the output bias. Clipping the
filters costs nothing, and no bits go to the filters' negative half that post-ReLU inputs never
reach. (A per-output-channel shift of the filters would not be exact: |x - w| is not
shift-invariant in w alone.)

The activation range is searched: b (and a, for inputs that go negative) is a fraction r of the
calibration inputs' extreme, r on a geometric grid refined around the best point, choosing the
r that minimises the mean squared error of the layer's BatchNorm output (the folded integer
layer against the float layer, on the same float calibration inputs), not the largest input.
Clipping the inputs biases the sums (it shortens |x - w| for x above b), so each channel's mean
error on the calibration inputs is subtracted from its output bias ("bias correction", Nagel
et al., ICCV 2019), and the candidates are compared after that correction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from addernet_jax.layers import Adder2D
from addernet_jax.quantize.layers import Grid, QuantizedAdder2D, grid_for_range

# Clip fractions tried: 0.9^k for k < COARSE_STEPS, then FINE_STEPS between the best one's
# neighbours.
COARSE_STEPS, FINE_STEPS = 30, 8


@dataclasses.dataclass(frozen=True)
class AdderSite:
    """An adder layer of a model, in call order.

    Attributes:
      path: its path in the model, e.g. ('layer1', 0, 'conv1').
      bn_path: the path of the BatchNorm applied directly to its output (folded), else None.
    """

    path: tuple
    bn_path: tuple | None


def path_name(path: tuple) -> str:
    """('layer1', 0, 'conv1') -> 'layer1.0.conv1'."""
    return ".".join(str(p) for p in path)


def parse_path(name: str) -> tuple:
    """'layer1.0.conv1' -> ('layer1', 0, 'conv1')."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


@contextlib.contextmanager
def _recording(calls: list) -> Iterator[list]:
    """Appends (kind, module, input, output) for every Adder2D and BatchNorm call while active.
    Wraps the classes' `__call__` (as `addernet_jax.opcount`): not for several threads."""
    originals = {Adder2D: Adder2D.__dict__["__call__"],
                 nnx.BatchNorm: nnx.BatchNorm.__dict__["__call__"]}

    def wrap(kind, original):
        def call(module, x, *args, **kwargs):
            y = original(module, x, *args, **kwargs)
            calls.append((kind, module, x, y))
            return y
        return call

    try:
        for cls, original in originals.items():
            cls.__call__ = wrap("adder" if cls is Adder2D else "bn", original)
        yield calls
    finally:
        for cls, original in originals.items():
            cls.__call__ = original


def _traced_calls(model: nnx.Module, images) -> tuple[list, dict]:
    """The recorded calls of one forward and a module id -> path table (inside a trace)."""
    paths = {id(m): path for path, m in nnx.iter_modules(model)}
    calls: list = []
    with _recording(calls):
        model(images)
    return calls, paths


def find_adder_sites(model: nnx.Module, image_shape: tuple[int, ...]) -> list[AdderSite]:
    """The adder layers of `model` in call order, each with the BatchNorm that takes its output
    as input, if any (found by tracing one abstract forward pass: no FLOPs run).

    Raises:
      ValueError: the model has no adder layer, or calls one more than once.
    """
    sites: list[AdderSite] = []

    def trace(m, x):
        calls, paths = _traced_calls(m, x)
        bn_inputs = [(x, paths[id(module)]) for kind, module, x, _ in calls if kind == "bn"]
        adders = [(paths[id(module)], y) for kind, module, _, y in calls if kind == "adder"]
        for path, y in adders:
            bn = next((bn_path for x, bn_path in bn_inputs if x is y), None)
            sites.append(AdderSite(tuple(path), None if bn is None else tuple(bn)))

    nnx.eval_shape(trace, model, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    if not sites:
        raise ValueError(f"{type(model).__name__} has no adder layer to quantise (a CNN "
                         "variant?); quantisation needs an AdderNet")
    names = [path_name(s.path) for s in sites]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"adder layers called more than once cannot be quantised: {repeated}")
    return sites


def collect_inputs(model: nnx.Module, sites: list[AdderSite], images: np.ndarray,
                   batch_size: int = 64) -> dict[tuple, np.ndarray]:
    """The float input of every adder site over `images` (N, H, W, C), on the host."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, batch):
        calls, paths = _traced_calls(nnx.merge(graphdef, state), batch)
        return {path_name(paths[id(m)]): x for kind, m, x, _ in calls if kind == "adder"}

    parts: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
        for name, x in forward(state, jnp.asarray(images[start:start + batch_size])).items():
            parts.setdefault(name, []).append(np.asarray(x))
    return {s.path: np.concatenate(parts[path_name(s.path)]) for s in sites}


@dataclasses.dataclass(frozen=True)
class LayerFit:
    """The chosen grid of one layer and how well the integer layer reproduces the float one.

    Attributes:
      grid: scale, zero point and bits.
      clip_fraction: r, the fraction of the inputs' extreme the grid spans.
      input_range: (min, max) of the calibration inputs.
      relative_error: RMS error of the layer's (BatchNorm) output over its RMS.
      clipped_filters: fraction of filter values outside the grid (handled exactly).
    """

    grid: Grid
    clip_fraction: float
    input_range: tuple[float, float]
    relative_error: float
    clipped_filters: float


def output_affine(adder: Adder2D, bn: nnx.BatchNorm | None):
    """(k, t) per output channel with BN(adder(x)) = t - k * sum|x - w|, the adder's bias
    included (k = 1, t = bias without a BatchNorm); BatchNorm in eval mode (running
    statistics)."""
    bias = 0.0 if adder.bias is None else adder.bias[...]
    if bn is None:
        return jnp.ones((adder.out_features,), jnp.float32), jnp.zeros(adder.out_features) + bias
    k = bn.scale[...] * jax.lax.rsqrt(bn.var[...] + bn.epsilon)
    return k, k * (bias - bn.mean[...]) + bn.bias[...]


@jax.jit
def _fold_arrays(w, k, t, scale, low, high, zero_point, qmin, qmax):
    """(w_q, out_scale, out_bias) of float filters w on a grid (see `fold_layer`); the grid is
    traced, so the candidates of a search share one compilation."""
    clipped = jnp.clip(w, low, high)
    correction = jnp.sum(jnp.abs(w - clipped), axis=(0, 1, 2))  # c_o
    w_q = jnp.clip(jnp.round(clipped / scale) + zero_point, qmin, qmax).astype(jnp.int8)
    # y = t - k * (scale * S + c_o)
    return w_q, (-k * scale).astype(jnp.float32), (t - k * correction).astype(jnp.float32)


def fold_layer(adder: Adder2D, bn: nnx.BatchNorm | None, grid: Grid, impl: str = "auto"):
    """The `QuantizedAdder2D` of `adder` (+ `bn`) on `grid`: filters clipped to the grid with
    the exact correction c_o; -scale, c_o and the BatchNorm folded into the output affine."""
    k, t = output_affine(adder, bn)
    w_q, out_scale, out_bias = _fold_arrays(
        adder.kernel[...].astype(jnp.float32), k, t, grid.scale, grid.low, grid.high,
        grid.zero_point, grid.qmin, grid.qmax)
    layer = QuantizedAdder2D(adder.in_features, adder.out_features, adder.kernel_size,
                             adder.strides, padding=adder.padding, zero_point=grid.zero_point,
                             bits=grid.bits, impl=impl)
    layer.kernel[...] = w_q
    layer.scale[...] = jnp.float32(grid.scale)
    layer.out_scale[...] = out_scale
    layer.out_bias[...] = out_bias
    return layer


def _batches(arrays, batch_size: int):
    for start in range(0, len(arrays[0]), batch_size):
        yield tuple(jnp.asarray(a[start:start + batch_size]) for a in arrays)


@functools.partial(jax.jit, static_argnums=0)
def _float_layer(graphdef, state, x):
    adder, bn = nnx.merge(graphdef, state)
    y = adder(x)
    return y if bn is None else bn(y)


def float_outputs(adder: Adder2D, bn: nnx.BatchNorm | None, inputs: np.ndarray,
                  batch_size: int) -> np.ndarray:
    """The float layer's output BN(adder(x)) (or adder(x)) on the calibration inputs (compiled
    once per layer geometry)."""
    graphdef, state = nnx.split((adder, bn))
    return np.concatenate([np.asarray(_float_layer(graphdef, state, x))
                           for (x,) in _batches([inputs], batch_size)])


def _corrected_error(layer: QuantizedAdder2D, inputs, targets, weights,
                     batch_size) -> tuple[float, np.ndarray]:
    """(sum over outputs of weight_o * (e - mean_o(e))^2, mean_o(e)) for the error
    e = layer(x) - target: the error left once each channel's mean error (the bias the
    quantisation adds, mostly from clipping the inputs) is removed from its output bias."""
    graphdef, state = nnx.split(layer)
    sums = squares = 0.0
    for x, y in _batches([inputs, targets], batch_size):
        s, q = _error_moments(graphdef, state, x, y)
        sums, squares = sums + np.asarray(s, np.float64), squares + np.asarray(q, np.float64)
    count = targets.size // targets.shape[-1]
    mean = sums / count
    # Clamped at 0: the difference of two float sums can dip below it when the error is ~0.
    return max(float(np.sum(np.asarray(weights) * (squares - count * mean**2))), 0.0), mean


@functools.partial(jax.jit, static_argnums=0)
def _error_moments(graphdef, state, x, target):
    """Per output channel, the sum and the sum of squares of layer(x) - target."""
    error = nnx.merge(graphdef, state)(x) - target
    axes = tuple(range(error.ndim - 1))
    return jnp.sum(error, axis=axes), jnp.sum(jnp.square(error), axis=axes)


def _clip_fractions(errors: dict[float, float]) -> list[float]:
    """The fine fractions between the neighbours of the best coarse one."""
    ordered = sorted(errors)
    best = ordered.index(min(errors, key=errors.get))
    low = ordered[max(best - 1, 0)]
    high = ordered[min(best + 1, len(ordered) - 1)]
    return [float(f) for f in np.geomspace(low, high, FINE_STEPS + 2)[1:-1]]


def _search(evaluate) -> tuple[float, float]:
    """(fraction, error) of the least `evaluate(fraction)`: coarse fractions 0.9^k, stopped
    once the error is well past its minimum, then a finer grid around the best."""
    errors: dict[float, float] = {}
    for k in range(COARSE_STEPS):
        errors[0.9**k] = evaluate(0.9**k)
        if k >= 4 and errors[0.9**k] > 4 * min(errors.values()):
            break
    for fraction in _clip_fractions(errors):
        errors[fraction] = evaluate(fraction)
    best = min(errors, key=errors.get)
    return best, errors[best]


def fit_layer(adder: Adder2D, bn: nnx.BatchNorm | None, inputs: np.ndarray, *, bits: int,
              impl: str = "auto", batch_size: int = 64) -> tuple[QuantizedAdder2D, LayerFit]:
    """The integer layer of `adder` (+ `bn`) whose grid minimises the output error on `inputs`
    (module docstring; `_search`). Each candidate's per-channel mean error on `inputs` is
    removed from its output bias (bias correction) before the candidates are compared.

    Errors are weighted per channel: 1 for a BatchNorm output (already normalised), else one
    over the channel's variance.
    """
    low, high = float(inputs.min()), float(inputs.max())
    targets = float_outputs(adder, bn, inputs, batch_size)
    variance = targets.reshape(-1, targets.shape[-1]).var(axis=0)
    weights = jnp.asarray(np.ones_like(variance) if bn is not None
                          else 1.0 / np.maximum(variance, 1e-12), jnp.float32)
    layers: dict[float, QuantizedAdder2D] = {}

    def evaluate(fraction: float) -> float:
        layer = fold_layer(adder, bn, grid_for_range(fraction * low, fraction * high, bits), impl)
        error, mean = _corrected_error(layer, inputs, targets, weights, batch_size)
        layer.out_bias[...] = layer.out_bias[...] - jnp.asarray(mean, jnp.float32)
        layers[fraction] = layer
        return error

    fraction, error = _search(evaluate)
    grid = grid_for_range(fraction * low, fraction * high, bits)
    w = np.asarray(adder.kernel[...])
    signal = float(np.sum(np.asarray(weights) * np.square(targets)))
    return layers[fraction], LayerFit(
        grid, fraction, (low, high), float(np.sqrt(error / max(signal, 1e-30))),
        float(np.mean((w < grid.low) | (w > grid.high))))
