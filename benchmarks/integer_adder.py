"""Speed of the int8 adder layer against the float32 adder and float32 convolution, forward only.

For every adder layer shape of ResNet-20 (CIFAR, batch 64; the shape list of adder_layer.py) and
of LeNet-5 (MNIST, batch 64), it times in the same run, best of N after a warm-up, visiting the
methods in turn so that a busy machine disturbs them alike:
  - f32-conv    `lax.conv_general_dilated` in float32 (the multiplicative baseline),
  - f32-adder   `adder2d(impl='shifted')` in float32,
  - int8-adder  `adder2d_int` (impl='auto'), int8 operands, exact int32 sum,
  - int8-conv   `lax.conv_general_dilated` on int8 operands with an int32 result
                (preferred_element_type); the table says which element types XLA's compiled
                convolution really uses (int8 kept, e.g. through YNNPACK, or widened to int32),
and checks that the int8 adder equals minus the float adder on the same integer-valued data.
Prints the CPU model and XLA:CPU's vector width, a table with ratios, the sum over each network's
layers (time x number of layers of that shape), and writes JSON.

    python benchmarks/integer_adder.py                      # ResNet-20 and LeNet-5
    python benchmarks/integer_adder.py --suite resnet20 --repeats 30 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from adder_layer import LayerShape, environment, resnet20_shapes
from jax import lax

from addernet_jax.ops import adder2d
from addernet_jax.ops.integer import adder2d_int

METHODS = ("f32-conv", "f32-adder", "int8-adder", "int8-conv")


def lenet5_shapes(batch: int = 64) -> list[LayerShape]:
    """The adder layers of LeNet-5-BN (models/lenet.py): conv2 and the two adder FC layers."""
    return [
        LayerShape("lenet.conv2", batch, 14, 6, 16, 5, 1, 0),
        LayerShape("lenet.fc1", batch, 1, 400, 120, 1, 1, 0),
        LayerShape("lenet.fc2", batch, 1, 120, 84, 1, 1, 0),
    ]


SUITES = {"resnet20": resnet20_shapes, "lenet5": lenet5_shapes}


def cpu_description() -> dict:
    """CPU model, its AVX-512 features and the vector width XLA:CPU was asked to use."""
    model, flags = platform_cpu_model(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = re.search(r"xla_cpu_prefer_vector_width=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return {"cpu_model": model, "cores": os.cpu_count(),
            "avx512": sorted(f for f in flags if f.startswith("avx512")),
            "vector_width_bits": int(found.group(1)) if found else 256}


def platform_cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo, or 'unknown'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def make_operands(shape: LayerShape, seed: int = 0):
    """int8 input and filters with their float32 copies (same integer values)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(shape.batch, shape.hw, shape.hw, shape.c_in), dtype=np.int8)
    w = rng.integers(-128, 128, size=(shape.kernel, shape.kernel, shape.c_in, shape.c_out),
                     dtype=np.int8)
    return jnp.asarray(x), jnp.asarray(w), jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)


def layer_calls(shape: LayerShape) -> dict:
    """method -> (jitted function, operands) for one layer shape."""
    x_q, w_q, x, w = make_operands(shape)
    strides, pads = (shape.stride,) * 2, [(shape.padding,) * 2] * 2
    dims = ("NHWC", "HWIO", "NHWC")
    return {
        "f32-conv": (jax.jit(lambda x, w: lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=dims)), (x, w)),
        "f32-adder": (jax.jit(lambda x, w: adder2d(
            x, w, stride=shape.stride, padding=shape.padding, impl="shifted")), (x, w)),
        "int8-adder": (jax.jit(lambda x, w: adder2d_int(
            x, w, stride=shape.stride, padding=shape.padding)), (x_q, w_q)),
        "int8-conv": (jax.jit(lambda x, w: lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=dims,
            preferred_element_type=jnp.int32)), (x_q, w_q)),
    }


def convolution_types(hlo_text: str) -> str:
    """Element types of the operands and result of the compiled convolution, e.g. 's8,s8->s32
    (YNNPACK)': whether XLA kept the int8 convolution integer and narrow."""
    for block in hlo_text.split("\n\n"):
        conv = re.search(r"= (\w+)\[[^\]]*\]\S* convolution\(%([\w.-]+), %([\w.-]+)\)", block)
        if not conv:
            continue
        types = dict(re.findall(r"%([\w.-]+) = (\w+)\[", block))
        kinds = f"{types.get(conv.group(2), '?')},{types.get(conv.group(3), '?')}->{conv.group(1)}"
        return kinds + (" (YNNPACK)" if "__ynn_fusion" in hlo_text else "")
    return "no convolution op"


