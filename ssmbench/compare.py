"""compare: did the candidate get faster or slower than the baseline, point by point?

Points are matched on their identity (suite, backend, arch, mode, scan, dtype, config, batch,
length). For each pair of ok points the change is the ratio of median step times, with a 95%
bootstrap confidence interval from resampling both sets of samples. A change is reported as
faster / slower only when the interval excludes 1 *and* the change is at least ``threshold``
(default 5%): noise alone should never be called a regression (as pyperf and asv do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .results import record_key

CONFIDENCE = 0.95
RESAMPLES = 1000


@dataclass
class Change:
    key: dict  # the baseline record (identity fields)
    base_ms: float | None
    cand_ms: float | None
    ratio: float | None  # candidate / baseline median step time
    low: float | None
    high: float | None
    verdict: str  # faster | slower | same | base <status> | candidate <status> | only in ...


def ratio_ci(base: np.ndarray, cand: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians (candidate / baseline) and its bootstrap confidence interval."""
    rng = np.random.default_rng(seed)
    b = rng.choice(base, size=(RESAMPLES, base.size)) if base.size > 1 else np.tile(base, (RESAMPLES, 1))
    c = rng.choice(cand, size=(RESAMPLES, cand.size)) if cand.size > 1 else np.tile(cand, (RESAMPLES, 1))
    ratios = np.median(c, axis=1) / np.median(b, axis=1)
    a = (1 - CONFIDENCE) / 2
    return float(np.median(cand) / np.median(base)), float(np.quantile(ratios, a)), float(np.quantile(ratios, 1 - a))


def compare(base_records: list[dict], cand_records: list[dict], threshold: float = 0.05) -> list[Change]:
    base, cand = _by_identity(base_records), _by_identity(cand_records)
    out = []
    for key in list(base) + [k for k in cand if k not in base]:
        b, c = base.get(key), cand.get(key)
        if b is None or c is None:
            out.append(Change(b or c, _med(b), _med(c), None, None, None, "only in candidate" if b is None else "only in baseline"))
            continue
        if b["status"] != "ok" or c["status"] != "ok":
            verdict = f"baseline {b['status']}" if b["status"] != "ok" else f"candidate {c['status']}"
            out.append(Change(b, _med(b), _med(c), None, None, None, verdict))
            continue
        r, lo, hi = ratio_ci(_samples(b), _samples(c))
        if lo > 1 and r - 1 >= threshold:
            verdict = "slower"
        elif hi < 1 and 1 - r >= threshold:
            verdict = "faster"
        else:
            verdict = "same"
        out.append(Change(b, _med(b), _med(c), r, lo, hi, verdict))
    return out


def _by_identity(records) -> dict:
    """Latest record per point identity; the backend is part of the identity, the device not,
    so the same point measured on two machines pairs up."""
    return {record_key(r): r for r in sorted(records, key=lambda r: r.get("started_at") or "")}


def _samples(rec) -> np.ndarray:
    return np.asarray(rec["metrics"]["step_ms"]["samples"], dtype=np.float64)


def _med(rec) -> float | None:
    if rec is None or rec.get("status") != "ok":
        return None
    return rec["metrics"]["step_ms"]["median"]
