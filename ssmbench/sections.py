"""The analysis sections of a report: what each sweep or search means, under its table.

``sections(records, figure)`` returns {suite: markdown lines} plus "published" for the presets'
published figures. ``figure(name, fig)`` turns a matplotlib figure into markdown (a PNG link, an
inline SVG placeholder) or returns None where the report carries no plots (stdout).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import analysis as an
from . import archs
from .fmt import arch_scan, fmt_bytes, fmt_num, md_table, model_label, pct, scan_label
from .merge import latest_by_point
from .results import group_of

Figure = Callable[[str, object], "str | None"]


def _who(rec: dict) -> str:
    return f"{group_of(rec)} · {arch_scan(rec)} · {rec['mode']} · {rec['dtype']}"


def _plots():
    """matplotlib loads only when a report draws (it costs a second at import)."""
    from . import plots

    return plots


def _plot(figure: Figure | None, name: str, make) -> list[str]:
    if figure is None:
        return []
    snippet = figure(name, make())
    return [snippet, ""] if snippet else []


# ---------------------------------------------------------------------------- depth
def depth_md(records, figure: Figure | None) -> list[str]:
    ss = an.depth_scaling(records)
    if not ss:
        return []
    out = [
        "**Depth scaling.** Linear fit ms/step = intercept + slope × layers (slope: the marginal cost of one layer).",
        "*Scaling efficiency* (seed 000's definition): tokens/s at depth L ÷ tokens/s at the first depth L0;",
        "with cost proportional to depth it is L0/L (50% for 4 → 8). *Linear-scaling efficiency*: (t(L0) × L/L0) ÷ t(L);",
        "100% means cost exactly proportional to depth, above 100% a fixed cost (embedding, head, launch overhead) being amortised.",
        "",
    ]
    out += _plot(figure, "depth", lambda: _plots().depth(ss))
    fits = []
    for s in ss:
        out += [f"*{_who(s.head)}*", ""]
        rows = [
            [
                r.layers,
                f"{r.params:,}" if r.params else "-",
                fmt_num(r.ms),
                fmt_num(r.tokens_per_s),
                pct(r.scaling_eff),
                pct(r.linear_eff),
                r.status,
            ]
            for r in s.rows
        ]
        out += md_table(["layers", "params", "ms/step", "tok/s", "scaling eff.", "linear-scaling eff.", "status"], rows)
        if s.fit:
            r2 = f"{s.fit.r2:.4f}" if s.fit.r2 is not None else "- (2 points)"
            fits.append([_who(s.head), fmt_num(s.fit.slope), fmt_num(s.fit.intercept), r2, s.fit.n])
        for a, b, eff, got in s.published:
            out += [
                f"Published (seed 000, Apple M2 Pro, jax-metal): {a} → {b} layers scaling efficiency {pct(eff)}; "
                f"measured here: {pct(got)}.",
                "",
            ]
    if fits:
        out += ["Fits:", ""] + md_table(["series", "ms per layer (slope)", "intercept ms", "R²", "points"], fits)
    return out


# ---------------------------------------------------------------------------- sequence length
def seqlen_md(records, figure: Figure | None) -> list[str]:
    ss, crossings = an.seqlen(records)
    if not ss:
        return []
    plots = _plots()
    out = [
        "**Sequence length.** Log-log slope s of ms against L (ms ∝ L^s): about 1 for Mamba's forward and train,",
        "up to 2 for attention, and near 0 for Mamba's decode (O(1) state) against the Transformer's KV cache.",
        "",
    ]
    for mode in dict.fromkeys(s.head["mode"] for s in ss):
        out += _plot(figure, f"seqlen-{mode}", lambda mode=mode: plots.seqlen_latency(ss, mode))
    out += _plot(figure, "seqlen-memory", lambda: plots.seqlen_memory(ss))
    rows = []
    for s in ss:
        lat = {v: an.median_ms(r) for v, r in s.points}
        mem = {v: an.model_bytes(r) for v, r in s.points}
        first, last = s.points[0][0], s.points[-1][0]
        stopped = next((f"{r['status']} at {v}" for v, r in s.points if r["status"] not in ("ok", "skipped")), "")
        rows.append(
            [
                _who(s.head),
                f"{first}..{last}",
                f"{s.fit.slope:.2f}" if s.fit else "-",
                f"{s.fit.r2:.3f}" if s.fit and s.fit.r2 is not None else "-",
                fmt_num(lat.get(first)),
                fmt_num(lat.get(last)),
                fmt_bytes(mem.get(last)),
                stopped,
            ]
        )
    out += md_table(["series", "lengths", "log-log slope", "R²", "ms at first", "ms at last", "peak at last", "stopped"], rows)
    if crossings:
        out += ["Crossover (SSM ÷ Transformer median time at each length both measured):", ""]
        out += md_table(
            ["where", "mode", "dtype", "SSM", "ratio by length", "verdict"],
            [
                [c.group, c.mode, c.dtype, c.ssm, ", ".join(f"{L}: {r:.2f}" for L, r in zip(c.lengths, c.ratios)), c.verdict]
                for c in crossings
            ],
        )
    return out


# ---------------------------------------------------------------------------- memory ceiling
def ceiling_md(records, figure: Figure | None) -> list[str]:
    cs = an.memory_ceilings(records)
    if not cs:
        return []
    plots = _plots()
    out = [
        "**Memory ceiling.** Doubling then bisection, every probe in a fresh process (the probe log is the table above).",
        "The memory model (ssmbench/memory_model.py) counts fp32 weights, gradients and AdamW state (16 bytes per parameter)",
        "plus activations per token and layer, the scan's (B, L, E, N) intermediates included (seed 004: 5 × B × L × d_inner × N × 4 bytes",
        "per layer for a chunked scan; none for torch-cuda's fused kernels, which keep only their inputs). On CPU, memory is",
        "resident memory above the process's once the framework started.",
        "",
    ]
    for i, c in enumerate(cs):
        out += _plot(figure, f"memory-{i}", lambda c=c: plots.ceiling(c))
    rows = []
    for c in cs:
        ceil = f"{c.ceiling}" if c.first_oom else f"≥ {c.ceiling}"
        rows.append(
            [
                _who(c.head),
                c.axis,
                ceil,
                c.first_oom or "-",
                fmt_bytes(an.model_bytes(dict(c.probes).get(c.ceiling, {})) if c.ceiling else None),
                fmt_bytes(c.limit_bytes),
                c.predicted if c.predicted is not None else "-",
                pct(c.error),
                fmt_bytes(c.predicted_peak),
                c.stopped or "",
            ]
        )
    out += md_table(
        [
            "series",
            "axis",
            "ceiling",
            "first OOM",
            "peak at ceiling",
            "limit",
            "predicted ceiling",
            "prediction error",
            "model at ceiling",
            "search ended",
        ],
        rows,
    )
    return out


# ---------------------------------------------------------------------------- batch / dstate sweeps
def sweep_md(suite: str):
    def md(records, figure: Figure | None) -> list[str]:
        ss = an.series(records, suite)
        if not ss:
            return []
        plots = _plots()
        axis = an.SUITE_AXIS[suite]
        out, rows = [], []
        for pts in ss.values():
            ok = [(v, an.median_ms(r)) for v, r in pts if an.median_ms(r) is not None]
            fit = an.loglog_fit([v for v, _ in ok], [m for _, m in ok])
            rows.append([_who(pts[0][1]), ", ".join(f"{v}: {fmt_num(m)}" for v, m in ok), f"{fit.slope:.2f}" if fit else "-"])
        out += [f"**{an.AXIS_LABEL[axis]} sweep.** Median ms/step at each value; log-log slope (1: cost proportional to the value).", ""]
        out += _plot(figure, suite, lambda: plots.sweep([(p[0][1], p) for p in ss.values()], axis, f"ms/step vs {an.AXIS_LABEL[axis]}"))
        return out + md_table(["series", "ms/step by value", "log-log slope"], rows)

    return md


# ---------------------------------------------------------------------------- the scan alone
# The Mamba-2 paper's claims about its SSD kernel (Dao & Gu 2024, arXiv 2405.21060, section 9.3 and
# Figure 10, measured on an A100), printed beside the ratios measured here
SSD_VS_SCAN = "SSD is 2-8x faster than Mamba-1's fused selective scan"
SSD_VS_ATTENTION = "SSD is faster than FlashAttention-2 from about 2K tokens on"


def _op_name(r: dict) -> str:
    """The op a scan record timed: "attention", or the SSM, its scan and state size."""
    if archs.is_attention(r["arch"]):
        return "attention"
    return f"{arch_scan(r)} N{r['config'].get('d_state')}"


def scan_md(records, figure: Figure | None) -> list[str]:
    recs = [r for r in records if r["suite"] == "scan" and r["status"] == "ok" and (r.get("metrics") or {}).get("step_ms")]
    if not recs:
        return []
    series: dict[tuple, dict] = {}
    for r in recs:
        series.setdefault((group_of(r), _op_name(r), r["mode"], r["dtype"]), {})[r["seq_len"]] = r
    lengths = sorted({r["seq_len"] for r in recs})
    out = [
        "**The scan alone.** Median ms per call at each length as called (eager: the host's launch costs included), then",
        "[replayed from a device graph: the device's time alone] where the backend captures graphs, and the multiple of",
        "the memory floor (the bytes the op must move ÷ the device's measured copy bandwidth) of the faster of the two in",
        "brackets; GB/s achieved at the longest length. Attention is the baseline's causal attention on the same batch and length.",
        "",
    ]
    rows = []
    for (g, op, mode, dtype), by_len in series.items():
        cells = []
        for L in lengths:
            m = (by_len.get(L) or {}).get("metrics") or {}
            mult = min(filter(None, (m.get("floor_multiple"), m.get("graph_floor_multiple"))), default=None)
            graph = f" [{fmt_num(m['graph_ms']['median'])}]" if m.get("graph_ms") else ""
            cells.append("-" if not m else f"{fmt_num(m['step_ms']['median'])}{graph}" + (f" ({mult:.1f}×)" if mult else ""))
        top = (by_len[max(by_len)].get("metrics") or {}).get("achieved_bytes_per_s")
        rows.append([g, op, mode, dtype, *cells, fmt_num(top / 1e9) if top else "-"])
    return _op_ratios(recs) + out + md_table(["where", "op", "mode", "dtype", *(f"L={L}" for L in lengths), "GB/s"], rows)


def _device_ms(r: dict) -> float:
    """An op's time for comparisons: the graph-replayed (device-alone) time where there is one."""
    m = r["metrics"]
    return (m.get("graph_ms") or m["step_ms"])["median"]


