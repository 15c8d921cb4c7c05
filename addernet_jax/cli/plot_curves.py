"""plot_curves.py: training curves of one or more workdirs as one PNG (runs overlaid).

    python plot_curves.py --workdir runs/quick_adder --workdir runs/quick_cnn \
        --output docs/curves.png
    python plot_curves.py --workdir runs/sr --metric psnr --metric ssim --output sr.png

Panels, left to right: the loss (train, and each evaluation set's), the metric (default: the
run's task's best metric, e.g. test top-1 beside train accuracy; --metric names any recorded
scalar instead, one panel each) and the learning rate, against the epoch (or the optimizer step
when a workdir does not say its steps per epoch). Colour by run, line style by split.
"""

from __future__ import annotations

import sys

from addernet_jax.cli.common import RunFailed, UsageError, make_parser, run_main
from addernet_jax.figures import plot_curves, read_run
from addernet_jax.figures.render import DEFAULT_DPI, DamagedInputError, FigureInputError

PROGRAM = "plot_curves.py"
EPILOG = ("exit status: 0 done, 2 usage error (a bad flag, a missing or empty workdir, a metric "
          "that is not recorded), 3 failed run (an unreadable metrics.jsonl, an I/O error)")


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--workdir", action="append", required=True,
                        help="a training workdir (repeat to overlay runs)")
    parser.add_argument("--label", action="append", default=[],
                        help="legend name of each --workdir, in order (default: folder names)")
    parser.add_argument("--metric", action="append", default=None,
                        help="a recorded scalar to plot, one panel each (repeatable; default: "
                        "the task's best metric)")
    parser.add_flag("--x-axis", choices=("auto", "epoch", "step"), default="auto",
                    help="auto (default): epochs when every run says its steps per epoch")
    parser.add_argument("--output", required=True, help="the .png file to write")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                        help=f"pixels per inch (default {DEFAULT_DPI}; 5 x 4 inches per panel)")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.workdir):
        parser.error(f"{len(args.label)} --label for {len(args.workdir)} --workdir")
    return args


def main(argv: list[str] | None = None) -> int:
    """Reads the workdirs and writes the PNG; exit 2 for bad input, 3 for a damaged file."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        labels = args.label or [None] * len(args.workdir)
        try:
            runs = [read_run(workdir, label) for workdir, label in zip(args.workdir, labels)]
            if not args.label and len({run.label for run in runs}) < len(runs):
                for run, workdir in zip(runs, args.workdir):  # same folder names: full paths
                    run.label = workdir
            path = plot_curves(runs, args.output, metrics=args.metric, x_axis=args.x_axis,
                               dpi=args.dpi)
        except FigureInputError as e:
            raise UsageError(str(e)) from e
        except DamagedInputError as e:
            raise RunFailed(str(e)) from e
        print(f"wrote {path}")
        return 0

    return run_main(PROGRAM, run, args.debug)
