"""Evaluate a checkpoint (model checkpoint, training workdir or .pth file) on a dataset split.

    python evaluate.py --checkpoint ckpt/resnet20 --dataset cifar10 \
        --local-path ../shared/data/cifar10-jpeg
    python evaluate.py --help

Everything is in addernet_jax/cli/evaluate.py.
"""

import sys

from addernet_jax.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