def _op_ratios(recs: list[dict]) -> list[str]:
    """Each SSM op's speed-up over attention, and Mamba-2's SSD's over Mamba-1's fastest scan, by
    length (device time where graphs were replayed), with the Mamba-2 paper's claims checked."""
    best: dict[tuple, dict] = {}  # (where, mode, dtype, arch, N) -> {L: (ms, its scan)}, the fastest scan
    for r in recs:
        N = None if archs.is_attention(r["arch"]) else r["config"].get("d_state")
        cell = best.setdefault((group_of(r), r["mode"], r["dtype"], r["arch"], N), {})
        cell[r["seq_len"]] = min(cell.get(r["seq_len"], (math.inf, "")), (_device_ms(r), r["scan"]))

    def fastest(where: tuple, arch: str) -> dict:  # {L: (ms, scan)} of ``arch``'s fastest op at any N
        out = {}
        for k, by_len in best.items():
            if k[:3] == where and k[3] == arch:
                out = {L: min(out.get(L, (math.inf, "")), v) for L, v in {**out, **by_len}.items()}
        return out

    rows, claims = [], []
    for (*where, arch, N), mine in best.items():
        if N is None:
            continue
        for other in ("transformer", "mamba") if arch == "mamba2" else ("transformer",):
            base = fastest(tuple(where), other)
            speedup = {L: base[L][0] / mine[L][0] for L in sorted(mine) if L in base}
            if not speedup:
                continue
            against = "attention" if other == "transformer" else f"mamba N{_state(recs, other)} ({_scans(base, speedup)})"
            cells = ", ".join(f"{L}: {x:.2f}" for L, x in speedup.items())
            rows.append([*where, f"{arch} N{N} ({_scans(mine, speedup)})", against, cells])
            if arch == "mamba2":
                claims.append([*where, SSD_VS_ATTENTION if other == "transformer" else SSD_VS_SCAN, _verdict(other, N, speedup)])
    if not rows:
        return []
    out = ["Speed-up of each SSM's fastest scan (named) over the op against it (its time ÷ the SSM's; above 1: the SSM is faster):", ""]
    out += md_table(["where", "mode", "dtype", "SSM op", "against", "speed-up by length"], rows)
    if claims:
        out += ["The Mamba-2 paper's claims (measured on an A100) against this device:", ""]
        out += md_table(["where", "mode", "dtype", "claim", "measured"], claims)
    return out


