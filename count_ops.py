"""Per-image multiplications, additions, parameters and energy of a model, adder vs cnn.

    python count_ops.py --model resnet20
    python count_ops.py --model resnet50 --input-size 224 --energy-add 0.9 --energy-mul 3.7 --json

Conventions: addernet_jax/opcount.py.
"""

from __future__ import annotations

import argparse
import sys

from addernet_jax.models import list_models
from addernet_jax.opcount import EnergyTable, report


def main(argv: list[str] | None = None) -> int:
    """Parses the flags and prints the report; exit status 2 on bad flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--num-classes", type=int, help="default: the model's dataset")
    parser.add_argument("--input-size", type=int, help="image height = width (default: dataset)")
    parser.add_argument("--energy-add", type=float, default=EnergyTable.add_pj, help="pJ per add")
    parser.add_argument("--energy-mul", type=float, default=EnergyTable.mul_pj, help="pJ per mul")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    source = EnergyTable.source
    if (args.energy_add, args.energy_mul) != (EnergyTable.add_pj, EnergyTable.mul_pj):
        source = "user-given"
    table = EnergyTable(args.energy_add, args.energy_mul, source)
    try:
        text = report(args.model, num_classes=args.num_classes, input_size=args.input_size,
                      table=table, as_json=args.json)
    except ValueError as error:  # an unknown model: the registry's message lists the names
        parser.error(str(error))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
