"""A tiny PKKD config for tests: LeNet-5 student (adder) and teacher (cnn) on a 160-image MNIST
subset, batch 16 (10 steps per epoch), 2 epochs, a checkpoint every 2 steps; compared layer:
conv2 (pkkd_cifar10_resnet20.py's fields, at the spec's defaults).

    python train.py --config configs/pkkd_tiny.py --workdir /tmp/pkkd_tiny \
        --config.data.source=local --config.data.local_path=../shared/data/mnist
"""

from configs import pkkd_cifar10_resnet20, tiny


def get_config(variant: str = "adder"):
    config = pkkd_cifar10_resnet20.with_pkkd(tiny.get_config(variant))
    config.data.train_subset = 160
    config.num_epochs = 2
    config.num_train_steps = -1
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 20
    return config
