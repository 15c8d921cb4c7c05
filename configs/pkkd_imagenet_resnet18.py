"""PKKD ResNet-18 on ImageNet (../shared/specs/PKKD.md), the recipe and fields of
configs/pkkd_imagenet_resnet50.py (compared layers: the last block's conv2 of each stage).

    python train.py --config configs/pkkd_imagenet_resnet18.py --workdir runs/pkkd_in_r18 \
        --config.data.data_dir=/path/to/tfds

Expected: 68.8% top-1 / 88.6% top-5 (PKKD ANN, AdderNet README).
"""

from configs import pkkd_imagenet_resnet50


def get_config(variant: str = "adder"):
    return pkkd_imagenet_resnet50.imagenet("resnet18", variant)
