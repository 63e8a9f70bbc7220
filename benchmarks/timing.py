"""Timing shared by the benchmarks: interleaved rounds with medians (a helper module, not a benchmark).

``dspose bench`` and ``python benchmarks/bench_<area>.py`` both put this folder on ``sys.path``, so a benchmark
imports it as ``from timing import round_robin``.
"""

from __future__ import annotations

import time
from typing import Callable


def median(xs: list[float]) -> float:
    """The middle value (the upper one of an even count)."""
    return sorted(xs)[len(xs) // 2]


def round_robin(fns: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call; configurations alternate so that load changes on a shared machine hit all."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in times.items()}
