"""plot_features.py: the paper's Figure 1, 2-D test features of LeNet++ models side by side.

    python plot_features.py --workdir runs/mnist_lenetpp_adder --workdir runs/mnist_lenetpp_cnn \
        --local-path ../shared/data/mnist --output docs/features.png

Each --workdir (a training workdir: its best checkpoint; or a model checkpoint) holds a model
with a 2-D feature layer (`lenetpp`, configs/mnist_lenetpp.py). Its features of the split's
images become one panel, points coloured by digit, titled with the model's top-1 accuracy on
those images. Per class, the command prints the cluster radius (median distance to the class
centre), the centre's norm and the angular spread of the features about the origin (--json for
all of it as one JSON object).
"""

from __future__ import annotations

import json
import sys

from addernet_jax import data
from addernet_jax.cli.common import UsageError, make_parser, run_main
from addernet_jax.data.datasets import ORIGINS
from addernet_jax.figures import class_statistics, extract_features, plot_features
from addernet_jax.figures.features import check_feature_model, variant_title
from addernet_jax.figures.render import DEFAULT_DPI, FigureInputError, check_output
from addernet_jax.loading import describe_checkpoint, load_checkpoint
from addernet_jax.ops import IMPLEMENTATIONS
from addernet_jax.tasks.classification import check_model_fits_dataset, evaluation_set

PROGRAM = "plot_features.py"
EPILOG = ("exit status: 0 done, 2 usage error (a bad flag or path, a model without a 2-D "
          "feature layer), 3 failed run (a damaged checkpoint, an I/O error)")


def parse_flags(argv=None):
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--workdir", action="append", required=True,
                        help="a training workdir or model checkpoint (repeat: one panel each)")
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--split", default="test", help="the split to embed (default test)")
    parser.add_argument("--source", choices=ORIGINS, default=None,
                        help="tfds (default), or local files; --local-path implies local")
    parser.add_flag("--local-path", default=None, help="the dataset's local files (MNIST IDX)")
    parser.add_flag("--data-dir", default=None, help="tfds data directory")
    parser.add_flag("--batch-size", type=int, default=500, help="evaluation batch (default 500)")
    parser.add_flag("--num-images", type=int, default=None,
                    help="embed only the first N images of the split (default: all)")
    parser.add_argument("--impl", default="auto", choices=["auto", *IMPLEMENTATIONS],
                        help="adder2d implementation")
    parser.add_argument("--output", required=True, help="the .png file to write")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                        help=f"pixels per inch (default {DEFAULT_DPI}; 6 x 5.5 in per panel)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    args.source = args.source or ("local" if args.local_path else "tfds")
    for flag in ("batch_size", "num_images"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    return args


def feature_set(args, path: str):
    """The features of the model in `path` on the split, with its accuracy."""
    ref = describe_checkpoint(path)
    check_model_fits_dataset(ref.spec, args.dataset, f"{path}")
    loaded = load_checkpoint(ref, impl=args.impl)
    title = variant_title(loaded.name, loaded.variant)
    check_feature_model(loaded.model, f"{path} ({title})")  # before reading any data
    eval_data, _ = evaluation_set(args.dataset, split=args.split, source=args.source,
                                  local_path=args.local_path, data_dir=args.data_dir,
                                  batch_size=args.batch_size, local_flag="--local-path")
    return extract_features(loaded.model, eval_data.loader, title, limit=args.num_images,
                            split=args.split)


def format_statistics(title: str, accuracy: float, rows: list[dict]) -> str:
    """A per-class table: count, |centre|, radius, radius/|centre|, angular and norm spread."""
    lines = [f"{title}: top-1 {100 * accuracy:.2f}%",
             "class  count  |centre|   radius  radius/|centre|  angle sd (deg)  norm sd/mean"]
    lines += [f"{r['class']:>5} {r['count']:>6} {r['centre_norm']:>9.3g} {r['radius']:>8.3g} "
              f"{r['relative_radius']:>16.3f} {r['angular_spread_deg']:>15.1f} "
              f"{r['norm_spread']:>13.3f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Embeds the split with every model, writes the PNG, prints the per-class statistics."""
    args = parse_flags(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        try:
            check_output(args.output)
            sets = [feature_set(args, path) for path in args.workdir]
            path = plot_features(sets, args.output, dpi=args.dpi)
        except FigureInputError as e:
            raise UsageError(str(e)) from e
        models = [{"checkpoint": workdir, "title": s.title, "accuracy": s.accuracy,
                   "classes": class_statistics(s.features, s.labels)}
                  for workdir, s in zip(args.workdir, sets)]
        if args.json:
            print(json.dumps({"output": str(path), "models": models}))
        else:
            for model in models:
                print(f"{model['checkpoint']}: "
                      + format_statistics(model["title"], model["accuracy"], model["classes"])
                      + "\n")
            print(f"wrote {path}")
        return 0

    return run_main(PROGRAM, run, args.debug)