def best_times(calls: dict, repeats: int) -> dict:
    """Best wall time (ms) of each call over `repeats` rounds that visit every method in turn."""
    best = dict.fromkeys(calls, float("inf"))
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))  # compile and warm up
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start))
    return best


def measure_shape(shape: LayerShape, repeats: int) -> dict:
    """Times, ratios and checks of the four methods on one layer shape."""
    calls = layer_calls(shape)
    ms = best_times(calls, repeats)
    int_adder, f32_adder = (np.asarray(calls[m][0](*calls[m][1])) for m in
                            ("int8-adder", "f32-adder"))
    int_conv, int_conv_args = calls["int8-conv"]
    return {
        "layer": shape.name, "count": shape.count, "shape": dataclasses.asdict(shape),
        "ms": ms, "int8_adder_vs_f32_adder": ms["int8-adder"] / ms["f32-adder"],
        "int8_adder_vs_f32_conv": ms["int8-adder"] / ms["f32-conv"],
        "int8_conv_vs_f32_conv": ms["int8-conv"] / ms["f32-conv"],
        "int8_conv_types": convolution_types(int_conv.lower(*int_conv_args).compile().as_text()),
        "int8_adder_exact": bool(np.array_equal(int_adder.astype(np.float64), -f32_adder)),
    }


def network_total(rows: list[dict], suite: str) -> dict:
    """Per method, the sum over the network's layers of count x time, with the same ratios."""
    ms = {m: sum(r["count"] * r["ms"][m] for r in rows) for m in METHODS}
    return {"suite": suite, "ms": ms,
            "int8_adder_vs_f32_adder": ms["int8-adder"] / ms["f32-adder"],
            "int8_adder_vs_f32_conv": ms["int8-adder"] / ms["f32-conv"],
            "int8_conv_vs_f32_conv": ms["int8-conv"] / ms["f32-conv"]}


def print_report(cpu: dict, rows: list[dict], totals: list[dict]) -> None:
    print(f"CPU: {cpu['cpu_model']} ({cpu['cores']} cores); AVX-512: "
          f"{' '.join(cpu['avx512']) or 'none'}; XLA:CPU vector width {cpu['vector_width_bits']}")
    header = (f"{'layer':18} {'n':>2} " + " ".join(f"{m + ' ms':>13}" for m in METHODS)
              + f" {'i8add/f32add':>12} {'i8add/f32conv':>13} {'i8conv/f32conv':>14}  "
              "int8 conv types")
    print(header)
    print("-" * len(header))
    for r in rows + totals:
        name = r.get("layer") or f"{r['suite']} total"
        count = r.get("count", "")
        times = " ".join(f"{r['ms'][m]:13.2f}" for m in METHODS)
        note = r.get("int8_conv_types", "") + ("" if r.get("int8_adder_exact", True)
                                              else "  INT8 ADDER != -F32 ADDER")
        print(f"{name:18} {count:>2} {times} {r['int8_adder_vs_f32_adder']:12.2f} "
              f"{r['int8_adder_vs_f32_conv']:13.2f} {r['int8_conv_vs_f32_conv']:14.2f}  {note}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="resnet20,lenet5",
                        help=f"comma-separated, from {sorted(SUITES)}")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per layer")
    parser.add_argument("--json", default="benchmarks/integer_adder.json")
    args = parser.parse_args(argv)
    args.suite = args.suite.split(",")
    for suite in args.suite:
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, totals = [], []
    for suite in args.suite:
        suite_rows = []
        for shape in SUITES[suite]():
            suite_rows.append(measure_shape(shape, args.repeats))
            print(f"  measured {shape.name}", file=sys.stderr, flush=True)
        rows += suite_rows
        totals.append(network_total(suite_rows, suite))
    cpu = cpu_description()
    print_report(cpu, rows, totals)
    with open(args.json, "w") as f:
        json.dump({"environment": {**environment(), **cpu}, "rows": rows, "totals": totals}, f,
                  indent=1)
    print(f"\nwrote {args.json}")
    return 0 if all(r["int8_adder_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
