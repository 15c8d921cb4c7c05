"""Base configuration: the official AdderNet CIFAR-10 ResNet-20 recipe (ADDERNET.md 6.1).

Every experiment config imports `get_config` from here and overrides a few fields. Fields that
the papers leave open say so in a comment, with the default the project chose.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The official CIFAR recipe: SGD(0.9, wd 5e-4), batch 256, per-epoch cosine (period 400,
    epochs 1..399), eta 0.2, RandomCrop(32, 4) + flip, official normalisation."""
    config = ml_collections.ConfigDict()
    config.task = "classification"  # the training method (addernet_jax.tasks)

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet20"
    config.model.variant = "adder"  # a layer kind: "cnn" is the same network with convolutions
    config.model.impl = "auto"  # adder2d implementation ('auto', 'shifted', 'reference', ...)
    # the adder layers' input gradient: 'hardtanh' (paper Eq. 6, official) or 'sign' (exact, U10)
    config.model.input_grad = "hardtanh"

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "cifar10"
    config.data.source = "tfds"  # or "local" (IDX files, CIFAR python batches, ImageFolder)
    config.data.local_path = ""  # the local dataset folder when source == "local"
    config.data.data_dir = ""  # tfds data_dir ("" = tfds default)
    config.data.train_subset = 0  # > 0: train on a fixed class-balanced subset of this size
    config.data.image_size = 0  # > 0: ImageNet crop size (224 when 0)
    # Training augmentation: "" = the dataset's preset (transforms.py); MNIST also "affine"
    # (random rotation, scale and shift, the affine_* fields) or "none".
    config.data.augmentation = ""
    config.data.affine_degrees = 10.0
    config.data.affine_translate = 0.1  # fraction of the width and height
    config.data.affine_scale = (0.9, 1.1)
    config.data.worker_count = 0  # grain worker processes (0: threads in this process)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # adder_sgd; or "adam" (adder_adam)
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.eta = 0.2  # adaptive adder learning rate (paper Eq. 13)
    config.optimizer.nesterov = False
    config.optimizer.b1 = 0.9  # adam only
    config.optimizer.b2 = 0.999  # adam only
    config.optimizer.eps = 1e-8  # adam only

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "per_epoch_cosine"  # or "constant", "multistep"
    config.schedule.epoch_offset = 1  # official main.py counts epochs from 1
    config.schedule.period_epochs = 0  # 0: num_epochs + epoch_offset (official: 400)
    config.schedule.milestones = ()  # "multistep": epochs at whose start the rate is multiplied...
    config.schedule.decay_factor = 0.1  # ... by this
    config.schedule.every_steps = 0  # "multistep" with > 0: decay every this many steps instead

    config.label_smoothing = 0.0  # > 0: training targets smoothed towards uniform (not official)
    # > 0: evaluate and export an exponential moving average of the weights with this decay
    # (optim/averaging.py; classification); 0: the trained weights themselves (official)
    config.ema_decay = 0.0
    config.seed = 0
    config.batch_size = 256  # global, over all devices and processes
    config.eval_batch_size = 100  # official test batch; any size gives the same numbers
    config.num_epochs = 399  # official: range(1, 400)
    config.num_train_steps = -1  # > 0: stop after this many steps (tests, smoke runs)

    config.eval_every_epochs = 1
    # > 0: before each evaluation, BatchNorm statistics recomputed over this many training
    # batches with the weights frozen (precise BN, pycls/detectron2); 0: running averages.
    config.precise_bn_batches = 0
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500  # and at the end of every epoch
    config.keep_checkpoints = 3  # the latest N, plus the best by test accuracy
    config.init_from = ""  # an orbax checkpoint dir (e.g. from convert_torch_weights.py)
    config.progress_bar = True  # a bar on a terminal, one line per log interval otherwise
    config.epoch_end_projection = True  # re-project parameters that ask for it (ShiftAddNet)
    return config


def experiment(dataset: str, model: str, variant: str = "adder") -> ml_collections.ConfigDict:
    """The base recipe with a dataset, a model and a variant ('adder' or 'cnn') filled in."""
    config = get_config()
    config.data.dataset = dataset
    config.model.name = model
    config.model.variant = variant
    return config
