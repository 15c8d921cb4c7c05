"""Per-image operation, parameter and energy counts of the model zoo (ADDERNET.md 9).

Counts come from the model itself: the forward pass is traced abstractly (`nnx.eval_shape`, no
FLOPs run, no parameters allocated) while the calls of the counted layer types are recorded
with their input and output shapes. Conventions, per image (batch 1):

- conv / FC with M multiply-accumulates (M = output elements * kh * kw * C_in / groups, or
  rows * in * out for a Linear): M multiplications and M additions. The paper's tables count
  #Add(CNN) = #Mul(CNN) the same way (not M - outputs).
- adder layer with M "MACs" (same formula): 2M additions (one subtraction and one accumulation
  per term; |.| is a sign flip) and no multiplication, so #Add(ANN) = 2 #Mul(CNN) on those
  layers as in the paper's tables ([T1], [T2]).
- bias: one addition per output element.
- BatchNorm at inference is a folded per-channel affine: 1 multiplication + 1 addition per
  output element. BN layers are reported in their own rows and included in `total`.
- `paper` totals: conv / adder / FC multiply-accumulates only (no bias, no BN), the convention of
  the paper's #Mul / #Add columns. ReLU, pooling and residual additions are not counted.
- parameters: `nnx.Param` elements (adder kernels included, BN running statistics excluded).
- energy = #mul * E_mul + #add * E_add, default 45 nm fp32 (Horowitz, ISSCC 2014):
  add 0.9 pJ, multiply 3.7 pJ.

Against the paper: ResNet-32 69.12M and ResNet-18 1.81G match the `paper` totals of the CNN
variants; ResNet-20 gives 40.81M (table: 41.17M) and VGG-small 0.61G (table: 0.65G), see
ADDERNET.md U8; ResNet-50 gives 4.09G for resnet50.py's stride-on-the-3x3 blocks (table: 3.9G,
which is what stride-on-the-first-1x1 blocks would give: 3.86G).

Layer groups (stem, layer1.., head) come from each model's `OP_GROUPS` table (top-level attribute
-> group), else the top-level attribute name.

Recording temporarily wraps the layer classes' `__call__`: do not count from several threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
from flax import nnx

from addernet_jax.layers import OP_COUNTERS, Counts, get_layer_kind, op_counter, param_count
from addernet_jax.layers.base import EnergyTable, bias_adds, counted_class
from addernet_jax.models import create_model, get_model_info

__all__ = ["Counts", "EnergyTable", "LayerCount", "OpCount", "compare_variants", "count_model",
           "count_ops", "param_count", "report"]


@dataclasses.dataclass(frozen=True)
class LayerCount:
    """One call of a counted layer.

    Attributes:
      name: path in the model, e.g. 'layer2.0.downsample.0'.
      group: layer group, e.g. 'stem', 'layer2', 'head'.
      kind: the layer's counter label: 'conv', 'adder', 'fc', 'bn', ...
      in_shape, out_shape: activation shapes without the batch axis.
      macs: multiply-accumulates (adder: terms |x - w|; BN: output elements).
      counts: multiplications, additions and parameters under the module's conventions.
      bias_adds: the additions of `counts` that come from a bias.
      multiplicative: whether the paper's #Mul column counts `macs` (conv, fc).
    """

    name: str
    group: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int
    counts: Counts
    bias_adds: int = 0
    multiplicative: bool = False


@dataclasses.dataclass(frozen=True)
class OpCount:
    """Per-image counts of one model variant for one (H, W, C) input."""

    input_shape: tuple[int, int, int]
    layers: tuple[LayerCount, ...]

    def groups(self) -> dict[str, Counts]:
        """Conv / adder / FC counts per layer group (BN excluded), then 'batchnorm' (all BN)."""
        result: dict[str, Counts] = {}
        for layer in self.layers:
            key = "batchnorm" if layer.kind == "bn" else layer.group
            result[key] = result.get(key, Counts()) + layer.counts
        if "batchnorm" in result:
            result["batchnorm"] = result.pop("batchnorm")  # last
        return result

    def total(self) -> Counts:
        """Everything: conv / adder / FC with biases, and BN."""
        return sum((layer.counts for layer in self.layers), Counts())

    def paper_total(self) -> Counts:
        """The paper's convention: the conv / adder / FC layers' operations without their
        biases (a conv MAC is 1 mul + 1 add, an adder MAC 2 adds); those layers' parameters."""
        layers = [l for l in self.layers if l.kind != "bn"]
        total = sum((l.counts for l in layers), Counts())
        return dataclasses.replace(total, adds=total.adds - sum(l.bias_adds for l in layers))


