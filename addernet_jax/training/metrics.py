"""What a user sees and keeps: progress bars, metrics as JSON lines and TensorBoard events.

Only process 0 prints and writes; the other processes get no-op writers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import tqdm


class _NoBar:
    def update(self, n: int = 1) -> None:
        del n

    def set_postfix_str(self, text: str) -> None:
        del text

    def close(self) -> None:
        pass


def progress(*, total: int | None, description: str, enabled: bool = True):
    """A tqdm bar on process 0 when `enabled`, else an object with the same methods."""
    if not enabled or jax.process_index() != 0:
        return _NoBar()
    return tqdm.tqdm(total=total, desc=description, leave=True, dynamic_ncols=True, unit="step")


class MetricWriter:
    """Appends `{'step', 'split', **scalars}` records to <workdir>/metrics.jsonl and writes the
    same scalars as TensorBoard events under <workdir>/tensorboard (process 0 only)."""

    def __init__(self, workdir: str | Path):
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": time.time(),
                  **{k: float(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in scalars.items():
            self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def log(message: str) -> None:
    """Prints a line on process 0 (above any progress bar)."""
    if jax.process_index() == 0:
        tqdm.tqdm.write(message)
