"""The AdderSR recipe shared by the configs/sr_*.py experiments (ADDERSR.md 2-5).

EDSR's published training recipe for every model (ADDERSR.md 4, U5, U6; not from the AdderSR
paper, whose experiment section was not retrievable): DIV2K (800 images) through tfds, random
48x48 LR patches with flips and 90-degree rotations, batch 16, L1 loss, Adam (0.9, 0.999, 1e-8)
after AdderNet's adaptive adder learning rate (eta 0.2, kept for fidelity although Adam undoes
most of it), learning rate 1e-4 halved every 2e5 updates, no weight decay, 300 epochs of 1000
batches. Evaluation after every epoch on Set5 and Set14 (EDSR's benchmark layout under
data.eval_root): PSNR / SSIM on Y with a `scale`-pixel border crop (ADDERSR.md 5).
"""

import ml_collections

from configs import default


def sr_config(model: str, variant: str = "adder", scale: int = 2) -> ml_collections.ConfigDict:
    """The recipe for registry model `model` ('vdsr', 'edsr_baseline', 'edsr'), `variant`
    ('adder' AdderSR, 'cnn' the original network) and `scale`."""
    config = default.get_config()
    config.task = "super_resolution"
    config.model.name = model
    config.model.variant = variant
    config.model.colour = "y"  # VDSR only: network on Y, CbCr from bicubic (U6); or "rgb"
    config.model.per_channel_alpha = False  # one power exponent per unit (U2 default)
    config.model.alpha_clip = (0.1, 3.0)  # alpha's projection range (2.4 safeguard); () = none

    config.data = ml_collections.ConfigDict()
    config.data.dataset = f"sr_x{scale}"  # informational: the task reads the fields below
    config.data.scale = scale
    config.data.train_source = "div2k"  # or "paired" (HR/ + LR_bicubic/X<s>), "hr_folder"
    config.data.train_path = ""  # the folder for "paired" / "hr_folder"
    config.data.hr_dir = "HR"  # "paired": HR sub-folder (DIV2K's files: "DIV2K_train_HR")
    config.data.lr_dir = "LR_bicubic"  # "paired": LR sub-folder ("DIV2K_train_LR_bicubic")
    config.data.data_dir = ""  # tfds data_dir for "div2k" ("" = tfds default)
    config.data.cache_images = False  # decode the training images once and keep them (small sets)
    config.data.patch_size = 48  # LR patch (EDSR: 48, i.e. HR 96 at x2)
    config.data.steps_per_epoch = 1000  # EDSR's --test_every: the training set is repeated
    config.data.eval_root = "../shared/data/sr-benchmark"  # <root>/<set>/{HR, LR_bicubic/X<s>}
    config.data.eval_sets = ("Set5", "Set14")  # the first one picks the best checkpoint
    config.data.eval_tile = 96  # LR core of an evaluation tile (0: whole images); exact anyway
    config.data.worker_count = 0

    config.optimizer.name = "adam"  # adder_adam: adaptive adder rate, then Adam (U5)
    config.optimizer.learning_rate = 1e-4
    config.optimizer.weight_decay = 0.0
    config.optimizer.eta = 0.2
    config.schedule.name = "multistep"
    config.schedule.every_steps = 200_000  # halve every 2e5 updates
    config.schedule.decay_factor = 0.5
    config.schedule.warmup_steps = 0  # linear warm-up of the learning rate (not in EDSR's recipe)

    config.batch_size = 16
    config.eval_batch_size = 8  # evaluation tiles per batch
    config.num_epochs = 300
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    return config
