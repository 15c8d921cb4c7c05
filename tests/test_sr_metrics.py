"""PSNR / SSIM on Y (ADDERSR.md 5): against scikit-image on real images, batched and jitted, and
the published bicubic baselines of Set5 reproduced from the shipped LR images."""

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from addernet_jax.data.imresize import upscale
from addernet_jax.data.sr import PairedSRSource
from addernet_jax.metrics import psnr_y, quantize, rgb_to_y, shave, ssim_y

# One compilation per image shape (eager dm_pix SSIM is several times slower on CPU).
_metrics = jax.jit(
    lambda sr, hr, scale: (psnr_y(sr, hr, scale), ssim_y(sr, hr, scale)), static_argnums=2
)


@pytest.fixture(scope="module")
def sr_root(shared_dir):
    """EDSR's benchmark folder: <Set>/HR/<name>.png and <Set>/LR_bicubic/X<s>/<name>x<s>.png."""
    return shared_dir / "data" / "sr-benchmark"


def _y_reference(rgb: np.ndarray, border: int) -> np.ndarray:
    """float64 BT.601 Y, shaved, written independently of the module."""
    rgb = rgb.astype(np.float64)
    y = 16.0 + (65.738 * rgb[..., 0] + 129.057 * rgb[..., 1] + 25.064 * rgb[..., 2]) / 256.0
    return y[border:-border, border:-border]


def test_rgb_to_y_shave_and_quantize():
    images = np.zeros((2, 5, 6, 3), np.uint8)
    images[1] = 255
    y = rgb_to_y(images)
    assert y.shape == (2, 5, 6, 1) and y.dtype == np.float32
    np.testing.assert_allclose(np.asarray(y)[:, 0, 0, 0], [16.0, 235.0], atol=1e-3)
    assert shave(y, 2).shape == (2, 1, 2, 1) and shave(y, 0) is y
    np.testing.assert_array_equal(quantize(np.array([-3.0, 0.49, 254.5, 255.7])), [0, 0, 254, 255])
    with pytest.raises(ValueError, match="cannot shave 3 pixels from each side of a 5x6 image"):
        shave(y, 3)
    with pytest.raises(ValueError, match=r"needs RGB images \(..., H, W, 3\), got shape"):
        rgb_to_y(images[..., :2])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(images[0], images[0, :4], 1)


@pytest.mark.parametrize(
    "dataset, name, scale",
    [("Set5", "bird", 2), ("Set5", "butterfly", 4), ("Set14", "bridge", 3), ("Set14", "comic", 2)],
)
def test_psnr_and_ssim_match_scikit_image(sr_root, dataset, name, scale):
    source = PairedSRSource(sr_root / dataset, scale)
    record = source[source.hr_files.index(f"{name}.png")]
    sr = upscale(record["lr"], scale, dtype=np.float64)  # unrounded: psnr_y/ssim_y round it
    psnr, ssim = (float(v) for v in _metrics(sr, record["hr"], scale))
    sr_y = _y_reference(np.clip(np.round(sr), 0, 255), scale)
    hr_y = _y_reference(record["hr"], scale)
    expected_psnr = peak_signal_noise_ratio(hr_y, sr_y, data_range=255)
    expected_ssim = structural_similarity(
        hr_y, sr_y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert abs(psnr - expected_psnr) < 1e-4 and abs(ssim - expected_ssim) < 1e-5
    assert 20 < psnr < 40 and 0.5 < ssim < 1  # a real, imperfect reconstruction


def test_batched_and_jitted_equal_the_single_image_values(sr_root):
    source = PairedSRSource(sr_root / "Set5", 4)
    records = [source[i] for i in (1, 2)]  # bird, butterfly: crop both to 256x256
    sr = np.stack([upscale(r["lr"], 4)[:256, :256] for r in records])
    hr = np.stack([r["hr"][:256, :256] for r in records])
    psnr, ssim = _metrics(sr, hr, 4)
    assert psnr.shape == ssim.shape == (2,)
    for i in range(2):
        single_psnr, single_ssim = _metrics(sr[i], hr[i], 4)
        np.testing.assert_allclose(psnr[i], single_psnr, rtol=1e-6)
        np.testing.assert_allclose(ssim[i], single_ssim, rtol=1e-6)
    small = hr[:, 100:140, 100:150]  # eager, not jitted: equal images
    assert np.all(np.isinf(psnr_y(small, small, 2))) and np.allclose(ssim_y(small, small, 2), 1)
    assert np.all(np.isinf(psnr_y(small + 0.4, small, 2)))  # the SR output is rounded first


# Set5 bicubic baselines, PSNR/SSIM on Y with the border crop: the published values (e.g. in the
# VDSR and EDSR papers' tables) and what this implementation measures from the shipped LR images.
PUBLISHED = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}
MEASURED = {2: (33.6734, 0.93029), 3: (30.4033, 0.86891), 4: (28.4290, 0.81113)}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_baseline_on_set5(sr_root, scale):
    source = PairedSRSource(sr_root / "Set5", scale)
    records = [source[i] for i in range(len(source))]
    values = [_metrics(upscale(r["lr"], scale), r["hr"], scale) for r in records]
    psnr, ssim = np.mean(np.asarray(values, np.float64), axis=0)
    print(f"Set5 x{scale} bicubic: PSNR {psnr:.4f} dB, SSIM {ssim:.5f}")
    assert abs(psnr - MEASURED[scale][0]) < 0.01 and abs(ssim - MEASURED[scale][1]) < 1e-4
    assert abs(psnr - PUBLISHED[scale][0]) < 0.05 and abs(ssim - PUBLISHED[scale][1]) < 1e-3
