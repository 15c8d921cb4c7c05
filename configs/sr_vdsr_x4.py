"""AdderSR VDSR x4, initialised from a trained x2 run (ADDERSR.md 4: "x3/x4 initialised from
x2"; VDSR's parameters do not depend on the scale, so every weight carries over).

    python train.py --config configs/sr_vdsr_x4.py --workdir runs/sr_vdsr_x4 \
        --config.init_from=runs/sr_vdsr_x2
    (:cnn for the CNN, from runs/sr_vdsr_x2_cnn)

Expected (paper README table, ADDERSR.md 6): Set5 31.27 / 0.8762 (adder).
Not reproduced here.
"""

from configs import sr_base


def get_config(variant: str = "adder"):
    config = sr_base.sr_config("vdsr", variant, scale=4)
    config.init_from = ""  # set to the x2 run (a workdir or model checkpoint)
    return config
