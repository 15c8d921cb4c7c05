"""Super-resolution models of AdderSR (ADDERSR.md 2-3): VDSR and EDSR, NHWC, RGB in [0, 255].

Every model maps LR images (N, h, w, 3) with values in [0, 255] to SR images
(N, h * scale, w * scale, 3) in the same range (unclipped; metrics round and clip). Layers:

- The layers AdderSR replaces (VDSR layers 2..19; every 3x3 conv of the EDSR residual blocks and
  the body-end conv; ADDERSR.md 3.3) are *units* built by `make_unit`. For adder-like layer kinds
  ('adder', 'shiftadd', ...) a unit is the AdderSR unit (ADDERSR.md 2.1, author-confirmed order):
      layer 3x3 -> BatchNorm -> + input (self-shortcut) -> ReLU -> power activation
  used uniformly, also where the CNN has no ReLU (the second conv of an EDSR block, the body-end
  conv; ADDERSR.md U4, U9 defaults). For the multiplicative kinds ('cnn', 'deepshift') a unit is
  the original network's convolution (with its ReLU where the original has one): the 'cnn'
  variant is plain VDSR / EDSR, the baseline of the paper's table.
- First, last and upsampler convolutions stay multiplicative (`make_kept_conv`; ADDERSR.md 3.3).

VDSR (Kim et al. 2016; ADDERSR.md U6 default): the LR image is bicubic-upsampled inside the
model (MATLAB `imresize` in float, `data.imresize.resize_matrix`), the network runs on the Y
channel (or on RGB with colour='rgb') and adds its output to it (global residual); Cb and Cr
come from the bicubic image. Pixels stay in [0, 255] (EDSR's rgb_range, the code base AdderSR
builds on) rather than VDSR's [0, 1]: the CNN computes the same function of its weights either
way (no biases, ReLU is homogeneous), but BatchNorm fixes the scale of every AdderSR unit's
branch at about 1, so the range decides how the branches compare with the self-shortcut. On Y in
[0, 255] the first conv's features (mean ~10) carry the signal through units that start near the
identity; in [0, 1] (features ~0.3) the 18 unit-variance branches swamp it, the last features
end near 5 in units of 255 grey levels, and each Adam step on the output conv (every weight
moving by about the learning rate) moves the output by about lr * 576 * 5 * 255 grey levels.

EDSR (Lim et al. 2017): DIV2K mean shift, head conv, residual blocks (residual scaling
`res_scale`), body-end conv and global body skip, sub-pixel upsampler (conv + pixel shuffle per
x2 step, or one x3 step), tail conv; the convolutions outside the units keep EDSR's biases.
Units are bias-free (`make_layer`) in both variants (BatchNorm's beta plays the bias in the
AdderSR unit), so our 'cnn' EDSR has the biases of its 2 * blocks + 1 body convs fewer
parameters than EDSR-PyTorch's.

`receptive_radius` (LR pixels) bounds how far an output pixel sees: tiled evaluation with at
least that much overlap gives the whole-image output (tasks/super_resolution.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from addernet_jax.data.imresize import resize_matrix
from addernet_jax.layers.power import ALPHA_CLIP, PowerActivation
from addernet_jax.metrics.image_quality import rgb_to_ycbcr, ycbcr_to_rgb
from addernet_jax.models.common import (
    batch_norm,
    check_variant,
    kaiming_normal_fan_out,
    make_kept_conv,
    make_layer,
    torch_default_bias_init,
    torch_default_kernel_init,
)

# Kinds whose layers are dot products: their SR models are the original networks. Every other
# kind (adder-like) gets the AdderSR unit.
CONV_LIKE_KINDS = ("cnn", "deepshift")
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR's MeanShift, times its rgb_range 255
COLOURS = ("y", "rgb")
BICUBIC_RADIUS = 3  # LR pixels an upscaled pixel depends on beyond its own (4-tap kernel, +1)


def check_sr_arguments(scale: int, num_classes: int, per_channel_alpha) -> None:
    """ValueError naming a bad constructor argument."""
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 2:
        raise ValueError(f"SR scale must be an integer >= 2, got {scale!r}")
    if num_classes:  # the generic registry tools pass num_classes=0 to every model
        raise ValueError(f"SR models have no classes, got num_classes={num_classes}")
    if not isinstance(per_channel_alpha, bool):
        raise ValueError(f"per_channel_alpha must be a bool, got {per_channel_alpha!r}")


class AdderSRUnit(nnx.Module):
    """layer 3x3 -> BN -> + input -> ReLU -> P_alpha (ADDERSR.md 2.1), C -> C channels, NHWC.

    Args:
      features: C (the self-shortcut needs C_in = C_out and stride 1, ADDERSR.md 2.3).
      variant: the layer kind of the 3x3 layer ('adder': `Adder2D`).
      impl: adder2d implementation.
      per_channel_alpha: one power exponent per channel instead of one per unit (U2).
      alpha_clip: the exponent's projection range, or None.
      kernel_init: the layer's init where the kind uses one.
      rngs: NNX random streams.
    """

    def __init__(self, features: int, *, variant: str, impl: str, per_channel_alpha: bool,
                 alpha_clip, kernel_init, rngs: nnx.Rngs):
        self.layer = make_layer(variant, features, features, 3, padding=1, impl=impl,
                                kernel_init=kernel_init, rngs=rngs)
        self.bn = batch_norm(features, rngs=rngs)
        self.power = PowerActivation(features, per_channel=per_channel_alpha, clip=alpha_clip)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.power(nnx.relu(self.bn(self.layer(x)) + x))


class ConvUnit(nnx.Module):
    """The original network's bias-free 3x3 convolution (of the variant's kind), with a ReLU
    where the original has one."""

    def __init__(self, features: int, *, variant: str, impl: str, relu: bool, kernel_init,
                 rngs: nnx.Rngs):
        self.layer = make_layer(variant, features, features, 3, padding=1, impl=impl,
                                kernel_init=kernel_init, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.layer(x)
        return nnx.relu(y) if self.relu else y


def make_unit(variant: str, features: int, *, relu: bool, impl: str, per_channel_alpha: bool,
              alpha_clip, kernel_init, rngs: nnx.Rngs) -> nnx.Module:
    """An AdderSR unit for adder-like kinds, the original conv (+ ReLU if `relu`) for
    `CONV_LIKE_KINDS` (module docstring)."""
    if variant in CONV_LIKE_KINDS:
        return ConvUnit(features, variant=variant, impl=impl, relu=relu, kernel_init=kernel_init,
                        rngs=rngs)
    return AdderSRUnit(features, variant=variant, impl=impl, per_channel_alpha=per_channel_alpha,
                       alpha_clip=alpha_clip, kernel_init=kernel_init, rngs=rngs)


def bicubic_upsample(images: jax.Array, scale: int) -> jax.Array:
    """MATLAB bicubic upscaling of NHWC float images by `scale` (no rounding between passes)."""
    _, height, width, _ = images.shape
    rows = jnp.asarray(resize_matrix(height, height * scale), images.dtype)
    cols = jnp.asarray(resize_matrix(width, width * scale), images.dtype)
    precision = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,nhwc->nowc", rows, images, precision=precision)
    return jnp.einsum("pw,nowc->nopc", cols, images, precision=precision)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """torch.nn.PixelShuffle in NHWC: (N, H, W, C * r * r) -> (N, H * r, W * r, C), input
    channel c * r * r + i * r + j going to output channel c at offset (i, j)."""
    n, h, w, channels = x.shape
    c = channels // (factor * factor)
    x = x.reshape(n, h, w, c, factor, factor).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * factor, w * factor, c)


def _check_images(x: jax.Array, model: str) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{model} takes RGB LR images (N, h, w, 3), got shape {x.shape}")


class VDSR(nnx.Module):
    """VDSR with AdderSR units on layers 2..depth-1 (ADDERSR.md 3.3, U6): LR RGB in [0, 255] ->
    SR RGB in [0, 255] (module docstring).

    Initialisation: VDSR's He normal (fan out) on the convolutions, except the last one, which
    starts at zero in both variants, so that the model starts as the bicubic image (the
    residual is learnt from there; with He init it starts at tens of grey levels of noise).

    Args:
      scale: the SR factor (the parameters do not depend on it: x3/x4 start from x2 weights).
      colour: 'y' (the network sees Y, VDSR's setting) or 'rgb'.
      depth: conv layers (20).
      features: channels of the hidden layers (64).
      per_channel_alpha, alpha_clip: the power activations' options (AdderSRUnit).
      variant: a layer kind; impl: adder2d implementation; rngs: NNX random streams.
      num_classes: must be 0 (accepted so that registry-wide tools can build every model).
    """

    OP_GROUPS = {"input": "head", "output": "tail"}

    def __init__(self, *, scale: int = 2, colour: str = "y", depth: int = 20,
                 features: int = 64, per_channel_alpha: bool = False, alpha_clip=ALPHA_CLIP,
                 variant: str = "adder", impl: str = "auto", num_classes: int = 0,
                 rngs: nnx.Rngs):
        check_variant(variant)
        check_sr_arguments(scale, num_classes, per_channel_alpha)
        if colour not in COLOURS:
            raise ValueError(f"VDSR colour must be one of {COLOURS}, got {colour!r}")
        if depth < 3:
            raise ValueError(f"VDSR depth must be >= 3, got {depth}")
        self.scale, self.colour, self.depth = scale, colour, depth
        channels = 1 if colour == "y" else 3
        init = kaiming_normal_fan_out  # VDSR: N(0, 2 / (k * k * C_out))
        kept = dict(padding=1, kernel_init=init, rngs=rngs)
        self.input = make_kept_conv(variant, channels, features, 3, **kept)
        self.body = nnx.List([
            make_unit(variant, features, relu=True, impl=impl, per_channel_alpha=per_channel_alpha,
                      alpha_clip=alpha_clip, kernel_init=init, rngs=rngs)
            for _ in range(depth - 2)])
        # Zero: the model starts as the bicubic image (see the class docstring).
        self.output = make_kept_conv(variant, features, channels, 3, padding=1, rngs=rngs,
                                     kernel_init=jax.nn.initializers.zeros)

    @property
    def receptive_radius(self) -> int:
        """LR pixels beyond its own that an output pixel depends on (an upper bound)."""
        return math.ceil(self.depth / self.scale) + BICUBIC_RADIUS

    def __call__(self, lr: jax.Array) -> jax.Array:
        """(N, h, w, 3) LR in [0, 255] -> (N, h * scale, w * scale, 3)."""
        _check_images(lr, "VDSR")
        bicubic = bicubic_upsample(lr.astype(jnp.float32), self.scale)
        ycbcr = rgb_to_ycbcr(bicubic) if self.colour == "y" else None
        x = ycbcr[..., :1] if self.colour == "y" else bicubic
        h = nnx.relu(self.input(x))
        for unit in self.body:
            h = unit(h)
        out = x + self.output(h)
        if self.colour == "y":
            out = ycbcr_to_rgb(jnp.concatenate([out, ycbcr[..., 1:]], axis=-1))
        return out


class EDSRBlock(nnx.Module):
    """EDSR's residual block: x + res_scale * unit2(unit1(x)) (conv -> ReLU -> conv in the CNN;
    two AdderSR units in the adder variant)."""

    def __init__(self, features: int, res_scale: float, **unit_kwargs):
        self.unit1 = make_unit(features=features, relu=True, **unit_kwargs)
        self.unit2 = make_unit(features=features, relu=False, **unit_kwargs)
        self.res_scale = res_scale

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.res_scale * self.unit2(self.unit1(x))


def upsampler_factors(scale: int) -> list[int]:
    """EDSR's Upsampler steps: 2 per power of two, or a single 3; ValueError otherwise."""
    if scale == 3:
        return [3]
    if scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"EDSR's upsampler needs a scale of 3 or a power of 2, got {scale}")


