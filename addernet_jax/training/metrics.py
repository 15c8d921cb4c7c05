"""What a run reports: buffered step metrics, progress, JSONL + TensorBoard records, log lines.

Progress bars are drawn only on a terminal: written to a log file or a batch scheduler's output
(no TTY), the loop prints one plain line per log interval instead of carriage-return updates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tqdm


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the run stopped without saving that state."""


class _NoBar:
    def update(self, n: int = 1) -> None:
        del n

    def set_postfix_str(self, text: str) -> None:
        del text

    def close(self) -> None:
        pass


class _PlainLines(_NoBar):
    """Progress without a terminal: one line per `set_postfix_str` (one per log interval)."""

    def __init__(self, total: int | None, description: str, initial: int = 0):
        self.total, self.description, self.count = total, description, initial

    def update(self, n: int = 1) -> None:
        self.count += n

    def set_postfix_str(self, text: str) -> None:
        of = f"/{self.total}" if self.total else ""
        print(f"{self.description} step {self.count}{of}: {text}", file=sys.stderr, flush=True)


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default stderr, where progress goes) is a terminal."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(*, total: int | None, description: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar (terminal), plain lines (no terminal) or nothing (disabled, or not process 0);
    all three have tqdm's `update`, `set_postfix_str` and `close`."""
    if not enabled or jax.process_index() != 0:
        return _NoBar()
    if not is_terminal():
        return _PlainLines(total, description, initial)
    bar = tqdm.tqdm(total=total, desc=description, leave=True, dynamic_ncols=True, unit="step")
    bar.update(initial)
    return bar


class MetricBuffer:
    """Per-step metrics kept on device until `flush` (one host transfer per log interval)."""

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self.steps, self.metrics = [], []
        self.start = time.perf_counter()

    def add(self, step: int, metrics) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def flush(self) -> dict[str, float] | None:
        """Means since the last flush (the learning rate: its latest value), with images/s;
        raises NonFiniteLossError naming the first step whose 'loss' is NaN/Inf."""
        if not self.steps:
            return None
        values = jax.device_get(self.metrics)
        elapsed = time.perf_counter() - self.start
        for step, value in zip(self.steps, values):
            if not np.isfinite(value["loss"]):
                raise NonFiniteLossError(f"training loss is {value['loss']} at step {step}")
        means = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
        if "learning_rate" in means:
            means["learning_rate"] = float(values[-1]["learning_rate"])
        means["images_per_sec"] = len(values) * self.images_per_step / max(elapsed, 1e-9)
        self.steps, self.metrics = [], []
        self.restart_clock()
        return means


class MetricWriter:
    """Appends `{'step', 'split', **scalars}` records to <workdir>/metrics.jsonl and writes the
    same scalars as TensorBoard events under <workdir>/tensorboard (process 0 only).

    Args:
      workdir: the run's directory.
      resume_step: when resuming from this step, records of later steps (written by the
        interrupted run after its last checkpoint, and about to be written again) are dropped
        from metrics.jsonl and TensorBoard, so that no step is recorded twice.
    """

    def __init__(self, workdir: str | Path, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                self._drop_records_after(resume_step)
            purge = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"),
                                              purge_step=purge)

    def _drop_records_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines(keepends=True)
                if line.strip() and json.loads(line).get("step", 0) <= step]
        temporary = self.path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(kept))
        temporary.replace(self.path)

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
