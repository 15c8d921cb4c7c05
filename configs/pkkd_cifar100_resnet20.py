"""PKKD ResNet-20 on CIFAR-100 (../shared/specs/PKKD.md): the official AdderNet recipe for the
student and the teacher, the spec's defaults for its unknowns (fields: pkkd_cifar10_resnet20.py).

    python train.py --config configs/pkkd_cifar100_resnet20.py --workdir runs/pkkd_c100_r20

Expected after the full 399 epochs: 69.93% (PKKD ANN, AdderNet README), on the original pixels.
"""

from configs import pkkd_cifar10_resnet20 as pkkd


def get_config(variant: str = "adder"):
    return pkkd.experiment("cifar100", "resnet20", variant)
