"""Operations and estimated energy per image of a model, adder vs cnn (or any layer kinds).

    python plot_ops.py --model lenet5 --output docs/ops_lenet5.png
    python plot_ops.py --help

Everything is in addernet_jax/cli/plot_ops.py and addernet_jax/figures/ops.py.
"""

import sys

from addernet_jax.cli.plot_ops import main

if __name__ == "__main__":
    sys.exit(main())
