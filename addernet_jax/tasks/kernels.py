"""PKKD's kernel transforms and losses (PKKD.md 4-5), and capturing a layer's input and output.

The m-th compared layer's output is re-expressed as a kernel of its (input patch, filter) pairs,
one value per output position and channel, (N, H_out, W_out, C_out) like the output itself:

    adder (Laplace, 4.3):   D1 = sum |xpad - f| = -Y_a                 g = exp(-D1 / sigma_a)
    conv (Gaussian, 4.3):   D2 = sum (xpad - f)^2 = S_x + ||f||^2 - 2 Y_c
                                                                       h = exp(-D2 / (2 sigma_c^2))

with Y the layer's own output (before BN), S_x the sum of squares of each input patch (a
convolution of x^2 with ones: no patches are materialised) and ||f||^2 each filter's squared
norm. Widths default to the batch statistic sigma_a = mean(D1), 2 sigma_c^2 = mean(D2), under
stop_gradient (PKKD.md U3). `kernel_form='notes_literal'` is the transcription in PKKD.md 4.2
(U2): h = exp(-Y_c / (2 sigma_c^2)) with the default width 2 sigma_c^2 = mean(|Y_c|).

L_mid (PKKD.md 5.1, paper Eq. 13) compares the student's transformed kernel maps with the
teacher's; L_blend (5.2, paper Eq. 4) mixes the ground truth and the teacher's softened output.
`record_calls` captures a layer's input and output from the forward pass that computes them, so
no layer runs twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from addernet_jax.layers import Adder2D
from addernet_jax.ops.geometry import resolve_geometry

KERNEL_FORMS = ("proper", "notes_literal")
MID_LOSSES = ("mse", "sum_squares", "l2")


# ---------------------------------------------------------------------------------------------
# Distances of (patch, filter) pairs, from a layer's output.


def laplace_distance(adder_output: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """D1[n, i, j, t] = sum_{u,v,c} |xpad - f_t| = -Y_a (PKKD.md 4.3): the adder output (paper
    Eq. 2), before BN and without its bias, negated."""
    return -(adder_output if bias is None else adder_output - bias)


def patch_sum_of_squares(x: jax.Array, kernel_hw: tuple[int, int], strides, padding
                         ) -> jax.Array:
    """S_x[n, i, j, 0] = sum_{u,v,c} xpad[n, i*s + u, j*s + v, c]^2, (N, H_out, W_out, 1).

    The channel sum of x^2 convolved with a (kh, kw, 1, 1) kernel of ones, which equals
    conv(xpad^2, ones(kh, kw, C_in, 1)) of PKKD.md 4.3 with C_in times fewer terms; zero
    padding adds nothing, as in the layer.
    """
    geometry = resolve_geometry(strides, padding, x.shape[1:3], kernel_hw)
    squares = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    ones = jnp.ones((*kernel_hw, 1, 1), jnp.float32)
    return lax.conv_general_dilated(squares, ones, geometry.strides, geometry.pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def gaussian_distance(x: jax.Array, conv_output: jax.Array, kernel: jax.Array, strides,
                      padding, bias: jax.Array | None = None) -> jax.Array:
    """D2[n, i, j, t] = sum_{u,v,c} (xpad - f_t)^2 = S_x + ||f_t||^2 - 2 Y_c (PKKD.md 4.3).

    Args:
      x: the convolution's input, (N, H, W, C_in).
      conv_output: its output Y_c, (N, H_out, W_out, C_out) (with `bias` added, if any).
      kernel: its HWIO filters.
      strides, padding: its geometry (as `adder2d` takes them).
      bias: its bias, or None.

    Returns:
      D2, clipped at 0 (float32 cancellation can leave tiny negatives where patch and filter
      nearly coincide; the exact value is >= 0).
    """
    y = conv_output if bias is None else conv_output - bias
    squares = patch_sum_of_squares(x, kernel.shape[:2], strides, padding)
    filter_norms = jnp.sum(jnp.square(kernel.astype(jnp.float32)), axis=(0, 1, 2))
    return jnp.maximum(squares + filter_norms - 2.0 * y.astype(jnp.float32), 0.0)


# ---------------------------------------------------------------------------------------------
# Kernels with their widths.


def batch_width(distance: jax.Array) -> jax.Array:
    """The default width statistic (PKKD.md U3): mean over the batch and every position and
    channel, under stop_gradient, so that the kernel values are neither all 0 nor all 1."""
    return lax.stop_gradient(jnp.mean(distance))


def laplace_kernel(d1: jax.Array, sigma_a: float = 0.0) -> jax.Array:
    """g = exp(-D1 / sigma_a) (paper Eq. 11); sigma_a = 0 takes `batch_width(D1)`."""
    width = batch_width(d1) if sigma_a == 0 else sigma_a
    return jnp.exp(-d1 / width)


def gaussian_kernel(d2: jax.Array, sigma_c: float = 0.0) -> jax.Array:
    """h = exp(-D2 / (2 sigma_c^2)) (paper Eq. 12); sigma_c = 0 takes
    2 sigma_c^2 = `batch_width(D2)`."""
    two_var = batch_width(d2) if sigma_c == 0 else 2.0 * sigma_c**2
    return jnp.exp(-d2 / two_var)


def notes_literal_gaussian(conv_output: jax.Array, sigma_c: float = 0.0) -> jax.Array:
    """h = exp(-Y_c / (2 sigma_c^2)), the kernel as transcribed in PKKD.md 4.2 (U2). Y_c has no
    fixed sign, so the default width is the batch statistic of |Y_c| (2 sigma_c^2 =
    mean(|Y_c|), detached) rather than of Y_c itself, whose mean can be near 0."""
    y = conv_output.astype(jnp.float32)
    two_var = batch_width(jnp.abs(y)) if sigma_c == 0 else 2.0 * sigma_c**2
    return jnp.exp(-y / two_var)


def kernel_map(layer: nnx.Module, x: jax.Array, y: jax.Array, *, form: str = "proper",
               sigma_a: float = 0.0, sigma_c: float = 0.0) -> jax.Array:
    """The kernel map of one compared layer's call (input `x`, output `y`): Laplace for an
    `Adder2D`, Gaussian for an `nnx.Conv` (module docstring), (N, H_out, W_out, C_out).

    Raises:
      ValueError: `form` is not one of `KERNEL_FORMS`, or the layer is neither kind (or a
        dilated / grouped convolution, whose patches are not plain windows).
    """
    if form not in KERNEL_FORMS:
        raise ValueError(f"kernel_form must be one of {KERNEL_FORMS}, got {form!r}")
    bias = None if getattr(layer, "bias", None) is None else layer.bias[...]
    if isinstance(layer, Adder2D):
        return laplace_kernel(laplace_distance(y, bias), sigma_a)
    if isinstance(layer, nnx.Conv):
        _check_plain_conv(layer)
        if form == "notes_literal":
            return notes_literal_gaussian(y if bias is None else y - bias, sigma_c)
        d2 = gaussian_distance(x, y, layer.kernel[...], layer.strides, layer.padding, bias)
        return gaussian_kernel(d2, sigma_c)
    raise ValueError(f"PKKD has no kernel for a {type(layer).__name__} layer; compared layers "
                     "must be adder layers (Laplace) or convolutions (Gaussian)")


def _check_plain_conv(conv: nnx.Conv) -> None:
    def is_one(value) -> bool:
        return value is None or (set(value) == {1} if isinstance(value, Sequence)
                                 else value == 1)

    if not (is_one(conv.kernel_dilation) and is_one(conv.input_dilation)
            and conv.feature_group_count == 1):
        raise ValueError("PKKD's Gaussian kernel needs an undilated, ungrouped convolution")


# ---------------------------------------------------------------------------------------------
# Losses.


def mid_loss(student_maps: Sequence[jax.Array], teacher_maps: Sequence[jax.Array], *,
             norm: str = "mse", weights: Sequence[float] = ()) -> jax.Array:
    """L_mid = sum_m w_m * d(y_a^m, y_c^m) (paper Eq. 13, PKKD.md 5.1 and U5).

    Args:
      student_maps: y_a^m, the student's (transformed) kernel maps, (N, H, W, C) each.
      teacher_maps: y_c^m, the teacher's, same shapes (used under stop_gradient by the caller).
      norm: 'mse' (mean over N, H, W, C of the squared difference; the default), 'sum_squares'
        (summed over H, W, C, mean over the batch) or 'l2' (the L2 norm of each example's
        difference, mean over the batch).
      weights: per-layer w_m; empty gives 1 each.
    """
    if norm not in MID_LOSSES:
        raise ValueError(f"mid_loss must be one of {MID_LOSSES}, got {norm!r}")
    weights = tuple(weights) or (1.0,) * len(student_maps)
    if len(weights) != len(student_maps) or len(teacher_maps) != len(student_maps):
        raise ValueError(f"{len(student_maps)} student maps, {len(teacher_maps)} teacher maps "
                         f"and {len(weights)} layer weights do not match")
    total = jnp.zeros((), jnp.float32)
    for weight, a, c in zip(weights, student_maps, teacher_maps):
        squares = jnp.square(a.astype(jnp.float32) - c.astype(jnp.float32))
        per_example = jnp.sum(squares.reshape(squares.shape[0], -1), axis=-1)
        value = {"mse": jnp.mean(squares), "sum_squares": jnp.mean(per_example),
                 "l2": jnp.mean(jnp.sqrt(per_example))}[norm]
        total = total + weight * value
    return total


def blend_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array, *,
               tau: float = 1.0, gt_weight: float = 1.0, kd_weight: float = 1.0
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_blend = mean_i [gt_weight * CE(y_i, softmax(z_a)) + kd_weight * tau^2 *
    KL(softmax(z_c / tau) || softmax(z_a / tau))] (paper Eq. 4, PKKD.md 5.2 and U6).

    The weights may be traced scalars (a schedule). The teacher logits z_c are taken under
    stop_gradient. Returns (L_blend, {'ce': mean CE, 'kl': mean KL}).
    """
    z_a = student_logits.astype(jnp.float32)
    z_c = lax.stop_gradient(teacher_logits).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(z_a, labels)
    kl = optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(z_a / tau),
                                                     jax.nn.log_softmax(z_c / tau))
    loss = jnp.mean(gt_weight * ce + kd_weight * tau**2 * kl)
    return loss, {"ce": jnp.mean(ce), "kl": jnp.mean(kl)}


