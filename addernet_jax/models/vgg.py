"""CIFAR VGGs: AdderNet's VGG-small and ShiftAddNet's VGG19-small.

`VGGSmall` (ADDERNET.md 5.3), the LQ-Nets network the AdderNet maintainer points to:

    conv0 3->128, bn0, ReLU                        multiplicative in both variants
    conv1 128->128, maxpool 2x2, bn1, ReLU         adder (note: pool before BN, as LQ-Nets)
    conv2 128->256, bn2, ReLU                      adder
    conv3 256->256, maxpool, bn3, ReLU             adder
    conv4 256->512, bn4, ReLU                      adder
    conv5 512->512, maxpool, bn5, ReLU             adder
    flatten (512*4*4 = 8192, in PyTorch's C,H,W order), fc 8192->num_classes (with bias)

All convs 3x3, stride 1, pad 1, no bias. Inferred adder placement and head (U6): conv0 and fc
multiplicative, no BN on the logits. No official AdderNet checkpoint exists. Names: conv0..conv5
as LQ-Nets' scopes; bn<i> is the BN after conv<i> (LQ-Nets nests it in conv0/2/4 and names the
post-pool ones bn2/bn4/bn6); fc is LQ-Nets' 'linear'. LQ-Nets also flattens in NCHW order.

`VGG19Small` (SHIFTADDNET.md 3.3), ShiftAddNet's `vgg19_small_shiftadd` and its baselines
(`vgg19_small_add`, `vgg19_small_shift`, `vgg19_small_mult` in `models/vgg_*.py`): VGG
configuration E, every 3x3 conv followed by BN and ReLU, five 2x2 max-pools (32 -> 1), then
Linear(512, 512) -> ReLU -> Linear(512, num_classes), full precision in every variant.

    features[i]     conv (3x3, pad 1, no bias) in the variant's layer, BN, ReLU, or max-pool,
                    at the indices of the official nn.Sequential (features.0 conv, .1 BN, ...)
    classifier[0/2] Linear(512, 512) / Linear(512, num_classes) (classifier[1] is the ReLU)

All sixteen convs are the variant's layer (`make_layer`), the first (3 -> 64) included: the
official code converts it in every ShiftAddNet model (shift + adder, 3.3), builds it as an adder
in its AdderNet baseline `vgg19_small_add` and as a shift layer in `vgg19_small_shift`, unlike
AdderNet's own models, which keep the first conv multiplicative (ADDERNET.md 4). The 'cnn'
convs get the official conv init normal(0, sqrt(2 / (9 C_out))); the Linears PyTorch's default.
Dropout is off (`small=True, dropout=False`). The official `vgg19_small_mult` builds
configuration B by mistake; 'cnn' here is configuration E, the same network as the others.
"""

from __future__ import annotations

import jax
from flax import nnx

from addernet_jax.models.common import (
    batch_norm,
    check_variant,
    flatten_channels_first,
    kaiming_normal_fan_out,
    make_kept_conv,
    make_layer,
    max_pool_2x2,
    torch_default_bias_init,
    torch_default_kernel_init,
)

# (C_in, C_out, max-pool after the conv) for conv1..conv5; conv0 is 3 -> 128 without pool.
ADDER_LAYERS = (
    (128, 128, True),
    (128, 256, False),
    (256, 256, True),
    (256, 512, False),
    (512, 512, True),
)


class VGGSmall(nnx.Module):
    """VGG-small for 32x32 inputs, NHWC.

    Args:
      num_classes: number of logits.
      variant: 'adder' (AdderNet) or 'cnn' (same network with convolutions).
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

    OP_GROUPS = {"conv0": "stem", "bn0": "stem", "fc": "head"}

    def __init__(self, *, num_classes: int, variant: str = "adder", impl: str = "auto", rngs):
        check_variant(variant)
        init = torch_default_kernel_init  # PyTorch default conv/linear init throughout
        self.conv0 = make_kept_conv(variant, 3, 128, 3, padding=1, kernel_init=init, rngs=rngs)
        self.bn0 = batch_norm(128, rngs=rngs)
        for index, (cin, cout, _) in enumerate(ADDER_LAYERS, start=1):
            layer = make_layer(
                variant, cin, cout, 3, 1, padding=1, impl=impl, kernel_init=init, rngs=rngs
            )
            setattr(self, f"conv{index}", layer)
            setattr(self, f"bn{index}", batch_norm(cout, rngs=rngs))
        self.fc = nnx.Linear(
            512 * 4 * 4,
            num_classes,
            kernel_init=init,
            bias_init=torch_default_bias_init(512 * 4 * 4),
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) images -> (N, num_classes) logits."""
        x = nnx.relu(self.bn0(self.conv0(x)))
        for index, (_, _, pool) in enumerate(ADDER_LAYERS, start=1):
            x = getattr(self, f"conv{index}")(x)
            if pool:
                x = max_pool_2x2(x)
            x = nnx.relu(getattr(self, f"bn{index}")(x))
        return self.fc(flatten_channels_first(x))


# Configuration E (VGG-19's conv stack): output channels of each 3x3 conv, 'M' a 2x2 max-pool.
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _vgg19_op_groups() -> dict[str, str]:
    """Op-counter groups: features.<i> -> 'block<b>' (a pool ends block b), the classifier."""
    groups, block, index = {"classifier": "classifier"}, 1, 0
    for entry in VGG19_CONFIG:
        size = 1 if entry == "M" else 3  # a pool, or conv + BN + ReLU
        groups.update({f"features.{i}": f"block{block}" for i in range(index, index + size)})
        index, block = index + size, block + (entry == "M")
    return groups


class VGG19Small(nnx.Module):
    """ShiftAddNet's VGG19-small for 32x32 inputs, NHWC (module docstring).

    Args:
      num_classes: number of logits.
      variant: a layer kind: 'shiftadd' (ShiftAddNet), 'adder', 'deepshift' or 'cnn'.
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

    OP_GROUPS = _vgg19_op_groups()

    def __init__(self, *, num_classes: int, variant: str = "adder", impl: str = "auto",
                 rngs: nnx.Rngs):
        check_variant(variant)
        features, in_features = [], 3
        for entry in VGG19_CONFIG:
            if entry == "M":
                features.append(max_pool_2x2)
                continue
            conv = make_layer(variant, in_features, entry, 3, 1, padding=1, impl=impl,
                              kernel_init=kaiming_normal_fan_out, rngs=rngs)
            features += [conv, batch_norm(entry, rngs=rngs), nnx.relu]
            in_features = entry
        self.features = nnx.List(features)
        self.classifier = nnx.List([_torch_linear(512, 512, rngs), nnx.relu,
                                    _torch_linear(512, num_classes, rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) images -> (N, num_classes) logits."""
        for layer in self.features:
            x = layer(x)
        x = x.reshape(x.shape[0], -1)  # (N, 1, 1, 512) after five pools: any order is NCHW's
        for layer in self.classifier:
            x = layer(x)
        return x


def _torch_linear(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
    """nn.Linear with PyTorch's default weight and bias inits."""
    return nnx.Linear(in_features, out_features, kernel_init=torch_default_kernel_init,
                      bias_init=torch_default_bias_init(in_features), rngs=rngs)
