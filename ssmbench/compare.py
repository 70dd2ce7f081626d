"""compare: did the candidate get faster or slower than the baseline, point by point?

Points are matched on their identity (suite, backend, arch, mode, scan, dtype, config, batch,
length). For each pair of ok points the change is the ratio of median step times, with a 95%
confidence interval. A change is reported as faster / slower only when the interval excludes 1
*and* the change is at least ``threshold`` (default 5%): noise alone should never be called a
regression (as pyperf and asv do).

Which interval: the samples of one process share its allocator, its threads' placement, its
compiler's and autotuner's choices, so two processes of the same code differ by more than the
samples of either spread. Where both sides ran a point in several fresh processes (``--repeats``),
the interval is a Welch t-interval on the log of the per-process medians; otherwise it is a
bootstrap over the samples, which is within-process only, and the command line says so.

Where the two sides ran in different environments (another host or accelerator, other
framework or library versions), a faster / slower may be the environment, not the code: the
verdict says so ("slower (machines differ)") and is not a regression. The ssmbench version and
commit are no such difference: they are what a user compares.

Parity checks (suite parity: the records the parity gate writes beside every timing run) have a
relative error, not step times: they are left out and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .merge import in_time_order
from .results import record_key

CONFIDENCE = 0.95
RESAMPLES = 1000
WITHIN, BETWEEN = "within-process", "between-process"

# Libraries of each framework in the env fingerprint's versions: only the point's own count
# (a jax upgrade says nothing about a torch point).
FRAMEWORK_LIBS = {
    "torch": ("torch", "triton"),
    "jax": ("jax", "jaxlib", "jax-metal"),
    "tf": ("tensorflow", "tensorflow-cpu"),
    "mlx": ("mlx",),
}
# Version entries of a record's env_backend (what the worker imported); its other entries are
# settings and measurements (threads, code paths, device ceilings), not versions.
BACKEND_VERSIONS = ("torch", "cuda", "cudnn", "jax", "jaxlib", "jax-metal", "optax", "tensorflow", "keras", "mlx")


@dataclass
class Change:
    key: dict  # the baseline record (identity fields)
    base_ms: float | None
    cand_ms: float | None
    ratio: float | None  # candidate / baseline median step time
    low: float | None
    high: float | None
    verdict: str  # faster | slower | same | base <status> | candidate <status> | only in ... | "slower (machines differ)"
    interval: str | None = None  # WITHIN (bootstrap over one process's samples) | BETWEEN (per-process medians)
    env_diff: tuple[str, ...] = ()  # how the two sides' environments differ, e.g. ("host a1 vs b2",)

    @property
    def confounded(self) -> bool:
        """A faster / slower measured in different environments: not attributable to the code."""
        return self.verdict.startswith(("faster (", "slower ("))


@dataclass
class Comparison:
    changes: list[Change]
    left_out: int = 0  # records that are not timed points (parity checks)
    env_diff: list[str] = field(default_factory=list)  # every environment difference seen, once

    @property
    def within_process(self) -> int:
        """How many compared points have only a within-process interval."""
        return sum(c.interval == WITHIN for c in self.changes)


def ratio_ci(base: np.ndarray, cand: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians (candidate / baseline) and its bootstrap confidence interval."""
    rng = np.random.default_rng(seed)
    b = rng.choice(base, size=(RESAMPLES, base.size)) if base.size > 1 else np.tile(base, (RESAMPLES, 1))
    c = rng.choice(cand, size=(RESAMPLES, cand.size)) if cand.size > 1 else np.tile(cand, (RESAMPLES, 1))
    ratios = np.median(c, axis=1) / np.median(b, axis=1)
    a = (1 - CONFIDENCE) / 2
    return float(np.median(cand) / np.median(base)), float(np.quantile(ratios, a)), float(np.quantile(ratios, 1 - a))


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (CONFIDENCE above).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: float) -> float:
    """Student's t 97.5% quantile without scipy: the table, then the Cornish-Fisher series
    (within 0.01% from 31 on). A fractional df is rounded down, which widens the interval."""
    k = max(1, math.floor(df))
    if k <= len(_T975):
        return _T975[k - 1]
    z = 1.959964
    return (
        z + (z**3 + z) / (4 * k) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * k**2) + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * k**3)
    )


def process_ratio_ci(base_ms, cand_ms) -> tuple[float, float, float]:
    """Ratio (candidate / baseline) of per-process medians' geometric means, with a Welch
    t-interval on their logs: a few processes a side are too few to bootstrap, and step times
    vary by a factor, so the log is where the differences add."""
    lb, lc = np.log(np.asarray(base_ms, dtype=np.float64)), np.log(np.asarray(cand_ms, dtype=np.float64))
    d = float(lc.mean() - lb.mean())
    vb, vc = lb.var(ddof=1) / lb.size, lc.var(ddof=1) / lc.size
    se = math.sqrt(vb + vc)
    if se == 0:
        return math.exp(d), math.exp(d), math.exp(d)
    df = (vb + vc) ** 2 / (vb**2 / (lb.size - 1) + vc**2 / (lc.size - 1))
    half = t975(df) * se
    return math.exp(d), math.exp(d - half), math.exp(d + half)


