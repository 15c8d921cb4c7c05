"""ResNet-20 AdderNet on CIFAR-100, the CIFAR-10 recipe (not separately stated, ADDERNET.md 6.2).

    python train.py --config configs/cifar100_resnet20.py --workdir runs/cifar100_resnet20
    python train.py --config configs/cifar100_resnet20.py:cnn --workdir runs/cifar100_resnet20_cnn

Expected after the full 399 epochs: 67.60% adder, 68.14% cnn (paper Table 1).
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar100", "resnet20", variant)
