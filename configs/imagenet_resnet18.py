"""ResNet-18 AdderNet on ImageNet (ResNet-18 is inferred from resnet50.py, ADDERNET.md 5.4).

    python train.py --config configs/imagenet_resnet18.py --workdir runs/in_r18

Recipe as configs/imagenet_resnet50.py. Expected: 67.0% top-1 / 87.6% top-5 (paper Table 2).
"""

from configs import imagenet_resnet50


def get_config(variant: str = "adder"):
    return imagenet_resnet50.imagenet("resnet18", variant)
