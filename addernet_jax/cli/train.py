"""train.py: train any task from a config file, resuming from the workdir's latest checkpoint.

    python train.py --config configs/mnist_lenet5.py --workdir runs/mnist_lenet5
    python train.py --config configs/cifar10_resnet20.py:cnn --workdir runs/r20_cnn \
        --config.data.source=local --config.data.local_path=../shared/data/cifar10-jpeg

`--config` is loaded by ml_collections (`path[:argument]`, the argument goes to its
`get_config`); `--config.FIELD=VALUE` overrides any field. Multi-host: --coordinator-address /
--num-processes / --process-id (or $ADDERNET_COORDINATOR, $ADDERNET_NUM_PROCESSES,
$ADDERNET_PROCESS_ID; $ADDERNET_AUTO_DISTRIBUTED=1 on SLURM and TPU pods).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from addernet_jax.cli.common import UsageError, make_parser, run_main
from addernet_jax.layers import layer_kinds
from addernet_jax.models import list_models
from addernet_jax.runtime import parallel
from addernet_jax.tasks import task_names

PROGRAM = "train.py"


def _epilog() -> str:
    return (f"config overrides: --config.FIELD=VALUE for any field of the config file (see "
            f"configs/*.py and configs/default.py)\n  tasks (config.task): "
            f"{', '.join(task_names())}\n  models (config.model.name): "
            f"{', '.join(list_models())}\n  variants (config.model.variant): "
            f"{', '.join(layer_kinds())}\nexit status: 0 done, 1 NaN/Inf loss, 2 usage error, "
            "3 failed run, 143 preempted (resume with the same command)")


def parse_args(argv: list[str]):
    """(arguments, config): the flags, and the config with its --config.* overrides applied.

    Raises:
      SystemExit(2): a bad flag (argparse's one-line message).
      UsageError: an unreadable config file or a bad override, named.
    """
    parser = make_parser(PROGRAM, __doc__.split("\n")[0], _epilog())
    parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                        help="config file (configs/*.py), optionally with its argument")
    parser.add_argument("--workdir", required=True,
                        help="directory for checkpoints, metrics and the summary")
    parser.add_flag("--coordinator-address", default="", help="multi-host: host:port of "
                    "process 0")
    parser.add_flag("--num-processes", type=int, default=0, help="multi-host: processes")
    parser.add_flag("--process-id", type=int, default=-1, help="multi-host: this process")
    parser.add_flag("--allow-config-change", action="store_true",
                    help="on resume, accept changed fields other than the model and the data")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, load_config(args.config, rest)


def load_config(path: str, overrides: list[str]):
    """The ml_collections config of `path` with `--config.FIELD=VALUE` overrides applied."""
    file = path.split(":", 1)[0]
    if not Path(file).is_file():
        raise UsageError(f"--config {file}: no such file")
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "config file",
                                             flag_values=flag_values, lock_config=True)
    try:
        flag_values([PROGRAM, f"--config={path}", *overrides])
        return holder.value
    except flags.Error as e:
        raise UsageError(str(e).replace("\n", " ")) from None
    except (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError,
            ImportError) as e:
        # ml_collections reports an unknown --config.field as AttributeError/KeyError, a broken
        # file as SyntaxError/ImportError/ValueError.
        raise UsageError(f"bad --config or --config.* override: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Parses the command line, starts multi-host JAX if asked, trains; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv

    def run() -> int:
        from addernet_jax.training.loop import NonFiniteLossError, train_and_evaluate
        from addernet_jax.training.metrics import log

        args, config = parse_args(argv)
        parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                        args.process_id)
        try:
            summary = train_and_evaluate(config, args.workdir,
                                         allow_config_change=args.allow_config_change)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(
                f"{e}; stopped without saving it (the latest checkpoint in {args.workdir} is "
                "the last good state)") from None
        name = summary["best_metric"]
        best = summary[f"best_{name}"]
        value = "n/a" if best is None else (f"{100 * best:.2f}%" if name == "accuracy"
                                             else f"{best:.4f}")
        log(f"done: {summary['steps']} steps, best test {name} {value} (step "
            f"{summary['best_step']}); summary in {args.workdir}/summary.json")
        return 0

    return run_main(PROGRAM, run, debug)
