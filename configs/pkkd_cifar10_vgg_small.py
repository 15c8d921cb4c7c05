"""PKKD VGG-small on CIFAR-10 (../shared/specs/PKKD.md): the official AdderNet recipe for the
student and the teacher, the spec's defaults for its unknowns (fields: pkkd_cifar10_resnet20.py).

    python train.py --config configs/pkkd_cifar10_vgg_small.py --workdir runs/pkkd_c10_vgg \
        --config.data.source=local --config.data.local_path=../shared/data/cifar10-jpeg

Expected after the full 399 epochs: 95.03% (PKKD ANN, AdderNet README), on the original pixels.
"""

from configs import pkkd_cifar10_resnet20 as pkkd


def get_config(variant: str = "adder"):
    return pkkd.experiment("cifar10", "vgg_small", variant)
