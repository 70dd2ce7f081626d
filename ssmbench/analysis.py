"""What the sweep and search suites mean: fits, efficiencies, crossovers and ceilings, computed
from result records (from any machines) for the reports.

A series is the records of one backend/device, arch, mode, scan, dtype and model that differ only
in the swept axis (seq_len, batch, n_layers or d_state), sorted by it.

Definitions, as the reports print them:
- linear fit:  ms/step = intercept + slope * x by least squares, R^2 = 1 - SS_res / SS_tot.
- log-log slope: the slope of log(ms) against log(L); 1 is linear in length, 2 quadratic.
- scaling efficiency (seed 000): tokens/s at depth L / tokens/s at the first depth L0.
- linear-scaling efficiency: (t(L0) * L / L0) / t(L); 100% is cost exactly proportional to depth.
- crossover: the shortest length from which an SSM (Mamba, Mamba-2) is faster than the Transformer at every
  longer length measured, with an estimate interpolated on log-log axes between the lengths
  that bracket it.
- memory ceiling: the largest value that ran without OOM when the next one measured did not.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from . import archs, memory_model
from .fmt import arch_scan, scan_label
from .merge import in_time_order
from .results import group_of

SUITE_AXIS = {"seqlen": "seq_len", "depth-scaling": "n_layers", "sweep-batch": "batch", "sweep-dstate": "d_state"}
AXIS_LABEL = {"seq_len": "sequence length", "batch": "batch", "n_layers": "layers", "d_state": "state size N"}
_VARIES_WITH_DEPTH = ("n_layers", "d_mlp", "matched_mamba_layers")  # the matched Transformer's depth and MLP follow Mamba's


# ---------------------------------------------------------------------------- fits
@dataclass
class Fit:
    slope: float
    intercept: float
    r2: float | None  # None with fewer than 3 points (two points always fit exactly)
    n: int

    def predict(self, x):
        return self.intercept + self.slope * np.asarray(x, dtype=float)


def linear_fit(x, y) -> Fit | None:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    r2 = None
    if x.size >= 3:
        ss_tot = float(((y - y.mean()) ** 2).sum())
        ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, int(x.size))


def loglog_fit(x, y) -> Fit | None:
    """Fit log(y) = intercept + slope * log(x): the exponent of a power law."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0)
    return linear_fit(np.log(x[keep]), np.log(y[keep]))


# ---------------------------------------------------------------------------- series
def axis_of(rec: dict) -> str | None:
    return rec.get("axis") or SUITE_AXIS.get(rec["suite"])


def value_of(rec: dict, axis: str) -> int:
    return rec[axis] if axis in ("seq_len", "batch") else (rec.get("config") or {}).get(axis)


def series_key(rec: dict, axis: str) -> tuple:
    skip = _VARIES_WITH_DEPTH if axis == "n_layers" else (axis,)
    cfg = tuple(sorted((k, v) for k, v in (rec.get("config") or {}).items() if k not in skip and not isinstance(v, (dict, list))))
    other = tuple((k, rec[k]) for k in ("batch", "seq_len") if k != axis)
    limit = (rec.get("settings") or {}).get("memory_limit")  # searches against different limits stay apart
    return (rec["suite"], group_of(rec), rec["arch"], rec["mode"], scan_label(rec), rec["dtype"], cfg, other, limit)


def series(records: list[dict], suite: str) -> OrderedDict:
    """{series key: [(value, latest record at that value)] sorted by value} for one suite."""
    out: OrderedDict = OrderedDict()
    for r in in_time_order(r for r in records if r["suite"] == suite):
        axis = axis_of(r)
        if axis is None:
            continue
        out.setdefault(series_key(r, axis), {})[value_of(r, axis)] = r
    return OrderedDict((k, sorted(v.items())) for k, v in out.items())


def median_ms(rec: dict) -> float | None:
    step = (rec.get("metrics") or {}).get("step_ms")
    return step["median"] if rec["status"] == "ok" and step else None


def _ok(points):
    return [(v, r) for v, r in points if median_ms(r) is not None]


# ---------------------------------------------------------------------------- depth
@dataclass
class DepthRow:
    layers: int
    params: int | None
    ms: float | None
    tokens_per_s: float | None
    scaling_eff: float | None  # tokens/s(L) / tokens/s(L0)
    linear_eff: float | None  # (t(L0) * L / L0) / t(L)
    status: str


@dataclass
class DepthSeries:
    head: dict  # the first record
    rows: list
    fit: Fit | None  # ms/step against layers
    published: list = field(default_factory=list)  # [(L0, L, published efficiency, measured)]