def _scans(by_len: dict, lengths) -> str:
    """The fastest scans at ``lengths``, in order of first appearance."""
    return "/".join(dict.fromkeys(by_len[L][1] for L in lengths))


def _state(recs: list[dict], arch: str) -> str:
    return ",".join(str(n) for n in sorted({r["config"].get("d_state") for r in recs if r["arch"] == arch}))


def _verdict(other: str, N: int, speedup: dict) -> str:
    """What the speed-ups by length say of the paper's claim against ``other``."""
    lo, hi = min(speedup.values()), max(speedup.values())
    if other == "mamba":
        if lo >= 2 and hi <= 8:
            held = "holds at every length"
        elif hi < 2:
            held = "does not hold"
        elif lo > 8:
            held = "exceeded at every length"
        else:
            held = (
                "holds at " + ", ".join(str(L) for L, x in speedup.items() if 2 <= x <= 8)
                if any(2 <= x <= 8 for x in speedup.values())
                else "mixed"
            )
        return f"N {N}: {lo:.2f}-{hi:.2f}x; {held}"
    first = next((L for L in speedup if all(x > 1 for k, x in speedup.items() if k >= L)), None)
    if first is None:
        return f"N {N}: slower at every length up to {max(speedup)}" + ("; does not hold" if max(speedup) >= 2048 else "")
    if first <= 2048:
        return f"N {N}: faster from {first} on; holds"
    return f"N {N}: faster only from {first} on; later than the paper's 2K"


