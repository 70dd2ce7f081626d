"""The tables the command line prints (rich): results as they finish, parity checks, and any
table whose cells must show verbatim."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .fmt import fmt_bytes, fmt_ms, fmt_num, model_label, parity_fields, scan_label


def add_row(table: Table, *cells) -> None:
    """A table row whose strings are shown verbatim: install hints such as 'jax[cuda13]' and
    device names are not rich markup."""
    table.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in cells))


def parity_table(records: list[dict]) -> Table:
    t = Table(title="parity against the float64 reference (relative error)")
    for col in ("backend", "arch", "path", "scan", "dtype", "rel err", "tolerance", "result", "message"):
        t.add_column(col)
    for r in records:
        err, tol, result = parity_fields(r)
        style = "green" if result == "pass" else "red"
        add_row(
            t,
            r["backend"],
            r["arch"],
            "parallel" if r["mode"] == "forward" else r["mode"],
            scan_label(r),
            r["dtype"],
            err,
            tol,
            Text(result, style=style),
            r.get("error") or "",
        )
    return t


def results_table(title: str, records: list[dict]) -> Table:
    t = Table(title=title)
    for col in (
        "backend",
        "model",
        "mode",
        "scan",
        "dtype",
        "B x L",
        "params",
        "tok/s",
        "ms/step median (IQR)",
        "p99 ms",
        "compile s",
        "peak mem",
        "status",
    ):
        t.add_column(col, justify="right" if col in ("tok/s", "params", "p99 ms", "compile s", "peak mem") else "left")
    graphed = any("graph_ms" in (r.get("metrics") or {}) for r in records)
    if graphed:  # the scan suite's ops replayed from a device graph: the device's time alone
        t.add_column("graph ms median (IQR)")
    gpu = any("mfu" in (r.get("metrics") or {}) or "energy_j_per_token" in (r.get("metrics") or {}) for r in records)
    if gpu:  # measured device ceilings and an energy counter: MFU and joules per token
        t.add_column("MFU", justify="right")
        t.add_column("mJ/tok", justify="right")
    for r in records:
        m = r.get("metrics") or {}
        step = m.get("step_ms")
        extra = [fmt_ms(m["graph_ms"]) if m.get("graph_ms") else "-"] if graphed else []
        if gpu:
            extra += [
                f"{m['mfu'] * 100:.1f}%" if "mfu" in m else "-",
                fmt_num(m["energy_j_per_token"] * 1e3) if "energy_j_per_token" in m else "-",
            ]
        add_row(
            t,
            r["backend"],
            f"{r['arch']} {model_label(r)}",
            r["mode"],
            scan_label(r),
            r["dtype"],
            f"{r['batch']} x {r['seq_len']}",
            f"{r['params']:,}" if r.get("params") else "-",
            fmt_num(m.get("tokens_per_s")),
            fmt_ms(step) if step else "-",
            fmt_num(step["p99"]) if step else "-",
            f"{m['compile_s']:.2f}" if "compile_s" in m else "-",
            fmt_bytes(m.get("peak_mem_bytes")),
            Text(r["status"], style="" if r["status"] == "ok" else "red"),
            *extra,
        )
    return t