def depth_scaling(records: list[dict]) -> list[DepthSeries]:
    from .presets import PRESETS

    out = []
    for _, pts in series(records, "depth-scaling").items():
        ok = _ok(pts)
        base = ok[0] if ok else None
        rows = []
        for v, r in pts:
            ms, tps = median_ms(r), (r.get("metrics") or {}).get("tokens_per_s")
            seff = leff = None
            if ms is not None and base is not None:
                L0, r0 = base
                t0, tps0 = median_ms(r0), r0["metrics"].get("tokens_per_s")
                seff = tps / tps0 if tps and tps0 else None
                leff = (t0 * v / L0) / ms if ms else None
            rows.append(DepthRow(v, r.get("params"), ms, tps, seff, leff, r["status"]))
        fit = linear_fit([v for v, _ in ok], [median_ms(r) for _, r in ok])
        s = DepthSeries(pts[0][1], rows, fit)
        preset = PRESETS.get(pts[0][1].get("preset") or "")
        if preset is not None:
            by_layers = {row.layers: row for row in rows if row.tokens_per_s}
            for (a, b), eff in preset.scaling_efficiency.items():
                got = by_layers[b].tokens_per_s / by_layers[a].tokens_per_s if a in by_layers and b in by_layers else None
                s.published.append((a, b, eff, got))
        out.append(s)
    return out


# ---------------------------------------------------------------------------- sequence length
@dataclass
class LengthSeries:
    head: dict
    points: list  # [(L, record)]
    fit: Fit | None  # log-log: slope is the exponent


@dataclass
class Crossover:
    group: str
    mode: str
    dtype: str
    ssm: str  # the SSM's "arch scan" (e.g. "mamba2 triton")
    lengths: list  # common lengths
    ratios: list  # SSM ms / transformer ms at each
    verdict: str  # human sentence
    length: float | None  # the estimated crossover length, if any


def seqlen(records: list[dict]) -> tuple[list[LengthSeries], list[Crossover]]:
    all_series = []
    for _, pts in series(records, "seqlen").items():
        ok = _ok(pts)
        all_series.append(LengthSeries(pts[0][1], pts, loglog_fit([v for v, _ in ok], [median_ms(r) for _, r in ok])))
    crossovers = []
    by = OrderedDict()
    for s in all_series:
        h = s.head
        by.setdefault((group_of(h), h["mode"], h["dtype"]), []).append(s)
    for (group, mode, dtype), ss in by.items():
        trans = [s for s in ss if archs.is_attention(s.head["arch"])]
        for m in (s for s in ss if not archs.is_attention(s.head["arch"])):
            for t in trans[:1]:
                crossovers.append(crossover(group, mode, dtype, m, t))
    return all_series, crossovers


def crossover(group: str, mode: str, dtype: str, m: LengthSeries, t: LengthSeries) -> Crossover:
    mt = {v: median_ms(r) for v, r in m.points if median_ms(r) is not None}
    tt = {v: median_ms(r) for v, r in t.points if median_ms(r) is not None}
    common = sorted(set(mt) & set(tt))
    ratios = [mt[L] / tt[L] for L in common]
    name = arch_scan(m.head)
    c = Crossover(group, mode, dtype, name, common, ratios, "", None)
    if not common:
        c.verdict = "no length measured for both"
        return c
    faster = [r < 1 for r in ratios]
    if all(faster):
        c.verdict = f"{name} is faster at every length measured ({common[0]}..{common[-1]})"
        return c
    if not faster[-1]:
        c.verdict = f"no crossover up to {common[-1]}: the Transformer is as fast or faster there"
        return c
    i = max(k for k, f in enumerate(faster) if not f) + 1  # first index of the final all-faster run
    lo, hi = common[i - 1], common[i]
    a, b = math.log(ratios[i - 1]), math.log(ratios[i])
    c.length = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * a / (a - b)) if a != b else float(hi)
    c.verdict = f"{name} is faster from {hi} on; the crossover lies between {lo} and {hi} (about {c.length:,.0f} on log-log axes)"
    return c


# ---------------------------------------------------------------------------- memory ceiling
@dataclass
class Ceiling:
    head: dict
    axis: str
    probes: list  # [(value, record)] in value order
    ceiling: int  # largest value that fit; 0 if none did
    first_oom: int | None  # smallest value that ran out of memory above the ceiling
    stopped: str | None  # why the search ended without bracketing the ceiling
    peak_bytes: int | None  # measured peak at the ceiling
    limit_bytes: int | None  # the (emulated) device memory the search ran against
    predicted: int | None  # the memory model's ceiling for that limit
    predicted_peak: int | None  # the model's memory at the measured ceiling

    @property
    def error(self) -> float | None:
        """Relative error of the predicted ceiling: predicted / measured - 1 (None unless the
        search bracketed the ceiling: a lower bound has no error to speak of)."""
        if self.predicted is None or not self.ceiling or self.first_oom is None:
            return None
        return self.predicted / self.ceiling - 1

    def curve(self, values) -> list[int]:
        """The memory model's total at each value (for the memory-vs-batch plot)."""
        h, out = self.head, []
        for v in values:
            b, n = (v, h["seq_len"]) if self.axis == "batch" else (h["batch"], v)
            out.append(_estimate(h, b, n).total_bytes)
        return out


