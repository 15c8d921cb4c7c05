"""ResNet-32 AdderNet on CIFAR-100, the CIFAR-10 recipe.

    python train.py --config configs/cifar100_resnet32.py --workdir runs/cifar100_resnet32
    python train.py --config configs/cifar100_resnet32.py:cnn --workdir runs/cifar100_resnet32_cnn

Expected after the full 399 epochs: 69.02% adder, 69.74% cnn (paper Table 1).
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar100", "resnet32", variant)