# ---------------------------------------------------------------------------- parity
def parity_md(records, figure: Figure | None) -> list[str]:
    """How many checks passed, and each that did not, in a line."""
    recs = [r for r in latest_by_point(records).values() if r["suite"] == "parity"]
    if not recs:
        return []
    bad = [r for r in recs if r["status"] != "ok"]
    out = [f"**{len(recs) - len(bad)} of {len(recs)} checks passed** against the float64 reference.", ""]
    for r in bad:
        out += [f"- {_who(r)}: {r['status']}, {(r.get('error') or '')[:200]}"]
    return out + ([""] if bad else [])


# ---------------------------------------------------------------------------- throughput / latency
def _runner(r: dict) -> str:
    """Who ran a point: where, and the scan (with the implementation where it is not ssmbench's)."""
    return f"{group_of(r)} {scan_label(r)}"


def fastest_md(suite: str):
    """Each point's fastest backend/implementation and how far behind the others are, with bars."""

    def md(records, figure: Figure | None) -> list[str]:
        points: dict[tuple, list] = {}
        for r in latest_by_point(records).values():
            if r["suite"] == suite and an.median_ms(r) is not None:
                points.setdefault((r["arch"], r["mode"], r["dtype"], model_label(r), r["batch"], r["seq_len"]), []).append(r)
        if not points:
            return []
        rows, bars = [], {}
        for (_, mode, dtype, model, B, L), rs in points.items():
            rs = sorted(rs, key=an.median_ms)
            best = rs[0]
            behind = ", ".join(f"{_runner(r)} {an.median_ms(r) / an.median_ms(best):.2f}×" for r in rs[1:]) or "-"
            tok = (best.get("metrics") or {}).get("tokens_per_s")
            rows.append([model, mode, dtype, f"{B} x {L}", _runner(best), fmt_num(tok), fmt_num(an.median_ms(best)), behind])
            for r in rs:
                tok_r = (r.get("metrics") or {}).get("tokens_per_s") or 0
                bars.setdefault(mode, []).append((f"{model} {dtype} {B}x{L} · {_runner(r)}", tok_r))
        out = ["**Fastest at each point**, and each other backend or implementation's step time as a multiple of it.", ""]
        for mode, bs in bars.items():
            if len(bs) > 1:
                out += _plot(figure, f"{suite}-{mode}", lambda mode=mode, bs=bs: _plots().bars(bs[:40], f"{suite}, {mode}: tokens/s"))
        return out + md_table(["model", "mode", "dtype", "B x L", "fastest", "tok/s", "ms/step", "others (× its time)"], rows)

    return md


