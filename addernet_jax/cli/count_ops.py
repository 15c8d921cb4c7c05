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
from addernet_jax.layers import EnergyTable, layer_kinds
from addernet_jax.models import get_model_info, list_models
from addernet_jax.opcount import report

PROGRAM = "count_ops.py"


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.splitlines()[0],
                         "exit status: 0 done, 2 usage error")
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_flag("--num-classes", type=int, help="default: the model's dataset")
    parser.add_flag("--input-size", type=int, help="image height = width (default: dataset)")
    parser.add_flag("--energy-add", type=float, default=EnergyTable.add_pj, help="pJ per add")
    parser.add_flag("--energy-mul", type=float, default=EnergyTable.mul_pj, help="pJ per mul")
    parser.add_flag("--energy-shift", type=float, default=None,
                    help="pJ per shift (default: shifts are counted but not priced)")
    parser.add_argument("--variants", default="adder,cnn",
                        help="comma-separated layer kinds to compare, or 'all' "
                        f"(default adder,cnn; kinds: {', '.join(layer_kinds())})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    args.variants = (layer_kinds() if args.variants == "all"
                     else tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    unknown = [v for v in args.variants if v not in layer_kinds()]
    if unknown or not args.variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(layer_kinds())} "
                     "or 'all'")
    for flag in ("energy_add", "energy_mul", "energy_shift"):
        value = getattr(args, flag)
        if value is not None and not value >= 0:
            parser.error(f"--{flag.replace('_', '-')} must be a number >= 0 (pJ), got {value}")
    try:
        get_model_info(args.model)
    except ValueError as error:  # the registry's message lists the names
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and prints the report; exit status 2 on bad flags."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    source = EnergyTable.source
    if (args.energy_add, args.energy_mul) != (EnergyTable.add_pj, EnergyTable.mul_pj):
        source = "user-given"
    table = EnergyTable(args.energy_add, args.energy_mul, source)

    def run() -> int:
        print(report(args.model, num_classes=args.num_classes, input_size=args.input_size,
                     table=table, shift_pj=args.energy_shift, as_json=args.json,
                     variants=args.variants))
        return 0

    return run_main(PROGRAM, run, args.debug)
