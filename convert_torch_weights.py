"""Convert a PyTorch AdderNet checkpoint (.pth) into a model checkpoint, without torch.

    python convert_torch_weights.py --input ../shared/checkpoints/ResNet20-AdderNet.pth \
        --output ckpt/resnet20 --model resnet20
    python convert_torch_weights.py --input resnet50.pth --output ckpt/resnet50 --model resnet50

The file is read by a restricted unpickler (no code from it runs; a whole pickled model may hold
only allow-listed nn.Module classes, extended with --allow-module-class), mapped onto the model by
name (filters `adder`, OIHW -> HWIO, BatchNorm statistics; a `module.` prefix is stripped) and
written as <output>/model (orbax) + <output>/model_info.json. A failed conversion leaves nothing
behind and an existing output is never overwritten. Exit status 0, or 1 with one line on stderr.
"""

import argparse
import json
import sys

from addernet_jax.convert.converter import convert_torch_checkpoint
from addernet_jax.models import list_models
from addernet_jax.models.common import VARIANTS


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="the .pth file")
    parser.add_argument("--output", required=True, help="the directory to create")
    parser.add_argument("--model", required=True, choices=list_models())
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="number of logits (default: the model's dataset: 10 or 1000)",
    )
    parser.add_argument("--variant", default="adder", choices=VARIANTS)
    parser.add_argument(
        "--allow-module-class",
        action="append",
        default=[],
        metavar="MODULE.CLASS",
        help="trust this nn.Module class (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_flags(argv)
    try:
        info = convert_torch_checkpoint(
            args.input,
            args.output,
            model=args.model,
            num_classes=args.num_classes,
            variant=args.variant,
            extra_module_classes=args.allow_module_class,
        )
    except (ValueError, OSError) as err:  # expected problems: one line, no traceback
        print(f"convert_torch_weights.py: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {json.dumps(info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
