"""XLA:CPU code generation for adder layers: 512-bit vectors on CPUs that have them.

The fast adder path (`ops/shifted.py`) is bound by loads: each term of a fused loop loads one
filter row and one broadcast input. XLA:CPU emits 256-bit vectors by default
(`--xla_cpu_prefer_vector_width=256`, chosen to avoid the AVX-512 clock penalty of older Intel
server parts), which halves the work per load on AVX-512 machines: on the project's Zen 5 CPU
the ResNet-50 3x3 adder forward goes from 3.5-3.7x to 1.9-2.0x of `lax.conv`
(benchmarks/RESULTS.md). `tune_xla_cpu()` asks XLA for 512-bit vectors when the CPU has AVX-512
and nobody chose a width; it runs when `addernet_jax` is imported and takes effect if JAX's CPU
backend has not started yet. Set ADDERNET_NO_XLA_TUNING=1, or choose a width yourself in
XLA_FLAGS, to opt out.
"""

from __future__ import annotations

import os

VECTOR_WIDTH_FLAG = "--xla_cpu_prefer_vector_width=512"


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports AVX-512F (Linux); False where that cannot be read."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def tune_xla_cpu() -> bool:
    """Adds `VECTOR_WIDTH_FLAG` to $XLA_FLAGS when useful and allowed; True if it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if (os.environ.get("ADDERNET_NO_XLA_TUNING") == "1"
            or "xla_cpu_prefer_vector_width" in flags or not cpu_has_avx512()):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {VECTOR_WIDTH_FLAG}".strip()
    return True
