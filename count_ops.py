"""Per-image multiplications, additions, parameters and energy of a model, for every variant.

    python count_ops.py --model resnet20
    python count_ops.py --help

Everything is in addernet_jax/cli/count_ops.py; conventions in addernet_jax/opcount.py.
"""

import sys

from addernet_jax.cli.count_ops import main

if __name__ == "__main__":
    sys.exit(main())
