"""A workdir belongs to one run: an exclusive lock while training, and resume-time config checks.

- `WorkdirLock`: `fcntl.flock` on `<workdir>/.lock`, held by process 0 for the whole run. A
  second `train.py` on the same workdir fails at once naming the holder (pid, host, start time,
  written into the file). The kernel releases the lock when its process dies, so a stale lock
  left by a killed run never blocks the next one.
- `check_resume_config`: the config a workdir's latest checkpoint was trained with against the
  new one. Changes to what defines the model or the data are refused naming the fields; changes
  a resumed run may legitimately make (epochs, logging, evaluation and checkpoint frequency,
  where the data lives) are accepted and reported; anything else (batch size, learning rate,
  ...) needs `allow_changes`.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from addernet_jax.tasks import ConfigError

LOCK_FILE = ".lock"

# Fields a resumed run may change freely (exact names, or section prefixes ending in '.').
RESUMABLE_FIELDS = (
    "num_epochs", "num_train_steps", "eval_every_epochs", "log_every_steps",
    "checkpoint_every_steps", "keep_checkpoints", "progress_bar", "eval_batch_size",
    "precise_bn_batches",
    "model.impl", "data.source", "data.local_path", "data.data_dir", "data.worker_count",
)


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir's lock."""


class WorkdirLock:
    """An exclusive, non-blocking lock on a workdir (context manager)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_FILE
        self._file = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock; WorkdirBusyError naming the holder when another process has it."""
        file = open(self.path, "a+")  # noqa: SIM115 (held open for the run)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise WorkdirBusyError(f"workdir {self.path.parent} is in use by {holder}; wait for "
                                   "that run to finish or use another --workdir") from None
        file.seek(0)
        file.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        file.write(f"train.py pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def flatten_config(config: dict, prefix: str = "") -> dict[str, object]:
    """{'model.name': 'resnet20', ...} from a nested config dict."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def _matches(field: str, patterns) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in patterns)


def _as_saved(config: dict) -> dict:
    """`config` as the checkpoint's JSON meta stores it (tuples become lists, ...)."""
    return json.loads(json.dumps(config))


def config_changes(saved: dict, new: dict) -> dict[str, tuple[object, object]]:
    """field -> (saved value, new value) for every field that differs (or exists in one only),
    both compared in their JSON form."""
    old, now = flatten_config(_as_saved(saved)), flatten_config(_as_saved(new))
    missing = object()
    return {field: (old.get(field, "<absent>"), now.get(field, "<absent>"))
            for field in sorted(set(old) | set(now))
            if old.get(field, missing) != now.get(field, missing)}


def check_resume_config(saved: dict, new: dict, defining_fields, *,
                        allow_changes: bool = False) -> list[str]:
    """Compares the config of the checkpoint being resumed with the new one.

    Args:
      saved: the config stored with the checkpoint (a dict).
      new: the new run's config (a dict).
      defining_fields: fields (or 'section.' prefixes) that define the model or the data
        (`Task.defining_fields`): never changed on resume.
      allow_changes: accept changes to fields that are neither defining nor resumable.

    Returns:
      'field: old -> new' lines for the accepted changes (for the log).

    Raises:
      ConfigError: naming every refused field with both values.
    """
    changes = config_changes(saved, new)
    describe = lambda f: f"{f}: {changes[f][0]!r} -> {changes[f][1]!r}"  # noqa: E731
    defining = [f for f in changes if _matches(f, defining_fields)]
    if defining:
        raise ConfigError(
            "this workdir was trained with a different model or data; refusing to resume with "
            f"{'; '.join(map(describe, defining))} (use another --workdir)")
    other = [f for f in changes if not _matches(f, RESUMABLE_FIELDS)]
    if other and not allow_changes:
        raise ConfigError(
            f"resuming with a changed config: {'; '.join(map(describe, other))}; pass "
            "--allow_config_change to accept, or use another --workdir")
    return [describe(f) for f in changes]
