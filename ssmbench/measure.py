"""The one timing path every backend, suite and mode goes through.

    first call   trace / compile / autotune, timed apart as compile_s
    warm-up      ``warmup`` untimed steps (caches, allocator pools, clocks)
    timed        at least ``min_iters`` steps AND at least ``min_time`` seconds, every sample kept

Each sample is host wall time around one step, synchronised before the clock is read
(``sync`` is the backend's: torch.cuda.synchronize, block_until_ready, a host copy...), so
asynchronous devices are timed for the work they did, not for the launch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SAMPLES = 10_000  # bounds a result's size when a step is tiny and min_time is long


@dataclass
class Timing:
    compile_s: float
    samples_s: list
    first_output: Any
    meter_delta: float | None = None  # the meter's change over the timed steps (e.g. joules)


def time_steps(
    step: Callable[[], Any],
    sync: Callable[[Any], None],
    *,
    warmup: int,
    min_iters: int,
    min_time: float,
    meter: Callable[[], float | None] | None = None,
) -> Timing:
    """``meter`` (an energy counter, say) is read just before the first timed step and just
    after the last one."""
    clock = time.perf_counter
    sync(None)
    t0 = clock()
    first = step()
    sync(first)
    compile_s = clock() - t0
    for _ in range(warmup):
        sync(step())
    samples = []
    m0 = meter() if meter else None
    start = clock()
    while len(samples) < MAX_SAMPLES and (len(samples) < min_iters or clock() - start < min_time):
        t = clock()
        out = step()
        sync(out)
        samples.append(clock() - t)
    m1 = meter() if meter else None
    return Timing(compile_s, samples, first, None if m0 is None or m1 is None else m1 - m0)
