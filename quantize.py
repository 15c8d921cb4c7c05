"""Quantise an AdderNet checkpoint to integer adder layers (4 to 8 bits), calibrated on images.

    python quantize.py --checkpoint ckpt/resnet20 --output ckpt/resnet20_int8 \
        --dataset cifar10 --local-path ../shared/data/cifar10-jpeg
    python quantize.py --help

Everything is in addernet_jax/cli/quantize.py.
"""

import sys

from addernet_jax.cli.quantize import main

if __name__ == "__main__":
    sys.exit(main())
