"""AdderSR VDSR x2 (ADDERSR.md 3.3), EDSR's recipe on DIV2K (configs/sr_base.py).

    python train.py --config configs/sr_vdsr_x2.py --workdir runs/sr_vdsr_x2
    python train.py --config configs/sr_vdsr_x2.py:cnn --workdir runs/sr_vdsr_x2_cnn
    python evaluate.py --checkpoint runs/sr_vdsr_x2 --local-path ../shared/data/sr-benchmark

Expected (paper README table, ADDERSR.md 6): Set5 37.37 / 0.9575, Set14 32.91 / 0.9112 (adder);
37.53 / 0.9587, 33.03 / 0.9124 (cnn). Not reproduced here (needs DIV2K and a GPU).
"""

from configs import sr_base


def get_config(variant: str = "adder"):
    return sr_base.sr_config("vdsr", variant, scale=2)
