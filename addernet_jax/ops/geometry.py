"""Static geometry of an adder convolution: strides, padding, output size, input checks.

Everything here runs at trace time on Python ints and shapes; nothing touches array values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], tuple[int, int]]
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Hashable description of one adder convolution, usable as a static JAX argument.

    Attributes:
      strides: (stride_h, stride_w).
      pads: ((top, bottom), (left, right)) zero padding, already resolved from 'SAME' etc.
    """

    strides: tuple[int, int]
    pads: Pads

    def output_hw(self, in_hw: tuple[int, int], kernel_hw: tuple[int, int]) -> tuple[int, int]:
        """Output spatial size: floor((H + pt + pb - kh) / s) + 1 per axis (ADDERNET.md 1.1)."""
        return tuple(
            (size + lo + hi - k) // s + 1
            for size, (lo, hi), k, s in zip(in_hw, self.pads, kernel_hw, self.strides)
        )


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """(v, v) for an int, else the pair itself; ValueError naming the argument otherwise."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return value


def resolve_geometry(
    strides: int | Sequence[int],
    padding: PaddingLike,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
) -> Geometry:
    """Turns user-facing stride and padding arguments into a `Geometry`.

    Args:
      strides: an int or (sh, sw).
      padding: an int p (p on every side, as the official `adder2d(padding=p)`), a pair
        (ph, pw), a pair of pairs ((top, bottom), (left, right)), or 'SAME' / 'VALID' as in
        `lax.conv_general_dilated`.
      in_hw: input (H, W).
      kernel_hw: kernel (kh, kw).
    """
    strides = pair(strides, "stride")
    if min(strides) < 1:
        raise ValueError(f"stride must be >= 1, got {strides}")
    if isinstance(padding, str):
        pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
    elif isinstance(padding, int):
        pads = ((padding, padding), (padding, padding))
    else:
        padding = tuple(padding)
        if len(padding) == 2 and all(isinstance(p, int) for p in padding):
            pads = tuple((p, p) for p in padding)
        elif len(padding) == 2 and all(len(tuple(p)) == 2 for p in padding):
            pads = tuple(tuple(int(q) for q in p) for p in padding)
        else:
            raise ValueError(f"cannot interpret padding {padding!r}")
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"padding must be non-negative, got {pads}")
    return Geometry(strides=strides, pads=pads)


def check_operands(x, w, bias, stride, padding: PaddingLike) -> Geometry:
    """Validates an adder layer's operands and returns its resolved `Geometry`.

    Args:
      x: input, (N, H, W, C_in).
      w: kernel, (kh, kw, C_in, C_out).
      bias: None or (C_out,).
      stride: as `resolve_geometry`.
      padding: as `resolve_geometry`.
    Raises:
      ValueError: naming the shapes, for a wrong rank, a non-float dtype, a channel mismatch,
        a kernel larger than the padded input, or a bias of the wrong shape.
    """
    x_shape, w_shape = jnp.shape(x), jnp.shape(w)
    if len(x_shape) != 4:
        raise ValueError(f"adder2d expects x of rank 4 (N, H, W, C_in), got shape {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(
            f"adder2d expects a kernel of rank 4 (kh, kw, C_in, C_out), got shape {w_shape}"
        )
    for name, arr in (("x", x), ("kernel", w)):
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise ValueError(
                f"adder2d needs floating-point operands; {name} has dtype "
                f"{jnp.result_type(arr)} (x {x_shape}, kernel {w_shape})"
            )
    if x_shape[3] != w_shape[2]:
        raise ValueError(
            f"channel mismatch: x {x_shape} has {x_shape[3]} channels but the kernel "
            f"{w_shape} expects C_in = {w_shape[2]}"
        )
    geometry = resolve_geometry(stride, padding, x_shape[1:3], w_shape[:2])
    padded = [size + lo + hi for size, (lo, hi) in zip(x_shape[1:3], geometry.pads)]
    if w_shape[0] > padded[0] or w_shape[1] > padded[1]:
        raise ValueError(
            f"kernel {w_shape[:2]} is larger than the padded input {tuple(padded)} "
            f"(x {x_shape}, kernel {w_shape}, padding {geometry.pads})"
        )
    if bias is not None and jnp.shape(bias) != (w_shape[3],):
        raise ValueError(
            f"bias must have shape ({w_shape[3]},) for kernel {w_shape}, got {jnp.shape(bias)}"
        )
    return geometry
