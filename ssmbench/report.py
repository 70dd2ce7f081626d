"""Reports: merge result records from any number of files (and machines) into tables.

One table per suite; one row per configuration point (arch, mode, scan, dtype, model, batch,
length); one column group per backend/device, so the same point on different machines or
frameworks sits side by side. Where a point was measured more than once for a group, the
latest record wins. Failed points show their status, with the messages listed below the table.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime, timezone

from .fmt import (
    CELL_HEAD,
    OP_HEAD,
    PARITY_HEAD,
    ROW_HEAD,
    UNSTABLE_MARK,
    cell_fields,
    fmt_bytes,
    md_table,
    op_fields,
    parity_fields,
    row_fields,
)
from .merge import in_time_order, latest_by_point
from .results import group_of


# ---------------------------------------------------------------------------- merging
def tables(records: list[dict]) -> dict:
    """{suite: {"groups": [...], "rows": [{"key": {...}, "cells": {group: record}}]}}."""
    suites: dict = OrderedDict()
    for (pk, group), rec in latest_by_point(records).items():
        s = suites.setdefault(rec["suite"], {"groups": [], "rows": OrderedDict()})
        if group not in s["groups"]:
            s["groups"].append(group)
        row = s["rows"].setdefault(pk, {"key": rec, "cells": {}})
        row["cells"][group] = rec
    for s in suites.values():
        s["rows"] = list(s["rows"].values())
    return suites


def params_of(row) -> str:
    ps = {r.get("params") for r in row["cells"].values() if r.get("params")}
    return ", ".join(f"{p:,}" for p in sorted(ps)) or "-"


# ---------------------------------------------------------------------------- markdown
def markdown(records: list[dict], sources: list[str] | None = None, figure=None) -> str:
    """The whole report in markdown. ``figure(name, fig)`` places a plot (see ssmbench.sections);
    None leaves plots out."""
    from .sections import sections

    secs = sections(records, figure)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# ssmbench report",
        "",
        f"{len(records)} records" + (f" from {len(sources)} file(s)" if sources else "") + f", generated {now}.",
        "",
    ]
    failures = []
    for suite, t in tables(records).items():
        out += [f"## {suite}", ""] + secs.get(suite, [])  # what the run found, its plots first
        head = ROW_HEAD + ["params"]
        cells_of, names = {"parity": (parity_fields, PARITY_HEAD), "scan": (op_fields, OP_HEAD)}.get(suite, (cell_fields, CELL_HEAD))
        for g in t["groups"]:
            head += [f"{g} {n}" for n in names]
        rows = []
        for row in t["rows"]:
            cells = row_fields(row["key"]) + [params_of(row)]
            for g in t["groups"]:
                rec = row["cells"].get(g)
                cells += cells_of(rec)
                if rec and rec["status"] != "ok":
                    failures.append((suite, g, rec))
            rows.append(cells)
        summary = f"All {len(rows)} points of {suite}, by {' and '.join(t['groups'])}"
        out += folded(summary, [LEGEND.get(suite, LEGEND["*"]), ""] + md_table(head, rows))
    out += secs.get("efficiency", [])
    out += secs.get("published", [])
    if failures:
        rows = [
            [suite, g, " ".join(row_fields(r)), r["status"], (r.get("error") or "").splitlines()[0][:200] if r.get("error") else ""]
            for suite, g, r in failures
        ]
        out += ["## Points that did not complete", ""] + md_table(["suite", "group", "point", "status", "message"], rows)
    out += machines_md(records)
    return "\n".join(out)


LEGEND = {
    "*": "Cells: **tok/s** at the median step, **ms/step** median (IQR), **peak** memory (Machines: its source); "
    f"{UNSTABLE_MARK}: IQR >= 10% of the median.",
    "scan": "Cells: **ms/call** as called (eager: the host's launch costs included), **graph ms** replayed from a device graph "
    "(the device's time alone, where the backend captures graphs), **peak** memory.",
    "parity": "Cells: relative error ||out - ref|| / ||ref|| against the float64 reference, and the tolerance it must stay under.",
}


def folded(summary: str, lines: list[str]) -> list[str]:
    """``lines`` inside a collapsed <details> (GitHub renders it; ssmbench.html makes it one on the page)."""
    return [f"<details><summary>{summary}</summary>", "", *lines, "</details>", ""]


GRAPHED = (
    ("train_step", "train step"),
    ("forward", "forward"),
    ("mamba_decode", "Mamba decode"),
    ("transformer_decode", "Transformer decode"),
)


def graphed(records: list[dict]) -> str:
    """What of these records ran as CUDA graphs (env_backend's execution notes): "train step,
    forward, Mamba decode", "train step (3 of 4)" where some train steps ran eagerly, or "-"."""
    parts = []
    for key, label in GRAPHED:
        notes = [str(n) for r in records if (n := (r.get("env_backend") or {}).get(key))]
        n = sum(note.startswith("CUDA graph") for note in notes)
        if n:
            parts.append(label if n == len(notes) else f"{label} ({n} of {len(notes)})")
    return ", ".join(parts) or "-"


def machines_md(records: list[dict]) -> list[str]:
    seen, groups = OrderedDict(), {}  # group -> its latest record, all its records
    for r in in_time_order(records):
        seen[group_of(r)] = r
        groups.setdefault(group_of(r), []).append(r)
    rows = []
    for g, r in seen.items():
        env = r.get("env") or {}
        vers = {**(env.get("versions") or {}), **{k: v for k, v in (r.get("env_backend") or {}).items() if k != "torch"}}
        vtxt = ", ".join(
            f"{k} {v}" for k, v in vers.items() if k in ("torch", "jax", "jaxlib", "tensorflow", "cuda", "torch_threads", "numpy")
        )
        cpu = env.get("cpu") or {}
        ss = env.get("ssmbench") or {}
        src = (r.get("metrics") or {}).get("mem_source", "-")
        rows.append(
            [
                g,
                r.get("device") or "-",
                env.get("host", "-"),
                f"{cpu.get('model', '-')} x{cpu.get('logical', '?')}",
                fmt_bytes(env.get("ram_bytes")),
                vtxt or "-",
                graphed(groups[g]),
                src,
                f"{ss.get('version', '?')} {ss.get('git') or ''}".strip(),
            ]
        )
    head = ["group", "device", "host", "CPU", "RAM", "versions", "CUDA graphs", "memory source", "ssmbench"]
    return ["## Machines", ""] + md_table(head, rows)


# ---------------------------------------------------------------------------- flat rows (csv, json)
def flat_rows(records: list[dict]) -> list[dict]:
    rows = []
    for rec in latest_by_point(records).values():
        m = rec.get("metrics") or {}
        step = m.get("step_ms") or {}
        env = rec.get("env") or {}
        row = {
            "suite": rec["suite"],
            "backend": rec["backend"],
            "device": rec.get("device"),
            "host": env.get("host"),
            "arch": rec["arch"],
            "mode": rec["mode"],
            "scan": rec["scan"],
            "impl": rec.get("impl") or "ssmbench",
            "impl_path": rec.get("impl_path"),
            "dtype": rec["dtype"],
            **{f"cfg_{k}": v for k, v in (rec.get("config") or {}).items() if not isinstance(v, (dict, list))},
            "batch": rec["batch"],
            "seq_len": rec["seq_len"],
            "params": rec.get("params"),
            "status": rec["status"],
            "error": rec.get("error"),
            "tokens_per_s": m.get("tokens_per_s"),
            **{f"ms_{k}": step.get(k) for k in ("median", "iqr", "mean", "std", "p10", "p90", "p99", "min", "max", "n", "unstable")},
            "graph_ms_median": (m.get("graph_ms") or {}).get("median"),  # the scan suite's ops replayed from a device graph
            "compile_s": m.get("compile_s"),
            "peak_mem_bytes": m.get("peak_mem_bytes"),
            "mem_source": m.get("mem_source"),
            "run_id": rec.get("run_id"),
            "started_at": rec.get("started_at"),
        }
        rows.append(row)
    return rows


def csv_text(records: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(flat_rows(records)).to_csv(index=False)


def json_text(records: list[dict], sources: list[str] | None = None) -> str:
    return json.dumps({"schema": "ssmbench-report/1", "sources": sources or [], "rows": flat_rows(records)}, indent=1, default=str)


def html_text(records: list[dict], sources: list[str] | None = None) -> str:
    """The report as one self-contained HTML page (ssmbench.html), its plots inline as SVG."""
    from .html import figure_marker, page

    figures: list[tuple[str, str]] = []

    def sink(name: str, fig) -> str:
        from .plots import svg

        figures.append((name, svg(fig)))
        return figure_marker(len(figures) - 1)

    return page(markdown(records, sources, sink), figures)


FORMATS = {"markdown": "md", "csv": "csv", "json": "json", "html": "html"}


def render(records: list[dict], fmt: str, sources: list[str] | None = None, output=None) -> str:
    """The report as text. With ``output`` (the file it will be written to), a markdown report
    writes its plots as PNG files in OUTPUT_files/ beside it and links them."""
    if fmt == "markdown":
        return markdown(records, sources, png_sink(output) if output else None)
    if fmt == "html":
        return html_text(records, sources)
    if fmt == "csv":
        return csv_text(records)
    if fmt == "json":
        return json_text(records, sources)
    raise ValueError(fmt)


def png_sink(output):
    """Figures for a markdown file: PNGs in OUTPUT_files/, linked relatively."""
    from pathlib import Path

    from .plots import png

    folder = Path(output).with_name(Path(output).stem + "_files")

    def sink(name: str, fig) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(png(fig))
        return f"![{name}]({folder.name}/{name}.png)"

    return sink
