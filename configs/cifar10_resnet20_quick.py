"""ResNet-20 on a fixed 10,000-image CIFAR-10 subset for 5 epochs: the official recipe compressed
to 5 epochs (per-epoch cosine with period 6, as 399 epochs use period 400), evaluated on all
10,000 test images. A CPU-sized check that training works, not a reproduction of the paper.

    python train.py --config configs/cifar10_resnet20_quick.py --workdir runs/quick \
        --config.data.local_path=../shared/data/cifar10-jpeg
    python train.py --config configs/cifar10_resnet20_quick.py:cnn --workdir runs/quick_cnn \
        --config.data.local_path=../shared/data/cifar10-jpeg

BatchNorm statistics are recomputed over 20 training batches before every evaluation (precise
BN): with the running averages the first AdderNet evaluations sit at chance (10.00% after epochs
1 and 2, 41.76% after 5; with precise BN 26.00% / 36.62% ... 42.46%, benchmarks/RESULTS.md).
Runs recorded before it was on here reproduce with --config.precise_bn_batches=0.

Results on this project's CPU are in benchmarks/RESULTS.md.
"""

from configs import default


def get_config(variant: str = "adder"):
    config = default.experiment("cifar10", "resnet20", variant)
    config.data.source = "local"
    config.data.local_path = "../shared/data/cifar10-jpeg"
    config.data.train_subset = 10_000
    config.num_epochs = 5
    config.checkpoint_every_steps = 20
    config.precise_bn_batches = 20
    return config
