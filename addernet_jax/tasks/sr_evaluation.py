"""Evaluating an SR model on benchmark sets as the SR literature reports it: PSNR / SSIM on Y per
set (ADDERSR.md 5), bicubic beside it, the super-resolved PNGs and a side-by-side crop per set.

The model runs tile by tile (`sr_tiles.super_resolve`: exact, any image size in bounded
memory); the metrics are `metrics.psnr_y` / `metrics.ssim_y` of the assembled whole images, the
mean over a set's images. Bicubic is MATLAB `imresize` of the LR image, in uint8 as the
published baselines (`data.upscale`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from PIL import Image, ImageDraw

from addernet_jax import data
from addernet_jax.metrics import psnr_y, quantize, rgb_to_y, ssim_y
from addernet_jax.tasks.sr_tiles import super_resolve

CROP = 96  # HR side of the side-by-side crop (smaller images: their size)
ZOOM = 2  # nearest-neighbour enlargement of the crops in the side-by-side PNG
LABEL_HEIGHT = 16
DISPLAY_NAMES = {"vdsr": "VDSR", "edsr": "EDSR", "edsr_baseline": "EDSR baseline"}


@dataclasses.dataclass
class SetResult:
    """One benchmark set at one scale: per-image metrics and images.

    Attributes:
      name: the set ('Set5').
      scale: the SR scale.
      names: image names.
      psnr, ssim: per image, the model's.
      bicubic_psnr, bicubic_ssim: per image, bicubic's.
      sr, bicubic, hr: uint8 (H, W, 3) images.
    """

    name: str
    scale: int
    names: list[str]
    psnr: list[float]
    ssim: list[float]
    bicubic_psnr: list[float]
    bicubic_ssim: list[float]
    sr: list[np.ndarray]
    bicubic: list[np.ndarray]
    hr: list[np.ndarray]

    def summary(self) -> dict[str, Any]:
        """Set means and per-image values, JSON-serialisable."""
        return {"set": self.name, "scale": self.scale, "images": len(self.names),
                "psnr": float(np.mean(self.psnr)), "ssim": float(np.mean(self.ssim)),
                "bicubic_psnr": float(np.mean(self.bicubic_psnr)),
                "bicubic_ssim": float(np.mean(self.bicubic_ssim)),
                "per_image": {n: {"psnr": p, "ssim": s, "bicubic_psnr": bp, "bicubic_ssim": bs}
                              for n, p, s, bp, bs in zip(self.names, self.psnr, self.ssim,
                                                         self.bicubic_psnr, self.bicubic_ssim)}}


def _metrics(image: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    return float(psnr_y(image, hr, scale)), float(ssim_y(image, hr, scale))


def evaluate_sr_set(model: nnx.Module, root: str | Path, name: str, scale: int, *, tile: int,
                    batch_size: int, mesh) -> SetResult:
    """The model and bicubic on every image of `<root>/<name>` (EDSR's benchmark layout).

    Args:
      model: an SR model (`receptive_radius` gives the tiles' margin).
      root: the folder holding the sets.
      name: the set's folder name.
      scale: the SR scale (the set needs LR_bicubic/X<scale>).
      tile: LR core of a tile (0: whole images); the numbers do not depend on it.
      batch_size: windows per forward pass over the mesh.
      mesh: the device mesh.
    """
    source = data.PairedSRSource(Path(root) / name, scale)
    records = [source[i] for i in range(len(source))]
    outputs = super_resolve(model, [r["lr"] for r in records], scale, core=tile,
                            margin=model.receptive_radius, batch_size=batch_size, mesh=mesh)
    result = SetResult(name, scale, [r["name"] for r in records], [], [], [], [], [], [],
                       [r["hr"] for r in records])
    for record, output in zip(records, outputs):
        bicubic = data.upscale(record["lr"], scale)
        psnr, ssim = _metrics(output, record["hr"], scale)
        bicubic_psnr, bicubic_ssim = _metrics(bicubic, record["hr"], scale)
        result.psnr.append(psnr)
        result.ssim.append(ssim)
        result.bicubic_psnr.append(bicubic_psnr)
        result.bicubic_ssim.append(bicubic_ssim)
        result.sr.append(np.asarray(quantize(output), np.uint8))
        result.bicubic.append(bicubic)
    return result


def format_table(model_name: str, variant: str, results: list[SetResult]) -> str:
    """The seed README's SR table layout: | Scale | Model | Method | <set> ... | with
    PSNR/SSIM cells, a Bicubic row and the model's row."""
    sets = [r.name for r in results]
    scale = results[0].scale
    method = {"cnn": "CNN", "adder": "ANN"}.get(variant, f"ANN ({variant})")
    model_name = DISPLAY_NAMES.get(model_name, model_name)
    lines = ["| Scale | Model | Method | " + " | ".join(sets) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in sets) + " |"]
    for label, psnr, ssim in (("Bicubic", "bicubic_psnr", "bicubic_ssim"),
                              (method, "psnr", "ssim")):
        cells = [f"{np.mean(getattr(r, psnr)):.2f}/{np.mean(getattr(r, ssim)):.4f}"
                 for r in results]
        lines.append(f"| x{scale} | {model_name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_crop(bicubic: np.ndarray, hr: np.ndarray, size: int = CROP) -> tuple[int, int, int]:
    """(top, left, size) of the size x size window (on a size/4 grid) where bicubic's Y error
    is largest: the part of the image where super-resolution has the most to show."""
    size = min(size, *hr.shape[:2])
    error = np.square(np.asarray(rgb_to_y(bicubic) - rgb_to_y(hr), np.float64))[..., 0]
    stride = max(1, size // 4)
    best, where = -1.0, (0, 0)
    for top in range(0, error.shape[0] - size + 1, stride):
        for left in range(0, error.shape[1] - size + 1, stride):
            value = error[top : top + size, left : left + size].sum()
            if value > best:
                best, where = value, (top, left)
    return (*where, size)


def side_by_side(result: SetResult, index: int | None = None) -> Image.Image:
    """bicubic | ours | HR on one crop of one image of the set (by default the image where the
    model gains most over bicubic), enlarged `ZOOM` times, each panel labelled with the image's
    PSNR."""
    if index is None:
        index = int(np.argmax(np.subtract(result.psnr, result.bicubic_psnr)))
    top, left, size = detail_crop(result.bicubic[index], result.hr[index])
    panels = [(f"bicubic {result.bicubic_psnr[index]:.2f} dB", result.bicubic[index]),
              (f"ours {result.psnr[index]:.2f} dB", result.sr[index]),
              (f"HR {result.names[index]}", result.hr[index])]
    side = size * ZOOM
    canvas = Image.new("RGB", (3 * side + 2 * 4, side + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (label, image) in enumerate(panels):
        crop = Image.fromarray(image[top : top + size, left : left + size])
        canvas.paste(crop.resize((side, side), Image.NEAREST), (k * (side + 4), LABEL_HEIGHT))
        draw.text((k * (side + 4) + 2, 2), label, fill="black")
    return canvas


def write_outputs(result: SetResult, directory: str | Path, save_images: bool) -> list[Path]:
    """Writes `<directory>/<set>_x<s>_comparison.png` and, with `save_images`, every SR image
    as `<directory>/<set>/x<s>/<name>.png`; returns the written paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / f"{result.name}_x{result.scale}_comparison.png"]
    side_by_side(result).save(written[0])
    if save_images:
        folder = directory / result.name / f"x{result.scale}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in zip(result.names, result.sr):
            written.append(folder / f"{name}.png")
            Image.fromarray(image).save(written[-1])
    return written


__all__ = ["SetResult", "detail_crop", "evaluate_sr_set", "format_table", "side_by_side",
           "write_outputs"]
