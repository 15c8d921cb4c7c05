"""Timing and machine description shared by the benchmarks."""

import os
import re
import time


def best_seconds(fn, repeats: int) -> float:
    """Best wall time in seconds of `fn()` (which must block until its result is ready) over
    `repeats` runs after one warm-up run: the least disturbed run on a shared virtual machine."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo, or 'unknown'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_description() -> dict:
    """CPU model, core count, AVX-512 features and the vector width XLA:CPU was asked to use
    (every benchmark prints it: sessions run on different CPUs and the ratios differ)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = re.search(r"xla_cpu_prefer_vector_width=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(),
            "avx512": sorted(f for f in flags if f.startswith("avx512")),
            "vector_width_bits": int(found.group(1)) if found else 256}


def cpu_line() -> str:
    """`cpu_description()` as one printable line."""
    cpu = cpu_description()
    avx = ",".join(f.removeprefix("avx512").lstrip("_") for f in cpu["avx512"]) or "none"
    return (f"CPU: {cpu['cpu_model']}, {cpu['cores']} cores, AVX-512 [{avx}], "
            f"XLA vector width {cpu['vector_width_bits']} bits")
