"""VGG-small for CIFAR (ADDERNET.md 5.3): the LQ-Nets network the AdderNet maintainer points to.

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
"""

from __future__ import annotations

import jax
from flax import nnx

from addernet_jax.models.common import (
    batch_norm,
    check_variant,
    flatten_channels_first,
    make_kept_conv,
    make_layer,
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
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = nnx.relu(getattr(self, f"bn{index}")(x))
        return self.fc(flatten_channels_first(x))
