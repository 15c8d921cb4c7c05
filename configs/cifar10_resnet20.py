"""ResNet-20 AdderNet on CIFAR-10, the official recipe (ADDERNET.md 6.1).

    python train.py --config configs/cifar10_resnet20.py --workdir runs/c10_r20 \
        --config.data.source=local --config.data.local_path=../shared/data/cifar10-jpeg
    python train.py --config configs/cifar10_resnet20.py:cnn --workdir runs/c10_r20_cnn ...

Expected: 91.84% (paper Table 1; README 92.02%) for adder, 92.25% for cnn, after 399 epochs.
"""

from configs import default


def get_config(variant: str = "adder"):
    return default.experiment("cifar10", "resnet20", variant)
