"""The analysis sections of a report: what each sweep or search means, under its table.

``sections(records, figure)`` returns {suite: markdown lines} plus "published" for the presets'
published figures. ``figure(name, fig)`` turns a matplotlib figure into markdown (a PNG link, an
inline SVG placeholder) or returns None where the report carries no plots (stdout).
"""

from __future__ import annotations

from collections.abc import Callable

from . import analysis as an
from .fmt import arch_scan, fmt_bytes, fmt_num, md_table, pct
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
    out += _plot(figure, "depth", lambda: _plots().depth(ss))
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
        out += ["Crossover (Mamba ÷ Transformer median time at each length both measured):", ""]
        out += md_table(
            ["where", "mode", "dtype", "Mamba scan", "ratio by length", "verdict"],
            [
                [c.group, c.mode, c.dtype, c.mamba_scan, ", ".join(f"{L}: {r:.2f}" for L, r in zip(c.lengths, c.ratios)), c.verdict]
                for c in crossings
            ],
        )
    for mode in dict.fromkeys(s.head["mode"] for s in ss):
        out += _plot(figure, f"seqlen-{mode}", lambda mode=mode: plots.seqlen_latency(ss, mode))
    out += _plot(figure, "seqlen-memory", lambda: plots.seqlen_memory(ss))
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
    for i, c in enumerate(cs):
        out += _plot(figure, f"memory-{i}", lambda c=c: plots.ceiling(c))
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
        out += md_table(["series", "ms/step by value", "log-log slope"], rows)
        out += _plot(figure, suite, lambda: plots.sweep([(p[0][1], p) for p in ss.values()], axis, f"ms/step vs {an.AXIS_LABEL[axis]}"))
        return out

    return md


# ---------------------------------------------------------------------------- the scan alone
def scan_md(records, figure: Figure | None) -> list[str]:
    recs = [r for r in records if r["suite"] == "scan" and r["status"] == "ok" and (r.get("metrics") or {}).get("step_ms")]
    if not recs:
        return []
    series: dict[tuple, dict] = {}
    for r in recs:
        series.setdefault((group_of(r), r["arch"], r["scan"], r["mode"], r["dtype"]), {})[r["seq_len"]] = r
    lengths = sorted({r["seq_len"] for r in recs})
    out = [
        "**The scan alone.** Median ms per call at each length as called (eager: the host's launch costs included), then",
        "[replayed from a device graph: the device's time alone] where the backend captures graphs, and the multiple of",
        "the memory floor (the bytes the op must move ÷ the device's measured copy bandwidth) of the faster of the two in",
        "brackets; GB/s achieved at the longest length. Attention is the baseline's causal attention on the same batch and length.",
        "",
    ]
    rows = []
    for (g, arch, scan, mode, dtype), by_len in series.items():
        cells = []
        for L in lengths:
            m = (by_len.get(L) or {}).get("metrics") or {}
            mult = min(filter(None, (m.get("floor_multiple"), m.get("graph_floor_multiple"))), default=None)
            graph = f" [{fmt_num(m['graph_ms']['median'])}]" if m.get("graph_ms") else ""
            cells.append("-" if not m else f"{fmt_num(m['step_ms']['median'])}{graph}" + (f" ({mult:.1f}×)" if mult else ""))
        top = (by_len[max(by_len)].get("metrics") or {}).get("achieved_bytes_per_s")
        rows.append([g, "attention" if arch == "transformer" else scan, mode, dtype, *cells, fmt_num(top / 1e9) if top else "-"])
    out += md_table(["where", "op", "mode", "dtype", *(f"L={L}" for L in lengths), "GB/s"], rows)
    best = []  # the fastest scan against attention, per where/mode/dtype and length
    for (g, arch, _, mode, dtype), by_len in series.items():
        if arch != "transformer":
            continue
        ratios = []
        for L, att in sorted(by_len.items()):
            scans = [
                (v[L]["metrics"]["step_ms"]["median"], k[2])
                for k, v in series.items()
                if k[0] == g and k[1] == "mamba" and k[3:] == (mode, dtype) and L in v
            ]
            if scans:
                ms, name = min(scans)
                ratios.append(f"{L}: {ms / att['metrics']['step_ms']['median']:.2f} ({name})")
        if ratios:
            best.append([g, mode, dtype, ", ".join(ratios)])
    if best:
        out += ["Fastest scan ÷ attention, by length (below 1: the scan is faster):", ""]
        out += md_table(["where", "mode", "dtype", "ratio (scan)"], best)
    return out


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
            table.append(base + [ours, f"{g} {rec['suite']} {rec['scan']} {rec['dtype']}", ratio])
    out += md_table(["preset", "figure", "published", "their hardware", "ours", "where", "ratio"], table)
    return out


def sections(records: list[dict], figure: Figure | None = None) -> dict:
    out = {suite: fn(records, figure) for suite, fn in SECTIONS.items()}
    out["published"] = published_md(records)
    return {k: v for k, v in out.items() if v}
