"""Speed of integer (int8) adder inference against the float32 adder and the float32 CNN, forward.

In one run, visiting the methods in turn so that a busy machine disturbs them alike (best of N
after a warm-up):

Every adder layer shape of ResNet-20 (CIFAR, batch 64; adder_layer.py's list) and of LeNet-5
(MNIST, batch 64):
  - f32-conv    `lax.conv_general_dilated` in float32 (the multiplicative baseline),
  - f32-adder   `adder2d(impl='shifted')` in float32,
  - int8-ffi    `adder2d_int(impl='ffi')`: the vpsadbw kernel (where it runs here),
  - int8-xla    `adder2d_int(impl='shifted')`: the XLA path in 16-bit lanes,
  - int8-conv   `lax.conv_general_dilated` on int8 operands with an int32 result
                (preferred_element_type); the table says which element types XLA's compiled
                convolution really uses (int8 kept, e.g. through YNNPACK, or widened to int32),
checking that both int8 adders equal minus the float adder on the same integer-valued data.

The whole network forward at batch 64, ResNet-20 and LeNet-5, each a jitted eval-mode model:
  - f32-cnn     the CNN variant (convolutions where AdderNet has adders),
  - f32-adder   the AdderNet in float32,
  - int8        the same AdderNet quantised by `addernet_jax.quantize` (8 bits; the first conv,
                the classifier, ReLU, pooling and residuals in float32, BatchNorms folded), on
                the default integer path (`impl='auto'`),
  - int8-xla    the same quantised model on the XLA integer path.

Prints the CPU model and XLA:CPU's vector width, the tables with ratios, the sum over each
network's adder layers (time x number of layers of that shape), and writes JSON.

    python benchmarks/integer_adder.py                      # ResNet-20 and LeNet-5
    python benchmarks/integer_adder.py --suite resnet20 --repeats 30 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import timing
from adder_layer import LayerShape, environment, resnet20_shapes
from flax import nnx
from jax import lax

from addernet_jax.models import create_model, get_model_info
from addernet_jax.ops import adder2d, sad_kernel
from addernet_jax.ops.integer import adder2d_int
from addernet_jax.quantize import quantize_model

LAYER_METHODS = ("f32-conv", "f32-adder", "int8-ffi", "int8-xla", "int8-conv")
NETWORK_METHODS = ("f32-cnn", "f32-adder", "int8", "int8-xla")
NETWORKS = {"resnet20": "resnet20", "lenet5": "lenet5"}


def lenet5_shapes(batch: int = 64) -> list[LayerShape]:
    """The adder layers of LeNet-5-BN (models/lenet.py): conv2 and the two adder FC layers."""
    return [
        LayerShape("lenet.conv2", batch, 14, 6, 16, 5, 1, 0),
        LayerShape("lenet.fc1", batch, 1, 400, 120, 1, 1, 0),
        LayerShape("lenet.fc2", batch, 1, 120, 84, 1, 1, 0),
    ]


SUITES = {"resnet20": resnet20_shapes, "lenet5": lenet5_shapes}


def cpu_description() -> dict:
    """`timing.cpu_description()` and whether the vpsadbw kernel runs here."""
    return {**timing.cpu_description(),
            "int8_kernel": sad_kernel.unavailable_reason() or "vpsadbw kernel (ffi)"}


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

    def int_adder(impl):
        return jax.jit(lambda x, w: adder2d_int(x, w, stride=shape.stride,
                                                padding=shape.padding, impl=impl)), (x_q, w_q)

    calls = {
        "f32-conv": (jax.jit(lambda x, w: lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=dims)), (x, w)),
        "f32-adder": (jax.jit(lambda x, w: adder2d(
            x, w, stride=shape.stride, padding=shape.padding, impl="shifted")), (x, w)),
        "int8-ffi": int_adder("ffi"),
        "int8-xla": int_adder("shifted"),
        "int8-conv": (jax.jit(lambda x, w: lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=dims,
            preferred_element_type=jnp.int32)), (x_q, w_q)),
    }
    if not sad_kernel.available():
        del calls["int8-ffi"]
    return calls


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


def ratios(ms: dict, pairs) -> dict:
    """'a_vs_b' -> ms[a] / ms[b] for the pairs present."""
    return {f"{a}_vs_{b}": ms[a] / ms[b] for a, b in pairs if a in ms and b in ms}


LAYER_RATIOS = (("int8-ffi", "f32-adder"), ("int8-ffi", "f32-conv"), ("int8-xla", "f32-adder"),
                ("int8-xla", "f32-conv"), ("int8-conv", "f32-conv"))


def measure_shape(shape: LayerShape, repeats: int) -> dict:
    """Times, ratios and checks of the methods on one layer shape."""
    calls = layer_calls(shape)
    ms = best_times(calls, repeats)
    minus_float = -np.asarray(calls["f32-adder"][0](*calls["f32-adder"][1]), np.float64)
    exact = all(np.array_equal(np.asarray(calls[m][0](*calls[m][1])), minus_float)
                for m in ("int8-ffi", "int8-xla") if m in calls)
    int_conv, int_conv_args = calls["int8-conv"]
    return {
        "layer": shape.name, "count": shape.count, "shape": dataclasses.asdict(shape),
        "ms": ms, "ratios": ratios(ms, LAYER_RATIOS),
        "int8_conv_types": convolution_types(int_conv.lower(*int_conv_args).compile().as_text()),
        "int8_adder_exact": exact,
    }


def network_total(rows: list[dict], suite: str) -> dict:
    """Per method, the sum over the network's layers of count x time, with the same ratios."""
    ms = {m: sum(r["count"] * r["ms"][m] for r in rows) for m in rows[0]["ms"]}
    return {"suite": suite, "ms": ms, "ratios": ratios(ms, LAYER_RATIOS)}


