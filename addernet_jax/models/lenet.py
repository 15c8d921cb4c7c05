"""LeNet-5-BN for MNIST (ADDERNET.md 5.6; exact layer list unknown, U7 default), NHWC.

    conv1  conv5x5 1->6, pad 2     bn1, ReLU, maxpool 2x2   multiplicative in both variants
    conv2  5x5 6->16, pad 0        bn2, ReLU, maxpool 2x2   adder
    fc1    400->120                bn3, ReLU                adder
    fc2    120->84                 bn4, ReLU                adder
    fc3    84->num_classes         (with bias)              multiplicative (nnx.Linear)

Padding: classic LeNet-5 takes 32x32 inputs with an unpadded first conv; padding that conv by 2
gives the same 28x28x6 map from 28x28 MNIST digits, so 28 -> 28 -> pool 14 -> conv2 10 -> pool 5,
and the flatten has 16*5*5 = 400 features (in PyTorch's C,H,W order).
An FC layer that is an adder is an adder 1x1 "convolution" on the (N, 1, 1, features) map:
`fc1`/`fc2` are `Adder2D(400, 120, 1)` / `Adder2D(120, 84, 1)` (kernel (1, 1, in, out)), and in the
'cnn' variant `nnx.Conv` of the same shape. Layers followed by BN have no bias (as every official
AdderNet model); `fc3` has PyTorch's default bias. Pooling is max pooling (a guess, U7).
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
    max_pool_2x2,
    torch_default_bias_init,
    torch_default_kernel_init,
)


class LeNet5(nnx.Module):
    """LeNet-5 with BN after every layer but the classifier, for 28x28x1 inputs.

    Args:
      num_classes: number of logits.
      variant: 'adder' (AdderNet) or 'cnn' (same network with convolutions).
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

    OP_GROUPS = {"bn1": "conv1", "bn2": "conv2", "bn3": "fc1", "bn4": "fc2"}

    def __init__(self, *, num_classes: int, variant: str = "adder", impl: str = "auto", rngs):
        check_variant(variant)
        init = torch_default_kernel_init

        def layer(cin, cout, k, pad):
            return make_layer(
                variant, cin, cout, k, 1, padding=pad, impl=impl, kernel_init=init, rngs=rngs
            )

        self.conv1 = make_kept_conv(variant, 1, 6, 5, padding=2, kernel_init=init, rngs=rngs)
        self.bn1 = batch_norm(6, rngs=rngs)
        self.conv2 = layer(6, 16, 5, 0)
        self.bn2 = batch_norm(16, rngs=rngs)
        self.fc1 = layer(400, 120, 1, 0)
        self.bn3 = batch_norm(120, rngs=rngs)
        self.fc2 = layer(120, 84, 1, 0)
        self.bn4 = batch_norm(84, rngs=rngs)
        self.fc3 = nnx.Linear(
            84, num_classes, kernel_init=init, bias_init=torch_default_bias_init(84), rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 28, 28, 1) images -> (N, num_classes) logits."""
        x = max_pool_2x2(nnx.relu(self.bn1(self.conv1(x))))
        x = max_pool_2x2(nnx.relu(self.bn2(self.conv2(x))))
        x = flatten_channels_first(x)[:, None, None, :]  # (N, 1, 1, 400)
        x = nnx.relu(self.bn3(self.fc1(x)))
        x = nnx.relu(self.bn4(self.fc2(x)))
        return self.fc3(x.reshape(x.shape[0], -1))
