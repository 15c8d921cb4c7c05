"""PKKD ResNet-50 on ImageNet (../shared/specs/PKKD.md): the AdderNet ImageNet recipe of
configs/imagenet_resnet50.py (cosine over 150 epochs; PyTorch-example defaults for the rest,
ADDERNET.md U4) for the student and the teacher (PKKD.md U8), the spec's defaults for its
unknowns (fields: pkkd_cifar10_resnet20.py; compared layers: the last block's conv3 of each of
the four stages).

    python train.py --config configs/pkkd_imagenet_resnet50.py --workdir runs/pkkd_in_r50 \
        --config.data.data_dir=/path/to/tfds
    # or --config.data.source=local --config.data.local_path=/imagenet (with train/ and val/)

Expected: 76.8% top-1 / 93.3% top-5 (PKKD ANN, AdderNet README), above the CNN's 76.2%.
"""

from configs import imagenet_resnet50, pkkd_cifar10_resnet20


def imagenet(model: str, variant: str = "adder"):
    """The ImageNet recipe of `model` with PKKD (`variant` is the student's layer kind)."""
    return pkkd_cifar10_resnet20.with_pkkd(imagenet_resnet50.imagenet(model, variant))


def get_config(variant: str = "adder"):
    return imagenet("resnet50", variant)
