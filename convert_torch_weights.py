"""Convert a PyTorch AdderNet checkpoint (.pth) into a model checkpoint, without torch.

    python convert_torch_weights.py --input ../shared/checkpoints/ResNet20-AdderNet.pth \
        --output ckpt/resnet20 --model resnet20
    python convert_torch_weights.py --help

Everything is in addernet_jax/cli/convert.py.
"""

import sys

from addernet_jax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
