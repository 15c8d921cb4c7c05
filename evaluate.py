"""Evaluate a checkpoint: top-1, top-5 and images/s over a whole dataset split, on every device.

    python evaluate.py --checkpoint ckpt/resnet20 --dataset cifar10 \
        --source local --local-path ../shared/data/cifar10-jpeg
    python evaluate.py --checkpoint runs/mnist_lenet5 --dataset mnist --json   # a train.py workdir
    python evaluate.py --checkpoint ResNet20-AdderNet.pth --model resnet20 --dataset cifar10
    python evaluate.py --checkpoint ckpt/resnet50 --dataset imagenet2012 --batch-size 256

`--checkpoint` is a model checkpoint (convert_torch_weights.py), a training workdir (its best
checkpoint, else its latest) or a PyTorch .pth file with --model. Exit status 0, or 1 with one
line on stderr naming the problem.
"""

import argparse
import json
import sys

from addernet_jax.data import DATASETS
from addernet_jax.data.datasets import ORIGINS
from addernet_jax.evaluate_checkpoint import evaluate_checkpoint, format_results
from addernet_jax.models import list_models
from addernet_jax.models.common import VARIANTS


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="model checkpoint dir, training workdir, or .pth file (with --model)",
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--split", default="test", help="test (ImageNet: validation) or train")
    parser.add_argument(
        "--source",
        choices=ORIGINS,
        default=None,
        help="tfds (default), or local files; --local-path implies local",
    )
    parser.add_argument(
        "--local-path",
        default=None,
        help="MNIST IDX files, CIFAR python batches or an ImageFolder root",
    )
    parser.add_argument("--data-dir", default=None, help="tfds data directory")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="global batch (default 100); padded up to a multiple of the devices, padding not "
        "counted",
    )
    parser.add_argument("--impl", default="auto", help="adder2d implementation")
    parser.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="ImageNet crop size (default 0: the official 256 -> 224)",
    )
    parser.add_argument(
        "--model", default=None, choices=list_models(), help="the model of a .pth checkpoint"
    )
    parser.add_argument(
        "--variant",
        default="adder",
        choices=VARIANTS,
        help="the variant of a .pth checkpoint",
    )
    parser.add_argument(
        "--allow-module-class",
        action="append",
        default=[],
        metavar="MODULE.CLASS",
        help="trust this nn.Module class in a .pth file",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.source = args.source or ("local" if args.local_path else "tfds")
    return args


def main(argv=None) -> int:
    args = parse_flags(argv)
    try:
        results = evaluate_checkpoint(
            args.checkpoint,
            args.dataset,
            split=args.split,
            source=args.source,
            local_path=args.local_path,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            impl=args.impl,
            model=args.model,
            variant=args.variant,
            image_size=args.image_size,
            extra_module_classes=args.allow_module_class,
            show_progress=not args.no_progress,
        )
    except (ValueError, OSError) as err:  # expected problems: one line, no traceback
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(results) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
