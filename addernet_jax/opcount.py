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
- shift layer (ShiftAddNet / DeepShift, SHIFTADDNET.md 1) with M terms x * (+-2^k): M shifts
  and M additions (the sign folds into the accumulation), no multiplication. A ShiftAdd unit is
  a shift layer followed by an adder layer, each counted as such. Shifts are their own column.
- bias: one addition per output element.
- BatchNorm at inference is a folded per-channel affine: 1 multiplication + 1 addition per
  output element. BN layers are reported in their own rows and included in `total`.
- `paper` totals: conv / adder / FC multiply-accumulates only (no bias, no BN), the convention of
  the paper's #Mul / #Add columns. ReLU, pooling and residual additions are not counted.
- parameters: `nnx.Param` elements (adder kernels included, BN running statistics excluded).
- energy = #mul * E_mul + #add * E_add (+ #shift * E_shift), default 45 nm fp32 (Horowitz,
  ISSCC 2014): add 0.9 pJ, multiply 3.7 pJ. Shifts are not priced unless a per-shift energy is
  given (`shift_pj`): no sourced value was retrieved (SHIFTADDNET.md U3), so the default
  reports the energy of the adds and multiplications only and says that it excludes shifts.

Against the paper: ResNet-32 69.12M and ResNet-18 1.81G match the `paper` totals of the CNN
variants; ResNet-20 gives 40.81M (table: 41.17M) and VGG-small 0.61G (table: 0.65G), see
ADDERNET.md U8; ResNet-50 gives 4.09G for resnet50.py's stride-on-the-3x3 blocks (table: 3.9G,
which is what stride-on-the-first-1x1 blocks would give: 3.86G).

Layer groups (stem, layer1.., head) come from each model's `OP_GROUPS` table (the longest
dotted path prefix in it names the group: 'conv1' -> 'stem', 'features.3' -> 'block1'), else the
top-level attribute name.

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

    def group(path) -> str:
        names = [str(p) for p in path]
        prefixes = (".".join(names[:n]) for n in range(len(names), 0, -1))
        return next((group_table[p] for p in prefixes if p in group_table), names[0])

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
                ".".join(str(p) for p in path), group(path),
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
      variant: a layer kind ('adder', 'cnn', 'shiftadd', ...; `addernet_jax.layers.layer_kinds`).
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


@dataclasses.dataclass(frozen=True)
class _Pricing:
    """Adds and multiplications priced by `table`; shifts by `shift_pj`, or not at all (None:
    no sourced per-shift energy, SHIFTADDNET.md U3; `table.shift_pj` is not used)."""

    table: EnergyTable
    shift_pj: float | None

    def energy_uj(self, counts: Counts) -> float:
        table = dataclasses.replace(self.table, shift_pj=self.shift_pj or 0.0)
        return counts.energy_pj(table) * 1e-6

    def excludes_shifts(self, counts: Counts) -> bool:
        """Whether `energy_uj(counts)` leaves out shifts that `counts` has."""
        return self.shift_pj is None and counts.shifts > 0

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self.table), shift_pj=self.shift_pj)


def _counts_dict(counts: Counts, pricing: _Pricing) -> dict:
    """mults, adds, params (and shifts where there are any), energy in uJ (and, where it leaves
    out unpriced shifts, `energy_excludes_shifts`)."""
    values = dataclasses.asdict(counts)
    if not counts.shifts:
        del values["shifts"]
    values["energy_uj"] = pricing.energy_uj(counts)
    if pricing.excludes_shifts(counts):
        values["energy_excludes_shifts"] = True
    return values


def _rows(count: OpCount) -> dict[str, Counts]:
    """Group rows, then 'total' (everything) and 'paper' (conv/adder/FC MACs only)."""
    return {**count.groups(), "total": count.total(), "paper": count.paper_total()}


