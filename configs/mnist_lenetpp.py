"""LeNet++ on MNIST with a 2-D feature layer: the paper's Figure 1 (ADDERNET.md 10), once as an
AdderNet and once as a CNN with the same command, then the figure.

    python train.py --config configs/mnist_lenetpp.py:adder --workdir runs/mnist_lenetpp_adder
    python train.py --config configs/mnist_lenetpp.py:cnn --workdir runs/mnist_lenetpp_cnn
    python plot_features.py --workdir runs/mnist_lenetpp_adder \
        --workdir runs/mnist_lenetpp_cnn --local-path ../shared/data/mnist \
        --output docs/features.png
    # offline: --config.data.source=local --config.data.local_path=/path/to/mnist (IDX files)
    # or set ADDERNET_MNIST_DIR=/path/to/mnist (make figures does)

The paper gives no recipe for this figure (U7). LeNet++ costs about 80M multiply-accumulates per
image (190 times LeNet-5), so that both runs finish in minutes on a 2-core CPU the recipe is
short: a fixed class-balanced subset of the training images, a few epochs, lr 0.1 (the CNN:
0.01, below) with a
per-epoch cosine to zero (torch CosineAnnealingLR, as the MNIST LeNet-5 recipe), batch 128, the
CIFAR weight decay and momentum, eta 0.2, precise BatchNorm statistics before each evaluation.
"""

import os

from configs import default


def get_config(variant: str = "adder"):
    config = default.experiment("mnist", "lenetpp", variant)
    config.num_epochs = 3
    config.batch_size = 128
    config.data.train_subset = 10000
    config.schedule.epoch_offset = 0  # CosineAnnealingLR(T_max = num_epochs), per epoch
    config.schedule.period_epochs = 0
    if variant == "cnn":
        # The CNN's 2-D features grow large (the paper's panel (b) spans about +-6000): at lr 0.1
        # its loss was NaN by step 14 on the real MNIST; 0.01 trains.
        config.optimizer.learning_rate = 0.01
    config.precise_bn_batches = 20
    config.log_every_steps = 10
    config.checkpoint_every_steps = 1000
    local = os.environ.get("ADDERNET_MNIST_DIR", "")
    if local:  # an environment variable points the run at local IDX files
        config.data.source = "local"
        config.data.local_path = local
    return config