# ---------------------------------------------------------------------------------------------
# Whole networks.


def jitted_forward(model: nnx.Module):
    """(jitted forward of the eval-mode model's state, the state)."""
    model.eval()
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state


def network_calls(name: str, batch: int) -> dict:
    """method -> (jitted forward, (state, images)) for one network at `batch`."""
    info = get_model_info(name)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(batch, *info.input_shape)),
                         jnp.float32)
    kwargs = {"num_classes": info.num_classes, "rngs": nnx.Rngs(0)}
    adder = create_model(name, variant="adder", impl="shifted", **kwargs)
    cnn = create_model(name, variant="cnn", **kwargs)
    calibration = np.asarray(images[:8])
    calls = {"f32-cnn": cnn, "f32-adder": adder,
             "int8": quantize_model(adder, calibration, impl="auto")[0],
             "int8-xla": quantize_model(adder, calibration, impl="shifted")[0]}
    calls = {method: jitted_forward(model) for method, model in calls.items()}
    return {method: (fn, (state, images)) for method, (fn, state) in calls.items()}


NETWORK_RATIOS = (("int8", "f32-cnn"), ("int8", "f32-adder"), ("int8-xla", "f32-cnn"),
                  ("int8-xla", "f32-adder"), ("f32-adder", "f32-cnn"))


def measure_network(name: str, batch: int, repeats: int) -> dict:
    """Times and ratios of the whole forward of network `name`."""
    ms = best_times(network_calls(name, batch), repeats)
    return {"network": name, "batch": batch, "ms": ms, "ratios": ratios(ms, NETWORK_RATIOS)}


# ---------------------------------------------------------------------------------------------
# Report.


def print_layers(rows: list[dict], totals: list[dict]) -> None:
    methods = [m for m in LAYER_METHODS if m in rows[0]["ms"]]
    pairs = [p for p in LAYER_RATIOS if f"{p[0]}_vs_{p[1]}" in rows[0]["ratios"]]
    names = [f"{a.replace('int8-', 'i8')}/{b.replace('f32-', 'f32')}" for a, b in pairs]
    header = (f"{'layer':18} {'n':>2} " + " ".join(f"{m + ' ms':>13}" for m in methods) + " "
              + " ".join(f"{n:>16}" for n in names) + "  int8 conv types")
    print(header)
    print("-" * len(header))
    for r in rows + totals:
        name = r.get("layer") or f"{r['suite']} total"
        times = " ".join(f"{r['ms'][m]:13.2f}" for m in methods)
        values = " ".join(f"{r['ratios'][f'{a}_vs_{b}']:16.2f}" for a, b in pairs)
        note = r.get("int8_conv_types", "") + ("" if r.get("int8_adder_exact", True)
                                              else "  INT8 ADDER != -F32 ADDER")
        print(f"{name:18} {r.get('count', ''):>2} {times} {values}  {note}")


def print_networks(networks: list[dict]) -> None:
    header = (f"{'network (batch)':18} " + " ".join(f"{m + ' ms':>13}" for m in NETWORK_METHODS)
              + "  " + "  ".join(f"{a}/{b}" for a, b in NETWORK_RATIOS))
    print(header)
    print("-" * len(header))
    for r in networks:
        times = " ".join(f"{r['ms'][m]:13.2f}" for m in NETWORK_METHODS)
        values = "  ".join(f"{r['ratios'][f'{a}_vs_{b}']:{len(a) + len(b) + 1}.2f}"
                           for a, b in NETWORK_RATIOS)
        print(f"{r['network'] + ' (' + str(r['batch']) + ')':18} {times}  {values}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="resnet20,lenet5",
                        help=f"comma-separated, from {sorted(SUITES)}")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per layer")
    parser.add_argument("--batch", type=int, default=64, help="batch of the network forwards")
    parser.add_argument("--json", default="benchmarks/integer_adder.json")
    args = parser.parse_args(argv)
    args.suite = args.suite.split(",")
    for suite in args.suite:
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {sorted(SUITES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, totals, networks = [], [], []
    for suite in args.suite:
        suite_rows = []
        for shape in SUITES[suite]():
            suite_rows.append(measure_shape(shape, args.repeats))
            print(f"  measured {shape.name}", file=sys.stderr, flush=True)
        rows += suite_rows
        totals.append(network_total(suite_rows, suite))
        networks.append(measure_network(NETWORKS[suite], args.batch, args.repeats))
        print(f"  measured the {suite} forward", file=sys.stderr, flush=True)
    cpu = cpu_description()
    print(f"CPU: {cpu['cpu_model']} ({cpu['cores']} cores); AVX-512: "
          f"{' '.join(cpu['avx512']) or 'none'}; XLA:CPU vector width "
          f"{cpu['vector_width_bits']}; int8 path: {cpu['int8_kernel']}\n")
    print_layers(rows, totals)
    print()
    print_networks(networks)
    with open(args.json, "w") as f:
        json.dump({"environment": {**environment(), **cpu}, "rows": rows, "totals": totals,
                   "networks": networks}, f, indent=1)
    print(f"\nwrote {args.json}")
    return 0 if all(r["int8_adder_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
