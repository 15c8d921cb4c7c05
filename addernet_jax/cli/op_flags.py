"""The flags count_ops.py and plot_ops.py share: model, variants, input size, energies."""

from __future__ import annotations

import argparse

from addernet_jax.cli.common import Parser
from addernet_jax.layers import EnergyTable, layer_kinds
from addernet_jax.models import get_model_info, list_models


def energy(value: str) -> float:
    """A pJ value: a number >= 0 (argparse type; its error names the flag)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (pJ), got {value!r}") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (pJ), got {value}")
    return number


def add_op_flags(parser: Parser) -> None:
    """--model, --variants, --num-classes, --input-size and --energy-{add,mul,shift}."""
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--variants", default="adder,cnn",
                        help="comma-separated layer kinds to compare, or 'all' "
                        f"(default adder,cnn; kinds: {', '.join(layer_kinds())})")
    parser.add_flag("--num-classes", type=int, help="default: the model's dataset")
    parser.add_flag("--input-size", type=int, help="image height = width (default: dataset)")
    for op, default in (("add", EnergyTable.add_pj), ("mul", EnergyTable.mul_pj)):
        parser.add_flag(f"--energy-{op}", type=energy, default=default,
                        help=f"pJ per {op} (default {default})")
    parser.add_flag("--energy-shift", type=energy, default=None,
                    help="pJ per shift (default: shifts are counted but not priced)")


def check_op_flags(parser: Parser, args: argparse.Namespace) -> argparse.Namespace:
    """Resolves --variants to a tuple of layer kinds and checks the model name (usage errors
    through `parser.error`); returns `args`."""
    args.variants = (layer_kinds() if args.variants == "all"
                     else tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    unknown = [v for v in args.variants if v not in layer_kinds()]
    if unknown or not args.variants:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(layer_kinds())} "
                     "or 'all'")
    try:
        get_model_info(args.model)
    except ValueError as error:  # the registry's message lists the names
        parser.error(str(error))
    return args


def energy_table(args: argparse.Namespace) -> EnergyTable:
    """The add/mul energies of the flags, labelled with their source."""
    default = (args.energy_add, args.energy_mul) == (EnergyTable.add_pj, EnergyTable.mul_pj)
    return EnergyTable(args.energy_add, args.energy_mul,
                       EnergyTable.source if default else "user-given")
