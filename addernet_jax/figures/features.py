"""The paper's Figure 1: 2-D features of test images, one panel per model, coloured by class.

A model with a 2-D feature layer (`LeNetPP`: `model.features(images) -> (N, 2)` and
`model.classify(features) -> logits`) is run over an evaluation set; each panel scatters the
features by true class and is titled with the model's top-1 accuracy on the same images
(ADDERNET.md 10: AdderNet features cluster around class centres, CNN features fan out by angle).

`class_statistics` measures the two behaviours per class: the cluster radius (median distance of
a class's features to its centre) against the angular spread (circular standard deviation of
their angles about the origin) and the spread of their norms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from addernet_jax.figures.render import DEFAULT_DPI, FigureInputError, new_figure, save_png

VARIANT_TITLES = {"adder": "AdderNet", "cnn": "CNN"}


@dataclasses.dataclass
class FeatureSet:
    """The 2-D features of one model on an evaluation set.

    Attributes:
      title: the panel's title before the accuracy (e.g. 'AdderNet (lenetpp)').
      features: (N, 2) float array.
      labels: (N,) int array of true classes.
      accuracy: top-1 accuracy of the model's logits on the same N images (a fraction).
      split: the dataset split the images come from.
    """

    title: str
    features: np.ndarray
    labels: np.ndarray
    accuracy: float
    split: str = "test"


def variant_title(model: str, variant: str) -> str:
    """'AdderNet (lenetpp)' / 'CNN (lenetpp)' / "'shiftadd' (lenetpp)"."""
    return f"{VARIANT_TITLES.get(variant, repr(variant))} ({model})"


@nnx.jit
def _features_and_predictions(model: nnx.Module, images: jax.Array):
    features = model.features(images)
    return features, jnp.argmax(model.classify(features), axis=-1)


def check_feature_model(model: nnx.Module, title: str) -> None:
    """FigureInputError unless `model` has a 2-D feature layer (`features` and `classify`)."""
    if not all(callable(getattr(model, m, None)) for m in ("features", "classify")):
        raise FigureInputError(f"{title} has no 2-D feature layer (no `features` and "
                               "`classify` methods); train a lenetpp model for this figure")


def extract_features(model: nnx.Module, batches: Iterable[dict], title: str,
                     limit: int | None = None, split: str = "test") -> FeatureSet:
    """Runs `model` (in eval mode; `features` then `classify`) over padded, masked evaluation
    batches ({'image', 'label', 'mask'}) and keeps the features and accuracy of the real images
    (the first `limit` of them, when given).

    Raises:
      FigureInputError: the model has no 2-D feature layer, or there are no images.
    """
    check_feature_model(model, title)
    model.eval()
    features, labels = [], []
    correct = kept = 0
    for batch in batches:
        if limit is not None and kept >= limit:
            break
        feature, predicted = jax.device_get(_features_and_predictions(model, batch["image"]))
        mask = np.asarray(batch["mask"], bool)
        if limit is not None:  # keep only the first `limit` real images
            mask &= np.cumsum(mask) <= limit - kept
        label = np.asarray(batch["label"])[mask]
        features.append(np.asarray(feature)[mask])
        labels.append(label)
        correct += int(np.sum(np.asarray(predicted)[mask] == label))
        kept += len(label)
    if not kept:
        raise FigureInputError(f"{title}: no images to embed")
    features, labels = np.concatenate(features), np.concatenate(labels)
    if features.ndim != 2 or features.shape[1] != 2:
        raise FigureInputError(f"{title}: features have shape {features.shape[1:]}, not (2,)")
    return FeatureSet(title, features, labels, correct / kept, split)


def class_statistics(features: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Per class: count, centre (x, y), |centre|, cluster radius (median distance to the
    centre), radius / |centre|, angular spread (circular standard deviation of the angles about
    the origin, degrees) and norm spread (standard deviation of |f| / mean |f|)."""
    rows = []
    for label in np.unique(labels):
        points = features[labels == label]
        centre = points.mean(axis=0)
        radius = float(np.median(np.linalg.norm(points - centre, axis=1)))
        angles = np.arctan2(points[:, 1], points[:, 0])
        resultant = float(np.hypot(np.cos(angles).mean(), np.sin(angles).mean()))
        norms = np.linalg.norm(points, axis=1)
        rows.append({
            "class": int(label), "count": len(points),
            "centre": [float(centre[0]), float(centre[1])],
            "centre_norm": float(np.linalg.norm(centre)), "radius": radius,
            "relative_radius": radius / max(float(np.linalg.norm(centre)), 1e-12),
            "angular_spread_deg": float(np.degrees(np.sqrt(-2 * np.log(max(resultant, 1e-12))))),
            "norm_spread": float(norms.std() / max(norms.mean(), 1e-12)),
        })
    return rows


def plot_features(sets: list[FeatureSet], output: str | Path, *, dpi: int = DEFAULT_DPI,
                  class_names: list[str] | None = None) -> Path:
    """One scatter panel per feature set (6 x 5.5 inches each), points coloured by class, each
    titled with its accuracy; one legend of the classes.

    Returns:
      The written path.
    """
    if not sets:
        raise FigureInputError("no model given")
    classes = sorted(set().union(*(np.unique(s.labels).tolist() for s in sets)))
    names = class_names or [str(c) for c in classes]
    figure = new_figure(6 * len(sets), 5.5, dpi)
    for axes, feature_set in zip(figure.subplots(1, len(sets), squeeze=False)[0], sets):
        for index, label in enumerate(classes):
            points = feature_set.features[feature_set.labels == label]
            axes.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, color=f"C{index % 10}",
                         label=names[index], linewidths=0, rasterized=True)
        axes.set_title(f"{feature_set.title}: top-1 {100 * feature_set.accuracy:.2f}%\n"
                       f"on {len(feature_set.labels):,} {feature_set.split} images")
        axes.set_xlabel("feature 1 (fc1 output, arbitrary units)")
        axes.set_ylabel("feature 2 (fc1 output, arbitrary units)")
        axes.axhline(0, color="0.7", linewidth=0.5, zorder=0)
        axes.axvline(0, color="0.7", linewidth=0.5, zorder=0)
        axes.grid(alpha=0.2)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, title="digit", loc="outside right center", markerscale=4)
    figure.suptitle("2-D features, coloured by class (the paper's Figure 1)")
    return save_png(figure, output)
