"""evaluate.py: evaluate a checkpoint of any kind on a whole dataset split, on every device.

    python evaluate.py --checkpoint ckpt/resnet20 --dataset cifar10 \
        --local-path ../shared/data/cifar10-jpeg
    python evaluate.py --checkpoint runs/mnist_lenet5 --dataset mnist --json   # a workdir
    python evaluate.py --checkpoint ResNet20-AdderNet.pth --model resnet20 --dataset cifar10
    python evaluate.py --checkpoint runs/pkkd --state-key teacher --dataset cifar10 ...
    python evaluate.py --checkpoint runs/sr_vdsr_x2 --local-path ../shared/data/sr-benchmark \
        --sets Set5,Set14 --output-dir out/sr --save-images                 # an SR model

`--checkpoint` is a model checkpoint (convert_torch_weights.py), a training workdir (its best
checkpoint by the task's metric, else its latest; read-only, so a run may be training in it)
or a PyTorch .pth file with --model. Classifiers print top-1, top-5, loss and images/s.
Super-resolution models (the checkpoint says which) print the SR table (PSNR/SSIM on Y per set,
bicubic beside it) for the benchmark sets under --local-path at the checkpoint's scale; with
--output-dir they write a side-by-side PNG per set (bicubic | ours | HR), and with
--save-images every super-resolved image.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax

from addernet_jax import data
from addernet_jax.cli.common import UsageError, make_parser, run_main
from addernet_jax.data.datasets import ORIGINS
from addernet_jax.layers import layer_kinds
from addernet_jax.loading import CheckpointRef, describe_checkpoint, load_checkpoint
from addernet_jax.models import get_model_info, list_models, model_spec
from addernet_jax.ops import IMPLEMENTATIONS
from addernet_jax.runtime import parallel
from addernet_jax.tasks import Classification, evaluate_set
from addernet_jax.tasks.classification import check_model_fits_dataset, evaluation_set
from addernet_jax.tasks.sr_evaluation import evaluate_sr_set, format_table, write_outputs
from addernet_jax.training.metrics import progress

PROGRAM = "evaluate.py"
EPILOG = ("exit status: 0 done, 2 usage error (a bad flag, name or path), 3 failed run "
          "(a damaged or unusable checkpoint, an I/O error)")


def build_parser():
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], EPILOG)
    parser.add_argument("--checkpoint", required=True,
                        help="model checkpoint dir, training workdir, or .pth file (with --model)")
    parser.add_argument("--dataset", choices=sorted(data.DATASETS),
                        help="the classification dataset (required for classifiers)")
    parser.add_argument("--split", default="test", help="test (ImageNet: validation) or train")
    parser.add_argument("--source", choices=ORIGINS, default=None,
                        help="tfds (default), or local files; --local-path implies local")
    parser.add_flag("--local-path", default=None,
                    help="MNIST IDX files, CIFAR python batches, an ImageFolder root (train/, "
                    "test/ or val/) or one split's folder of class folders; SR models: the "
                    "folder of benchmark sets (<set>/HR, <set>/LR_bicubic/X<scale>)")
    parser.add_flag("--data-dir", default=None, help="tfds data directory")
    parser.add_flag("--batch-size", type=int, default=None,
                    help="global batch (default 100), at most the split's size; padded up to "
                    "a multiple of the devices, padding not counted; SR models: image tiles "
                    "per forward pass (default 8)")
    parser.add_argument("--impl", default="auto", choices=["auto", *IMPLEMENTATIONS],
                        help="adder2d implementation")
    parser.add_flag("--image-size", type=int, default=0,
                    help="ImageNet crop size (default 0: the official 256 -> 224)")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="the model of a .pth checkpoint")
    parser.add_argument("--variant", default="adder", choices=layer_kinds(),
                        help="the variant of a .pth checkpoint")
    parser.add_flag("--state-key", default="model",
                    help="which model of a training workdir: 'model' (the exported one, "
                    "default) or another model of its train state, e.g. 'teacher'")
    parser.add_flag("--allow-module-class", action="append", default=[], metavar="MODULE.CLASS",
                    help="trust this nn.Module class in a .pth file")
    parser.add_argument("--sets", default="Set5,Set14",
                        help="SR models: comma-separated benchmark sets under --local-path")
    parser.add_flag("--tile-size", type=int, default=96,
                    help="SR models: LR tile core (default 96; 0: whole images); tiles overlap "
                    "by the model's receptive radius, so the numbers do not depend on it")
    parser.add_flag("--output-dir", default=None,
                    help="SR models: write <set>_x<s>_comparison.png (bicubic | ours | HR) here")
    parser.add_flag("--save-images", action="store_true",
                    help="SR models: also write every super-resolved image to --output-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_flag("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_flags(argv=None):
    args = build_parser().parse_args(argv)
    args.source = args.source or ("local" if args.local_path else "tfds")
    return args


def describe(args) -> CheckpointRef:
    """The checkpoint's kind and model spec, checked against the dataset before any weights or
    data are read."""
    num_classes = data.dataset_info(args.dataset).num_classes
    pth_spec = (model_spec(args.model, args.variant, num_classes=num_classes)
                if args.model else None)
    ref = describe_checkpoint(args.checkpoint, key=args.state_key, pth_spec=pth_spec)
    if args.model and args.model != ref.spec["model"]:
        raise UsageError(f"{args.checkpoint} holds a {ref.spec['model']}, not a {args.model}")
    where = (f"training workdir {args.checkpoint} (step {ref.step})"
             if ref.kind == "training workdir" else f"checkpoint {args.checkpoint}")
    check_model_fits_dataset(ref.spec, args.dataset, where)
    return ref


def evaluate_classifier(args) -> dict[str, Any]:
    """Top-1 / top-5 / loss of the checkpoint over the split, with what was evaluated."""
    if args.dataset is None:
        raise UsageError("--dataset is required for a classifier")
    args.batch_size = 100 if args.batch_size is None else args.batch_size
    if args.batch_size < 1:
        raise UsageError(f"batch size must be positive, got {args.batch_size}")
    ref = describe(args)
    mesh = parallel.create_mesh()
    loaded = load_checkpoint(ref, impl=args.impl, mesh=mesh,
                             extra_module_classes=args.allow_module_class)
    eval_data, batch_size = evaluation_set(
        args.dataset, split=args.split, source=args.source, local_path=args.local_path,
        data_dir=args.data_dir, batch_size=args.batch_size, image_size=args.image_size,
        local_flag="--local-path")
    def bar(total: int):
        return progress(total=total, description=f"{args.dataset}/{args.split}",
                        enabled=not args.no_progress)

    task = Classification(None)
    metrics = evaluate_set(task, {"model": loaded.model}, eval_data, mesh, args.split,
                           progress=bar)
    return {**metrics, "checkpoint": str(args.checkpoint), "kind": loaded.kind,
            "step": loaded.step, "model": loaded.spec["model"], "variant": loaded.spec["variant"],
            "num_classes": loaded.spec["num_classes"], "dataset": args.dataset,
            "split": args.split, "batch_size": batch_size, "devices": jax.device_count(),
            "impl": args.impl}


def format_results(results: dict[str, Any]) -> str:
    """Three human-readable lines: what was evaluated, on what, and the numbers."""
    step = f", step {results['step']}" if results["step"] is not None else ""
    devices = results["devices"]
    return (
        f"{results['model']} ({results['variant']}, {results['num_classes']} classes) from "
        f"{results['checkpoint']} [{results['kind']}{step}]\n"
        f"{results['dataset']} {results['split']}: {results['count']} images, batch "
        f"{results['batch_size']} over {devices} device{'s' if devices != 1 else ''}\n"
        f"top-1 {100 * results['top1']:.2f}%  top-5 {100 * results['top5']:.2f}%  "
        f"loss {results['loss']:.4f}  {results['images_per_sec']:.0f} images/s")


def checkpoint_task(args) -> str:
    """The kind of model the checkpoint holds ('classification', 'super_resolution'), read
    from --model or the checkpoint's description (a .pth file without --model: classification,
    whose checks then ask for --model)."""
    if args.model:
        return get_model_info(args.model).task
    if Path(args.checkpoint).is_file():
        return "classification"
    ref = describe_checkpoint(args.checkpoint, key=args.state_key)
    return get_model_info(ref.spec["model"]).task


def evaluate_super_resolution(args) -> dict[str, Any]:
    """The SR table's numbers for every set of --sets, and the written PNGs."""
    if not args.local_path:
        raise UsageError("an SR model needs --local-path: the folder of benchmark sets "
                         "(<set>/HR, <set>/LR_bicubic/X<scale>)")
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    batch_size = 8 if args.batch_size is None else args.batch_size
    if not sets or batch_size < 1 or args.tile_size < 0:
        raise UsageError(f"need --sets names, --batch-size >= 1 and --tile-size >= 0, got "
                         f"{args.sets!r}, {batch_size}, {args.tile_size}")
    ref = describe_checkpoint(args.checkpoint, key=args.state_key)
    mesh = parallel.create_mesh()
    loaded = load_checkpoint(ref, impl=args.impl, mesh=mesh)
    scale = loaded.spec["scale"]
    start = time.perf_counter()
    results = [evaluate_sr_set(loaded.model, args.local_path, name, scale, tile=args.tile_size,
                               batch_size=batch_size, mesh=mesh) for name in sets]
    seconds = time.perf_counter() - start
    written = []
    if args.output_dir and jax.process_index() == 0:
        for result in results:
            written += write_outputs(result, args.output_dir, args.save_images)
    return {"checkpoint": str(args.checkpoint), "kind": loaded.kind, "step": loaded.step,
            "model": loaded.spec["model"], "variant": loaded.spec["variant"], "scale": scale,
            "sets": [r.summary() for r in results], "seconds": seconds,
            "table": format_table(loaded.spec["model"], loaded.spec["variant"], results),
            "written": [str(path) for path in written], "tile_size": args.tile_size,
            "devices": jax.device_count(), "impl": args.impl}


def format_sr_results(results: dict[str, Any]) -> str:
    """What was evaluated, the SR table, the time and the written files."""
    step = f", step {results['step']}" if results["step"] is not None else ""
    lines = [f"{results['model']} ({results['variant']}, x{results['scale']}) from "
             f"{results['checkpoint']} [{results['kind']}{step}]; PSNR/SSIM on Y, "
             f"{results['scale']}-pixel border crop", results["table"],
             f"{sum(s['images'] for s in results['sets'])} images in "
             f"{results['seconds']:.1f} s (tiles of {results['tile_size'] or 'whole'} LR pixels)"]
    if results["written"]:
        lines.append(f"wrote {len(results['written'])} PNG files, e.g. {results['written'][0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_flags(argv)

    def run() -> int:
        if checkpoint_task(args) == "super_resolution":
            results = evaluate_super_resolution(args)
            print(json.dumps(results) if args.json else format_sr_results(results))
            return 0
        results = evaluate_classifier(args)
        print(json.dumps(results) if args.json else format_results(results))
        return 0

    return run_main(PROGRAM, run, args.debug)
