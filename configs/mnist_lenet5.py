"""LeNet-5-BN AdderNet on MNIST (ADDERNET.md 5.6, 6.2; the layer list is the spec's U7 default).

    python train.py --config configs/mnist_lenet5.py --workdir runs/mnist_lenet5
    python train.py --config configs/mnist_lenet5.py:cnn --workdir runs/mnist_lenet5_cnn
    # offline: --config.data.source=local --config.data.local_path=/path/to/mnist (IDX files)
    # or set ADDERNET_MNIST_DIR=/path/to/mnist

Recipe: lr 0.1 with torch CosineAnnealingLR(T_max = the number of epochs) stepped per epoch, 50
epochs (maintainer, AdderNet issue 17). Batch size, weight decay and momentum are not published
(U7): batch 128, and the CIFAR weight decay and momentum. Paper: 99.4% for adder and cnn.
The README's main command (make train) runs 30 epochs; the cosine period follows.
Precise BatchNorm (50 training batches, weights frozen) before every evaluation: the running
averages lag the fast-moving adder weights (73.1% after epoch 1 against 97.40% with precise BN,
benchmarks/RESULTS.md, issue 14); training itself is unchanged.
"""

import os

from configs import default


def get_config(variant: str = "adder"):
    config = default.experiment("mnist", "lenet5", variant)
    config.num_epochs = 50
    config.batch_size = 128
    config.schedule.epoch_offset = 0  # CosineAnnealingLR counts epochs from 0; its period is
    config.schedule.period_epochs = 0  # T_max = num_epochs (0 derives it)
    config.log_every_steps = 20
    config.precise_bn_batches = 50
    local = os.environ.get("ADDERNET_MNIST_DIR", "")
    if local:  # an environment variable points the default run at local IDX files
        config.data.source = "local"
        config.data.local_path = local
    return config