def _run_of(h: dict) -> dict:
    """The memory model's keywords for how a record ran (scan, dtype, mode, framework)."""
    return dict(scan=h["scan"], dtype=h["dtype"], mode=h["mode"], framework=h.get("framework", ""))


def _estimate(h: dict, batch: int, seq_len: int):
    return memory_model.estimate(h["arch"], h["config"], h.get("params") or 0, batch, seq_len, **_run_of(h))


def device_limit(rec: dict) -> int | None:
    """The memory a probe ran against: --memory-limit (or the CPU default), else the GPU's."""
    lim = (rec.get("settings") or {}).get("memory_limit")
    if lim:
        return int(lim)
    devs = ((rec.get("env") or {}).get("accelerators") or {}).get("devices") or []
    return int(devs[0]["memory_bytes"]) if devs and not rec["backend"].endswith("-cpu") else None


def memory_ceilings(records: list[dict]) -> list[Ceiling]:
    out = []
    for _, pts in series(records, "memory-ceiling").items():
        axis = axis_of(pts[0][1])
        fits = [v for v, r in pts if r["status"] == "ok"]
        ceiling = max(fits) if fits else 0
        ooms = [v for v, r in pts if r["status"] == "oom" and v > ceiling]
        other = [(v, r) for v, r in pts if r["status"] not in ("ok", "oom")]
        stopped = None
        if not ooms:
            stopped = f"{other[0][1]['status']} at {other[0][0]}" if other else "search cap reached without an OOM"
        at = dict(pts).get(ceiling) if ceiling else None
        head = at or pts[0][1]
        limit = device_limit(head)
        predicted = predicted_peak = None
        if limit and head.get("params"):
            predicted = memory_model.predicted_ceiling(
                head["arch"], head["config"], head["params"], head["batch"], head["seq_len"], limit, axis=axis, **_run_of(head)
            )
        if at is not None and head.get("params"):
            predicted_peak = _estimate(head, head["batch"], head["seq_len"]).total_bytes
        peak = (at.get("metrics") or {}).get("peak_mem_bytes") if at else None
        out.append(Ceiling(head, axis, pts, ceiling, min(ooms) if ooms else None, stopped, peak, limit, predicted, predicted_peak))
    return out


def model_bytes(rec: dict) -> int | None:
    """Peak memory that the benchmark itself allocated: on CPU, peak RSS less the process's
    resident memory once the framework had started (what the watchdog limits)."""
    m = rec.get("metrics") or {}
    peak = m.get("peak_mem_bytes")
    if peak and m.get("mem_baseline_bytes"):
        return max(0, peak - m["mem_baseline_bytes"])
    return peak


# ---------------------------------------------------------------------------- published figures
@dataclass
class PublishedRow:
    preset: str
    figure: object  # presets.Published
    measured: list  # [(group, record, value)]


def published(records: list[dict]) -> list[PublishedRow]:
    """Every published figure of the presets the records were run with, beside the matching
    measured records (latest per group)."""
    from .presets import PRESETS

    rows = []
    for name in OrderedDict.fromkeys(r.get("preset") for r in records if r.get("preset")):
        p = PRESETS.get(name)
        for fig in p.published if p else ():
            found = OrderedDict()
            if fig.metric:
                for r in in_time_order(records):
                    if r.get("preset") == name and r["status"] == "ok" and _matches(r, fig.where):
                        v = _metric(r, fig.metric)
                        if v is not None:
                            found[(group_of(r), r["suite"], scan_label(r), r["dtype"])] = (group_of(r), r, v)
            rows.append(PublishedRow(name, fig, list(found.values())))
    return rows


def _matches(rec: dict, where: dict) -> bool:
    for k, v in where.items():
        got = (rec.get("config") or {}).get(k) if k in ("n_layers", "d_model", "vocab") else rec.get(k)
        if got != v:
            return False
    return True


def _metric(rec: dict, metric: str):
    m = rec.get("metrics") or {}
    if metric == "params":
        return rec.get("params")
    if metric == "step_ms":
        return median_ms(rec)
    return m.get(metric)
