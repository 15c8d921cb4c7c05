"""plot_ops.py: a model's operations and estimated energy per image, one bar group per variant.

    python plot_ops.py --model lenet5 --output docs/ops_lenet5.png
    python plot_ops.py --model resnet20 --variants all --energy-shift 0.13 --output ops.png

Left: multiplications, additions and (for kinds that have them) shifts per image; right: the
estimated energy per image, stacked by operation (default 45 nm fp32, Horowitz ISSCC 2014: add
0.9 pJ, multiply 3.7 pJ; shifts only with --energy-shift). The counts are count_ops.py's
(addernet_jax/opcount.py): --counts total (every counted layer with biases and BatchNorm) or
paper (conv/adder/FC multiply-accumulates only, the paper's #Mul / #Add convention).
"""

from __future__ import annotations

import sys

from addernet_jax.cli.common import UsageError, make_parser, run_main
from addernet_jax.figures import plot_ops
from addernet_jax.figures.ops import COUNT_CONVENTIONS
from addernet_jax.figures.render import DEFAULT_DPI, FigureInputError, check_output
from addernet_jax.layers import EnergyTable, layer_kinds
from addernet_jax.models import get_model_info, list_models
from addernet_jax.opcount import compare_variants

PROGRAM = "plot_ops.py"
EPILOG = "exit status: 0 done, 2 usage error (a bad flag, model, variant or output path)"


def _energy(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(value)
    return number


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--variants", default="adder,cnn",
                        help="comma-separated layer kinds, or 'all' (default adder,cnn; kinds: "
                        f"{', '.join(layer_kinds())})")
    parser.add_flag("--num-classes", type=int, help="default: the model's dataset")
    parser.add_flag("--input-size", type=int, help="image height = width (default: dataset)")
    for op, default in (("add", EnergyTable.add_pj), ("mul", EnergyTable.mul_pj)):
        parser.add_flag(f"--energy-{op}", type=_energy, default=default,
                        help=f"pJ per {op} (default {default})")
    parser.add_flag("--energy-shift", type=_energy, default=None,
                    help="pJ per shift (default: shifts are counted but not priced)")
    parser.add_argument("--counts", choices=COUNT_CONVENTIONS, default="total",
                        help="total (default: all layers, biases, BatchNorm) or paper")
    parser.add_argument("--output", required=True, help="the .png file to write")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                        help=f"pixels per inch (default {DEFAULT_DPI}; 11 x 4.5 inches)")
    args = parser.parse_args(argv)
    args.variants = (layer_kinds() if args.variants == "all"
                     else tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    unknown = [v for v in args.variants if v not in layer_kinds()]
    if unknown or not args.variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(layer_kinds())} "
                     "or 'all'")
    try:
        get_model_info(args.model)
    except ValueError as error:  # the registry's message lists the names
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    """Counts the model's variants and writes the chart; exit 2 on bad flags."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    table = EnergyTable(args.energy_add, args.energy_mul,
                        EnergyTable.source if (args.energy_add, args.energy_mul) ==
                        (EnergyTable.add_pj, EnergyTable.mul_pj) else "user-given")

    def run() -> int:
        try:
            check_output(args.output)
            counts = compare_variants(args.model, args.variants, num_classes=args.num_classes,
                                      input_size=args.input_size)
            path = plot_ops(args.model, counts, args.output, table=table,
                            shift_pj=args.energy_shift, convention=args.counts, dpi=args.dpi)
        except FigureInputError as e:
            raise UsageError(str(e)) from e
        print(f"wrote {path}")
        return 0

    return run_main(PROGRAM, run, args.debug)
