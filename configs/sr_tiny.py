"""A tiny SR config for tests and smoke runs: VDSR x2 on 8x8 LR patches, batch 8, two steps.

    python train.py --config configs/sr_tiny.py --workdir /tmp/sr_tiny \
        --config.data.train_path=../shared/data/sr-benchmark/Set5 \
        --config.data.eval_root=../shared/data/sr-benchmark --config.data.eval_sets='("Set5",)'

(`:cnn`, or `:adder,edsr_baseline` for another registry model.)
"""

from configs import sr_base


def get_config(argument: str = "adder"):
    variant, _, model = argument.partition(",")
    config = sr_base.sr_config(model or "vdsr", variant or "adder", scale=2)
    config.data.train_source = "paired"
    config.data.cache_images = True
    config.data.patch_size = 8
    config.data.steps_per_epoch = 2
    config.data.eval_tile = 16
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_epochs = 1
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.checkpoint_every_steps = 1
    config.progress_bar = False
    return config