def comparison_dict(name: str, counts: dict[str, OpCount], table: EnergyTable = EnergyTable(),
                    shift_pj: float | None = None) -> dict:
    """A JSON-serialisable report of `compare_variants(name)`: per variant, the group rows,
    totals and every layer; energies priced by `table` and `shift_pj` pJ per shift (None: shifts
    not priced, and rows with shifts say `energy_excludes_shifts`)."""
    pricing = _Pricing(table, shift_pj)
    variants = {}
    for variant, count in counts.items():
        variants[variant] = {
            "rows": {row: _counts_dict(c, pricing) for row, c in _rows(count).items()},
            "layers": [
                dict(name=l.name, group=l.group, kind=l.kind, in_shape=list(l.in_shape),
                     out_shape=list(l.out_shape), macs=l.macs, **_counts_dict(l.counts, pricing))
                for l in count.layers
            ],
        }
    input_shape = next(iter(counts.values())).input_shape
    return {"model": name, "input_shape": list(input_shape), "energy_pj": pricing.as_dict(),
            "shifts_priced": shift_pj is not None, "variants": variants}


def _energy_cell(counts: Counts, pricing: _Pricing) -> str:
    """uJ with 3 decimals, marked '+' when it leaves out unpriced shifts."""
    return f"{pricing.energy_uj(counts):.3f}" + ("+" if pricing.excludes_shifts(counts) else "")


def _title(name: str, input_shape, pricing: _Pricing) -> str:
    height, width, channels = input_shape
    table = pricing.table
    title = (f"{name}: per image, input {height}x{width}x{channels}; energy {table.source}: "
             f"add {table.add_pj} pJ, mul {table.mul_pj} pJ")
    return title if pricing.shift_pj is None else f"{title}, shift {pricing.shift_pj} pJ"


def format_comparison(name: str, counts: dict[str, OpCount], table: EnergyTable = EnergyTable(),
                      shift_pj: float | None = None) -> str:
    """A text table: one row per layer group, BN, total and paper total; one column block per
    variant (mults, adds, shifts when a variant has any, params, energy in uJ, shifts priced by
    `shift_pj` pJ each or not priced when None)."""
    pricing = _Pricing(table, shift_pj)
    rows = {variant: _rows(count) for variant, count in counts.items()}
    # Row names in order of first appearance: a group one variant lacks (the AdderSR units'
    # BatchNorm has no counterpart in the CNN) is a zero row there.
    names_in_order = list(dict.fromkeys(row for variant_rows in rows.values()
                                        for row in variant_rows if row not in ("total", "paper")))
    names_in_order += ["total", "paper"]
    fields = ["mults", "adds", "params"]
    if any(count.total().shifts for count in counts.values()):
        fields.insert(2, "shifts")
    block = 10 * len(fields) + 11
    header = f"{'':>10}" + "".join(f" | {v:^{block}}" for v in counts)
    names = " ".join(f"{f:>9}" for f in fields)
    columns = f"{'group':<10}" + f" | {names} {'uJ':>11}" * len(counts)
    lines = [_title(name, next(iter(counts.values())).input_shape, pricing), header, columns,
             "-" * len(columns)]
    for row in names_in_order:
        if row == "total":
            lines.append("-" * len(columns))
        cells = "".join(
            " | " + " ".join(f"{_si(getattr(c, f)):>9}" for f in fields)
            + f" {_energy_cell(c, pricing):>11}"
            for c in (rows[v].get(row, Counts()) for v in counts))
        lines.append(f"{row:<10}{cells}")
    lines.append("total: conv/adder/fc with bias + BN (1 mul + 1 add per output); paper: "
                 "conv/adder/shift/fc MACs only (adder MAC = 2 adds, shift MAC = 1 shift + 1 add)")
    if "shifts" in fields and shift_pj is None:
        lines.append("shifts are not priced (no sourced pJ per shift, SHIFTADDNET.md U3): "
                     "uJ marked + counts only the adds and mults; --energy-shift PJ prices them")
    return "\n".join(line.rstrip() for line in lines)


def report(
    name: str,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    table: EnergyTable = EnergyTable(),
    shift_pj: float | None = None,
    as_json: bool = False,
    variants=PAPER_VARIANTS,
) -> str:
    """The report of a registry model for `variants` (default adder vs cnn), as a text table or
    JSON (`count_ops.py`); `shift_pj` prices a shift (None: shifts are counted, not priced)."""
    counts = compare_variants(name, variants, num_classes=num_classes, input_size=input_size)
    if as_json:
        return json.dumps(comparison_dict(name, counts, table, shift_pj), indent=1)
    return format_comparison(name, counts, table, shift_pj)
