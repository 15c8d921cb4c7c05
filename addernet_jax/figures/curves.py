"""Training curves from workdirs' metrics.jsonl: loss, the task's metric and the learning rate.

A workdir's `metrics.jsonl` (`addernet_jax.training.metrics.MetricWriter`) holds records
{'step', 'split', 'time', scalars...}: split 'train' every log interval (means since the last),
and one record per evaluation set ('test', ...) after an evaluation. Which metrics there are is
read from the records, never assumed: by default the metric panel shows the run's task's best
metric (`Task.best`: classification's test 'top1' with the train 'accuracy' beside it; a
super-resolution run's PSNR), and `metrics=` names any recorded scalars instead.

The x axis is the epoch when every run's steps per epoch are known (from summary.json, else the
meta of its latest checkpoint), else the optimizer step.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from addernet_jax.figures.render import (
    DEFAULT_DPI,
    DamagedInputError,
    FigureInputError,
    metric_label,
    metric_scale,
    new_figure,
    save_png,
)
from addernet_jax.runtime.checkpoints import CheckpointError, WorkdirReader
from addernet_jax.tasks import ConfigError, get_task

NOT_METRICS = frozenset({"step", "split", "time", "count", "images_per_sec", "seconds",
                         "learning_rate", "loss"})
SPLIT_STYLES = {"train": "-"}
EVAL_STYLES = ("--", ":", "-.")


@dataclasses.dataclass
class Run:
    """One workdir's records.

    Attributes:
      label: how the legend names the run (default: the workdir's name).
      records: the metrics.jsonl records in file order.
      steps_per_epoch: optimizer steps per epoch, or None when the workdir does not say.
      task: the run's `config.task` (None without config.json).
    """

    label: str
    records: list[dict]
    steps_per_epoch: float | None = None
    task: str | None = None

    def keys(self, split: str) -> set[str]:
        """The scalar names recorded for `split`."""
        return {k for r in self.records if r.get("split") == split for k in r} - {
            "step", "split", "time"}

    def splits(self) -> list[str]:
        """'train' first, then the evaluation sets in order of appearance."""
        seen = dict.fromkeys(r.get("split") for r in self.records)
        return sorted(seen, key=lambda s: s != "train")

    def describe(self) -> str:
        """'train: accuracy, loss; test: top1, top5' (for error messages)."""
        return "; ".join(f"{s}: {', '.join(sorted(self.keys(s) - {'count'}))}"
                         for s in self.splits())

    def series(self, split: str, key: str, per_epoch: bool) -> tuple[list[float], list[float]]:
        """(x, y) of `key` in the records of `split`, x in epochs or steps."""
        points = [(r["step"], r[key]) for r in self.records
                  if r.get("split") == split and key in r]
        scale = self.steps_per_epoch if per_epoch else 1.0
        return [step / scale for step, _ in points], [float(value) for _, value in points]


def _read_records(path: Path) -> list[dict]:
    """The JSON records of a metrics.jsonl file; DamagedInputError naming a bad line."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DamagedInputError(f"{path} line {number} is not JSON ({e.msg})") from e
        if not isinstance(record, dict) or "step" not in record or "split" not in record:
            raise DamagedInputError(f"{path} line {number} is not a metrics record (no "
                                    "'step' and 'split')")
        records.append(record)
    return records


def _steps_per_epoch(workdir: Path) -> float | None:
    """From summary.json (steps / epochs), else the latest checkpoint's meta, else None."""
    try:
        summary = json.loads((workdir / "summary.json").read_text())
        if summary.get("epochs"):
            return summary["steps"] / summary["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        reader = WorkdirReader(workdir)
        step, meta = reader.latest_readable(reader.meta, log=lambda message: None)
        return step / meta["epoch"] if meta.get("epoch") else None
    except (CheckpointError, OSError, KeyError, TypeError, ZeroDivisionError):
        return None


def _task_of(workdir: Path) -> str | None:
    try:
        return json.loads((workdir / "config.json").read_text()).get("task", "classification")
    except (OSError, ValueError, AttributeError):
        return None


def read_run(workdir: str | Path, label: str | None = None) -> Run:
    """The records of a training workdir.

    Raises:
      FigureInputError: the workdir or its metrics.jsonl is missing, or holds no record.
      DamagedInputError: a line of metrics.jsonl cannot be read.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FigureInputError(f"workdir {workdir} does not exist or is not a directory")
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        raise FigureInputError(f"{workdir} has no metrics.jsonl (not a training workdir, or "
                               "the run has not logged a step yet)")
    records = _read_records(path)
    if not records:
        raise FigureInputError(f"{path} holds no records yet")
    return Run(label or workdir.resolve().name, records, _steps_per_epoch(workdir),
               _task_of(workdir))


@dataclasses.dataclass(frozen=True)
class Panel:
    """One metric panel: its name (axis label) and, per run label, the (split, key) series."""

    name: str
    series: dict[str, tuple[tuple[str, str], ...]]


def _default_panels(runs: list[Run]) -> list[Panel]:
    """Each run's task's best metric; runs of tasks that name the same metric share a panel."""
    panels: dict[str, dict[str, tuple]] = {}
    for run in runs:
        try:
            best = get_task(run.task or "classification").best
        except ConfigError:
            best = None
        if best is not None and best.key in run.keys(best.split):
            name = best.name if best.name in run.keys("train") else best.key
            pairs = [("train", best.name)] if best.name in run.keys("train") else []
            pairs += [(s, best.key) for s in run.splits() if s != "train" and
                      best.key in run.keys(s)]
        else:  # no known task: the first recorded metric of the evaluation sets, else train's
            keys = sorted(set().union(*(run.keys(s) for s in run.splits())) - NOT_METRICS)
            if not keys:
                continue
            name, pairs = keys[0], [(s, keys[0]) for s in run.splits() if keys[0] in run.keys(s)]
        panels.setdefault(name, {})[run.label] = tuple(pairs)
    return [Panel(name, series) for name, series in panels.items()]


def _named_panels(runs: list[Run], metrics: list[str]) -> list[Panel]:
    """One panel per named metric, with every split that records it; FigureInputError naming
    the run and what it has when a run records it nowhere."""
    panels = []
    for key in metrics:
        series = {}
        for run in runs:
            pairs = tuple((s, key) for s in run.splits() if key in run.keys(s))
            if not pairs:
                raise FigureInputError(f"metric {key!r} is not in the records of {run.label} "
                                       f"({run.describe()})")
            series[run.label] = pairs
        panels.append(Panel(key, series))
    return panels


def _split_style(split: str, splits: list[str]) -> str:
    if split in SPLIT_STYLES:
        return SPLIT_STYLES[split]
    evals = [s for s in splits if s not in SPLIT_STYLES]
    return EVAL_STYLES[evals.index(split) % len(EVAL_STYLES)]


def _draw(axes, runs: list[Run], series: dict[str, tuple], per_epoch: bool, scale: float,
          colours: dict[str, str]) -> None:
    """One line per (run, split, key): colour by run, line style by split."""
    for run in runs:
        for split, key in series.get(run.label, ()):
            x, y = run.series(split, key, per_epoch)
            marker = "o" if split != "train" and len(x) <= 60 else None
            axes.plot(x, [v * scale for v in y], _split_style(split, run.splits()),
                      color=colours[run.label], marker=marker, markersize=3,
                      label=f"{run.label} {split} {key}")


def _panels(runs: list[Run], metrics: list[str] | None) -> list[tuple[str, dict]]:
    """(name, {run label: ((split, key), ...)}) of every panel: loss, metrics, learning rate."""
    loss = {run.label: tuple((s, "loss") for s in run.splits() if "loss" in run.keys(s))
            for run in runs}
    metric_panels = _named_panels(runs, metrics) if metrics else _default_panels(runs)
    panels = [("loss", loss)] if any(loss.values()) else []
    panels += [(panel.name, panel.series) for panel in metric_panels]
    rate = {run.label: (("train", "learning_rate"),) for run in runs
            if "learning_rate" in run.keys("train")}
    if rate:
        panels.append(("learning_rate", rate))
    if not panels:
        raise FigureInputError("the records hold no loss, metric or learning rate: "
                               + "; ".join(f"{run.label} ({run.describe()})" for run in runs))
    return panels


def plot_curves(runs: list[Run], output: str | Path, *, metrics: list[str] | None = None,
                x_axis: str = "auto", dpi: int = DEFAULT_DPI) -> Path:
    """Draws loss, metric and learning-rate panels side by side, the runs overlaid.

    Args:
      runs: from `read_run`, with distinct labels.
      output: the .png path.
      metrics: recorded scalar names, one panel each (default: each run's task's best metric).
      x_axis: 'epoch', 'step' or 'auto' (epochs when every run's steps per epoch are known).
      dpi: pixels per inch; the figure is 5 x 4 inches per panel.

    Returns:
      The written path.

    Raises:
      FigureInputError: no runs, duplicate labels, a metric a run does not record, or epochs
        asked for a run that does not say its steps per epoch.
    """
    if not runs:
        raise FigureInputError("no workdir given")
    labels = [run.label for run in runs]
    if len(set(labels)) != len(labels):
        raise FigureInputError(f"two runs have the same label: {labels}; give distinct labels")
    unknown = [run.label for run in runs if run.steps_per_epoch is None]
    if x_axis == "epoch" and unknown:
        raise FigureInputError(f"the steps per epoch of {', '.join(unknown)} are unknown (no "
                               "summary.json and no checkpoint); use the step axis")
    per_epoch = x_axis == "epoch" or (x_axis == "auto" and not unknown)
    panels = _panels(runs, metrics)
    figure = new_figure(5 * len(panels), 4, dpi)
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}
    for axes, (name, series) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        _draw(axes, runs, series, per_epoch, metric_scale(name), colours)
        axes.set_xlabel("epoch" if per_epoch else "optimizer step")
        axes.set_ylabel(metric_label(name))
        axes.set_title(metric_label(name).split(" (")[0])
        if name == "loss" and all(v > 0 for line in axes.get_lines() for v in line.get_ydata()):
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.suptitle("Training curves: " + ", ".join(labels))
    return save_png(figure, output)
