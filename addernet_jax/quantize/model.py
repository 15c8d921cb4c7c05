"""Post-training quantisation of a whole model, its record, and its rebuilding from a checkpoint.

    quantized, record = quantize_model(float_model, calibration_images, bits=8)
    save_quantized("ckpt/resnet20_int8", quantized, spec, record)
    model = abstract_quantized_model(spec, record)     # the structure, to restore into

Every `Adder2D` of the model becomes a `QuantizedAdder2D`; a BatchNorm that takes an adder's
output directly is folded into it and replaced by `FoldedBatchNorm`. Everything else (the first
convolution, the classifier, BatchNorms after pooling, ReLU, pooling, residual additions) stays
float. The record (model_info.json's 'quantization') lists the layers with their grids; the
arrays (int8 filters, scales, output affines) are the checkpoint's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from addernet_jax.layers import Adder2D
from addernet_jax.models import abstract_from_spec
from addernet_jax.quantize.calibrate import (
    AdderSite,
    LayerFit,
    collect_inputs,
    find_adder_sites,
    fit_layer,
    parse_path,
    path_name,
)
from addernet_jax.quantize.layers import (
    BIT_WIDTHS,
    FoldedBatchNorm,
    QuantizedAdder2D,
    check_bits,
)
from addernet_jax.runtime.checkpoints import CheckpointError, save_model_checkpoint

RECORD_FORMAT = 1
SCHEME = "shared-grid adder: one scale and zero point for input and filters, filters clipped " \
         "to the input grid with an exact per-channel correction, BatchNorm folded"


def get_module(root: nnx.Module, path: tuple) -> Any:
    """The submodule at `path` (attribute names and list indices)."""
    for key in path:
        root = root[key] if isinstance(key, int) else getattr(root, key)
    return root


def set_module(root: nnx.Module, path: tuple, module: nnx.Module) -> None:
    """Replaces the submodule at `path`."""
    parent = get_module(root, path[:-1])
    if isinstance(path[-1], int):
        parent[path[-1]] = module
    else:
        setattr(parent, path[-1], module)


def check_calibration_images(images) -> np.ndarray:
    """(N, H, W, C) float32 with N >= 1; ValueError naming the problem otherwise."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"calibration images must be (N, H, W, C), got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("the calibration set is empty: quantisation needs images to "
                         "calibrate on")
    return images


def _layer_record(site: AdderSite, fit: LayerFit) -> dict:
    return {"path": path_name(site.path),
            "folded_bn": None if site.bn_path is None else path_name(site.bn_path),
            "zero_point": fit.grid.zero_point, "scale": fit.grid.scale,
            "range": [fit.grid.low, fit.grid.high], "clip_fraction": fit.clip_fraction,
            "input_range": list(fit.input_range), "relative_error": fit.relative_error,
            "clipped_filters": fit.clipped_filters}


def quantize_model(model: nnx.Module, images, *, bits: int = 8, impl: str = "auto",
                   batch_size: int = 64, log=None) -> tuple[nnx.Module, dict]:
    """Post-training quantisation of every adder layer of `model` (calibrate.py: grids,
    clipping, search; layers.py: the integer layer).

    Args:
      model: a float AdderNet (any registered model with `Adder2D` layers); not modified.
      images: (N, H, W, C) calibration images, already normalised as the model expects.
      bits: bit width of the shared grids, 4 to 8.
      impl: the `adder2d_int` implementation of the quantised layers.
      batch_size: images per forward pass during calibration.
      log: optional callable receiving one line per quantised layer.

    Returns:
      (the quantised model in eval mode, the record for model_info.json's 'quantization').

    Raises:
      ValueError: a bit width outside 4-8, an empty calibration set, or a model without
        adder layers.
    """
    bits, images = check_bits(bits), check_calibration_images(images)
    model.eval()
    sites = find_adder_sites(model, images.shape[1:])
    inputs = collect_inputs(model, sites, images, batch_size)
    quantized = nnx.clone(model)
    layers = []
    for site in sites:
        bn = None if site.bn_path is None else get_module(model, site.bn_path)
        layer, fit = fit_layer(get_module(model, site.path), bn, inputs.pop(site.path),
                               bits=bits, impl=impl, batch_size=batch_size)
        set_module(quantized, site.path, layer)
        if bn is not None:
            set_module(quantized, site.bn_path, FoldedBatchNorm(bn.num_features))
        layers.append(_layer_record(site, fit))
        if log:
            log(f"{path_name(site.path)}: range [{fit.grid.low:.3g}, {fit.grid.high:.3g}], "
                f"zero point {fit.grid.zero_point}, output error {fit.relative_error:.2%}")
    quantized.eval()
    record = {"format": RECORD_FORMAT, "scheme": SCHEME, "bits": bits,
              "calibration_images": len(images), "layers": layers}
    return quantized, record