def timed(rec: dict) -> bool:
    """A record of a timed point: not a parity check, and with step times when it is ok."""
    return rec["suite"] != "parity" and (rec["status"] != "ok" or "step_ms" in (rec.get("metrics") or {}))


def comparison(base_records: list[dict], cand_records: list[dict], threshold: float = 0.05) -> Comparison:
    """compare() with what the command line says around it: how many records were left out and
    every way the two sides' environments differ."""
    changes = compare(base_records, cand_records, threshold)
    left_out = sum(not timed(r) for r in [*base_records, *cand_records])
    return Comparison(changes, left_out, list(dict.fromkeys(d for c in changes for d in c.env_diff)))


def compare(base_records: list[dict], cand_records: list[dict], threshold: float = 0.05) -> list[Change]:
    base, cand = _by_identity(filter(timed, base_records)), _by_identity(filter(timed, cand_records))
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
        out.append(_change(b, c, threshold))
    return out


def _change(b: dict, c: dict, threshold: float) -> Change:
    """The change between two ok records of one point."""
    pb, pc = _process_medians(b), _process_medians(c)
    if pb is not None and pc is not None:
        (r, lo, hi), interval = process_ratio_ci(pb, pc), BETWEEN
    else:
        (r, lo, hi), interval = ratio_ci(_samples(b), _samples(c)), WITHIN
    if lo > 1 and r - 1 >= threshold:
        verdict = "slower"
    elif hi < 1 and 1 - r >= threshold:
        verdict = "faster"
    else:
        verdict = "same"
    diffs = env_differences(b, c)
    if diffs and verdict != "same":
        verdict += " (machines differ)" if any(kind == "machine" for kind, _ in diffs) else " (versions differ)"
    return Change(b, _med(b), _med(c), r, lo, hi, verdict, interval, tuple(text for _, text in diffs))


def env_differences(b: dict, c: dict) -> list[tuple[str, str]]:
    """(kind, "what a vs b") for each way the two records' environments differ: kind "machine"
    (host, device, accelerators, CPU) or "versions" (Python, numpy, the framework's libraries,
    CUDA, the driver). Only what both records name counts: an unknown is no difference. A
    difference already named (the CPU that is also the device) is not named twice."""
    out, seen = [], set()
    for kind, of in (("machine", _machine), ("versions", _versions)):
        vb, vc = of(b), of(c)
        for k, x in vb.items():
            y = vc.get(k)
            if x is None or y is None or str(x) == str(y) or (str(x), str(y)) in seen:
                continue
            seen.add((str(x), str(y)))
            out.append((kind, f"{k} {x} vs {y}"))
    return out


def _machine(rec: dict) -> dict:
    env = rec.get("env") or {}
    names = dict.fromkeys(d.get("name") for d in (env.get("accelerators") or {}).get("devices") or [])
    return {
        "host": env.get("host"),
        "device": rec.get("device"),
        "accelerators": ", ".join(map(str, names)) or None,
        "cpu": (env.get("cpu") or {}).get("model"),
    }


def _versions(rec: dict) -> dict:
    env = rec.get("env") or {}
    libs = env.get("versions") or {}
    own = FRAMEWORK_LIBS.get(rec.get("framework"))
    v = {"python": env.get("python"), "numpy": libs.get("numpy")}
    v |= {k: x for k, x in libs.items() if own is None or k in own}
    v |= {k: x for k, x in (rec.get("env_backend") or {}).items() if k in BACKEND_VERSIONS or k.endswith("_version")}
    v["driver"] = (env.get("accelerators") or {}).get("driver")
    return v


def _by_identity(records) -> dict:
    """Latest record per point identity; the backend is part of the identity, the device not,
    so the same point measured on two machines pairs up."""
    return {record_key(r): r for r in in_time_order(records)}


def _process_medians(rec) -> np.ndarray | None:
    """The median of each fresh process (--repeats), where the point ran in more than one."""
    reps = (rec.get("metrics") or {}).get("repeats") or []
    return np.asarray([r["median_ms"] for r in reps], dtype=np.float64) if len(reps) > 1 else None


def _samples(rec) -> np.ndarray:
    return np.asarray(rec["metrics"]["step_ms"]["samples"], dtype=np.float64)


def _med(rec) -> float | None:
    if rec is None or rec.get("status") != "ok":
        return None
    return rec["metrics"]["step_ms"]["median"]
