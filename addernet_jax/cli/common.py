"""The command-line convention every entry point shares.

- Flags are `--long-name VALUE` or `--long-name=VALUE` (argparse); the underscore spelling
  (`--long_name`) is accepted too. `--help` lists every flag and every choice.
- Exit status (README, "Exit status"):
    0    done
    1    training stopped on a NaN/Inf loss (the last good checkpoint is kept)
    2    usage error: a bad flag, config field or name, or a path named on the command line that
         is missing or of the wrong kind; fix the command
    3    failed run: something the command points to is damaged or unusable (a corrupt, unsafe
         or mismatched checkpoint, non-finite weights), or the system failed (read-only or full
         disk, a workdir another run holds)
    143  preempted by SIGTERM; the checkpoint is saved and the same command resumes
- Errors are one line on stderr, `<program>: error: <what, naming the path or field>`; with
  `--debug` the traceback is printed instead.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable

from addernet_jax.convert.safe_unpickler import CheckpointFormatError, UnsafePickleError
from addernet_jax.runtime.checkpoints import CheckpointError
from addernet_jax.tasks import ConfigError

EXIT_OK, EXIT_NONFINITE, EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 0, 1, 2, 3, 143


class UsageError(ValueError):
    """The command is wrong (a flag, a name or a path it gives); exit status 2."""


class RunFailed(RuntimeError):
    """The run could not complete for a reason the command cannot fix; exit status 3."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions: one-line usage errors (exit 2), and
    `add_flag` registering the underscore spelling of multi-word flags as a hidden alias."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def add_flag(self, name: str, **kwargs) -> argparse.Action:
        """`add_argument(name, ...)` plus a hidden `--under_score` alias for a dashed name."""
        action = self.add_argument(name, **kwargs)
        alias = name.replace("-", "_")
        if alias.lstrip("_") != name.lstrip("-") and "-" in name.lstrip("-"):
            self.add_argument("--" + alias.lstrip("_"), dest=action.dest, help=argparse.SUPPRESS,
                              **{k: v for k, v in kwargs.items() if k not in ("help", "dest")})
        return action


def make_parser(program: str, description: str, epilog: str = "") -> Parser:
    """The parser of an entry point, with the shared `--debug` flag."""
    parser = Parser(prog=program, description=description, epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error instead of one line")
    return parser


def describe_os_error(error: OSError) -> str:
    """'<path>: <problem>' for a file-system error, naming full disks and read-only places."""
    path = error.filename or ""
    if error.errno == errno.ENOSPC:
        problem = "no space left on the device"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        problem = "not writable (read-only or no permission)" if error.errno != errno.EACCES \
            else "permission denied"
    elif error.errno == errno.ENOTDIR:
        problem = "a path component is a file, not a directory"
    else:
        problem = error.strerror or str(error)
    return f"{path}: {problem}" if path else problem


# tensorstore (under orbax) reports file-system errors as ValueError("... [os_error_code='28']").
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _os_error_in_chain(error: BaseException) -> OSError | None:
    """The first OSError in an exception's cause/context chain (libraries wrap them), or one
    rebuilt from a tensorstore message that carries an errno."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        code = _OS_ERROR_CODE.search(str(error))
        if code:
            number = int(code.group(1))
            return OSError(number, os.strerror(number))
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def exit_status(error: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an expected failure; (EXIT_FAILED, ...) for I/O."""
    from addernet_jax.training.loop import NonFiniteLossError, Preempted
    from addernet_jax.training.workdir import WorkdirBusyError

    if isinstance(error, NonFiniteLossError):
        return EXIT_NONFINITE, str(error)
    if isinstance(error, Preempted):
        return EXIT_PREEMPTED, str(error)
    if isinstance(error, CheckpointError | CheckpointFormatError | UnsafePickleError |
                  WorkdirBusyError | RunFailed):
        return EXIT_FAILED, str(error)
    if isinstance(error, ConfigError | UsageError | FileExistsError | FileNotFoundError):
        return EXIT_USAGE, str(error)
    os_error = _os_error_in_chain(error)
    if os_error is not None:
        return EXIT_FAILED, describe_os_error(os_error)
    if isinstance(error, ValueError):
        return EXIT_USAGE, str(error)
    raise error


def configure_logging(program: str) -> None:
    """Warnings of this project as `<program>: warning: ...` lines on stderr. The libraries'
    own log lines (orbax logs through absl) are not shown: the errors they describe reach the
    user as this program's one-line error (`--debug` shows the traceback)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{program}: %(message)s"))
    project = logging.getLogger("addernet_jax")
    project.handlers[:] = [handler]
    project.propagate = False
    logging.getLogger("absl").setLevel(logging.CRITICAL)


def run_main(program: str, main: Callable[[], int], debug: bool) -> int:
    """Runs `main()`, turning expected failures into one line on stderr and their status."""
    configure_logging(program)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # classified below; anything unexpected keeps its traceback
        if debug or os.environ.get("ADDERNET_DEBUG") == "1":
            traceback.print_exc()
        try:
            status, message = exit_status(error)
        except Exception:
            raise error from None
        if not debug:
            first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
            print(f"{program}: error: {first}", file=sys.stderr)
        return status