def check_record(record: Any, where: str) -> None:
    """CheckpointError unless `record` is a quantisation record this version can rebuild."""
    def fail(problem: str):
        raise CheckpointError(f"{where}: bad 'quantization' record ({problem})")

    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        fail(f"expected a dict with format {RECORD_FORMAT}")
    if record.get("bits") not in BIT_WIDTHS:
        fail(f"bits {record.get('bits')!r} not in {BIT_WIDTHS}")
    layers = record.get("layers")
    if not isinstance(layers, list) or not layers:
        fail("no layers")
    for layer in layers:
        if not (isinstance(layer, dict) and isinstance(layer.get("path"), str)
                and isinstance(layer.get("zero_point"), int)
                and isinstance(layer.get("folded_bn"), str | None)):
            fail(f"layer entry {layer!r} needs 'path', 'zero_point' and 'folded_bn'")


def _quantized_like(adder: Adder2D, zero_point: int, bits: int, impl: str) -> QuantizedAdder2D:
    """An abstract `QuantizedAdder2D` with the geometry of the float `adder`."""
    return nnx.eval_shape(lambda: QuantizedAdder2D(
        adder.in_features, adder.out_features, adder.kernel_size, adder.strides,
        padding=adder.padding, zero_point=zero_point, bits=bits, impl=impl))


def apply_record(model: nnx.Module, record: dict, *, impl: str = "auto",
                 where: str = "checkpoint") -> nnx.Module:
    """Swaps the layers `record` names in the (abstract) float `model` for their quantised
    counterparts, in place, and returns it; CheckpointError when the record does not fit."""
    check_record(record, where)
    for entry in record["layers"]:
        path = parse_path(entry["path"])
        try:
            adder = get_module(model, path)
            bn = None if entry["folded_bn"] is None else get_module(
                model, parse_path(entry["folded_bn"]))
        except (AttributeError, IndexError, TypeError) as e:
            raise CheckpointError(f"{where}: the model has no layer {entry['path']!r} or "
                                  f"{entry['folded_bn']!r} ({e})") from None
        if not isinstance(adder, Adder2D) or not isinstance(bn, nnx.BatchNorm | None):
            raise CheckpointError(f"{where}: {entry['path']} is not an adder layer followed by "
                                  "the BatchNorm the record names")
        set_module(model, path, _quantized_like(adder, entry["zero_point"], record["bits"], impl))
        if bn is not None:
            set_module(model, parse_path(entry["folded_bn"]), FoldedBatchNorm(bn.num_features))
    return model


def int_impl_for(impl: str) -> str:
    """The `adder2d_int` implementation for a float `adder2d` impl name ('pallas' -> 'auto')."""
    return impl if impl in ("reference", "shifted", "ffi") else "auto"


def abstract_quantized_model(spec: dict, record: dict, impl: str = "auto",
                             where: str = "checkpoint") -> nnx.Module:
    """The quantised model of a float model spec and a record, with abstract arrays (the
    target that `runtime.checkpoints.load_model_checkpoint` restores into)."""
    return apply_record(abstract_from_spec(spec), record, impl=int_impl_for(impl), where=where)


def save_quantized(output: str | os.PathLike, model: nnx.Module, spec: dict, record: dict,
                   source: dict | None = None) -> dict:
    """Writes the quantised model checkpoint (model_info.json = the float spec + 'quantization'
    + 'source'), into a temporary sibling first: a failure leaves nothing at `output`.

    Raises:
      FileExistsError: `output` exists (nothing is overwritten).
    """
    output = Path(output).absolute()
    if output.exists():
        raise FileExistsError(f"output {output} already exists; nothing was written")
    info = {**spec, "quantization": record, **({"source": source} if source else {})}
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        save_model_checkpoint(staging / "checkpoint", nnx.state(model), info)
        if output.exists():
            raise FileExistsError(f"output {output} already exists; nothing was written")
        os.rename(staging / "checkpoint", output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info
