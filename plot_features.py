"""The paper's Figure 1: 2-D test features of LeNet++ (AdderNet and CNN) as one PNG.

    python plot_features.py --workdir runs/mnist_lenetpp_adder --workdir runs/mnist_lenetpp_cnn \
        --local-path ../shared/data/mnist --output docs/features.png
    python plot_features.py --help

Everything is in addernet_jax/cli/plot_features.py and addernet_jax/figures/features.py.
"""

import sys

from addernet_jax.cli.plot_features import main

if __name__ == "__main__":
    sys.exit(main())
