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
from addernet_jax.cli.op_flags import add_op_flags, check_op_flags, energy_table
from addernet_jax.figures import plot_ops
from addernet_jax.figures.ops import COUNT_CONVENTIONS
from addernet_jax.figures.render import DEFAULT_DPI, FigureInputError, check_output
from addernet_jax.opcount import compare_variants

PROGRAM = "plot_ops.py"
EPILOG = "exit status: 0 done, 2 usage error (a bad flag, model, variant or output path)"


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    add_op_flags(parser)
    parser.add_argument("--counts", choices=COUNT_CONVENTIONS, default="total",
                        help="total (default: all layers, biases, BatchNorm) or paper")
    parser.add_argument("--output", required=True, help="the .png file to write")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                        help=f"pixels per inch (default {DEFAULT_DPI}; 11 x 4.5 inches)")
    return check_op_flags(parser, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Counts the model's variants and writes the chart; exit 2 on bad flags."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    table = energy_table(args)

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
