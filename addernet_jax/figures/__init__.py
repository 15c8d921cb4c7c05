"""Figures that the project's commands regenerate from code and data (matplotlib, headless).

    features   the paper's Figure 1: 2-D features of LeNet++ test images, one panel per model
    curves     training curves from one or more workdirs' metrics.jsonl
    ops        operations and estimated energy per image of a model, per layer kind

Every figure is drawn on a `matplotlib.figure.Figure` with the Agg canvas (no pyplot, no display,
no global backend state) and written as a PNG of a fixed size (`render.save_png`).
"""

from addernet_jax.figures.curves import Run, plot_curves, read_run
from addernet_jax.figures.features import (
    FeatureSet,
    class_statistics,
    extract_features,
    plot_features,
)
from addernet_jax.figures.ops import plot_ops
from addernet_jax.figures.render import FigureInputError, save_png

__all__ = [
    "FeatureSet",
    "FigureInputError",
    "Run",
    "class_statistics",
    "extract_features",
    "plot_curves",
    "plot_features",
    "plot_ops",
    "read_run",
    "save_png",
]
