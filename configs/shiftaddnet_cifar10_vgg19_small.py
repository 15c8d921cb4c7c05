"""ShiftAddNet VGG19-small on CIFAR-10 (SHIFTADDNET.md 3.3), ShiftAddNet's recipe (4.1).

    python train.py --config configs/shiftaddnet_cifar10_vgg19_small.py --workdir runs/sa_c10_vgg
    python train.py --config configs/shiftaddnet_cifar10_vgg19_small.py:adder ...  # or :cnn

Expected: unknown (the paper's VGG19-small table was not retrieved, SHIFTADDNET.md U1).
"""

from configs import shiftaddnet_cifar10_resnet20 as shiftaddnet


def get_config(variant: str = "shiftadd"):
    return shiftaddnet.experiment("cifar10", "vgg19_small", variant)
