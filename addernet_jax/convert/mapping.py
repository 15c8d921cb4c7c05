"""PyTorch state_dict -> the NNX state of one of our models, by an explicit name and layout table.

Our models mirror the official PyTorch attribute names (`conv1`, `layer2.0.downsample.0`, `fc`,
`bn2`, ...; see `addernet_jax.models`), so a PyTorch key is our module path plus a leaf name
that depends only on the kind of layer:

    our layer     our leaf   PyTorch leaf          layout change
    Adder2D       kernel     adder                 OIHW -> HWIO   (official adder.py filters)
    Adder2D       bias       b                     -
    nnx.Conv      kernel     weight                OIHW -> HWIO
    nnx.Conv      bias       bias                  -
    nnx.Linear    kernel     weight                (out, in) -> (in, out)
    nnx.Linear    bias       bias                  -
    nnx.BatchNorm scale      weight                -
    nnx.BatchNorm bias       bias                  -
    nnx.BatchNorm mean       running_mean          -
    nnx.BatchNorm var        running_var           -

A `module.` prefix (`nn.DataParallel`, as the released ResNet-20 checkpoint) is stripped and
BatchNorm's `num_batches_tracked` counters are dropped. Every key and shape is checked against
the target model; all missing, unexpected and mis-shaped keys are reported in one ValueError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import ml_dtypes
import numpy as np
from flax import nnx

from addernet_jax.layers import Adder2D

__all__ = [
    "LEAF_TABLE",
    "TorchEntry",
    "strip_data_parallel_prefix",
    "torch_entries",
    "torch_state_dict_to_nnx",
]

DATA_PARALLEL_PREFIX = "module."
DROPPED_BUFFER = "num_batches_tracked"  # BatchNorm's step counter: no NNX counterpart


def _oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)


def _hwio_to_oihw_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def _linear_to_ours(w: np.ndarray) -> np.ndarray:
    return w.T


def _same(w: np.ndarray) -> np.ndarray:
    return w


def _reversed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[::-1]


def _same_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


@dataclasses.dataclass(frozen=True)
class LeafRule:
    """How one of our leaves is stored by PyTorch.

    Attributes:
      torch_leaf: the PyTorch parameter or buffer name.
      to_ours: PyTorch array -> our array (a transpose, or the identity).
      torch_shape: our shape -> the PyTorch shape.
    """

    torch_leaf: str
    to_ours: Callable[[np.ndarray], np.ndarray] = _same
    torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]] = _same_shape


_KERNEL_4D = dict(to_ours=_oihw_to_hwio, torch_shape=_hwio_to_oihw_shape)  # OIHW -> HWIO
_LINEAR = dict(to_ours=_linear_to_ours, torch_shape=_reversed_shape)  # (out, in) -> (in, out)

# (our layer type, our leaf) -> PyTorch name and layout: the table of the module docstring.
LEAF_TABLE: dict[tuple[type, str], LeafRule] = {
    (Adder2D, "kernel"): LeafRule("adder", **_KERNEL_4D),
    (Adder2D, "bias"): LeafRule("b"),
    (nnx.Conv, "kernel"): LeafRule("weight", **_KERNEL_4D),
    (nnx.Conv, "bias"): LeafRule("bias"),
    (nnx.Linear, "kernel"): LeafRule("weight", **_LINEAR),
    (nnx.Linear, "bias"): LeafRule("bias"),
    (nnx.BatchNorm, "scale"): LeafRule("weight"),
    (nnx.BatchNorm, "bias"): LeafRule("bias"),
    (nnx.BatchNorm, "mean"): LeafRule("running_mean"),
    (nnx.BatchNorm, "var"): LeafRule("running_var"),
}


@dataclasses.dataclass(frozen=True)
class TorchEntry:
    """One array of our model as PyTorch names and shapes it.

    Attributes:
      path: our NNX state path, e.g. ('layer2', 0, 'downsample', 0, 'kernel').
      shape: the PyTorch shape (e.g. OIHW).
      dtype: our dtype.
      rule: the `LeafRule` that converts it.
    """

    path: tuple
    shape: tuple[int, ...]
    dtype: np.dtype
    rule: LeafRule


def _rule(layer: nnx.Module, leaf: str, path: tuple) -> LeafRule:
    for (kind, name), rule in LEAF_TABLE.items():
        if isinstance(layer, kind) and name == leaf:
            return rule
    where = ".".join(map(str, path))
    raise NotImplementedError(f"no PyTorch name for {type(layer).__name__}.{leaf} ({where})")


def torch_entries(model: nnx.Module) -> dict[str, TorchEntry]:
    """{PyTorch state_dict key (no `module.` prefix): TorchEntry} for every array of `model`.

    Works on concrete and abstract (`nnx.eval_shape`) models alike.
    """
    layers = dict(nnx.iter_modules(model))
    entries = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        owner, leaf = tuple(path[:-1]), path[-1]
        rule = _rule(layers[owner], leaf, path)
        key = ".".join([*map(str, owner), rule.torch_leaf])
        shape = tuple(variable.shape)
        entries[key] = TorchEntry(tuple(path), rule.torch_shape(shape), variable.dtype, rule)
    return entries


def strip_data_parallel_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the `module.` prefix that `nn.DataParallel` adds, when every key has it."""
    if state_dict and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict):
        return {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _drop_step_counters(state_dict: dict, entries: dict[str, TorchEntry]) -> dict:
    """Removes `<bn>.num_batches_tracked` of the BatchNorms that the model has."""
    batch_norms = {k.rpartition(".")[0] for k in entries if k.endswith(".running_mean")}
    return {
        k: v
        for k, v in state_dict.items()
        if not (k.endswith("." + DROPPED_BUFFER) and k.rpartition(".")[0] in batch_norms)
    }


def _variant_hint(missing: list[str], unexpected: list[str]) -> str:
    """Names the most common mismatch: an adder checkpoint for a cnn model, or the reverse."""
    unexpected = set(unexpected)
    for ours, theirs, variant in (("adder", "weight", "cnn"), ("weight", "adder", "adder")):
        swapped = [
            k for k in missing if k.endswith("." + ours) and k[: -len(ours)] + theirs in unexpected
        ]
        if swapped:
            return (
                f"; the file has `{theirs}` where this model has `{ours}` ({len(swapped)} "
                f"layers): it looks like a variant='{variant}' checkpoint"
            )
    return ""


def _is_float(dtype: np.dtype) -> bool:
    try:
        ml_dtypes.finfo(dtype)  # numpy floats and bfloat16 / float8 alike
    except ValueError:
        return False
    return True


def check_state_dict(
    state_dict: Mapping[str, np.ndarray], entries: dict[str, TorchEntry], what: str
) -> None:
    """ValueError listing every missing, unexpected, mis-shaped and non-float key at once."""
    problems = {
        "missing": [k for k in entries if k not in state_dict],
        "unexpected": [k for k in state_dict if k not in entries],
        "mis-shaped": [
            f"{k} {tuple(np.shape(v))} (model: {entries[k].shape})"
            for k, v in state_dict.items()
            if k in entries and tuple(np.shape(v)) != entries[k].shape
        ],
        "not floating point": [
            f"{k} ({np.asarray(v).dtype})"
            for k, v in state_dict.items()
            if k in entries and not _is_float(np.asarray(v).dtype)
        ],
    }
    if not any(problems.values()):
        return
    report = "; ".join(
        f"{len(keys)} {kind}" + (f": {', '.join(keys)}" if keys else "")
        for kind, keys in problems.items()
        if keys or kind != "not floating point"
    )
    hint = _variant_hint(problems["missing"], problems["unexpected"])
    raise ValueError(f"the state_dict does not fit {what}: {report}{hint}")


def torch_state_dict_to_nnx(
    state_dict: Mapping[str, np.ndarray], model: nnx.Module, *, what: str | None = None
) -> nnx.State:
    """Maps a PyTorch state_dict onto `model`'s arrays; `model` itself is left unchanged.

    Args:
      state_dict: key -> array, e.g. from `load_torch_state_dict` or `{k: v.numpy()}`.
      model: the target (concrete, or abstract from `nnx.eval_shape`): gives names and shapes.
      what: how to name the model in errors (default: its class).

    Returns:
      A state like `nnx.state(model)` holding the converted arrays (our dtypes, C order).

    Raises:
      ValueError: listing every missing, unexpected and mis-shaped key (PyTorch names).
    """
    entries = torch_entries(model)
    state_dict = _drop_step_counters(strip_data_parallel_prefix(state_dict), entries)
    check_state_dict(state_dict, entries, what or type(model).__name__)
    pure: dict = {}
    for key, entry in entries.items():
        array = entry.rule.to_ours(np.asarray(state_dict[key]))
        *parents, leaf = entry.path
        node = pure
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.ascontiguousarray(array, dtype=entry.dtype)
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, pure)
    return state
