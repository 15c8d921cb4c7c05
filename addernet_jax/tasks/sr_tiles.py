"""Tiled super-resolution of whole images, exact: the numbers do not depend on the tiling.

Benchmark images differ in size and may be too large for one forward pass, so evaluation cuts
every LR image into tiles: a *core* of `core` x `core` LR pixels (smaller at the right and bottom
edges) inside a *window* that adds `margin` pixels of context on every side, shifted inwards at
the image borders so that windows never leave the image. A model whose outputs depend on at most
`receptive_radius` LR pixels around them (`addernet_jax.models.sr`) gives, on every core pixel,
exactly its whole-image output when margin >= receptive_radius: the window holds all the context
the whole image would give, and at image borders it ends where the image ends, so the layers'
zero padding falls where it falls on the whole image. Windows have one shape per image size
class (`core + 2 * margin`, or the whole extent of a smaller axis), so an evaluation set compiles
once per shape, and tiles of every image share batches sharded over the mesh.

Two consumers:
- `tile_sums` (inside the jitted evaluation step): per-image sums of the squared Y error and of
  the SSIM map over each tile's core, from which `sums_to_metrics` gives exactly `psnr_y` and
  `ssim_y` of the whole images (SSIM needs 5 HR pixels of correct output beyond the core, so
  `eval_margin` adds ceil(5 / scale) LR pixels);
- `super_resolve` (evaluate.py): the assembled SR images, for PNGs and whole-image metrics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from addernet_jax import data
from addernet_jax.metrics.image_quality import PIXEL_MAX, SSIM_WINDOW, y_error_maps
from addernet_jax.runtime import parallel
from addernet_jax.tasks.base import EvalData

SSIM_RADIUS = SSIM_WINDOW // 2


def eval_margin(receptive_radius: int, scale: int) -> int:
    """LR context a tile needs for exact PSNR and SSIM sums: the model's receptive radius plus
    the SSIM window's 5 HR pixels."""
    return receptive_radius + math.ceil(SSIM_RADIUS / scale)