# ---------------------------------------------------------------------------- hardware efficiency
def efficiency_md(records, figure: Figure | None) -> list[str]:
    recs = [
        r
        for r in latest_by_point(records).values()
        if r["status"] == "ok" and any(k in (r.get("metrics") or {}) for k in ("mfu", "energy_j_per_token"))
    ]
    if not recs:
        return []
    out = [
        "## Hardware efficiency",
        "",
        "MFU: the model's matmul-shaped FLOPs per step (ssmbench/flops.py) ÷ step time ÷ the matmul rate measured",
        "on the same device at the run's dtype (fp32 without TF32; fp16 against bf16). Energy: NVML's total-energy",
        "counter read around the timed steps.",
        "",
    ]
    rows = []
    for r in recs:
        m = r["metrics"]
        c = (r.get("env_backend") or {}).get("device_ceilings") or {}
        rate = (c.get("matmul_flops") or {}).get("float32" if r["dtype"] == "float32" else "bfloat16")
        rows.append(
            [
                _who(r),
                f"{r['batch']} x {r['seq_len']}",
                pct(m.get("mfu")),
                fmt_num(m["achieved_flops"] / 1e12) if "achieved_flops" in m else "-",
                fmt_num(rate / 1e12) if rate else "-",
                fmt_num(m["energy_j_per_token"] * 1e3) if "energy_j_per_token" in m else "-",
                fmt_num(m.get("power_w")),
            ]
        )
    out += md_table(["series", "B x L", "MFU", "TFLOP/s", "matmul ceiling TFLOP/s", "mJ/token", "W"], rows)
    return out


SECTIONS = {
    "efficiency": efficiency_md,
    "parity": parity_md,
    "throughput": fastest_md("throughput"),
    "latency": fastest_md("latency"),
    "scan": scan_md,
    "depth-scaling": depth_md,
    "seqlen": seqlen_md,
    "memory-ceiling": ceiling_md,
    "sweep-batch": sweep_md("sweep-batch"),
    "sweep-dstate": sweep_md("sweep-dstate"),
}


# ---------------------------------------------------------------------------- published figures
def published_md(records) -> list[str]:
    rows = an.published(records)
    if not rows:
        return []
    out = [
        "## Published figures beside ours",
        "",
        "Figures the preset's source study published, on its hardware, next to the matching measurements here",
        "(same model config, batch and length). Ratio: ours ÷ theirs.",
        "",
    ]
    table = []
    for pr in rows:
        f = pr.figure
        theirs = f"{f.value:,}" if isinstance(f.value, (int, float)) else str(f.value)
        base = [pr.preset, f.what, theirs, f.hardware + (f" ({f.note})" if f.note else "")]
        if not pr.measured:
            table.append(base + ["-" if f.metric else "(context)", "", ""])
        for g, rec, v in pr.measured:
            ratio = f"{v / f.value:.3g}×" if isinstance(f.value, (int, float)) and f.value else ""
            ours = f"{v:,}" if isinstance(v, int) else fmt_num(v)
            table.append(base + [ours, f"{g} {rec['suite']} {scan_label(rec)} {rec['dtype']}", ratio])
    out += md_table(["preset", "figure", "published", "their hardware", "ours", "where", "ratio"], table)
    return out


def sections(records: list[dict], figure: Figure | None = None) -> dict:
    out = {suite: fn(records, figure) for suite, fn in SECTIONS.items()}
    out["published"] = published_md(records)
    return {k: v for k, v in out.items() if v}
