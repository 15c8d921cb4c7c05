"""LeNet-5-BN training step (the main job's model) with and without the few-channel CPU paths.

Two changes make LeNet-5 faster on XLA:CPU, each the same arithmetic in another order:
  - conv1 (1 -> 6 channels, 5x5) as shifted windows (ops/few_channel_conv.py) instead of
    `lax.conv_general_dilated`;
  - conv2's 5x5x6 adder kernel fused into one loop body (ops/shifted.py, WHOLE_KERNEL_TERMS)
    instead of 25 blocks of 6 terms.
This script times the jitted training step of the classification task (forward, backward,
adder_sgd update) at batch 128 for the adder and cnn variants with both on ("now") and both
off ("before"), interleaved in one run, and the two ops alone.

    python benchmarks/lenet_step.py [--batch-size 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from timing import best_seconds, cpu_description, cpu_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addernet_jax.ops import adder2d, few_channel_conv, shifted  # noqa: E402
from addernet_jax.tasks import Classification, jit_train_step  # noqa: E402
from configs import default  # noqa: E402


def set_fast_paths(on: bool) -> None:
    few_channel_conv.ENABLED = on
    shifted.WHOLE_KERNEL_TERMS = 200 if on else 0


def make_step(variant: str, batch_size: int, on: bool):
    """A no-argument function running one jitted training step (built with the paths `on`)."""
    set_fast_paths(on)
    config = default.experiment("mnist", "lenet5", variant)
    config.schedule.name = "constant"
    task = Classification(config)
    graphdef, state = nnx.split(task.create_state(steps_per_epoch=100))
    step = jit_train_step(task)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(batch_size, 28, 28, 1)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(graphdef, holder["state"], batch)
        jax.block_until_ready(metrics)

    run()  # compile with the paths as set now
    return run


def _time_ops(x1, w1, x2, w2, repeats: int) -> dict:
    """Seconds of each op with the paths as set now (fresh jits, so traced with them)."""
    conv = jax.jit(lambda x, w: few_channel_conv.few_channel_conv(
        x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")))
    adder = jax.jit(lambda x, w: adder2d(x, w, impl="shifted"))
    return {
        "conv1 forward": best_seconds(lambda: conv(x1, w1).block_until_ready(), repeats),
        "conv2 adder forward": best_seconds(lambda: adder(x2, w2).block_until_ready(), repeats),
    }


def op_times(batch_size: int, repeats: int) -> dict:
    """ms of conv1 forward and conv2 adder forward, before and now."""
    rng = np.random.default_rng(1)
    x1 = jnp.asarray(rng.normal(size=(batch_size, 28, 28, 1)), jnp.float32)
    w1 = jnp.asarray(rng.normal(size=(5, 5, 1, 6)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(batch_size, 14, 14, 6)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(5, 5, 6, 16)), jnp.float32)
    rows = {}
    for on in (False, True):
        set_fast_paths(on)
        rows["now" if on else "before"] = _time_ops(x1, w1, x2, w2, repeats)
    return {op: {k: 1e3 * rows[k][op] for k in rows} for op in rows["now"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default="", help="also write the report here")
    args = parser.parse_args(argv)
    print(cpu_line())
    report = {**cpu_description(), "batch_size": args.batch_size, "steps": {}, "ops": {}}
    for variant in ("adder", "cnn"):
        runs = {on: make_step(variant, args.batch_size, on) for on in (False, True)}
        best = {on: float("inf") for on in runs}
        for _ in range(3):  # interleaved rounds: both sides see the same machine load
            for on, run in runs.items():
                best[on] = min(best[on], best_seconds(run, max(1, args.repeats // 3)))
        report["steps"][variant] = {"before_ms": 1e3 * best[False], "now_ms": 1e3 * best[True]}
    report["ops"] = op_times(args.batch_size, args.repeats)
    print(f"LeNet-5-BN training step, batch {args.batch_size}, {jax.device_count()} device(s)")
    print(f"{'':24} {'before ms':>10} {'now ms':>8} {'speed-up':>9} {'now img/s':>10}")
    for variant, row in report["steps"].items():
        print(f"{variant + ' step':24} {row['before_ms']:10.2f} {row['now_ms']:8.2f} "
              f"{row['before_ms'] / row['now_ms']:8.2f}x "
              f"{args.batch_size / row['now_ms'] * 1e3:10.0f}")
    for op, row in report["ops"].items():
        print(f"{op:24} {row['before']:10.2f} {row['now']:8.2f} "
              f"{row['before'] / row['now']:8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
