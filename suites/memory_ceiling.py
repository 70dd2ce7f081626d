"""Memory ceiling: the largest batch (or length, --search seq-len) that trains without running
out of memory, per backend x arch x scan x dtype.

The search doubles from the start value (batch: --batch, else 1; length: the run's --seq-len)
until a probe runs out of memory, then bisects between the last fit and the first OOM until they
are adjacent (or within SEARCH_PRECISION of each other for large values). With --quick it starts
at the quick batch, stops doubling at 16 and bisects to 25%: a smoke test of the machinery, not
a ceiling to quote. Every probe is a fresh process (an
allocator that once failed is never trusted again) that runs a few training steps, so the
optimizer state exists; each probe is a record, the probe log. A probe that errors, crashes or
times out ends its search: the ceiling is then a lower bound.

--memory-limit emulates a smaller device: torch-cuda's per-process memory fraction, XLA's
memory fraction on jax-cuda, a TensorFlow logical-device limit, and on CPU a watchdog that ends
the probe as oom when resident memory grows by more than the limit after the framework has
started. Without --memory-limit a CPU backend is given 90% of RAM, so the search ends at an
oom record instead of the kernel's OOM killer.
"""

from __future__ import annotations

from dataclasses import replace

import psutil

from ssmbench.plan import Plan, RunOptions, expand_points

NAME = "memory-ceiling"
DESCRIPTION = "largest batch or length that trains, by doubling then bisection"
DEFAULT_MODES = ["train"]
START = {"batch": 1}
SEARCH_CAP = 2**16  # stop doubling here and report the ceiling as at least this
SEARCH_PRECISION = 0.02  # bisection stops when the bracket is within 2% (and at most 1 apart below 50)
QUICK_CAP, QUICK_PRECISION = 16, 0.25  # --quick: a smoke test of the search, not a measurement
PROBE = dict(warmup=1, min_iters=2, min_time=0.0)  # enough steps for the optimizer state and a steady peak
CPU_RAM_SHARE = 0.9


def plan(opts: RunOptions) -> Plan:
    axis = opts.search
    start = (opts.batch or (opts.default_batch if opts.quick else START["batch"])) if axis == "batch" else opts.seq_len
    cap, precision = (QUICK_CAP, QUICK_PRECISION) if opts.quick else (SEARCH_CAP, SEARCH_PRECISION)
    base = replace(opts, batch=start) if axis == "batch" else opts
    seeds = [replace(p, axis=axis, memory_limit=_limit(p, opts), **PROBE) for p in expand_points(NAME, base, opts.modes or DEFAULT_MODES)]

    def steps():
        for p in seeds:
            yield from search(p, axis, start, max(cap, start), precision)

    return Plan(seeds, steps(), total=None)


def _limit(p, opts: RunOptions) -> int | None:
    if opts.memory_limit is not None:
        return opts.memory_limit
    if p.backend.endswith("-cpu"):
        return int(psutil.virtual_memory().total * CPU_RAM_SHARE)
    return None


def search(seed, axis: str, start: int, cap: int = SEARCH_CAP, precision: float = SEARCH_PRECISION):
    """Probe ``seed`` at values of ``axis``: double from ``start`` until an OOM (halve while the
    start itself does not fit), then bisect. Yields points, is sent their records."""
    lo, hi = 0, None  # largest value that fit, smallest that ran out of memory
    v = start
    while True:
        rec = yield replace(seed, **{axis: v})
        if rec["status"] == "ok":
            lo = v
        elif rec["status"] == "oom":
            hi = v
        else:  # error, crash, timeout, unavailable, skipped: nothing more can be learnt
            return
        if hi is None:
            if v >= cap:
                return
            v = min(2 * v, cap)
        elif lo == 0:
            if hi == 1:
                return
            v = hi // 2
        else:
            if hi - lo <= max(1, int(lo * precision)):
                return
            v = (lo + hi) // 2
