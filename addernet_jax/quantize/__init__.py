"""Post-training quantisation of AdderNets to integer adder layers (int8 operands, int32 sums).

    from addernet_jax.quantize import quantize_model, save_quantized
    quantized, record = quantize_model(float_model, calibration_images, bits=8)
    save_quantized("ckpt/resnet20_int8", quantized, spec, record)   # evaluate.py loads it

Modules:
  layers      `QuantizedAdder2D` (quantise the input, `adder2d_int`, folded per-channel affine),
              `FoldedBatchNorm`, the shared integer `Grid`.
  calibrate   finding the adder layers and the BatchNorms they feed, collecting their inputs,
              and the per-layer grid search (exact clipping of the filters to the input range).
  model       `quantize_model`, the checkpoint record, `abstract_quantized_model` (what
              `addernet_jax.loading` restores a quantised checkpoint into), `save_quantized`.
  data        `calibration_images`: a seeded random subset of a training split, evaluation
              transforms.
"""

from addernet_jax.quantize.calibrate import AdderSite, LayerFit, find_adder_sites, fit_layer
from addernet_jax.quantize.data import calibration_images
from addernet_jax.quantize.layers import (
    BIT_WIDTHS,
    FoldedBatchNorm,
    Grid,
    QuantizationParam,
    QuantizedAdder2D,
    QuantizedKernel,
    grid_for_range,
)
from addernet_jax.quantize.model import (
    abstract_quantized_model,
    apply_record,
    check_record,
    quantize_model,
    save_quantized,
)

__all__ = [
    "BIT_WIDTHS",
    "AdderSite",
    "FoldedBatchNorm",
    "Grid",
    "LayerFit",
    "QuantizationParam",
    "QuantizedAdder2D",
    "QuantizedKernel",
    "abstract_quantized_model",
    "apply_record",
    "calibration_images",
    "check_record",
    "find_adder_sites",
    "fit_layer",
    "grid_for_range",
    "quantize_model",
    "save_quantized",
]