# ---------------------------------------------------------------------------------------------
# Capturing a layer's input and output from the forward pass itself.

_RECORDING_CLASSES: dict[type, type] = {}
_ACTIVE: dict[int, list] = {}


def _recording_class(cls: type) -> type:
    """A subclass of `cls` whose `__call__` also appends (input, output) to the active record
    of the instance (one class per layer class, made once)."""
    if cls not in _RECORDING_CLASSES:
        def __call__(self, x, *args, **kwargs):
            y = cls.__call__(self, x, *args, **kwargs)
            _ACTIVE[id(self)].append((x, y))
            return y

        _RECORDING_CLASSES[cls] = type(f"Recording{cls.__name__}", (cls,),
                                       {"__call__": __call__, "__module__": __name__})
    return _RECORDING_CLASSES[cls]


@contextlib.contextmanager
def record_calls(layers: Sequence[nnx.Module]) -> Iterator[list[list[tuple]]]:
    """Within the block, every call of one of `layers` records its (input, output).

    Yields one list per layer, filled by the calls made inside the block: the values are those
    of the forward pass itself (tracers under jit), so nothing is computed twice. The layers'
    classes are swapped for recording subclasses for the duration of the block only (restored
    before any `nnx.split`), which is why the graph and the checkpoints never see them.
    """
    records = [[] for _ in layers]
    entered: list[tuple[nnx.Module, type]] = []
    try:
        for layer, record in zip(layers, records):
            if id(layer) in _ACTIVE:
                raise ValueError(f"{type(layer).__name__} is already being recorded")
            _ACTIVE[id(layer)] = record
            entered.append((layer, type(layer)))
            layer.__class__ = _recording_class(type(layer))
        yield records
    finally:
        for layer, cls in entered:
            layer.__class__ = cls
            del _ACTIVE[id(layer)]


__all__ = [
    "KERNEL_FORMS",
    "MID_LOSSES",
    "batch_width",
    "blend_loss",
    "gaussian_distance",
    "gaussian_kernel",
    "kernel_map",
    "laplace_distance",
    "laplace_kernel",
    "mid_loss",
    "notes_literal_gaussian",
    "patch_sum_of_squares",
    "record_calls",
]
