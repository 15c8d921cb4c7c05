"""AdderSR EDSR baseline x2 (16 blocks x 64 channels, no residual scaling; ADDERSR.md 3.3,
U3: the size to debug with), EDSR's recipe on DIV2K (configs/sr_base.py).

    python train.py --config configs/sr_edsr_baseline_x2.py --workdir runs/sr_edsrb_x2
    python train.py --config configs/sr_edsr_baseline_x2.py:cnn --workdir runs/sr_edsrb_x2_cnn

Expected: EDSR paper's baseline x2 CNN, Set5 37.99 dB; the AdderSR table reports the full model.
Not reproduced here.
"""

from configs import sr_base


def get_config(variant: str = "adder"):
    return sr_base.sr_config("edsr_baseline", variant, scale=2)
