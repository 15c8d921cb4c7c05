"""Speed and memory of every adder layer shape of ResNet-20 (CIFAR) and of ResNet-50 (ImageNet).

For each layer shape it times, in the same run:
  - `lax.conv_general_dilated` on the same shape (the multiplicative baseline),
  - each `adder2d` implementation (forward, and forward + backward with both gradients),
  - the official PyTorch formulation (unfold, broadcast, abs, sum; hand-written backward as in
    huawei-noah/AdderNet `adder.py`; see official_adder_torch.py) when torch is installed,
and reports ratios against the convolution and against the official formulation, plus the
working memory: XLA's buffer assignment (outputs + temporaries) for JAX, the peak RSS growth of
a fresh process for PyTorch. Prints a table and writes JSON.

    python benchmarks/adder_layer.py                       # ResNet-20 and ResNet-50 shapes
    python benchmarks/adder_layer.py --suite resnet20 --repeats 10 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from timing import best_seconds, cpu_description, cpu_line

from addernet_jax.ops import IMPLEMENTATIONS, adder2d


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One adder layer: NHWC input, C_out, square kernel, stride, padding; `count` is how many
    layers of the network have this shape."""

    name: str
    batch: int
    hw: int
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    count: int = 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def official_intermediate_bytes(self) -> int:
        """Size of the official (C_out, C_in*k*k, N*H_out*W_out) float32 difference tensor."""
        return 4 * self.c_out * self.c_in * self.kernel**2 * self.batch * self.out_hw**2


def resnet20_shapes(batch: int = 64) -> list[LayerShape]:
    """Every adder layer of the official ResNet-20 on 32x32 CIFAR, grouped by shape."""
    return [
        LayerShape("r20.s1.3x3", batch, 32, 16, 16, 3, 1, 1, count=6),
        LayerShape("r20.s2.3x3/2", batch, 32, 16, 32, 3, 2, 1),
        LayerShape("r20.s2.down1x1/2", batch, 32, 16, 32, 1, 2, 0),
        LayerShape("r20.s2.3x3", batch, 16, 32, 32, 3, 1, 1, count=5),
        LayerShape("r20.s3.3x3/2", batch, 16, 32, 64, 3, 2, 1),
        LayerShape("r20.s3.down1x1/2", batch, 16, 32, 64, 1, 2, 0),
        LayerShape("r20.s3.3x3", batch, 8, 64, 64, 3, 1, 1, count=5),
    ]


def resnet50_shapes(batch: int = 8) -> list[LayerShape]:
    """A selection of ResNet-50 (ImageNet, 224x224) adder layers: every 3x3 stage and typical
    1x1 bottleneck layers."""
    return [
        LayerShape("r50.l1.3x3", batch, 56, 64, 64, 3, 1, 1, count=3),
        LayerShape("r50.l2.3x3/2", batch, 56, 128, 128, 3, 2, 1),
        LayerShape("r50.l2.3x3", batch, 28, 128, 128, 3, 1, 1, count=3),
        LayerShape("r50.l3.3x3", batch, 14, 256, 256, 3, 1, 1, count=5),
        LayerShape("r50.l4.3x3", batch, 7, 512, 512, 3, 1, 1, count=2),
        LayerShape("r50.l1.1x1.expand", batch, 56, 64, 256, 1, 1, 0, count=3),
        LayerShape("r50.l1.1x1.reduce", batch, 56, 256, 64, 1, 1, 0, count=2),
        LayerShape("r50.l3.1x1.reduce", batch, 14, 1024, 256, 1, 1, 0, count=5),
    ]


SUITES = {"resnet20": resnet20_shapes, "resnet50": resnet50_shapes}


def time_call(fn, repeats: int) -> float:
    """Best wall time in ms of `fn()` over `repeats` runs (see timing.best_seconds)."""
    return 1e3 * best_seconds(fn, repeats)


def make_operands(shape: LayerShape, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(shape.batch, shape.hw, shape.hw, shape.c_in)).astype(np.float32)
    w = rng.normal(size=(shape.kernel, shape.kernel, shape.c_in, shape.c_out)).astype(np.float32)
    g = rng.normal(size=(shape.batch, shape.out_hw, shape.out_hw, shape.c_out)).astype(np.float32)
    return x, w, g


