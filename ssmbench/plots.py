"""Plots for the reports (matplotlib, headless): where a person would rather look than read.

Each function takes the analysis objects of ssmbench.analysis and returns a matplotlib Figure;
``svg`` and ``png`` serialise one (inline SVG for the HTML page, PNG files beside a markdown
report).
"""

from __future__ import annotations

import io
import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import archs  # noqa: E402
from .analysis import AXIS_LABEL, median_ms, model_bytes  # noqa: E402
from .fmt import arch_scan  # noqa: E402
from .results import group_of  # noqa: E402

GIB = 2**30
plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none"})


def _axes():
    return plt.subplots(figsize=(6.4, 4.0))


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, *, xlog: bool = True, ylog: bool = False):
    """Axis scales (log base 2 for lengths and batches), labels, legend, layout."""
    if xlog:
        ax.set_xscale("log", base=2)
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _label(rec: dict, *, with_group: bool = True) -> str:
    return (f"{group_of(rec)} " if with_group else "") + f"{arch_scan(rec)} {rec['dtype']}"


def seqlen_latency(series: list, mode: str):
    """Latency against length on log-log axes, one line per backend/arch, the fitted slope in the legend."""
    fig, ax = _axes()
    for s in (s for s in series if s.head["mode"] == mode):
        xs = [v for v, r in s.points if median_ms(r) is not None]
        ys = [median_ms(r) for _, r in s.points if median_ms(r) is not None]
        if not xs:
            continue
        slope = f", slope {s.fit.slope:.2f}" if s.fit else ""
        line = "--" if archs.is_attention(s.head["arch"]) else "-"
        (drawn,) = ax.plot(xs, ys, line, marker="o", label=_label(s.head) + slope)
        if s.fit:
            ax.plot(xs, [math.exp(s.fit.intercept) * x**s.fit.slope for x in xs], ":", color=drawn.get_color(), alpha=0.6)
        bad = [(v, r["status"]) for v, r in s.points if r["status"] not in ("ok", "skipped")]
        for v, st in bad:
            ax.annotate(st, (v, ys[-1]), fontsize=7, color="crimson")
    xlabel = "context length (tokens)" if mode == "decode" else "sequence length (tokens)"
    ylabel = "ms per token" if mode == "decode" else "ms per step"
    return _finish(fig, ax, xlabel, ylabel, f"{mode}: latency vs length (log-log)", ylog=True)


def seqlen_memory(series: list):
    fig, ax = _axes()
    for s in series:
        pts = [(v, model_bytes(r)) for v, r in s.points if r["status"] == "ok" and model_bytes(r)]
        if pts:
            ax.plot(
                [v for v, _ in pts],
                [b / GIB for _, b in pts],
                "--" if archs.is_attention(s.head["arch"]) else "-",
                marker="o",
                label=f"{_label(s.head)} {s.head['mode']}",
            )
    return _finish(fig, ax, "sequence / context length (tokens)", "peak memory (GiB)", "peak memory vs length", ylog=True)


def depth(series: list):
    """ms/step against layers with the least-squares line."""
    fig, ax = _axes()
    for s in series:
        rows = [r for r in s.rows if r.ms is not None]
        if not rows:
            continue
        xs = [r.layers for r in rows]
        lbl = f"{_label(s.head)} {s.head['mode']}"
        (line,) = ax.plot(xs, [r.ms for r in rows], "o", label=lbl)
        if s.fit:
            r2 = f", R² {s.fit.r2:.3f}" if s.fit.r2 is not None else ""
            ax.plot(
                xs,
                s.fit.predict(xs),
                "-",
                color=line.get_color(),
                alpha=0.6,
                label=f"fit: {s.fit.slope:.3g} ms/layer + {s.fit.intercept:.3g}{r2}",
            )
    return _finish(fig, ax, "layers", "ms per step (median)", "cost vs depth", xlog=False)


def ceiling(c):
    """Peak memory of every probe against the searched value, with the ceiling, the device limit
    and the memory model's curve."""
    fig, ax = _axes()
    ok = [(v, model_bytes(r)) for v, r in c.probes if r["status"] == "ok" and model_bytes(r)]
    oom = [v for v, r in c.probes if r["status"] == "oom"]
    if ok:
        ax.plot([v for v, _ in ok], [b / GIB for _, b in ok], "o", color="tab:blue", label="probe: fits (measured peak)")
    top = max([v for v, _ in c.probes] + [c.predicted or 0]) or 1
    xs = sorted({v for v, _ in c.probes} | {max(1, top)})
    ax.plot(xs, [b / GIB for b in c.curve(xs)], "-", color="tab:gray", alpha=0.7, label="memory model")
    if c.limit_bytes:
        ax.axhline(c.limit_bytes / GIB, color="crimson", ls=":", label=f"limit {c.limit_bytes / GIB:.2f} GiB")
    if c.ceiling:
        ax.axvline(c.ceiling, color="tab:green", ls="--", label=f"ceiling {c.ceiling}")
    if c.predicted:
        ax.axvline(c.predicted, color="tab:gray", ls="--", label=f"predicted {c.predicted}")
    for v in oom:
        ax.axvline(v, color="crimson", alpha=0.25)
    if oom:
        ax.plot([], [], color="crimson", alpha=0.25, label="probe: out of memory")
    return _finish(fig, ax, AXIS_LABEL.get(c.axis, c.axis), "memory (GiB)", f"memory ceiling: {_label(c.head)} {c.head['mode']}")


def sweep(series_points: list, axis: str, title: str):
    """ms/step against a swept value (batch, state size), one line per series."""
    fig, ax = _axes()
    for head, pts in series_points:
        ok = [(v, median_ms(r)) for v, r in pts if median_ms(r) is not None]
        if ok:
            ax.plot([v for v, _ in ok], [m for _, m in ok], marker="o", label=f"{_label(head)} {head['mode']}")
    return _finish(fig, ax, AXIS_LABEL.get(axis, axis), "ms per step (median)", title)


def bars(rows: list, title: str):
    """Horizontal bars, one per (label, value) of ``rows``, top to bottom: tokens/s of each backend
    and implementation at each point of a throughput or latency run."""
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.24 * len(rows)))
    ys = range(len(rows))[::-1]
    ax.barh(list(ys), [v for _, v in rows], color=[f"C{i % 10}" for i in range(len(rows))])
    ax.set_yticks(list(ys), [label for label, _ in rows], fontsize=7)
    ax.set_xlabel("tokens/s")
    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))  # 80k, not 80000: the ticks stay apart
    ax.set_title(title)
    ax.grid(axis="y", alpha=0)
    fig.tight_layout()
    return fig


def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
