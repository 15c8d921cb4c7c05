"""A tiny config for tests and smoke runs: LeNet-5 on MNIST, batch 16, two steps.

    python train.py --config configs/tiny.py --workdir /tmp/tiny \
        --config.data.source=local --config.data.local_path=../shared/data/mnist
"""

from configs import default


def get_config(variant: str = "adder"):
    config = default.experiment("mnist", "lenet5", variant)
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_epochs = 1
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 1
    config.progress_bar = False
    return config
