"""Plain-jnp reference of the adder convolution: explicit patches, broadcast, reduce.

This is the specification in code (ADDERNET.md sections 1-2), written for clarity, not speed:
it materialises the (N, H_out, W_out, kh, kw, C_in, C_out) difference tensor, like the official
PyTorch `adder.py`. Every fast implementation is tested against it.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from addernet_jax.ops.geometry import Geometry


def pad_input(x, geometry: Geometry):
    """Zero-pads an NHWC input spatially, as the official `unfold(padding=p)` does."""
    (top, bottom), (left, right) = geometry.pads
    return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def window(xp, u: int, v: int, out_hw: tuple[int, int], strides: tuple[int, int]):
    """xp[:, i*sh + u, j*sw + v, :] for every output position (i, j): (N, H_out, W_out, C)."""
    (h_out, w_out), (sh, sw) = out_hw, strides
    return xp[:, u : u + (h_out - 1) * sh + 1 : sh, v : v + (w_out - 1) * sw + 1 : sw, :]


def place(part, offsets: tuple[int, int], strides: tuple[int, int], size_hw: tuple[int, int]):
    """Adjoint of `window`: puts (N, A, B, C) at rows offset_h + a*sh, cols offset_w + b*sw of
    a zero (N, H, W, C) grid."""
    pads = [(0, 0, 0)]
    for offset, s, size, part_size in zip(offsets, strides, size_hw, part.shape[1:3]):
        pads.append((offset, size - offset - (part_size - 1) * s - 1, s - 1))
    pads.append((0, 0, 0))
    return lax.pad(part, jnp.zeros((), part.dtype), pads)


def local_input_grad(diff, input_grad: str):
    """The per-term input gradient of F - X: HT(diff) = clip(diff, -1, 1) (paper Eq. 6-7) for
    'hardtanh', the exact derivative sign(diff) for 'sign'."""
    return jnp.sign(diff) if input_grad == "sign" else jnp.clip(diff, -1.0, 1.0)


def extract_patches(x, kernel_hw: tuple[int, int], geometry: Geometry):
    """Returns the zero-padded patches of `x`: (N, H_out, W_out, kh, kw, C_in).

    patches[n, i, j, u, v, c] = Xpad[n, i*sh + u, j*sw + v, c]  (ADDERNET.md 1.3).
    """
    kh, kw = kernel_hw
    out_hw = geometry.output_hw(x.shape[1:3], kernel_hw)
    xp = pad_input(x, geometry)
    rows = [jnp.stack([window(xp, u, v, out_hw, geometry.strides) for v in range(kw)], axis=3)
            for u in range(kh)]
    return jnp.stack(rows, axis=3)


def fold_patches(patch_grads, input_shape, geometry: Geometry):
    """Adjoint of `extract_patches`: sums per-patch gradients back onto the input (col2im).

    Each kernel offset (u, v) places its (N, H_out, W_out, C) slice on the padded grid with
    stride s; gradients that land on padded positions are dropped, as the official `fold` +
    crop does.
    """
    _, h, w, _ = input_shape
    _, _, _, kh, kw, _ = patch_grads.shape
    ((top, bottom), (left, right)) = geometry.pads
    padded_hw = (h + top + bottom, w + left + right)
    total = sum(place(patch_grads[:, :, :, u, v, :], (u, v), geometry.strides, padded_hw)
                for u in range(kh) for v in range(kw))
    return total[:, top : top + h, left : left + w, :]


def _differences(x, w, geometry: Geometry):
    """Xpad_patch - F for every (n, i, j, u, v, c, o): the official (C_out, K, L) tensor."""
    patches = extract_patches(x, w.shape[:2], geometry)
    return patches[..., None] - w


def forward_reference(x, w, geometry: Geometry):
    """Y[n,i,j,o] = -sum_{u,v,c} |Xpad[n, i*s+u, j*s+v, c] - F[u,v,c,o]|  (paper Eq. 2)."""
    return -jnp.sum(jnp.abs(_differences(x, w, geometry)), axis=(3, 4, 5))


def input_grad_reference(x, w, g, geometry: Geometry, input_grad: str = "hardtanh"):
    """dL/dX = fold(sum_o g * HT(F - Xpad_patch))  (paper Eq. 6-7, ADDERNET.md 2.2).

    With `input_grad='sign'` the exact derivative sign(F - X) is used instead of HardTanh.
    """
    local = local_input_grad(-_differences(x, w, geometry), input_grad)  # of F - X
    patch_grads = jnp.sum(local * g[:, :, :, None, None, None, :], axis=-1)
    return fold_patches(patch_grads, x.shape, geometry)


def weight_grad_reference(x, w, g, geometry: Geometry):
    """dL/dF = sum_{n,i,j} (Xpad_patch - F) * g  (full-precision gradient, paper Eq. 5)."""
    diff = _differences(x, w, geometry)
    return jnp.sum(diff * g[:, :, :, None, None, None, :], axis=(0, 1, 2))
