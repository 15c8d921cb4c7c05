"""What every layer kind declares: how it is built, and what its calls cost.

A *layer kind* is what a model's `variant` names: the layers that AdderNet swaps ('adder' builds
`Adder2D`, 'cnn' builds `nnx.Conv`, later kinds build others) and the convolutions that AdderNet
keeps multiplicative (stem, 1x1 classifier; ADDERNET.md 4), which other kinds may swap too.
Model definitions call `make_layer(variant, ...)` / `make_kept_conv(variant, ...)` and never name
a layer class, so a new kind is one file in this package plus its `register_layer_kind` call.

Each module class that does arithmetic also registers an *op counter* (`register_op_counter`):
`addernet_jax.opcount` traces a model and asks the counter of every called module for its
multiplications, additions and shifts. Parameters that need special optimizer treatment say so
on their `nnx.Variable` type (see `addernet_jax.optim.optimizer`), not here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Energy per scalar operation in picojoules (default: 45 nm fp32, Horowitz, ISSCC 2014:
    add 0.9 pJ, multiply 3.7 pJ)."""

    add_pj: float = 0.9
    mul_pj: float = 3.7
    source: str = "45 nm fp32 (Horowitz, ISSCC 2014)"
    shift_pj: float = 0.0  # no layer kind registered so far performs shifts


@dataclasses.dataclass(frozen=True)
class Counts:
    """Per-image scalar operations and parameters of a layer or a set of layers."""

    mults: int = 0
    adds: int = 0
    params: int = 0
    shifts: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.mults + other.mults, self.adds + other.adds,
                      self.params + other.params, self.shifts + other.shifts)

    def energy_pj(self, table: EnergyTable = EnergyTable()) -> float:
        """Energy of these operations in pJ under `table`."""
        return (self.mults * table.mul_pj + self.adds * table.add_pj
                + self.shifts * table.shift_pj)


def param_count(module: nnx.Module) -> int:
    """Number of `nnx.Param` elements of a module (BatchNorm running statistics excluded)."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def kernel_terms(module: nnx.Module, out_shape) -> int:
    """Multiply-accumulate terms of a kernel layer's call: output elements times the terms per
    output (prod(kernel.shape[:-1]): kh*kw*C_in for an HWIO kernel, C_in for a Linear's)."""
    return math.prod(out_shape) * math.prod(module.kernel.shape[:-1])


def bias_adds(module: nnx.Module, out_shape) -> int:
    """One addition per output element when the module has a bias."""
    return math.prod(out_shape) if getattr(module, "bias", None) is not None else 0


@dataclasses.dataclass(frozen=True)
class OpCounter:
    """How one module class's call is counted.

    Attributes:
      label: the kind of layer in reports ('conv', 'adder', 'fc', 'bn', 'shift', ...).
      count: `count(module, out_shape) -> (terms, Counts)` for one image (`out_shape` without
        the batch axis); `terms` is the multiply-accumulate-like count the paper tables use.
      multiplicative: whether the paper's #Mul column counts its terms (conv, fc).
    """

    label: str
    count: Callable[[nnx.Module, tuple[int, ...]], tuple[int, Counts]]
    multiplicative: bool = False


OP_COUNTERS: dict[type, OpCounter] = {}


def register_op_counter(cls: type, counter: OpCounter) -> None:
    """Declares how calls of `cls` (and its subclasses) are counted by `addernet_jax.opcount`."""
    OP_COUNTERS[cls] = counter


def counted_class(module: nnx.Module) -> type | None:
    """The most specific class of `module` that has a registered op counter, or None."""
    return next((cls for cls in type(module).__mro__ if cls in OP_COUNTERS), None)


def op_counter(module: nnx.Module) -> OpCounter | None:
    """The counter of the most specific registered class of `module`, or None."""
    cls = counted_class(module)
    return None if cls is None else OP_COUNTERS[cls]


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """A model variant's layers.

    Attributes:
      name: the variant name ('adder', 'cnn', ...).
      build: `build(in_features, out_features, kernel_size, strides, *, padding, impl,
        kernel_init, rngs)` -> the layer that replaces a convolution AdderNet makes an adder
        (bias-free, square kernel, PyTorch-style int padding).
      build_kept: the same signature, for the convolutions AdderNet keeps multiplicative (stem,
        1x1 classifier); None builds an `nnx.Conv` as in AdderNet.
      description: one line for `--help` and error messages.
    """

    name: str
    build: Callable[..., nnx.Module]
    build_kept: Callable[..., nnx.Module] | None = None
    description: str = ""


LAYER_KINDS: dict[str, LayerKind] = {}


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Adds a layer kind to the registry (a model variant of that name becomes available)."""
    LAYER_KINDS[kind.name] = kind
    return kind


def layer_kinds() -> tuple[str, ...]:
    """The registered layer-kind (variant) names."""
    return tuple(LAYER_KINDS)


def get_layer_kind(name: str) -> LayerKind:
    """The registered kind `name`; ValueError naming the valid kinds otherwise."""
    if name not in LAYER_KINDS:
        raise ValueError(f"variant must be one of {layer_kinds()}, got {name!r}")
    return LAYER_KINDS[name]
