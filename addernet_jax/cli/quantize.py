"""quantize.py: post-training quantisation of an AdderNet to integer adder layers.

    python quantize.py --checkpoint ckpt/resnet20 --output ckpt/resnet20_int8 \
        --dataset cifar10 --local-path ../shared/data/cifar10-jpeg
    python quantize.py --checkpoint runs/mnist_lenet5 --output ckpt/lenet5_int6 --bits 6 \
        --dataset mnist --local-path ../shared/data/mnist
    python evaluate.py --checkpoint ckpt/resnet20_int8 --dataset cifar10 --local-path ...

`--checkpoint` is any checkpoint evaluate.py reads (a model checkpoint, a training workdir, or a
.pth file with --model). Every adder layer gets one integer grid (--bits levels) shared by its
input and filters, calibrated on --calibration-images random training images to minimise the
error of the layer's BatchNorm output; that BatchNorm is folded into the integer sum. The first
convolution and the classifier stay float. The output is a model checkpoint whose
model_info.json holds the float model spec and the 'quantization' record; evaluate.py runs it
on the integer path (addernet_jax/quantize).
"""

from __future__ import annotations

import json
import sys
import time

from addernet_jax import data
from addernet_jax.cli.common import UsageError, make_parser, run_main
from addernet_jax.data.datasets import ORIGINS
from addernet_jax.layers import layer_kinds
from addernet_jax.loading import describe_checkpoint, load_checkpoint
from addernet_jax.models import get_model_info, list_models, model_spec
from addernet_jax.ops.integer import INT_IMPLEMENTATIONS
from addernet_jax.quantize import BIT_WIDTHS, calibration_images, quantize_model, save_quantized
from addernet_jax.runtime import parallel
from addernet_jax.tasks.classification import check_model_fits_dataset

PROGRAM = "quantize.py"
EPILOG = ("exit status: 0 done, 2 usage error (a bad flag, a bit width outside 4-8, a model "
          "without adder layers, an empty calibration set, a missing input or an existing "
          "output), 3 failed run (a damaged or unusable checkpoint, an I/O error)")


def build_parser():
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--checkpoint", required=True,
                        help="model checkpoint dir, training workdir, or .pth file (with --model)")
    parser.add_argument("--output", required=True, help="the model checkpoint dir to create")
    parser.add_argument("--bits", type=int, default=8, choices=BIT_WIDTHS,
                        help="bit width of the integer grids (default 8)")
    parser.add_argument("--dataset", required=True, choices=sorted(data.DATASETS),
                        help="the dataset the model was trained on (calibration images)")
    parser.add_argument("--source", choices=ORIGINS, default=None,
                        help="tfds (default), or local files; --local-path implies local")
    parser.add_flag("--local-path", default=None,
                    help="MNIST IDX files, CIFAR python batches or an ImageFolder root")
    parser.add_flag("--data-dir", default=None, help="tfds data directory")
    parser.add_flag("--calibration-images", type=int, default=256,
                    help="random training images to calibrate on (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration draw")
    parser.add_flag("--batch-size", type=int, default=64,
                    help="images per forward pass during calibration (default 64)")
    parser.add_argument("--impl", default="auto", choices=["auto", *INT_IMPLEMENTATIONS],
                        help="adder2d_int implementation used for calibration")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="the model of a .pth checkpoint")
    parser.add_argument("--variant", default="adder", choices=layer_kinds(),
                        help="the variant of a .pth checkpoint")
    parser.add_flag("--state-key", default="model",
                    help="which model of a training workdir (default 'model')")
    parser.add_flag("--allow-module-class", action="append", default=[], metavar="MODULE.CLASS",
                    help="trust this nn.Module class in a .pth file")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    return parser


def parse_flags(argv=None):
    args = build_parser().parse_args(argv)
    args.source = args.source or ("local" if args.local_path else "tfds")
    return args


def load_float_model(args):
    """The float model of --checkpoint, checked to fit --dataset and to be an AdderNet."""
    num_classes = data.dataset_info(args.dataset).num_classes
    pth_spec = (model_spec(args.model, args.variant, num_classes=num_classes)
                if args.model else None)
    ref = describe_checkpoint(args.checkpoint, key=args.state_key, pth_spec=pth_spec)
    if "quantization" in ref.info:
        raise UsageError(f"{args.checkpoint} is already quantised; quantise its float source")
    if get_model_info(ref.spec["model"]).task != "classification":
        raise UsageError(f"{args.checkpoint} holds a {ref.spec['model']}, not a classifier: "
                         "quantize.py calibrates classifiers only")
    if ref.spec["variant"] != "adder":
        raise UsageError(f"{args.checkpoint} holds a {ref.spec['model']} of variant "
                         f"'{ref.spec['variant']}': only AdderNets (variant 'adder') are "
                         "quantised")
    check_model_fits_dataset(ref.spec, args.dataset, f"checkpoint {args.checkpoint}")
    return load_checkpoint(ref, mesh=parallel.create_mesh(),
                           extra_module_classes=args.allow_module_class)


def quantize_checkpoint(args, log=print) -> dict:
    """Loads, calibrates, quantises and saves; returns the written model_info."""
    if args.batch_size < 1:
        raise UsageError(f"batch size must be positive, got {args.batch_size}")
    loaded = load_float_model(args)
    images = calibration_images(args.dataset, args.calibration_images, source=args.source,
                                local_path=args.local_path, data_dir=args.data_dir,
                                seed=args.seed, local_flag="--local-path")
    start = time.perf_counter()
    model, record = quantize_model(loaded.model, images, bits=args.bits, impl=args.impl,
                                   batch_size=args.batch_size, log=log)
    record["calibration"] = {"dataset": args.dataset, "split": "train", "seed": args.seed,
                             "seconds": round(time.perf_counter() - start, 1)}
    source = {"checkpoint": str(args.checkpoint), "kind": loaded.kind, "step": loaded.step}
    return save_quantized(args.output, model, loaded.spec, record, source)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_flags(argv)

    def run() -> int:
        info = quantize_checkpoint(args, log=(lambda line: None) if args.json else print)
        record = info["quantization"]
        if args.json:
            print(json.dumps(info))
        else:
            print(f"wrote {args.output}: {info['model']} with {len(record['layers'])} adder "
                  f"layers on {record['bits']}-bit grids, calibrated on "
                  f"{record['calibration_images']} {args.dataset} training images")
        return 0

    return run_main(PROGRAM, run, args.debug)
