"""A tiny ShiftAddNet config for tests: LeNet-5 with shift-add units on an 80-image MNIST subset,
batch 16 (5 steps per epoch), 4 epochs, ShiftAddNet's recipe otherwise (decays scaled to
epochs 2 and 3), a checkpoint every 2 steps, all of them kept.

    python train.py --config configs/shiftaddnet_tiny.py --workdir /tmp/sa_tiny \
        --config.data.source=local --config.data.local_path=../shared/data/mnist
"""

from configs import shiftaddnet_cifar10_resnet20 as shiftaddnet


def get_config(variant: str = "shiftadd"):
    config = shiftaddnet.experiment("mnist", "lenet5", variant)
    config.data.train_subset = 80
    config.batch_size = 16
    config.eval_batch_size = 200
    config.num_epochs = 4
    config.schedule.milestones = (2, 3)
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.keep_checkpoints = 20
    config.progress_bar = False
    return config
