"""Evaluation metrics that several tasks share.

Modules:
  image_quality  `psnr_y`, `ssim_y` (SR protocol: Y channel, border crop, rounded output),
                 `rgb_to_y`, `shave`, `quantize`; plain JAX, jittable, one image or a batch.
"""

from addernet_jax.metrics.image_quality import psnr_y, quantize, rgb_to_y, shave, ssim_y

__all__ = ["psnr_y", "quantize", "rgb_to_y", "shave", "ssim_y"]
