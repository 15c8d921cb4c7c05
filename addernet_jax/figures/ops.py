"""Operations and estimated energy per image of one model, one bar group per layer kind.

The counts are `addernet_jax.opcount`'s (`compare_variants(name, variants)`): left, the
multiplications, additions and (where a kind has any) shifts per image; right, the estimated
energy per image stacked by operation, priced by an `EnergyTable` (default 45 nm fp32, Horowitz
ISSCC 2014: add 0.9 pJ, multiply 3.7 pJ). Shifts are priced only when a per-shift energy is
given (no sourced value, SHIFTADDNET.md U3); otherwise the energy panel says it leaves them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from addernet_jax.figures.render import DEFAULT_DPI, FigureInputError, new_figure, save_png
from addernet_jax.layers import Counts, EnergyTable
from addernet_jax.opcount import OpCount

OPERATIONS = (("mults", "multiplications", "C3"), ("adds", "additions", "C0"),
              ("shifts", "shifts", "C2"))
COUNT_CONVENTIONS = ("total", "paper")
HEADROOM = 1.3


def _counts(count: OpCount, convention: str) -> Counts:
    """'total': every counted layer with biases and BatchNorm; 'paper': conv/adder/FC MACs only
    (the convention of the paper's #Mul / #Add columns)."""
    if convention not in COUNT_CONVENTIONS:
        raise FigureInputError(f"counts must be one of {COUNT_CONVENTIONS}, got {convention!r}")
    return count.total() if convention == "total" else count.paper_total()


def energy_parts(counts: Counts, table: EnergyTable, shift_pj: float | None) -> dict[str, float]:
    """Energy per operation type in microjoules (shifts only when `shift_pj` is given)."""
    parts = {"mults": counts.mults * table.mul_pj, "adds": counts.adds * table.add_pj}
    if shift_pj is not None:
        parts["shifts"] = counts.shifts * shift_pj
    return {name: value * 1e-6 for name, value in parts.items()}


def _label_bars(axes, bars, values, fmt: str) -> None:
    for bar, value in zip(bars, values):
        axes.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize="x-small", xytext=(0, 2),
                      textcoords="offset points")


def _draw_operations(axes, counts: dict[str, Counts]) -> None:
    """Grouped bars: one group per variant, one bar per operation type (in millions)."""
    shown = [op for op in OPERATIONS
             if op[0] != "shifts" or any(c.shifts for c in counts.values())]
    positions = np.arange(len(counts))
    width = 0.8 / len(shown)
    for index, (attr, name, colour) in enumerate(shown):
        values = [getattr(c, attr) / 1e6 for c in counts.values()]
        bars = axes.bar(positions + (index - (len(shown) - 1) / 2) * width, values, width,
                        label=name, color=colour)
        _label_bars(axes, bars, values, "{:.3g}")
    axes.set_xticks(positions, list(counts))
    axes.set_xlabel("layer kind (model variant)")
    axes.set_ylabel("operations per image (millions)")
    axes.set_title("Operations per image")
    axes.set_ylim(top=axes.get_ylim()[1] * HEADROOM)  # room for the legend above the bars
    axes.legend(fontsize="small", loc="upper right")


def _draw_energy(axes, counts: dict[str, Counts], table: EnergyTable,
                 shift_pj: float | None) -> None:
    """Stacked bars: the energy of each operation type, per variant, in microjoules."""
    parts = {variant: energy_parts(c, table, shift_pj) for variant, c in counts.items()}
    positions = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for attr, name, colour in OPERATIONS:
        values = np.array([p.get(attr, 0.0) for p in parts.values()])
        if attr not in next(iter(parts.values())) or not values.any():
            continue
        axes.bar(positions, values, 0.6, bottom=bottom, label=f"{name}", color=colour)
        bottom += values
    for position, total in zip(positions, bottom):
        axes.annotate(f"{total:.3g} µJ", (position, total), ha="center", va="bottom",
                      fontsize="x-small", xytext=(0, 2), textcoords="offset points")
    axes.set_xticks(positions, list(counts))
    axes.set_xlabel("layer kind (model variant)")
    axes.set_ylabel("estimated energy per image (µJ)")
    unpriced = shift_pj is None and any(c.shifts for c in counts.values())
    prices = f"add {table.add_pj} pJ, mult {table.mul_pj} pJ" + (
        f", shift {shift_pj} pJ" if shift_pj is not None else "")
    axes.set_title(f"Estimated energy ({prices})" + ("\nshifts not priced" if unpriced else ""),
                   fontsize="medium")
    axes.set_ylim(top=axes.get_ylim()[1] * HEADROOM)  # room for the legend above the bars
    axes.legend(fontsize="small", loc="upper right")


def plot_ops(name: str, counts: dict[str, OpCount], output: str | Path, *,
             table: EnergyTable | None = None, shift_pj: float | None = None,
             convention: str = "total", dpi: int = DEFAULT_DPI) -> Path:
    """Draws the operations and energy chart of `compare_variants(name, ...)` (11 x 4.5 in).

    Args:
      name: the model's registry name (for the title).
      counts: variant -> its `OpCount`.
      output: the .png path.
      table: energy per add and multiplication (default `EnergyTable()`: 45 nm fp32).
      shift_pj: energy per shift, or None to leave shifts unpriced.
      convention: 'total' (all counted layers, biases and BatchNorm) or 'paper'.
      dpi: pixels per inch.
    """
    if not counts:
        raise FigureInputError("no variant given")
    table = table or EnergyTable()
    totals = {variant: _counts(count, convention) for variant, count in counts.items()}
    figure = new_figure(11, 4.5, dpi)
    left, right = figure.subplots(1, 2)
    _draw_operations(left, totals)
    _draw_energy(right, totals, table, shift_pj)
    height, width, channels = next(iter(counts.values())).input_shape
    what = ("all layers, biases and BatchNorm" if convention == "total"
            else "conv/adder/FC MACs only, the paper's convention")
    figure.suptitle(f"{name}: operations and estimated energy per {height}x{width}x{channels} "
                    f"image\n({what}; energy: {table.source})")
    return save_png(figure, output)