@contextlib.contextmanager
def _record_calls(records: list):
    """Appends (module, input shape, output shape) for every call of a module class that has a
    registered op counter (`addernet_jax.layers.register_op_counter`), once per call."""
    saved = {cls: cls.__dict__.get("__call__") for cls in OP_COUNTERS}

    def wrap(cls, original):
        def recording_call(module, x, *args, **kwargs):
            y = original(module, x, *args, **kwargs)
            if counted_class(module) is cls:  # a subclass's own wrapper records it
                records.append((module, x.shape, y.shape))
            return y

        return recording_call

    try:
        for cls in OP_COUNTERS:
            cls.__call__ = wrap(cls, cls.__call__)
        yield records
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original


def count_ops(model: nnx.Module, input_shape: tuple[int, int, int]) -> OpCount:
    """Counts one image's operations through `model`.

    Args:
      model: an NNX model (concrete, or abstract from `nnx.eval_shape`).
      input_shape: (H, W, C) of one image.

    Returns:
      The counts of every call of a counted layer, in call order.

    Raises:
      ValueError: if the counted layers do not hold all of the model's parameters (a layer type
        the counter does not know).
    """
    group_table = getattr(type(model), "OP_GROUPS", {})
    layers: list[LayerCount] = []

    def traced(m, x):
        paths = {id(module): path for path, module in nnx.iter_modules(m)}
        records = []
        with _record_calls(records):
            m(x)
        for module, in_shape, out_shape in records:
            path = paths[id(module)]
            counter = op_counter(module)
            macs, counts = counter.count(module, out_shape[1:])
            layers.append(LayerCount(
                ".".join(str(p) for p in path), group_table.get(path[0], str(path[0])),
                counter.label, tuple(in_shape[1:]), tuple(out_shape[1:]), macs, counts,
                bias_adds(module, out_shape[1:]), counter.multiplicative))

    nnx.eval_shape(traced, model, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    result = OpCount(tuple(input_shape), tuple(layers))
    model_params = param_count(model)
    counted = sum(l.counts.params for l in {l.name: l for l in layers}.values())
    if counted != model_params:
        kinds = ", ".join(cls.__name__ for cls in OP_COUNTERS)
        raise ValueError(
            f"counted layers ({kinds}) hold {counted} of the model's {model_params} parameters: "
            "the model has a parameterised layer of another type, or one it never calls"
        )
    return result


def count_model(
    name: str,
    *,
    variant: str = "adder",
    num_classes: int | None = None,
    input_size: int | None = None,
) -> OpCount:
    """Counts a registry model without allocating it.

    Args:
      name: registry name (`addernet_jax.models.list_models()`).
      variant: 'adder' or 'cnn'.
      num_classes: defaults to the model's dataset (10 for CIFAR-10/MNIST, 1000 for ImageNet).
      input_size: image height = width; defaults to the dataset's (32, 28 or 224).
    """
    info = get_model_info(name)
    num_classes = info.num_classes if num_classes is None else num_classes
    height, width, channels = info.input_shape
    if input_size is not None:
        height = width = input_size
    # The counts do not depend on the adder implementation; the reference one traces fastest.
    model = nnx.eval_shape(
        lambda: create_model(
            name, num_classes=num_classes, variant=variant, impl="reference", rngs=nnx.Rngs(0)
        )
    )
    return count_ops(model, (height, width, channels))


PAPER_VARIANTS = ("adder", "cnn")


def compare_variants(name: str, variants=PAPER_VARIANTS, **kwargs) -> dict[str, OpCount]:
    """`count_model` for each of `variants` (default: the paper's adder-vs-cnn comparison;
    `layer_kinds()` for every registered kind); kwargs as `count_model`."""
    for variant in variants:
        get_layer_kind(variant)
    return {variant: count_model(name, variant=variant, **kwargs) for variant in variants}


# ---------------------------------------------------------------------------------------------
# Reports


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _counts_dict(counts: Counts, table: EnergyTable) -> dict:
    """mults, adds, params (and shifts where there are any), energy in uJ."""
    values = dataclasses.asdict(counts)
    if not counts.shifts:
        del values["shifts"]
    return dict(values, energy_uj=counts.energy_pj(table) * 1e-6)


def _rows(count: OpCount) -> dict[str, Counts]:
    """Group rows, then 'total' (everything) and 'paper' (conv/adder/FC MACs only)."""
    return {**count.groups(), "total": count.total(), "paper": count.paper_total()}


def comparison_dict(
    name: str, counts: dict[str, OpCount], table: EnergyTable = EnergyTable()
) -> dict:
    """A JSON-serialisable report of `compare_variants(name)`: per variant, the group rows,
    totals and every layer."""
    variants = {}
    for variant, count in counts.items():
        variants[variant] = {
            "rows": {row: _counts_dict(c, table) for row, c in _rows(count).items()},
            "layers": [
                dict(
                    name=l.name,
                    group=l.group,
                    kind=l.kind,
                    in_shape=list(l.in_shape),
                    out_shape=list(l.out_shape),
                    macs=l.macs,
                    **_counts_dict(l.counts, table),
                )
                for l in count.layers
            ],
        }
    input_shape = next(iter(counts.values())).input_shape
    return {
        "model": name,
        "input_shape": list(input_shape),
        "energy_pj": dataclasses.asdict(table),
        "variants": variants,
    }


def format_comparison(
    name: str, counts: dict[str, OpCount], table: EnergyTable = EnergyTable()
) -> str:
    """A text table: one row per layer group, BN, total and paper total; one column block per
    variant (mults, adds, params, energy in uJ)."""
    height, width, channels = next(iter(counts.values())).input_shape
    rows = {variant: _rows(count) for variant, count in counts.items()}
    header = f"{'':>10}" + "".join(f" | {v:^41}" for v in counts)
    columns = f"{'group':<10}" + f" | {'mults':>9} {'adds':>9} {'params':>9} {'uJ':>11}" * len(
        counts
    )
    lines = [
        f"{name}: per image, input {height}x{width}x{channels}; energy {table.source}: "
        f"add {table.add_pj} pJ, mul {table.mul_pj} pJ",
        header,
        columns,
        "-" * len(columns),
    ]
    for row in rows[next(iter(counts))]:
        if row == "total":
            lines.append("-" * len(columns))
        cells = "".join(
            f" | {_si(c.mults):>9} {_si(c.adds):>9} {_si(c.params):>9} "
            f"{c.energy_pj(table) * 1e-6:>11.3f}"
            for c in (rows[v][row] for v in counts)
        )
        lines.append(f"{row:<10}{cells}")
    lines.append(
        "total: conv/adder/fc with bias + BN (1 mul + 1 add per output); paper: conv/adder/fc "
        "MACs only (adder MAC = 2 adds)"
    )
    return "\n".join(line.rstrip() for line in lines)


def report(
    name: str,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    table: EnergyTable = EnergyTable(),
    as_json: bool = False,
    variants=PAPER_VARIANTS,
) -> str:
    """The report of a registry model for `variants` (default adder vs cnn), as a text table or
    JSON (`count_ops.py`)."""
    counts = compare_variants(name, variants, num_classes=num_classes, input_size=input_size)
    if as_json:
        return json.dumps(comparison_dict(name, counts, table), indent=1)
    return format_comparison(name, counts, table)
