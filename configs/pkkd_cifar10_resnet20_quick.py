"""PKKD ResNet-20 in the CPU-sized setting of configs/cifar10_resnet20_quick.py: 5 epochs on a
fixed 10,000-image CIFAR-10 subset (per-epoch cosine with period 6), evaluated on all 10,000 test
images, PKKD at the spec's defaults (fields: pkkd_cifar10_resnet20.py). The comparison with the
plain AdderNet at this budget is in benchmarks/RESULTS.md, "PKKD".

    python train.py --config configs/pkkd_cifar10_resnet20_quick.py --workdir runs/pkkd_quick_s0 \
        --config.seed=0
    python train.py --config configs/cifar10_resnet20_quick.py --workdir runs/quick_s0 \
        --config.seed=0                                          # the plain AdderNet
"""

from configs import cifar10_resnet20_quick, pkkd_cifar10_resnet20


def get_config(variant: str = "adder"):
    return pkkd_cifar10_resnet20.with_pkkd(cifar10_resnet20_quick.get_config(variant))
