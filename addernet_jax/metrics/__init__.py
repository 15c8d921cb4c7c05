"""Evaluation metrics that several tasks share.

Modules:
  image_quality  `psnr_y`, `ssim_y` (SR protocol: Y channel, border crop, rounded output),
                 `y_error_maps` (their per-pixel maps, for tiled evaluation), `rgb_to_y`,
                 `rgb_to_ycbcr`, `ycbcr_to_rgb`, `shave`, `quantize`; plain JAX, jittable, one
                 image or a batch.
"""

from addernet_jax.metrics.image_quality import (
    psnr_y,
    quantize,
    rgb_to_y,
    rgb_to_ycbcr,
    shave,
    ssim_y,
    y_error_maps,
    ycbcr_to_rgb,
)

__all__ = ["psnr_y", "quantize", "rgb_to_y", "rgb_to_ycbcr", "shave", "ssim_y", "y_error_maps",
           "ycbcr_to_rgb"]