class EDSR(nnx.Module):
    """EDSR with AdderSR units in its body (ADDERSR.md 3.3): LR RGB in [0, 255] -> SR RGB.

    Args:
      scale: 2, 3, 4 or 8 (EDSR's upsampler).
      num_blocks: residual blocks (16 baseline, 32 full).
      features: channels (64 baseline, 256 full).
      res_scale: residual scaling (0.1 in both presets, see `edsr_baseline`).
      per_channel_alpha, alpha_clip: the power activations' options (AdderSRUnit).
      variant, impl, rngs, num_classes: as `VDSR`.
    """

    OP_GROUPS = {"head": "head", "body_end": "body", "upsampler": "upsampler", "tail": "tail"}

    def __init__(self, *, scale: int = 2, num_blocks: int = 16, features: int = 64,
                 res_scale: float = 1.0, per_channel_alpha: bool = False, alpha_clip=ALPHA_CLIP,
                 variant: str = "adder", impl: str = "auto", num_classes: int = 0,
                 rngs: nnx.Rngs):
        check_variant(variant)
        check_sr_arguments(scale, num_classes, per_channel_alpha)
        factors = upsampler_factors(scale)
        self.scale, self.num_blocks, self.factors = scale, num_blocks, tuple(factors)
        init = torch_default_kernel_init  # EDSR's convs keep PyTorch's defaults

        def kept(cin: int, cout: int):
            return make_kept_conv(variant, cin, cout, 3, padding=1, kernel_init=init, rngs=rngs,
                                  use_bias=True, bias_init=torch_default_bias_init(9 * cin))

        units = dict(variant=variant, impl=impl, per_channel_alpha=per_channel_alpha,
                     alpha_clip=alpha_clip, kernel_init=init, rngs=rngs)
        self.head = kept(3, features)
        self.body = nnx.List([EDSRBlock(features, res_scale, **units) for _ in range(num_blocks)])
        self.body_end = make_unit(features=features, relu=False, **units)
        self.upsampler = nnx.List([kept(features, features * r * r) for r in factors])
        self.tail = kept(features, 3)

    @property
    def receptive_radius(self) -> int:
        """LR pixels beyond its own that an output pixel depends on (an upper bound): head,
        two convs per block, body end, one per upsampler step, tail."""
        return 2 * self.num_blocks + 2 + len(self.factors) + 1

    def __call__(self, lr: jax.Array) -> jax.Array:
        """(N, h, w, 3) LR in [0, 255] -> (N, h * scale, w * scale, 3)."""
        _check_images(lr, "EDSR")
        mean = 255.0 * jnp.asarray(DIV2K_RGB_MEAN, jnp.float32)
        x = self.head(lr.astype(jnp.float32) - mean)
        res = x
        for block in self.body:
            res = block(res)
        res = self.body_end(res) + x
        for conv, factor in zip(self.upsampler, self.factors):
            res = pixel_shuffle(conv(res), factor)
        return self.tail(res) + mean


# Presets by name (models/__init__.py registers them with task='super_resolution').
def edsr_baseline(**kwargs) -> EDSR:
    """EDSR baseline: 16 blocks x 64 channels (EDSR paper), here with residual scaling 0.1 as
    the full model (EDSR's baseline has none): an AdderSR unit already carries its input
    (self-shortcut), so a block computes about x + 1.0 * x, and 16 blocks would grow the
    features 2^16-fold at initialisation; with 0.1 they grow 1.1-fold per block."""
    return EDSR(num_blocks=16, features=64, res_scale=0.1, **kwargs)


def edsr_full(**kwargs) -> EDSR:
    """Full EDSR: 32 blocks x 256 channels, residual scaling 0.1 (EDSR paper; ADDERSR.md U3)."""
    return EDSR(num_blocks=32, features=256, res_scale=0.1, **kwargs)


__all__ = ["COLOURS", "CONV_LIKE_KINDS", "EDSR", "VDSR", "AdderSRUnit", "ConvUnit", "EDSRBlock",
           "bicubic_upsample", "edsr_baseline", "edsr_full", "make_unit", "pixel_shuffle"]
