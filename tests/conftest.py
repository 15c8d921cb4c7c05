"""Shared pytest set-up: eight fake CPU devices, and the location of ../shared."""

import os
from pathlib import Path

import jax
import pytest

# Before any backend starts: every test run exercises sharded code on 8 CPU devices.
jax.config.update("jax_num_cpu_devices", 8)

# The read-only material (data, checkpoints, specs) that lives beside the repository.
SHARED_DIR = Path(os.environ.get("ADDERNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared`, or $ADDERNET_SHARED. Fails (never skips) when it is missing: CI provides it."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared material not found at {SHARED_DIR}; set ADDERNET_SHARED")
    return SHARED_DIR
