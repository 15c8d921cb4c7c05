"""ResNet-32 AdderNet on CIFAR-10, the official recipe (ResNet-32 is inferred, ADDERNET.md 5.2).

    python train.py --config configs/cifar10_resnet32.py --workdir runs/cifar10_resnet32
    python train.py --config configs/cifar10_resnet32.py:cnn --workdir runs/cifar10_resnet32_cnn

Expected after the full 399 epochs: 93.01% adder, 93.29% cnn (paper Table 1).
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar10", "resnet32", variant)
