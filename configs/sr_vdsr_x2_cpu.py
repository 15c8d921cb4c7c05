"""AdderSR VDSR x2 sized for a CPU: patches of the B100 HR images (with their shipped bicubic LR
images), evaluated on Set5 and Set14 (a 50-step run: benchmarks/RESULTS.md, "AdderSR").

    flock /tmp/addernet-realrun.lock python train.py --config configs/sr_vdsr_x2_cpu.py \
        --workdir runs/sr_vdsr_x2_cpu --config.num_train_steps=N
    flock /tmp/addernet-realrun.lock python train.py --config configs/sr_vdsr_x2_cpu.py:cnn \
        --workdir runs/sr_vdsr_x2_cpu_cnn --config.num_train_steps=N
    python evaluate.py --checkpoint runs/sr_vdsr_x2_cpu --local-path ../shared/data/sr-benchmark \
        --output-dir runs/sr_vdsr_x2_cpu/eval

B100 is a benchmark set too: it is only trained on here. Against EDSR's recipe (sr_base.py), for
a budget of a few hundred steps instead of 3e5: learning rate 2e-4 after a 50-step linear
warm-up (Adam moves every weight by about the rate per step; adder kernels, initialised
N(0, 1), move little at 1e-4 in a few hundred steps), LR patches of 24 (HR 48; VDSR trained on
41), batch 16, BatchNorm statistics recomputed over 20 training batches before the evaluation
(config.precise_bn_batches), and one evaluation, at the end.
"""

from configs import sr_base


def get_config(variant: str = "adder"):
    config = sr_base.sr_config("vdsr", variant, scale=2)
    config.data.train_source = "paired"
    config.data.train_path = "../shared/data/sr-benchmark/B100"
    config.data.cache_images = True
    config.data.patch_size = 24
    config.data.steps_per_epoch = 100
    config.optimizer.learning_rate = 2e-4
    config.schedule.warmup_steps = 50
    config.precise_bn_batches = 20
    config.num_epochs = 1000  # the run's length is config.num_train_steps
    config.num_train_steps = 400
    config.eval_every_epochs = 1000  # evaluate once, after the last step
    config.log_every_steps = 10
    config.checkpoint_every_steps = 50
    return config
