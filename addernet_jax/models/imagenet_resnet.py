"""ImageNet ResNet-18/34/50 laid out as the official AdderNet `resnet50.py` (ADDERNET.md 5.4-5.5).

Attribute names mirror the official PyTorch modules, so a state_dict key maps by a table:

    conv1, bn1                          stem: conv7x7/2 3->64 (multiplicative), BN; then
                                        maxpool 3x3/2 pad 1 (no parameters)
    layer{1..4}[i].conv1 / .bn1         block convs: adders (1x1 / 3x3)
    layer{1..4}[i].conv2 / .bn2
    layer{1..4}[i].conv3 / .bn3         Bottleneck only
    layer{1..4}[i].downsample[0/1]      projection shortcut: adder1x1 (stride s), BN
    fc, bn2                             head: conv1x1 with bias (multiplicative), BN over logits

ResNet-50 is exact; ResNet-18/34 are inferred: torchvision topology with the resnet50.py head,
including the logit BN (ADDERNET.md 5.4, U11-U12). Bottleneck is "v1.5" (stride on the 3x3).
In the 'cnn' variant every adder is an `nnx.Conv` with the same shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.models.cifar_resnet import BasicBlock, make_stage
from addernet_jax.models.common import (
    batch_norm,
    check_variant,
    kaiming_normal_fan_out,
    make_kept_conv,
    make_layer,
    torch_default_bias_init,
)


class Bottleneck(nnx.Module):
    """adder1x1 -> BN -> ReLU -> adder3x3(stride s) -> BN -> ReLU -> adder1x1(x4) -> BN, plus the
    shortcut (identity, or adder1x1(stride s) -> BN), then ReLU (resnet50.py).

    Args: as `BasicBlock`; the block outputs `planes * 4` channels.
    """

    expansion = 4

    def __init__(self, in_planes, planes, stride=1, *, variant, impl, kernel_init, rngs):
        def layer(cin, cout, k, s, pad):
            return make_layer(
                variant, cin, cout, k, s, padding=pad, impl=impl, kernel_init=kernel_init, rngs=rngs
            )

        out_planes = planes * self.expansion
        self.conv1 = layer(in_planes, planes, 1, 1, 0)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = layer(planes, planes, 3, stride, 1)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.conv3 = layer(planes, out_planes, 1, 1, 0)
        self.bn3 = batch_norm(out_planes, rngs=rngs)
        if stride != 1 or in_planes != out_planes:
            self.downsample = nnx.List(
                [layer(in_planes, out_planes, 1, stride, 0), batch_norm(out_planes, rngs=rngs)]
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return nnx.relu(out + shortcut)


# depth -> (block, blocks per stage)
ARCHITECTURES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ImageNetResNet(nnx.Module):
    """ResNet-18/34/50 with adder layers (official resnet50.py layout), NHWC.

    Args:
      depth: 18, 34 or 50.
      num_classes: number of logits.
      variant: 'adder' (AdderNet) or 'cnn' (same network with convolutions).
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

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
        if depth not in ARCHITECTURES:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(ARCHITECTURES)}")
        check_variant(variant)
        block, num_blocks = ARCHITECTURES[depth]
        # resnet50.py applies kaiming_normal(fan_out, relu) to every nn.Conv2d (stem and fc);
        # the CNN variant's block convs get the same (torchvision does likewise).
        init = kaiming_normal_fan_out
        self.conv1 = make_kept_conv(variant, 3, 64, 7, 2, padding=3, kernel_init=init, rngs=rngs)
        self.bn1 = batch_norm(64, rngs=rngs)
        kw = dict(variant=variant, impl=impl, kernel_init=init, rngs=rngs)
        in_planes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stride = 1 if index == 0 else 2
            stage = make_stage(block, in_planes, planes, blocks, stride, **kw)
            setattr(self, f"layer{index + 1}", stage)
            in_planes = planes * block.expansion
        # The fc bias keeps PyTorch's default init (the init loop only touches weights).
        self.fc = make_kept_conv(
            variant,
            in_planes,
            num_classes,
            1,
            padding=0,
            use_bias=True,
            kernel_init=init,
            bias_init=torch_default_bias_init(in_planes),
            rngs=rngs,
        )
        self.bn2 = batch_norm(num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) images (224x224 on ImageNet) -> (N, num_classes) logits."""
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        x = jnp.mean(x, axis=(1, 2), keepdims=True)  # AdaptiveAvgPool2d(1)
        x = self.bn2(self.fc(x))
        return x.reshape(x.shape[0], -1)