def jax_layer_fn(method: str, shape: LayerShape):
    """The layer as a function of (x, w): 'conv' or an adder2d implementation name."""
    if method == "conv":
        return lambda x, w: lax.conv_general_dilated(
            x, w, (shape.stride,) * 2, [(shape.padding,) * 2] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return lambda x, w: adder2d(x, w, stride=shape.stride, padding=shape.padding, impl=method)


def measure_jax(method: str, shape: LayerShape, repeats: int) -> dict:
    """Forward and forward+backward times (ms) and XLA working memory (MiB) of one method."""
    layer = jax_layer_fn(method, shape)
    forward = jax.jit(layer)

    @jax.jit
    def forward_backward(x, w, g):
        y, pullback = jax.vjp(layer, x, w)
        return y, pullback(g)

    x, w, g = (jnp.asarray(a) for a in make_operands(shape))
    result = {
        "fwd_ms": time_call(lambda: forward(x, w).block_until_ready(), repeats),
        "fwd_bwd_ms": time_call(lambda: jax.block_until_ready(forward_backward(x, w, g)),
                                repeats),
    }
    for key, compiled in (("fwd", forward.lower(x, w).compile()),
                          ("fwd_bwd", forward_backward.lower(x, w, g).compile())):
        stats = compiled.memory_analysis()
        result[f"{key}_mib"] = (stats.output_size_in_bytes + stats.temp_size_in_bytes) / 2**20
    return result


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure_torch(shape: LayerShape, repeats: int) -> dict:
    """Times the official formulation (benchmarks/official_adder_torch.py) in this process."""
    from official_adder_torch import official_operands, official_step

    x, w, g = official_operands(*make_operands(shape))
    args = (x, w, g, shape.stride, shape.padding)
    return {
        "fwd_ms": time_call(lambda: official_step(*args, backward=False), repeats),
        "fwd_bwd_ms": time_call(lambda: official_step(*args, backward=True), repeats),
    }


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def torch_peak_child(shape_json: str, backward: bool) -> None:
    """Run in a fresh process: peak RSS growth of one official step beyond its inputs."""
    from official_adder_torch import official_operands, official_step

    shape = LayerShape(**json.loads(shape_json))
    x, w, g = official_operands(*make_operands(shape))
    before = rss_mib()
    official_step(x, w, g, shape.stride, shape.padding, backward=backward)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mib": peak - before}))


def measure_torch_peak(shape: LayerShape, backward: bool) -> float:
    """Runs `torch_peak_child` in a fresh interpreter (so the high-water mark is this step's)."""
    out = subprocess.run(
        [sys.executable, __file__, "--torch-peak-child", json.dumps(dataclasses.asdict(shape)),
         "--backward" if backward else "--forward-only"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def benchmark_shape(shape: LayerShape, methods, args) -> list[dict]:
    """Every method on one shape, with ratios to the convolution and to the official code."""
    rows = [{"method": m, **measure_jax(m, shape, args.repeats)} for m in ["conv", *methods]]
    official_gib = 3 * shape.official_intermediate_bytes / 2**30  # diff, abs, grad products
    if args.torch and official_gib <= args.torch_max_gib:
        row = {"method": "official-torch", **measure_torch(shape, args.repeats)}
        row["fwd_mib"] = measure_torch_peak(shape, backward=False)
        row["fwd_bwd_mib"] = measure_torch_peak(shape, backward=True)
        rows.append(row)
    elif args.torch:
        rows.append({"method": "official-torch",
                     "skipped": f"needs ~{official_gib:.0f} GiB (> --torch-max-gib)"})
    conv = rows[0]
    official = next((r for r in rows if r["method"] == "official-torch" and "fwd_ms" in r), None)
    for row in rows:
        row.update(layer=shape.name, count=shape.count, shape=dataclasses.asdict(shape))
        if "fwd_ms" not in row:
            continue
        row["fwd_vs_conv"] = row["fwd_ms"] / conv["fwd_ms"]
        row["fwd_bwd_vs_conv"] = row["fwd_bwd_ms"] / conv["fwd_bwd_ms"]
        if official:
            row["fwd_bwd_speedup_vs_official"] = official["fwd_bwd_ms"] / row["fwd_bwd_ms"]
    return rows


def network_totals(rows: list[dict], suite: str) -> list[dict]:
    """Per method, the sum over all layers of the network (time x number of such layers)."""
    by_method: dict[str, dict] = {}
    layers = {r["layer"] for r in rows}
    for row in rows:
        if "fwd_ms" not in row:
            continue
        total = by_method.setdefault(row["method"], {"fwd_ms": 0.0, "fwd_bwd_ms": 0.0,
                                                      "layers": set()})
        total["fwd_ms"] += row["count"] * row["fwd_ms"]
        total["fwd_bwd_ms"] += row["count"] * row["fwd_bwd_ms"]
        total["layers"].add(row["layer"])
    conv = by_method["conv"]
    out = []
    for method, total in by_method.items():
        complete = total["layers"] == layers
        out.append({"suite": suite, "method": method, "complete": complete,
                    "fwd_ms": total["fwd_ms"], "fwd_bwd_ms": total["fwd_bwd_ms"],
                    "fwd_vs_conv": total["fwd_ms"] / conv["fwd_ms"],
                    "fwd_bwd_vs_conv": total["fwd_bwd_ms"] / conv["fwd_bwd_ms"]})
    return out


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], totals: list[dict]) -> None:
    header = (f"{'layer':20} {'n':>2} {'method':15} {'fwd ms':>9} {'x conv':>7} "
              f"{'fwd+bwd ms':>11} {'x conv':>7} {'MiB f+b':>9} {'official/this':>14}")
    print(cpu_line())
    print(header)
    print("-" * len(header))
    for row in rows:
        if "skipped" in row:
            print(f"{row['layer']:20} {row['count']:>2} {row['method']:15} skipped: "
                  f"{row['skipped']}")
            continue
        print(f"{row['layer']:20} {row['count']:>2} {row['method']:15} "
              f"{row['fwd_ms']:9.2f} {row['fwd_vs_conv']:7.2f} {row['fwd_bwd_ms']:11.2f} "
              f"{row['fwd_bwd_vs_conv']:7.2f} {fmt(row.get('fwd_bwd_mib'), '9.1f')} "
              f"{fmt(row.get('fwd_bwd_speedup_vs_official'), '14.1f')}")
    print()
    print(f"{'network total (sum over its layers)':44} {'fwd ms':>9} {'x conv':>7} "
          f"{'fwd+bwd ms':>11} {'x conv':>7}")
    for t in totals:
        label = f"{t['suite']} {t['method']}" + ("" if t["complete"] else " (some layers)")
        print(f"{label:44} {t['fwd_ms']:9.2f} {t['fwd_vs_conv']:7.2f} {t['fwd_bwd_ms']:11.2f} "
              f"{t['fwd_bwd_vs_conv']:7.2f}")


def environment() -> dict:
    info = {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor(),
            **cpu_description()}
    if torch_available():
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="resnet20,resnet50",
                        help=f"comma-separated, from {sorted(SUITES)}")
    parser.add_argument("--impls", default="shifted",
                        help=f"adder2d implementations, from {sorted(IMPLEMENTATIONS)}")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="skip the official PyTorch baseline")
    parser.add_argument("--torch-max-gib", type=float, default=6.0,
                        help="skip the official baseline where it would need more memory")
    parser.add_argument("--json", default="benchmarks/adder_layer.json")
    parser.add_argument("--torch-peak-child", help=argparse.SUPPRESS)
    parser.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forward-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for suite in args.suite.split(","):
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    args.impls = args.impls.split(",")
    for impl in args.impls:
        if impl not in IMPLEMENTATIONS:
            parser.error(f"unknown impl {impl!r}; choose from {sorted(IMPLEMENTATIONS)}")
    args.torch = args.torch and torch_available()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_peak_child:
        torch_peak_child(args.torch_peak_child, args.backward)
        return 0
    rows, totals = [], []
    for suite in args.suite.split(","):
        suite_rows = []
        for shape in SUITES[suite]():
            suite_rows += benchmark_shape(shape, args.impls, args)
            print(f"  measured {shape.name}", file=sys.stderr, flush=True)
        rows += suite_rows
        totals += network_totals(suite_rows, suite)
    print_table(rows, totals)
    report = {"environment": environment(), "rows": rows, "totals": totals}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1, default=lambda v: sorted(v) if isinstance(v, set) else v)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
