"""Bicubic resizing with MATLAB `imresize` semantics, in numpy (ADDERSR.md sections 4-5).

Super-resolution data and benchmarks are made with MATLAB `imresize(hr, 1/scale, 'bicubic')`
(ADDERSR.md section 4: "LR by bicubic down-sampling (MATLAB imresize semantics)"). This module
reproduces it:
  - the cubic convolution kernel with a = -0.5 (Keys), 4 taps wide;
  - antialiasing when downscaling: the kernel is stretched by 1/scale (scale * cubic(scale * x)),
    so at x4 each output pixel weighs 16 input pixels per axis; none when upscaling;
  - pixel-centre alignment: output pixel x (1-based) is centred on the input coordinate
    u = x / scale + (1 - 1 / scale) / 2;
  - symmetric (mirror, edge pixel repeated) border handling, weights normalised to sum 1;
  - separable: one 1-D pass per axis, the axis with the smaller scale first (rows on a tie),
    in float64; for uint8 input the result of each pass is rounded half away from zero and
    clipped back to uint8, as MATLAB keeps the input class between its passes.

With these rules `downscale(hr, s)` reproduces every shipped LR image of Set5 and Set14
(../shared/data/sr-benchmark, x2/x3/x4) bit for bit.

Why not Pillow: `Image.resize(..., Image.BICUBIC)` on float 'F' images also uses a = -0.5 with
antialiasing, but at the borders it truncates the kernel and renormalises instead of mirroring,
and it has no rounding between the passes. Measured against the shipped LR images (RGB, uint8
after rounding; worst image per set and scale): Set5 54.1 / 52.1 / 50.3 dB at x2 / x3 / x4,
Set14 48.8 / 45.8 / 43.0 dB (foreman x4: border pixels off by up to 21 grey levels; its interior
alone is at 57.8 dB). That misses the 45 dB bar, so the MATLAB algorithm is implemented here.
"""

from __future__ import annotations

import math

import numpy as np

KERNEL_WIDTH = 4.0  # the bicubic kernel's support, in input pixels at scale 1


def cubic(x: np.ndarray) -> np.ndarray:
    """The Keys cubic convolution kernel with a = -0.5 (MATLAB imresize's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices of MATLAB imresize along one axis.

    Args:
      in_length: input size along the axis.
      out_length: output size along the axis.
      scale: output / input size ratio (< 1 when downscaling).
      antialiasing: stretch the kernel by 1/scale when downscaling (MATLAB's default).

    Returns:
      (weights, indices), both (out_length, taps): output pixel i is
      sum_t weights[i, t] * input[indices[i, t]]; each row of weights sums to 1.
    """
    stretch = scale < 1 and antialiasing
    width = KERNEL_WIDTH / scale if stretch else KERNEL_WIDTH
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output centre
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside the image
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if stretch else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding: ..., 2, 1 | 1, 2, ..., n | n, n-1, ... (MATLAB's default 'symmetric').
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices - 1, 2 * in_length).astype(np.int64)]
    used = np.any(weights != 0, axis=0)  # MATLAB drops the all-zero tap columns
    return weights[:, used], indices[:, used]


def resize_matrix(in_length: int, out_length: int, antialiasing: bool = True) -> np.ndarray:
    """The (out_length, in_length) float64 matrix of one MATLAB bicubic pass along an axis.

    `resize_matrix(h, H) @ x` resizes the rows of a float image `x` exactly as `imresize` does
    in float (symmetric borders folded into the matrix); a model applies it with an einsum
    (VDSR's bicubic pre-upsampling inside `addernet_jax.models.sr`).
    """
    weights, indices = contributions(in_length, out_length, out_length / in_length, antialiasing)
    matrix = np.zeros((out_length, in_length), np.float64)
    np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
    return matrix


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's conversion to uint8 for values >= 0 after clipping: round half away from zero."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5)


def _resize_axis(
    image: np.ndarray, axis: int, out_length: int, scale: float, antialiasing: bool
) -> np.ndarray:
    """One 1-D pass along `axis` (float64), summing the taps one at a time to bound memory."""
    weights, indices = contributions(image.shape[axis], out_length, scale, antialiasing)
    moved = np.moveaxis(image, axis, 0)
    shape = (out_length,) + (1,) * (moved.ndim - 1)
    out = np.zeros((out_length,) + moved.shape[1:], np.float64)
    for t in range(weights.shape[1]):
        out += weights[:, t].reshape(shape) * moved[indices[:, t]]
    return np.moveaxis(out, 0, axis)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
    dtype: type | np.dtype = np.float64,
) -> np.ndarray:
    """MATLAB `imresize(image, scale_or_size, 'bicubic')` of an (H, W) or (H, W, C) image.

    Args:
      image: uint8 (values 0..255) or float array, (H, W) or (H, W, C).
      scale: the resize factor; the output size is ceil(scale * size), as MATLAB computes it.
      output_shape: (height, width) instead of `scale`; each axis then uses out / in as its scale.
      antialiasing: MATLAB's 'Antialiasing' option; it only acts when downscaling.
      dtype: np.uint8 (rounded half away from zero and clipped to [0, 255]) or a float dtype.

    Returns:
      The resized image with the channels of `image`, in `dtype`.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of scale and output_shape")
    height, width = image.shape[:2]
    if output_shape is None:
        if scale <= 0:
            raise ValueError(f"imresize scale must be positive, got {scale}")
        output_shape = (math.ceil(scale * height), math.ceil(scale * width))
        scales = (float(scale), float(scale))
    else:
        scales = (output_shape[0] / height, output_shape[1] / width)
    if min(output_shape) < 1:
        raise ValueError(f"imresize of a {height}x{width} image to {output_shape} is empty")
    integer = image.dtype == np.uint8
    out = np.asarray(image, np.float64)
    for axis in sorted((0, 1), key=lambda a: scales[a]):  # stable: rows first on a tie
        out = _resize_axis(out, axis, output_shape[axis], scales[axis], antialiasing)
        if integer:
            out = _round_half_away(out)  # MATLAB keeps uint8 between the two passes
    if np.dtype(dtype) == np.uint8:
        return _round_half_away(out).astype(np.uint8)
    return out.astype(dtype)


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """The top-left (H - H % scale, W - W % scale) part of an image (EDSR's modcrop)."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def downscale(hr: np.ndarray, scale: int, *, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """The bicubic LR image of `hr`, as EDSR's benchmark and DIV2K LR images were made.

    `hr` is first cropped to a multiple of `scale`, so the LR size is floor(HR size / scale).
    """
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"downscale needs an integer scale >= 1, got {scale}")
    hr = crop_to_multiple(hr, int(scale))
    height, width = hr.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image of {image_size(hr)} is smaller than the scale {scale}")
    return imresize(hr, output_shape=(height // scale, width // scale), dtype=dtype)


def upscale(lr: np.ndarray, scale: int, *, dtype: type | np.dtype = np.uint8) -> np.ndarray:
    """MATLAB bicubic upscaling by an integer `scale` (no antialiasing): the bicubic baseline."""
    height, width = lr.shape[:2]
    return imresize(lr, output_shape=(height * scale, width * scale), dtype=dtype)


def image_size(image: np.ndarray) -> str:
    """'HxW' of an image array, for messages."""
    return f"{image.shape[0]}x{image.shape[1]}"
