"""Whole-network speed and memory: a ResNet-20 training step and the released model's evaluation.

Measured in one run, on this machine:
  - one jitted ResNet-20 training step (forward, adder custom VJP, adder_sgd update) at batch 128
    for the AdderNet and its CNN variant: images/s, compile time, XLA working memory
    (temporaries + outputs of the compiled step; the state and batch are the same size for both);
  - the PKKD step (tasks/distillation.py: the AdderNet student and its CNN teacher, both forward
    and backward, the kernel maps and losses, three optimizer updates) against the plain adder
    step: images/s and working memory (its state is larger: teacher, transforms, optimizers);
  - the same step with the official PyTorch formulation (benchmarks/official_adder_torch.py:
    unfold/broadcast adder with the official backward, torch SGD): images/s, peak RSS growth;
  - evaluation of the released ResNet-20 on the CIFAR-10 test folder: our evaluate pipeline
    (JPEG decoding included) against the official formulation's forward, which is timed on a few
    batches and scaled to the whole set (it would take most of an hour).

    python benchmarks/training_step.py                        # everything, ~10 minutes
    python benchmarks/training_step.py --skip-torch --skip-eval   # adder, cnn, PKKD
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from timing import best_seconds, cpu_description, cpu_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addernet_jax.tasks import Classification, Distillation, jit_train_step  # noqa: E402
from configs import default, pkkd_cifar10_resnet20  # noqa: E402

SHARED = Path(os.environ.get("ADDERNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def jax_train_step(variant: str, batch_size: int, repeats: int, impl: str = "auto") -> dict:
    """images/s, compile seconds and XLA working memory of one ResNet-20 training step: the
    classification task's step (the official recipe's optimizer, constant learning rate) as
    the training loop jits it."""
    config = default.experiment("cifar10", "resnet20", variant)
    config.model.impl, config.schedule.name = impl, "constant"
    return measure_task_step(Classification(config), batch_size, repeats)


def pkkd_train_step(batch_size: int, repeats: int, impl: str = "auto") -> dict:
    """`jax_train_step`'s measurements for the PKKD step of configs/pkkd_cifar10_resnet20.py
    (student and teacher, the spec's defaults, constant learning rate)."""
    config = pkkd_cifar10_resnet20.get_config()
    config.model.impl, config.schedule.name = impl, "constant"
    return measure_task_step(Distillation(config), batch_size, repeats)


def measure_task_step(task, batch_size: int, repeats: int) -> dict:
    """Compiles `task`'s jitted train step on a random CIFAR-shaped batch and times it."""
    graphdef, state = nnx.split(task.create_state(steps_per_epoch=1))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(batch_size, 32, 32, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32)}
    step = jit_train_step(task)
    start = time.perf_counter()
    compiled = step.lower(graphdef, state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics)

    seconds = best_seconds(run, repeats)
    return {"images_per_sec": batch_size / seconds, "step_ms": 1e3 * seconds,
            "compile_s": compile_s,
            "working_mib": (memory.temp_size_in_bytes + memory.output_size_in_bytes) / 2**20,
            "temp_mib": memory.temp_size_in_bytes / 2**20,
            "argument_mib": memory.argument_size_in_bytes / 2**20}


