"""Throughput of the input pipeline alone (no model): images/s per pipeline and worker count.

Pipelines, on the real data in ../shared (or $ADDERNET_SHARED):
  - cifar10-jpeg train: ImageFolder JPEG decode + RandomCrop(32, 4) + flip + Normalize, batch 256,
    over the 10,000-image class-balanced subset (as the CIFAR experiments use it);
  - mnist-idx train: in-memory IDX arrays + Normalize, batch 256.
Each is timed with `worker_count` 0 (decoding in this process, with `read_threads` threads) and
with grain worker processes; worker start-up is excluded by warm-up batches. Prints a table and
writes JSON.

    python benchmarks/input_pipeline.py                              # about a minute
    python benchmarks/input_pipeline.py --workers 0,4 --batches 100 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

from timing import cpu_description, cpu_line

from addernet_jax.data import get_source, get_transforms, make_train_loader

SHARED = Path(os.environ.get("ADDERNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PIPELINES = {
    # name: (dataset, local path under shared/, subset)
    "cifar10-jpeg": ("cifar10", "data/cifar10-jpeg", 10000),
    "mnist-idx": ("mnist", "data/mnist", None),
}


def measure(name: str, *, workers: int, batches: int, warmup: int, batch_size: int) -> dict:
    """Images/s of `batches` training batches of pipeline `name`, after `warmup` batches."""
    dataset, path, subset = PIPELINES[name]
    source = get_source(dataset, "train", source="local", local_path=SHARED / path)
    loader = make_train_loader(
        source,
        global_batch_size=batch_size,
        seed=0,
        subset=subset,
        transforms=get_transforms(dataset, train=True),
        worker_count=workers,
    )
    it = iter(loader)
    try:
        for _ in itertools.islice(it, warmup):
            pass
        start = time.perf_counter()
        for _ in itertools.islice(it, batches):
            pass
        seconds = time.perf_counter() - start
    finally:
        if workers:
            it.close()
    return {
        "pipeline": name,
        "workers": workers,
        "batch_size": batch_size,
        "batches": batches,
        "seconds": seconds,
        "images_per_s": batches * batch_size / seconds,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", default="benchmarks/input_pipeline.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    print(cpu_line())
    print(f"{'pipeline':<14} {'workers':>7} {'batches':>7} {'seconds':>8} {'images/s':>10}")
    for name in args.pipelines.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            row = measure(
                name,
                workers=workers,
                batches=args.batches,
                warmup=args.warmup,
                batch_size=args.batch_size,
            )
            rows.append(row)
            print(
                f"{name:<14} {workers:>7} {row['batches']:>7} {row['seconds']:>8.2f} "
                f"{row['images_per_s']:>10.0f}",
                flush=True,
            )
    report = {"cpu_count": os.cpu_count(), "platform": platform.platform(), **cpu_description(),
              "runs": rows}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
