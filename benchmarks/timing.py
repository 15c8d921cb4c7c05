"""Timing shared by the benchmarks."""

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
