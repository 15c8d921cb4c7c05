"""LeNet++ for MNIST with a 2-D feature layer: the network of the paper's Figure 1
(ADDERNET.md 10; the layer list of the center-loss LeNet++ the maintainer points to), NHWC.

    conv1_1  5x5 1->32, pad 2      bn1_1, PReLU           multiplicative in both variants
    conv1_2  5x5 32->32, pad 2     bn1_2, PReLU, maxpool  adder        28 -> 14
    conv2_1  5x5 32->64, pad 2     bn2_1, PReLU           adder
    conv2_2  5x5 64->64, pad 2     bn2_2, PReLU, maxpool  adder        14 -> 7
    conv3_1  5x5 64->128, pad 2    bn3_1, PReLU           adder
    conv3_2  5x5 128->128, pad 2   bn3_2, PReLU, maxpool  adder         7 -> 3
    fc1      128*3*3 -> 2          prelu_fc1              multiplicative: the plotted feature
    fc2      2 -> num_classes                             multiplicative: the classifier

Choices where the paper is silent (U7), following its default: the first conv and both FCs
stay multiplicative, every adder is followed by BatchNorm (ADDERNET.md 3). The first conv gets a
BatchNorm too, so that every conv block is conv-BN-PReLU and the two variants differ only in the
layer kind; the convs are bias-free because a BN follows each. The FCs have no BatchNorm: the
2-D feature is plotted as the network computes it (a BN there would rescale the two axes
independently), and the classifier reads it directly. PReLU has one learned slope per layer,
initialised to 0.25 (PyTorch's `nn.PReLU()`), max-pools are 2x2 with stride 2 (floor: 7 -> 3),
and the flatten before fc1 is in PyTorch's C,H,W order. Names follow the center-loss code
(`conv1_1`, `prelu1_1`, ..., `fc1`, `prelu_fc1`, `fc2`).
"""

from __future__ import annotations

import jax
from flax import nnx

from addernet_jax.layers import Counts, OpCounter, param_count, register_op_counter
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

FEATURE_DIM = 2
CHANNELS = ((1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128))
CONV_NAMES = ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2")


def prelu() -> nnx.PReLU:
    """PyTorch's `nn.PReLU()`: one slope shared by all channels, initialised to 0.25."""
    return nnx.PReLU(negative_slope_init=0.25)


def _count_prelu(module: nnx.PReLU, out_shape) -> tuple[int, Counts]:
    """Activations are not counted (`addernet_jax.opcount`: ReLU and pooling are not), so a
    PReLU contributes its slope parameter only, keeping the paper totals to conv/adder/FC."""
    del out_shape
    return 0, Counts(params=param_count(module))


# PReLU holds a parameter, so the op counter must know it (opcount checks that the counted
# layers hold every parameter); LeNet++ is the only model that uses it.
register_op_counter(nnx.PReLU, OpCounter("prelu", _count_prelu))


class LeNetPP(nnx.Module):
    """LeNet++ with a 2-D feature layer (module docstring), for 28x28x1 inputs.

    Args:
      num_classes: number of logits.
      variant: a layer kind: 'adder' (AdderNet) or 'cnn' (the same network with convolutions).
      impl: adder2d implementation for the adder layers.
      rngs: NNX random streams.
    """

    OP_GROUPS = {
        **{f"{kind}{name}": f"conv{name[0]}" for name in CONV_NAMES
           for kind in ("conv", "bn", "prelu")},
        "fc1": "feature", "prelu_fc1": "feature", "fc2": "classifier",
    }

    def __init__(self, *, num_classes: int, variant: str = "adder", impl: str = "auto", rngs):
        check_variant(variant)
        init = torch_default_kernel_init
        for index, (name, (cin, cout)) in enumerate(zip(CONV_NAMES, CHANNELS)):
            if index == 0:  # the first conv stays multiplicative (ADDERNET.md 4)
                conv = make_kept_conv(variant, cin, cout, 5, padding=2, kernel_init=init,
                                      rngs=rngs)
            else:
                conv = make_layer(variant, cin, cout, 5, 1, padding=2, impl=impl,
                                  kernel_init=init, rngs=rngs)
            setattr(self, f"conv{name}", conv)
            setattr(self, f"bn{name}", batch_norm(cout, rngs=rngs))
            setattr(self, f"prelu{name}", prelu())
        flat = CHANNELS[-1][1] * 3 * 3
        self.fc1 = nnx.Linear(flat, FEATURE_DIM, kernel_init=init,
                              bias_init=torch_default_bias_init(flat), rngs=rngs)
        self.prelu_fc1 = prelu()
        self.fc2 = nnx.Linear(FEATURE_DIM, num_classes, kernel_init=init,
                              bias_init=torch_default_bias_init(FEATURE_DIM), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """(N, 28, 28, 1) images -> (N, 2) features: the output of fc1 and its PReLU, the
        quantity the paper's Figure 1 plots."""
        for index, name in enumerate(CONV_NAMES):
            conv, bn, act = (getattr(self, f"{kind}{name}") for kind in ("conv", "bn", "prelu"))
            x = act(bn(conv(x)))
            if index % 2 == 1:  # after each pair
                x = max_pool_2x2(x)
        return self.prelu_fc1(self.fc1(flatten_channels_first(x)))

    def classify(self, features: jax.Array) -> jax.Array:
        """(N, 2) features -> (N, num_classes) logits (fc2)."""
        return self.fc2(features)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 28, 28, 1) images -> (N, num_classes) logits."""
        return self.classify(self.features(x))
