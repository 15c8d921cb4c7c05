"""Training curves (loss, metric, learning rate) of one or more workdirs as one PNG.

    python plot_curves.py --workdir runs/mnist_lenetpp_adder --workdir runs/mnist_lenetpp_cnn \
        --output docs/curves.png
    python plot_curves.py --help

Everything is in addernet_jax/cli/plot_curves.py and addernet_jax/figures/curves.py.
"""

import sys

from addernet_jax.cli.plot_curves import main

if __name__ == "__main__":
    sys.exit(main())
