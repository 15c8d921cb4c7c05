"""Shared pytest set-up: eight fake CPU devices, and the location of ../shared."""

import os
from pathlib import Path

import jax
import pytest

import addernet_jax  # noqa: F401  (its XLA:CPU settings apply before the backend starts)

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


# Input-pipeline fixtures (tests/test_data_*.py).
@pytest.fixture(scope="session")
def mnist_dir(shared_dir) -> Path:
    """The real MNIST IDX files: 60,000 train and the first 3,000 test images."""
    return shared_dir / "data" / "mnist"


@pytest.fixture(scope="session")
def cifar10_jpeg_dir(shared_dir) -> Path:
    """The real CIFAR-10 ImageFolder root (train/, test/; JPEG quality 75)."""
    return shared_dir / "data" / "cifar10-jpeg"


@pytest.fixture
def indexed_source():
    """103 records whose 2x2x1 uint8 image encodes the record index (see `decode_index`).

    Label = index % 10 (classes interleaved), so any batch reveals exactly which records it holds.
    """
    import numpy as np

    from addernet_jax.data import ArraySource

    n = 103
    images = np.zeros((n, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) // 256
    images[:, 0, 1, 0] = np.arange(n) % 256
    return ArraySource(images, np.arange(n) % 10, name="indexed")


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drops JAX's compiled executables after each test file: a whole-suite worker otherwise
    keeps every file's programs (about 12 GB by the end), and two workers share 24 GB."""
    yield
    jax.clear_caches()
