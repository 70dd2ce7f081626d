"""Harness overhead: what ssmbench's timing loop adds to each timed step.

Times a step that does nothing through the same path every benchmark uses
(ssmbench.measure.time_steps) and reports, per step:
  in-sample  the median of the recorded samples: what the loop adds *inside* each measured
             sample (one Python call, the sync call, two clock reads) - the bias on every step_ms
  per-iter   total loop wall time / steps: the in-sample cost plus the loop's bookkeeping
With a backend name, its real synchronize() is used (torch-cuda: torch.cuda.synchronize on an
idle device), which every GPU sample pays.
Run: .venv/bin/python tools/overhead.py [BACKEND]   (or: make bench)
"""

import sys
import time

from ssmbench.measure import MAX_SAMPLES, time_steps
from ssmbench.stats import summarize


def main(backend: str | None = None, rounds: int = 5) -> None:
    sync = lambda _: None
    if backend:
        from ssmbench import backends

        sync = backends.get(backend).synchronize
    print(f"sync: {backend or 'none'}")
    for r in range(rounds):
        t0 = time.perf_counter()
        t = time_steps(lambda: None, sync, warmup=1000, min_iters=MAX_SAMPLES, min_time=0.0)
        wall = time.perf_counter() - t0
        s = summarize(t.samples_s)
        print(
            f"round {r}: in-sample median {s['median'] * 1e3:.3f} us  p99 {s['p99'] * 1e3:.3f} us  "
            f"per-iter {wall / (len(t.samples_s) + 1001) * 1e6:.3f} us  (n={s['n']})"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
