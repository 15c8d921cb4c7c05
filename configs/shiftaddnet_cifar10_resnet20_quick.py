"""ResNet-20 on a fixed 10,000-image CIFAR-10 subset for 5 epochs with ShiftAddNet's recipe, every
layer kind: the CPU-sized comparison of benchmarks/RESULTS.md ("ShiftAddNet"), not a reproduction.

    python train.py --config configs/shiftaddnet_cifar10_resnet20_quick.py:shiftadd \
        --workdir runs/sa_quick_shiftadd --config.data.local_path=../shared/data/cifar10-jpeg
    (and :deepshift, :adder, :cnn), evaluated on all 10,000 test images after every epoch.

The data setting is configs/cifar10_resnet20_quick.py's (the same subset, 39 steps of 256 per
epoch). The recipe is ShiftAddNet's (configs/shiftaddnet_cifar10_resnet20.py) with its step
decay scaled to 5 epochs: 160 epochs decay x0.1 at 80 and 120 (50% / 25% / 25% of the run at
0.1 / 0.01 / 0.001); 5 epochs cannot split at 2.5 and 3.75, so the decays come at the start of
epochs 3 and 4 (0-based: 3 epochs at 0.1, 1 at 0.01, 1 at 0.001), the epoch-aligned split
nearest to the original proportions. The end-of-epoch re-projection runs after each of the 5.

Measured on the project's 2-core CPU (benchmarks/RESULTS.md, "ShiftAddNet"): test top-1 after
5 epochs 36.18% for :shiftadd (69 train images/s), 27.24% for :deepshift; :adder and :cnn not
yet run with this recipe.
"""

from configs import shiftaddnet_cifar10_resnet20 as shiftaddnet


def get_config(variant: str = "shiftadd"):
    config = shiftaddnet.experiment("cifar10", "resnet20", variant)
    config.data.source = "local"
    config.data.local_path = "../shared/data/cifar10-jpeg"
    config.data.train_subset = 10_000
    config.num_epochs = 5
    config.schedule.milestones = (3, 4)  # 80/160 and 120/160 of 5 epochs, on epoch starts
    config.checkpoint_every_steps = 20
    return config
