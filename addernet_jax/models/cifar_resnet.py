"""CIFAR ResNet-20/32/44/56 as the official AdderNet `resnet20.py` (ADDERNET.md 5.1-5.2), NHWC.

Attribute names mirror the official PyTorch modules, so a state_dict key maps by a table:

    conv1, bn1                        stem: conv3x3 3->16 (multiplicative), BN
    layer{1,2,3}[i].conv1 / .bn1      BasicBlock: adder3x3 (stride s), BN
    layer{1,2,3}[i].conv2 / .bn2      adder3x3, BN
    layer{1,2,3}[i].downsample[0/1]   projection shortcut: adder1x1 (stride s), BN
    fc, bn2                           head: conv1x1 64->num_classes, no bias (multiplicative),
                                      BN over the logits

In the 'cnn' variant every adder is an `nnx.Conv` with the same shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.models.common import (
    batch_norm,
    check_variant,
    make_kept_conv,
    make_layer,
    torch_default_kernel_init,
)

STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nnx.Module):
    """adder3x3 -> BN -> ReLU -> adder3x3 -> BN, plus the shortcut, then ReLU (resnet20.py).

    The shortcut is the identity, or adder1x1(stride s) -> BN ("option B" with an adder) when
    the stride or the width changes. Shared with the ImageNet ResNet-18/34.

    Args:
      in_planes: input channels.
      planes: output channels.
      stride: stride of the first 3x3 and of the projection.
      variant: 'adder' or 'cnn'.
      impl: adder2d implementation.
      kernel_init: conv kernel init of the 'cnn' variant.
      rngs: NNX random streams.
    """

    expansion = 1

    def __init__(self, in_planes, planes, stride=1, *, variant, impl, kernel_init, rngs):
        def layer(cin, cout, k, s, pad):
            return make_layer(
                variant, cin, cout, k, s, padding=pad, impl=impl, kernel_init=kernel_init, rngs=rngs
            )

        self.conv1 = layer(in_planes, planes, 3, stride, 1)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = layer(planes, planes, 3, 1, 1)
        self.bn2 = batch_norm(planes, rngs=rngs)
        if stride != 1 or in_planes != planes * self.expansion:
            # A list, not nnx.Sequential, so that the paths are downsample.0 / downsample.1 as
            # in the official nn.Sequential(adder, BN).
            out_planes = planes * self.expansion
            self.downsample = nnx.List(
                [layer(in_planes, out_planes, 1, stride, 0), batch_norm(out_planes, rngs=rngs)]
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nnx.relu(out + shortcut)


def make_stage(block, in_planes, planes, num_blocks, stride, **block_kwargs) -> nnx.List:
    """The official `_make_layer`: `num_blocks` blocks, the first one with `stride`."""
    blocks = [block(in_planes, planes, stride, **block_kwargs)]
    blocks += [
        block(planes * block.expansion, planes, 1, **block_kwargs) for _ in range(num_blocks - 1)
    ]
    return nnx.List(blocks)


class CifarResNet(nnx.Module):
    """ResNet-(6n+2) for 32x32 inputs with adder layers (official resnet20.py), NHWC.

    Args:
      depth: 20, 32, 44, 56 (n = 3, 5, 7, 9 BasicBlocks per stage), or any 6n+2.
      num_classes: number of logits.
      variant: 'adder' (AdderNet) or 'cnn' (same network with convolutions).
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

    # Layer groups for the op counter: top-level attribute -> group.
    OP_GROUPS = {"conv1": "stem", "bn1": "stem", "fc": "head", "bn2": "head"}

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int,
        variant: str = "adder",
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56), got {depth}")
        check_variant(variant)
        n = (depth - 2) // 6
        # Stem and fc keep PyTorch's default conv init (resnet20.py has no init loop).
        init = torch_default_kernel_init
        self.conv1 = make_kept_conv(variant, 3, 16, 3, padding=1, kernel_init=init, rngs=rngs)
        self.bn1 = batch_norm(16, rngs=rngs)
        kw = dict(variant=variant, impl=impl, kernel_init=init, rngs=rngs)
        self.layer1 = make_stage(BasicBlock, 16, STAGE_WIDTHS[0], n, 1, **kw)
        self.layer2 = make_stage(BasicBlock, 16, STAGE_WIDTHS[1], n, 2, **kw)
        self.layer3 = make_stage(BasicBlock, 32, STAGE_WIDTHS[2], n, 2, **kw)
        self.fc = make_kept_conv(variant, 64, num_classes, 1, padding=0, kernel_init=init,
                                 rngs=rngs)
        self.bn2 = batch_norm(num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) images -> (N, num_classes) logits."""
        x = nnx.relu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                x = block(x)
        # AvgPool2d(8, stride 1) on the 8x8 map of a 32x32 input is a global average.
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        x = self.bn2(self.fc(x))
        return x.reshape(x.shape[0], -1)
