"""ShiftAddNet ResNet-20 on CIFAR-100, ShiftAddNet's recipe (SHIFTADDNET.md 4.1; the official
code normalises CIFAR-100 with the CIFAR-10 constants, as this project's CIFAR preset does).

    python train.py --config configs/shiftaddnet_cifar100_resnet20.py --workdir runs/sa_c100_r20
    python train.py --config configs/shiftaddnet_cifar100_resnet20.py:adder ...  # :deepshift, :cnn

Expected: unknown (the paper's CIFAR-100 table was not retrieved, SHIFTADDNET.md U1).
"""

from configs import shiftaddnet_cifar10_resnet20 as shiftaddnet


def get_config(variant: str = "shiftadd"):
    return shiftaddnet.experiment("cifar100", "resnet20", variant)
