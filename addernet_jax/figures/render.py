"""Shared drawing helpers: headless figures of a fixed pixel size, PNG output, metric units.

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas that `savefig` picks
for a PNG: nothing imports `matplotlib.pyplot`, so no display and no global backend are needed.
The layout is matplotlib's constrained layout, not `bbox_inches='tight'`, so that a figure of
W x H inches at `dpi` is exactly W*dpi x H*dpi pixels.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DEFAULT_DPI = 100

# How metrics recorded as fractions are shown, and the units of the others.
PERCENT_METRICS = frozenset({"accuracy", "top1", "top5"})
METRIC_UNITS = {"psnr": "dB", "ssim": "unitless", "loss": "unitless", "learning_rate": "unitless"}
METRIC_NAMES = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "psnr": "PSNR",
                "ssim": "SSIM", "learning_rate": "learning rate"}


class FigureInputError(ValueError):
    """An input named on the command line cannot be plotted (missing, empty, or lacking what
    was asked for); the message names it."""


class DamagedInputError(RuntimeError):
    """An input file exists but cannot be read (for example a metrics.jsonl line that is not
    JSON); the message names the file and the line."""


def new_figure(width_in: float, height_in: float, dpi: int = DEFAULT_DPI) -> Figure:
    """A headless figure of width_in x height_in inches with constrained layout."""
    if dpi < 10:
        raise FigureInputError(f"dpi must be at least 10, got {dpi}")
    return Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")


def check_output(path: str | Path) -> Path:
    """The output path, checked before any work: a .png file name whose folder is not a file."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FigureInputError(f"--output {path} must end in .png")
    if path.is_dir():
        raise FigureInputError(f"--output {path} is a directory; give a .png file name")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise FigureInputError(f"--output {path}: {parent} is a file, not a directory")
    return path


def save_png(figure: Figure, path: str | Path) -> Path:
    """Writes `figure` as a PNG at its own dpi (creating the folder) and returns the path."""
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=figure.dpi, metadata={"Software": "addernet-jax"})
    return path


def metric_scale(name: str) -> float:
    """100 for metrics recorded as fractions and shown in percent, else 1."""
    return 100.0 if name in PERCENT_METRICS else 1.0


def metric_label(name: str) -> str:
    """An axis label with the unit: 'top-1 accuracy (%)', 'PSNR (dB)', 'loss (unitless)'."""
    unit = "%" if name in PERCENT_METRICS else METRIC_UNITS.get(name)
    label = METRIC_NAMES.get(name, name.replace("_", " "))
    return f"{label} ({unit})" if unit else label