def torch_child(kind: str, batch_size: int, repeats: int) -> None:
    """In a fresh process: time the official formulation and report peak RSS growth."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from official_adder_torch import official_eval_fn, official_train_step_fn

    fn = (official_train_step_fn if kind == "train" else official_eval_fn)(batch_size)
    before = rss_mib()
    seconds = best_seconds(fn, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "images_per_sec": batch_size / seconds,
                      "peak_rss_growth_mib": peak - before, "threads": torch.get_num_threads()}))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def torch_measure(kind: str, batch_size: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--torch-child", kind, "--batch-size",
                          str(batch_size), "--repeats", str(repeats)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def released_eval(batch_size: int) -> dict:
    """Our evaluation of the released ResNet-20 on the whole CIFAR-10 test folder."""
    from addernet_jax.cli import evaluate as evaluate_cli

    start = time.perf_counter()
    args = evaluate_cli.parse_flags([
        "--checkpoint", str(SHARED / "checkpoints" / "ResNet20-AdderNet.pth"), "--model",
        "resnet20", "--dataset", "cifar10", "--local-path", str(SHARED / "data" / "cifar10-jpeg"),
        "--batch-size", str(batch_size), "--no-progress"])
    results = evaluate_cli.evaluate_classifier(args)
    results["wall_s"] = time.perf_counter() - start
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-repeats", type=int, default=2)
    parser.add_argument("--eval-batch-size", type=int, default=100)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-pkkd", action="store_true", help="no PKKD (distillation) step")
    parser.add_argument("--impl", default="auto", help="adder2d implementation of the adder step")
    parser.add_argument("--json", default="benchmarks/training_step.json")
    parser.add_argument("--torch-child", choices=("train", "eval"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def print_report(report: dict) -> None:
    adder, cnn = report["adder"], report["cnn"]
    official = report.get("official_train")
    print(cpu_line())
    print(f"ResNet-20 training step, batch {report['batch_size']} "
          f"({jax.device_count()} device(s), {os.cpu_count()} CPU cores)")
    print(f"{'variant':28} {'images/s':>9} {'step ms':>9} {'compile s':>10} {'work MiB':>9}")
    pkkd = report.get("pkkd")
    rows = [("adder (ours)", adder), ("cnn (ours)", cnn)]
    rows += [("PKKD adder + cnn teacher", pkkd)] if pkkd else []
    for name, row in rows:
        print(f"{name:28} {row['images_per_sec']:9.1f} {row['step_ms']:9.1f} "
              f"{row['compile_s']:10.1f} {row['working_mib']:9.1f}")
    if official:
        print(f"{'adder (official PyTorch)':28} {official['images_per_sec']:9.2f} "
              f"{1e3 * official['seconds']:9.0f} {'-':>10} "
              f"{official['peak_rss_growth_mib']:9.0f}  (peak RSS growth)")
    print(f"adder / cnn step time:          {adder['step_ms'] / cnn['step_ms']:.2f}x")
    print(f"adder / cnn working memory:     {adder['working_mib'] / cnn['working_mib']:.2f}x")
    if pkkd:
        print(f"PKKD / adder step time:         {pkkd['step_ms'] / adder['step_ms']:.2f}x")
        print(f"PKKD / adder working memory:    {pkkd['working_mib'] / adder['working_mib']:.2f}x"
              f" (temporaries {pkkd['temp_mib']:.1f} vs {adder['temp_mib']:.1f} MiB; state + "
              f"batch {pkkd['argument_mib']:.1f} vs {adder['argument_mib']:.1f} MiB)")
    if official:
        print(f"ours / official images/s:       "
              f"{adder['images_per_sec'] / official['images_per_sec']:.1f}x")
    ev = report.get("eval")
    if ev:
        print(f"\nReleased ResNet-20 on the {ev['ours']['count']} CIFAR-10 test JPEGs: ours "
              f"{ev['ours']['wall_s']:.1f} s wall ({ev['ours']['images_per_sec']:.0f} images/s "
              f"in the loop), top-1 {100 * ev['ours']['top1']:.2f}%")
        if "official_forward" in ev:
            off = ev["official_forward"]
            total = ev["ours"]["count"] / off["images_per_sec"]
            print(f"official PyTorch forward: {off['images_per_sec']:.1f} images/s -> "
                  f"{total:.0f} s for the set (scaled from {report['eval_batch_size']}-image "
                  f"batches; data loading not included): {total / ev['ours']['wall_s']:.0f}x ours")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_child:
        torch_child(args.torch_child, args.batch_size, args.repeats)
        return 0
    report = {"batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
              "jax": jax.__version__, "devices": jax.device_count(), "cpus": os.cpu_count(),
              **cpu_description()}
    report["adder"] = jax_train_step("adder", args.batch_size, args.repeats, args.impl)
    report["cnn"] = jax_train_step("cnn", args.batch_size, args.repeats)
    if not args.skip_pkkd:
        report["pkkd"] = pkkd_train_step(args.batch_size, args.repeats, args.impl)
    if not args.skip_torch:
        report["official_train"] = torch_measure("train", args.batch_size, args.torch_repeats)
    if not args.skip_eval:
        report["eval"] = {"ours": released_eval(args.eval_batch_size)}
        if not args.skip_torch:
            report["eval"]["official_forward"] = torch_measure("eval", args.eval_batch_size,
                                                               args.torch_repeats)
    print_report(report)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
