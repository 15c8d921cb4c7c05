"""VGG-small AdderNet on CIFAR-100, the CIFAR-10 recipe.

    python train.py --config configs/cifar100_vgg_small.py --workdir runs/cifar100_vgg_small
    python train.py --config configs/cifar100_vgg_small.py:cnn --workdir runs/cifar100_vgg_small_cnn

Expected after the full 399 epochs: 72.64% adder, 72.73% cnn (paper Table 1).
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar100", "vgg_small", variant)
