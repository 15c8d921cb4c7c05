"""Train an AdderNet (or its CNN baseline, or any task) from a config file.

    python train.py --config configs/mnist_lenet5.py --workdir runs/mnist_lenet5
    python train.py --help

Everything is in addernet_jax/cli/train.py; running the same command again resumes.
"""

import sys

from addernet_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