def plan_axis(length: int, core: int, margin: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Tiles along one axis of `length` LR pixels.

    Args:
      length: the axis' size.
      core: core size (0: one core covering the whole axis).
      margin: context on each side of a core.

    Returns:
      (window size, [(core start, core end, window start), ...]): cores partition [0, length);
      each window [start, start + size) lies inside the image and holds `margin` pixels beyond
      its core on each side, or reaches the image border there.
    """
    if length < 1 or core < 0 or margin < 0:
        raise ValueError(f"cannot tile an axis of {length} with core {core}, margin {margin}")
    core = length if core == 0 else core
    window = min(core + 2 * margin, length)
    tiles = []
    for start in range(0, length, core):
        end = min(start + core, length)
        tiles.append((start, end, min(max(start - margin, 0), length - window)))
    return window, tiles


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile of LR image `image`: rows and columns as (core start, core end, window start)
    in LR pixels, and the window's (height, width)."""

    image: int
    rows: tuple[int, int, int]
    cols: tuple[int, int, int]
    window: tuple[int, int]


def plan_tiles(sizes: Sequence[tuple[int, int]], core: int, margin: int) -> list[Tile]:
    """Every tile of LR images of (height, width) `sizes`, image by image, row-major."""
    tiles = []
    for index, (height, width) in enumerate(sizes):
        window_h, rows = plan_axis(height, core, margin)
        window_w, cols = plan_axis(width, core, margin)
        tiles += [Tile(index, r, c, (window_h, window_w)) for r in rows for c in cols]
    return tiles


class TileSource:
    """Tiles of SR records as grain records: {'lr': uint8 window, 'hr': uint8 HR window,
    'image': int32, 'first': bool (the image's first tile), 'core': int32 (4,) HR core
    (top, left, bottom, right) in window coordinates, 'origin': int32 (2,) the HR window's
    top-left in the image, 'size': int32 (2,) the HR image's (height, width)}."""

    def __init__(self, records: Sequence[dict[str, Any]], tiles: Sequence[Tile], scale: int):
        self.records, self.tiles, self.scale = records, list(tiles), scale

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict[str, Any]:
        tile, s = self.tiles[index], self.scale
        record = self.records[tile.image]
        (r0, r1, rw), (c0, c1, cw) = tile.rows, tile.cols
        wh, ww = tile.window
        hr = record["hr"]
        return {
            "lr": record["lr"][rw : rw + wh, cw : cw + ww],
            "hr": hr[rw * s : (rw + wh) * s, cw * s : (cw + ww) * s],
            "image": np.int32(tile.image),
            "first": np.bool_(r0 == 0 and c0 == 0),
            "core": np.array([(r0 - rw) * s, (c0 - cw) * s, (r1 - rw) * s, (c1 - cw) * s],
                             np.int32),
            "origin": np.array([rw * s, cw * s], np.int32),
            "size": np.array(hr.shape[:2], np.int32),
        }


class ChainedLoader:
    """Iterates several evaluation loaders one after the other (one per window shape)."""

    def __init__(self, loaders: Sequence[Any]):
        self.loaders = list(loaders)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for loader in self.loaders:
            yield from loader


def by_window(tiles: Sequence[Tile]) -> dict[tuple[int, int], list[Tile]]:
    """Tiles grouped by window shape (a batch holds one shape), in order of appearance."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        groups.setdefault(tile.window, []).append(tile)
    return groups


def tiled_eval_data(records: Sequence[dict[str, Any]], scale: int, *, core: int, margin: int,
                    batch_size: int) -> EvalData:
    """This process's part of the tile batches of a whole evaluation set.

    Args:
      records: the set's {'lr', 'hr'} uint8 records (`data.PairedSRSource`, cached).
      scale: the SR scale.
      core: LR core size (0: whole images).
      margin: LR context per side (`eval_margin`).
      batch_size: tiles per global batch (rounded up to a multiple of the devices; padding
        tiles are masked).
    """
    tiles = plan_tiles([r["lr"].shape[:2] for r in records], core, margin)
    loaders, num_batches = [], 0
    for group in by_window(tiles).values():
        size = parallel.device_multiple(min(batch_size, len(group)))
        loaders.append(data.make_eval_loader(
            TileSource(records, group, scale), batch_size=size,
            transforms=data.sr_eval_transforms(), process_index=jax.process_index(),
            process_count=jax.process_count()))
        num_batches += data.num_eval_batches(len(group), size)
    return EvalData(ChainedLoader(loaders), num_batches)


def _axis_region(length: int, offset: int, core_lo, core_hi, origin, size, border: int):
    """(B, length) booleans: map positions i (centred on window pixel i + offset) inside the
    core [core_lo, core_hi) and at least `border` pixels from the image's edges."""
    pixel = jnp.arange(length)[None, :] + offset
    in_core = (pixel >= core_lo[:, None]) & (pixel < core_hi[:, None])
    in_image = pixel + origin[:, None]
    return in_core & (in_image >= border) & (in_image < size[:, None] - border)


def _region(shape, offset: int, batch, border: int) -> jax.Array:
    core, origin, size = batch["core"], batch["origin"], batch["size"]
    rows = _axis_region(shape[0], offset, core[:, 0], core[:, 2], origin[:, 0], size[:, 0],
                        border)
    cols = _axis_region(shape[1], offset, core[:, 1], core[:, 3], origin[:, 1], size[:, 1],
                        border)
    return (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)


def tile_sums(sr: jax.Array, batch: dict[str, jax.Array], scale: int,
              num_images: int) -> dict[str, jax.Array]:
    """Per-image sums over the real tiles of a batch (ADDERSR.md 5 protocol).

    Returns:
      {'squared_error', 'pixels', 'ssim', 'windows'}: (num_images,) sums of the squared Y error
      over core pixels at least `scale` from the image border, and of the SSIM map over core
      windows centred at least `scale + 5` from it; 'count': the number of images whose first
      tile is in the batch.
    """
    squared, ssim_map = y_error_maps(sr, batch["hr"])
    mask = batch["mask"].astype(jnp.float32)[:, None, None]
    psnr_region = _region(squared.shape[1:], 0, batch, scale) * mask
    ssim_region = _region(ssim_map.shape[1:], SSIM_RADIUS, batch, scale + SSIM_RADIUS) * mask
    per_tile = {"squared_error": jnp.sum(squared * psnr_region, axis=(1, 2)),
                "pixels": jnp.sum(psnr_region, axis=(1, 2)),
                "ssim": jnp.sum(ssim_map * ssim_region, axis=(1, 2)),
                "windows": jnp.sum(ssim_region, axis=(1, 2))}
    sums = {key: jax.ops.segment_sum(value, batch["image"], num_segments=num_images)
            for key, value in per_tile.items()}
    sums["count"] = jnp.sum(batch["mask"] & batch["first"])
    return sums


def sums_to_metrics(sums: dict[str, Any]) -> dict[str, float]:
    """{'psnr' (dB), 'ssim', 'count'}: means over the images of their PSNR and SSIM."""
    mse = np.asarray(sums["squared_error"], np.float64) / np.asarray(sums["pixels"], np.float64)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(PIXEL_MAX**2 / mse)
    ssim = np.asarray(sums["ssim"], np.float64) / np.asarray(sums["windows"], np.float64)
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)),
            "count": int(sums["count"])}


