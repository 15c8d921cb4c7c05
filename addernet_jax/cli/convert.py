"""convert_torch_weights.py: a PyTorch AdderNet checkpoint (.pth) -> a model checkpoint, no torch.

    python convert_torch_weights.py --input ../shared/checkpoints/ResNet20-AdderNet.pth \
        --output ckpt/resnet20 --model resnet20
    python convert_torch_weights.py --input resnet50.pth --output ckpt/resnet50 --model resnet50

The file is read by a restricted unpickler (no code from it runs; a whole pickled model may hold
only allow-listed nn.Module classes, extended with --allow-module-class), mapped onto the model by
name (filters `adder`, OIHW -> HWIO, BatchNorm statistics; a `module.` prefix is stripped),
checked (every key and shape; NaN/Inf and negative variances refused) and written as
<output>/model (orbax) + <output>/model_info.json. A failed conversion leaves nothing behind
and an existing output is never overwritten.
"""

from __future__ import annotations

import json
import sys

from addernet_jax.cli.common import make_parser, run_main
from addernet_jax.layers import layer_kinds
from addernet_jax.models import list_models

PROGRAM = "convert_torch_weights.py"
EPILOG = ("exit status: 0 done, 2 usage error (a bad flag or name, a missing input, an existing "
          "output), 3 failed run (a corrupt, unsafe or mismatched file, an I/O error)")


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--input", required=True, help="the .pth file")
    parser.add_argument("--output", required=True, help="the directory to create")
    parser.add_argument("--model", required=True, choices=list_models())
    parser.add_flag("--num-classes", type=int, default=None,
                    help="number of logits (default: the model's dataset: 10 or 1000)")
    parser.add_argument("--variant", default="adder", choices=layer_kinds())
    parser.add_flag("--allow-module-class", action="append", default=[],
                    metavar="MODULE.CLASS", help="trust this nn.Module class (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_flags(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        from addernet_jax.convert.converter import convert_torch_checkpoint

        info = convert_torch_checkpoint(args.input, args.output, model=args.model,
                                        num_classes=args.num_classes, variant=args.variant,
                                        extra_module_classes=args.allow_module_class)
        print(f"wrote {args.output}: {json.dumps(info)}")
        return 0

    return run_main(PROGRAM, run, args.debug)
