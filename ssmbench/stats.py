"""Summary statistics of timing samples.

Why the median: step times are skewed to the right (a GC pause, a page fault, another process
taking a core), so the mean and std are pulled by a few outliers while the median is not. The
interquartile range (p75 - p25) is the matching robust spread; p10/p90/p99 show the tails and
min is the best the machine did. A point whose IQR is 10% of its median or more is flagged
``unstable``: its median is not to be trusted to better than that.
"""

from __future__ import annotations

import math

import numpy as np

UNSTABLE_IQR_RATIO = 0.10


def summarize(samples_s) -> dict:
    """Samples in seconds -> summary in milliseconds, every sample kept (in ms)."""
    ms = np.asarray(list(samples_s), dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples to summarise")
    p10, p25, p50, p75, p90, p99 = np.percentile(ms, [10, 25, 50, 75, 90, 99])
    iqr = float(p75 - p25)
    return {
        "median": float(p50),
        "mean": float(ms.mean()),
        "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "iqr": iqr,
        "p10": float(p10),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "n": int(ms.size),
        "unstable": bool(p50 > 0 and iqr / p50 >= UNSTABLE_IQR_RATIO),
        "samples": [round(float(x), 6) for x in ms],
    }


def rel_iqr(step_ms: dict) -> float:
    m = step_ms.get("median") or 0.0
    return step_ms.get("iqr", math.nan) / m if m else math.nan
