"""Records the tiny config's loss curve and final parameters (run by train.py in a subprocess).

    python tests/pinned/record.py > tests/pinned/tiny_main.json

`tiny_main.json` was written by this script on `main` at 86f7ac9, before the task redesign
(issue 8), on the CPU it names; `tests/test_pinned_behaviour.py` runs the same command on the
current code and compares bit for bit. The command goes through train.py, the interface that the
redesign keeps, and the parameters are read straight from the orbax checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ADDERNET_SHARED", REPO.parent / "shared"))
STEPS = 6
VARIANTS = ("adder", "cnn")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def command(workdir: Path, variant: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"),
        f"--config={REPO / 'configs' / 'tiny.py'}:{variant}",
        f"--workdir={workdir}", "--config.data.source=local",
        f"--config.data.local_path={SHARED / 'data' / 'mnist'}",
        f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=100",
    ]


def run(workdir: Path, variant: str) -> None:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(command(workdir, variant), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])


def losses(workdir: Path) -> list[str]:
    """Training losses per step as float hex strings (exact)."""
    records = map(json.loads, (workdir / "metrics.jsonl").open())
    return [float(r["loss"]).hex() for r in records if r["split"] == "train"]


def model_arrays(workdir: Path) -> dict[str, np.ndarray]:
    """The model arrays of the latest checkpoint, flattened to 'a/b/c' keys."""
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(steps[-1]) / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    flat = jax.tree_util.tree_leaves_with_path(state["model"])
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
            for path, leaf in flat}


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def record(variant: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "run"
        run(workdir, variant)
        arrays = model_arrays(workdir)
        arrays = dict(sorted(arrays.items()))
        return {"losses": losses(workdir),
                "params_sha256": {k: digest(v) for k, v in arrays.items()},
                "params_sum": {k: float(v.astype(np.float64).sum()) for k, v in arrays.items()}}


def main() -> None:
    result = {"cpu": cpu_model(), "steps": STEPS, "jax": jax.__version__,
              "variants": {variant: record(variant) for variant in VARIANTS}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
