"""count_ops.py: per-image multiplications, additions, shifts, parameters and energy of a model,
one column block per variant (layer kind).

    python count_ops.py --model resnet20
    python count_ops.py --model resnet20 --variants cnn,adder,shiftadd,deepshift
    python count_ops.py --model resnet50 --input-size 224 --energy-add 0.9 --energy-mul 3.7 --json

Shifts (the 'shiftadd' and 'deepshift' kinds) get their own column. They are not priced unless
--energy-shift gives pJ per shift: no sourced value was retrieved (SHIFTADDNET.md U3), and the
output says which energies leave them out.

Conventions: addernet_jax/opcount.py.
"""

from __future__ import annotations

import sys

from addernet_jax.cli.common import make_parser, run_main
from addernet_jax.cli.op_flags import add_op_flags, check_op_flags, energy_table
from addernet_jax.opcount import report

PROGRAM = "count_ops.py"


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.splitlines()[0],
                         "exit status: 0 done, 2 usage error")
    add_op_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return check_op_flags(parser, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and prints the report; exit status 2 on bad flags."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    table = energy_table(args)

    def run() -> int:
        print(report(args.model, num_classes=args.num_classes, input_size=args.input_size,
                     table=table, shift_pj=args.energy_shift, as_json=args.json,
                     variants=args.variants))
        return 0

    return run_main(PROGRAM, run, args.debug)
