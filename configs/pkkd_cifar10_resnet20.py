"""PKKD ResNet-20 on CIFAR-10 (../shared/specs/PKKD.md), and the base of every `pkkd_*` config
(`with_pkkd`, `experiment`).

    python train.py --config configs/pkkd_cifar10_resnet20.py --workdir runs/pkkd_c10_r20 \
        --config.data.source=local --config.data.local_path=../shared/data/cifar10-jpeg
    python evaluate.py --checkpoint runs/pkkd_c10_r20 --dataset cifar10 \
        --local-path ../shared/data/cifar10-jpeg                    # the student
    python evaluate.py --checkpoint runs/pkkd_c10_r20 --state-key teacher ...   # the teacher

An AdderNet student (`model`) and a CNN teacher of the same architecture (`teacher`, randomly
initialised) trained together, both with the official AdderNet recipe (PKKD.md 7, U8). Every
unknown of the spec (PKKD.md 9) is a field below, at the spec's default. Expected after the full
399 epochs: 92.96% (PKKD ANN, AdderNet README) on the original pixels; the JPEG copy in ../shared
costs points (README).
"""

import ml_collections

from configs import default


def with_pkkd(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (a classification config: its model is the student) turned into a PKKD run."""
    config.task = "distillation"

    config.teacher = ml_collections.ConfigDict()
    config.teacher.variant = "cnn"  # the same architecture with convolutions (PKKD.md 1.2)
    config.teacher.impl = "auto"  # adder2d implementation, if the teacher had adders
    config.teacher.learning_rate = 0.0  # U8: > 0 overrides the student's learning rate
    config.teacher.weight_decay = -1.0  # U8: >= 0 overrides the student's weight decay

    config.pkkd = ml_collections.ConfigDict()
    # U1: the compared layers: 'stage_ends' (the last adder of each residual stage, pre-BN;
    # VGG-small: the layers before each max-pool), 'all' (every adder), or "layer1.2.conv2,...".
    config.pkkd.layers = "stage_ends"
    config.pkkd.kernel_form = "proper"  # U2: 'proper' (PKKD.md 4.3) or 'notes_literal' (4.2)
    config.pkkd.sigma_a = 0.0  # U3: Laplace width; 0 = the batch mean of D1 (detached)
    config.pkkd.sigma_c = 0.0  # U3: Gaussian width; 0 = 2 sigma_c^2 = batch mean of D2
    config.pkkd.transform = "conv1x1"  # U4: the linear transform rho ('conv1x1' or 'none')
    config.pkkd.transform_side = "student"  # U4: applied to the student's or teacher's maps
    config.pkkd.transform_init = "identity"  # U4: 'identity' or 'torch_default'
    config.pkkd.mid_loss = "mse"  # U5: 'mse', 'sum_squares' or 'l2' per layer, summed
    config.pkkd.layer_weights = ()  # U5: one weight per compared layer; () = 1 each
    config.pkkd.tau = 1.0  # U6: temperature of L_blend's KL term
    config.pkkd.gt_weight = 1.0  # U6: weight of the ground-truth cross-entropy in L_blend
    config.pkkd.kd_weight = 1.0  # U6: weight of tau^2 KL(teacher || student) in L_blend
    config.pkkd.blend_schedule = "constant"  # U6: or 'shift_to_teacher' (linear over the run)
    config.pkkd.beta = 1.0  # U7: L = beta * L_mid + L_blend
    config.pkkd.teacher_features = "before_update"  # U9: or 'after_update' (a 2nd forward)
    config.pkkd.adaptive_lr_scope = "total"  # U10: rescale the total gradient once, or
    #                                          'per_term' (each loss term's gradient)
    return config


def experiment(dataset: str, model: str, variant: str = "adder") -> ml_collections.ConfigDict:
    """The official AdderNet recipe for `dataset` and `model` with PKKD; `variant` is the
    student's layer kind."""
    return with_pkkd(default.experiment(dataset, model, variant))


def get_config(variant: str = "adder"):
    return experiment("cifar10", "resnet20", variant)
