"""What train.py does around `train_and_evaluate`: flag errors, multi-host start, exit codes.

Exit codes: 0 done, 1 NaN/Inf loss, 2 bad flags/config/data, 143 preempted (SIGTERM; the
checkpoint is saved and the same command resumes). Expected errors print one line, no traceback
(set ADDERNET_DEBUG=1 for tracebacks).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from absl import logging as absl_logging

from addernet_jax.training import parallel
from addernet_jax.training.loop import NonFiniteLossError, Preempted, train_and_evaluate
from addernet_jax.training.metrics import log

EXIT_NONFINITE, EXIT_USAGE, EXIT_PREEMPTED = 1, 2, 143


def _fail(message: str, code: int) -> int:
    if os.environ.get("ADDERNET_DEBUG") == "1":
        raise
    print(f"error: {message}", file=sys.stderr)
    return code


def parse_flags_or_exit(argv):
    """absl flag parsing that turns a bad config file or override into one line and exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(_fail(f"{e}\nPass --helpfull to see the flags.", EXIT_USAGE))
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        # ml_collections reports an unknown --config.field as AttributeError/KeyError.
        sys.exit(_fail(f"bad --config or --config.* override: {e}", EXIT_USAGE))


def run_training(config, workdir: str, coordinator: str = "", num_processes: int = 0,
                 process_id: int = -1) -> int:
    """Starts multi-host JAX if asked, trains, prints the outcome; returns the exit code."""
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    parallel.initialize_distributed(coordinator, num_processes, process_id)
    try:
        summary = train_and_evaluate(config, workdir)
    except NonFiniteLossError as e:
        return _fail(f"{e}; stopped without saving it (the latest checkpoint in {workdir} is the "
                     "last good state)", EXIT_NONFINITE)
    except Preempted as e:
        return _fail(str(e), EXIT_PREEMPTED)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e), EXIT_USAGE)
    best = summary["best_accuracy"]
    log(f"done: {summary['steps']} steps, best test accuracy "
        f"{'n/a' if best is None else f'{100 * best:.2f}%'} (step {summary['best_step']}); "
        f"summary in {workdir}/summary.json")
    return 0
