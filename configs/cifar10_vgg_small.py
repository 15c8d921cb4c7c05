"""VGG-small AdderNet on CIFAR-10 (definition from LQ-Nets, ADDERNET.md 5.3), official recipe.

    python train.py --config configs/cifar10_vgg_small.py --workdir runs/cifar10_vgg_small
    python train.py --config configs/cifar10_vgg_small.py:cnn --workdir runs/cifar10_vgg_small_cnn

Expected after the full 399 epochs: 93.72% adder, 93.80% cnn (paper Table 1).
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar10", "vgg_small", variant)
