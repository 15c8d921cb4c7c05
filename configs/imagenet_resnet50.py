"""ResNet-50 AdderNet on ImageNet (ADDERNET.md 5.5, 7).

    python train.py --config configs/imagenet_resnet50.py --workdir runs/in_r50 \
        --config.data.data_dir=/path/to/tfds
    # or --config.data.source=local --config.data.local_path=/imagenet (with train/ and val/)

Known: cosine learning-rate decay over 150 epochs on the PyTorch ImageNet example (maintainer,
AdderNet issue 50). Unknown, PyTorch-example defaults (U4): lr 0.1, batch 256, weight decay 1e-4,
momentum 0.9, RandomResizedCrop(224) + flip. Expected: 74.9% top-1 / 91.7% top-5 (paper Table 2).
"""

from configs import default


def imagenet(model: str, variant: str):
    """The ImageNet recipe as far as the spec knows it; its unknowns are ordinary fields."""
    config = default.experiment("imagenet2012", model, variant)
    config.num_epochs = 150
    config.optimizer.weight_decay = 1e-4
    config.schedule.epoch_offset = 0
    config.schedule.period_epochs = 150
    config.eval_batch_size = 256
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config


def get_config(variant: str = "adder"):
    return imagenet("resnet50", variant)