# ---------------------------------------------------------------------------------------------
# Assembled images (evaluate.py): the same tiles, cores written into whole SR images.


@nnx.jit
def _forward(model, lr):
    return model(lr)


def _run_batch(model, mesh, windows: np.ndarray) -> np.ndarray:
    """The model on a stack of equal windows, sharded over the mesh (padded to a multiple of
    the devices); the outputs of the real windows on every process."""
    count, size = len(windows), parallel.device_multiple(len(windows))
    padded = np.concatenate([windows, np.repeat(windows[-1:], size - count, axis=0)])
    sharding = parallel.batch_sharding(mesh)
    batch = jax.make_array_from_callback(padded.shape, sharding, lambda index: padded[index])
    out = _forward(model, batch)
    return np.asarray(multihost_utils.process_allgather(out, tiled=True))[:count]


def super_resolve(model: nnx.Module, lr_images: Sequence[np.ndarray], scale: int, *,
                  core: int, margin: int, batch_size: int, mesh) -> list[np.ndarray]:
    """The model's float32 SR images of uint8/float LR images (H, W, 3), computed tile by tile
    (`core` 0: whole images) with `margin` LR pixels of context, `batch_size` windows per
    forward pass over the mesh."""
    model.eval()
    outputs = [np.zeros((h * scale, w * scale, 3), np.float32)
               for h, w in (image.shape[:2] for image in lr_images)]
    tiles = plan_tiles([image.shape[:2] for image in lr_images], core, margin)
    for group in by_window(tiles).values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            windows = np.stack([_window(lr_images[t.image], t) for t in chunk]).astype(np.float32)
            for tile, sr in zip(chunk, _run_batch(model, mesh, windows)):
                _place(outputs[tile.image], sr, tile, scale)
    return outputs


def _window(image: np.ndarray, tile: Tile) -> np.ndarray:
    (_, _, rw), (_, _, cw) = tile.rows, tile.cols
    return image[rw : rw + tile.window[0], cw : cw + tile.window[1]]


def _place(output: np.ndarray, sr: np.ndarray, tile: Tile, scale: int) -> None:
    """Writes the tile's core of `sr` (its window's SR output) into the whole image."""
    (r0, r1, rw), (c0, c1, cw) = tile.rows, tile.cols
    output[r0 * scale : r1 * scale, c0 * scale : c1 * scale] = sr[
        (r0 - rw) * scale : (r1 - rw) * scale, (c0 - cw) * scale : (c1 - cw) * scale]


__all__ = ["ChainedLoader", "Tile", "TileSource", "eval_margin", "plan_axis", "plan_tiles",
           "super_resolve", "sums_to_metrics", "tile_sums", "tiled_eval_data"]
