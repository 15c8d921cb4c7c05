"""PSNR and SSIM of super-resolved images, as the SR literature computes them (ADDERSR.md 5).

The protocol of the EDSR benchmark routine and of the SR papers' MATLAB scripts:
  1. the SR output is rounded and clipped to [0, 255] (it is saved as an 8-bit image);
  2. both images go to the Y channel of ITU-R BT.601 YCbCr,
     Y = 16 + (65.738 R + 129.057 G + 25.064 B) / 256 for RGB in [0, 255] (Y in [16, 235]);
  3. `scale` pixels are cropped from every border;
  4. PSNR with peak 255; SSIM of Wang et al. 2004 with an 11x11 Gaussian window, sigma 1.5,
     K1 = 0.01, K2 = 0.03, data range 255, over the 'valid' window positions.

The formulas are DeepMind's `dm_pix` (`pix.psnr`, `pix.ssim`), so everything here is plain JAX:
every function takes one image (H, W, 3) or a batch (B, H, W, 3) and can run inside `jax.jit`
(`scale` must then be static: `jax.jit(psnr_y, static_argnames="scale")`). In float32 they agree
with scikit-image's `peak_signal_noise_ratio` / `structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)` in float64 to ~1e-5 dB and ~1e-5.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma for RGB in [0, 255] (MATLAB rgb2ycbcr; the EDSR benchmark uses the same).
Y_OFFSET = 16.0
Y_WEIGHTS = (65.738 / 256.0, 129.057 / 256.0, 25.064 / 256.0)
PIXEL_MAX = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _float(image) -> jax.Array:
    """`image` as a JAX float array (float32 unless it already is a float)."""
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    return image


def rgb_to_y(image) -> jax.Array:
    """The BT.601 Y channel of RGB images in [0, 255]: (..., H, W, 3) -> (..., H, W, 1) float.

    Y lies in [16, 235]; no rounding (the EDSR benchmark keeps Y as a float).
    """
    image = _float(image)
    if image.shape[-1] != 3:
        raise ValueError(f"rgb_to_y needs RGB images (..., H, W, 3), got shape {image.shape}")
    weights = jnp.asarray(Y_WEIGHTS, image.dtype)
    return Y_OFFSET + jnp.sum(image * weights, axis=-1, keepdims=True)


# The full BT.601 conversion for RGB in [0, 255] (MATLAB rgb2ycbcr): YCbCr = offset + M @ RGB.
YCBCR_MATRIX = (
    (65.738 / 256.0, 129.057 / 256.0, 25.064 / 256.0),
    (-37.945 / 256.0, -74.494 / 256.0, 112.439 / 256.0),
    (112.439 / 256.0, -94.154 / 256.0, -18.285 / 256.0),
)
YCBCR_OFFSET = (16.0, 128.0, 128.0)


def rgb_to_ycbcr(image) -> jax.Array:
    """BT.601 YCbCr (MATLAB rgb2ycbcr) of RGB images in [0, 255]: (..., 3) -> (..., 3) float;
    its Y channel is `rgb_to_y`'s."""
    image = _float(image)
    if image.shape[-1] != 3:
        raise ValueError(f"rgb_to_ycbcr needs RGB images (..., 3), got shape {image.shape}")
    matrix = jnp.asarray(YCBCR_MATRIX, image.dtype)
    return jnp.asarray(YCBCR_OFFSET, image.dtype) + image @ matrix.T


def ycbcr_to_rgb(image) -> jax.Array:
    """The inverse of `rgb_to_ycbcr` (MATLAB ycbcr2rgb, unclipped): (..., 3) -> (..., 3)."""
    image = _float(image)
    if image.shape[-1] != 3:
        raise ValueError(f"ycbcr_to_rgb needs YCbCr images (..., 3), got shape {image.shape}")
    inverse = jnp.asarray(np.linalg.inv(np.asarray(YCBCR_MATRIX)), image.dtype)
    return (image - jnp.asarray(YCBCR_OFFSET, image.dtype)) @ inverse.T


def shave(image, border: int):
    """`image` (..., H, W, C) without `border` pixels on each of its four sides."""
    if border == 0:
        return image
    height, width = image.shape[-3], image.shape[-2]
    if 2 * border >= min(height, width):
        raise ValueError(f"cannot shave {border} pixels from each side of a {height}x{width} image")
    return image[..., border : height - border, border : width - border, :]


def quantize(image) -> jax.Array:
    """Round and clip to the 8-bit range [0, 255], as an SR output is saved (stays float)."""
    return jnp.clip(jnp.round(_float(image)), 0.0, PIXEL_MAX)


def _y_pair(sr, hr, scale: int) -> tuple[jax.Array, jax.Array]:
    """The shaved Y channels of the quantised SR output and of the HR image."""
    sr, hr = quantize(sr), _float(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SR output {sr.shape} and HR image {hr.shape} differ in shape")
    return shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale)


def psnr_y(sr, hr, scale: int) -> jax.Array:
    """PSNR in dB on Y with `scale` border pixels cropped (ADDERSR.md 5).

    Args:
      sr: super-resolved image(s), (H, W, 3) or (B, H, W, 3), any float range (quantised here).
      hr: ground-truth image(s) of the same shape, RGB in [0, 255] (uint8 or float).
      scale: the SR scale, also the border width that is cropped.

    Returns:
      A scalar for one image, (B,) for a batch; inf where the images are equal.
    """
    sr_y, hr_y = _y_pair(sr, hr, scale)
    # pix.psnr assumes a peak of 1.
    return pix.psnr(sr_y / PIXEL_MAX, hr_y / PIXEL_MAX)


def ssim_y(sr, hr, scale: int) -> jax.Array:
    """SSIM on Y with `scale` border pixels cropped: 11x11 Gaussian (sigma 1.5) window, K1 0.01,
    K2 0.03, data range 255, mean over the valid window positions (ADDERSR.md 5).

    Args and Returns as `psnr_y`.
    """
    sr_y, hr_y = _y_pair(sr, hr, scale)
    return pix.ssim(
        sr_y,
        hr_y,
        max_val=PIXEL_MAX,
        filter_size=SSIM_WINDOW,
        filter_sigma=SSIM_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )


def y_error_maps(sr, hr) -> tuple[jax.Array, jax.Array]:
    """Per-pixel maps from which `psnr_y` and `ssim_y` are sums, for tiled evaluation.

    Args:
      sr: super-resolved images (B, H, W, 3), any float range (quantised here).
      hr: ground truth (B, H, W, 3), RGB in [0, 255].

    Returns:
      (squared Y error (B, H, W), SSIM map (B, H - 10, W - 10)), nothing cropped: the SSIM map's
      entry [i, j] is the SSIM of the 11x11 window centred on pixel (i + 5, j + 5). `psnr_y` is
      the PSNR of the mean of the first over the pixels at least `scale` from every border,
      `ssim_y` the mean of the second over the windows centred at least `scale + 5` from it.
    """
    sr_y, hr_y = _y_pair(sr, hr, 0)
    squared = jnp.square(sr_y - hr_y)[..., 0]
    ssim_map = pix.ssim(sr_y, hr_y, max_val=PIXEL_MAX, filter_size=SSIM_WINDOW,
                        filter_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2, return_map=True)
    return squared, ssim_map[..., 0]

