"""AdderSR EDSR x2, the full model (32 blocks x 256 channels, residual scaling 0.1; ADDERSR.md
U3 default), EDSR's recipe on DIV2K (configs/sr_base.py).

    python train.py --config configs/sr_edsr_x2.py --workdir runs/sr_edsr_x2
    python train.py --config configs/sr_edsr_x2.py:cnn --workdir runs/sr_edsr_x2_cnn

Expected (paper README table, ADDERSR.md 6): Set5 37.92 / 0.9589, Set14 33.82 / 0.9183 (adder);
38.11 / 0.9601, 33.92 / 0.9195 (cnn). Not reproduced here (needs DIV2K and GPUs).
"""

from configs import sr_base


def get_config(variant: str = "adder"):
    config = sr_base.sr_config("edsr", variant, scale=2)
    config.data.eval_tile = 64  # 256-channel features: smaller tiles bound the memory
    config.eval_batch_size = 4
    return config
