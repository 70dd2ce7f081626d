"""Formatting shared by everything that shows results: the markdown report and its analysis
sections, the plots' legends, and the tables the command line prints.

Numbers (``fmt_num``, ``fmt_ms``, ``fmt_bytes``, ``pct``), labels (``model_label``,
``arch_scan``), markdown tables (``md_row``, ``md_table``) and the cells of one record in a
report table: ``row_fields`` under ``ROW_HEAD`` for the point, then per backend/device group
``cell_fields`` (``CELL_HEAD``), ``op_fields`` for the scan suite's ops alone (``OP_HEAD``) or
``parity_fields`` for a parity check (``PARITY_HEAD``). Nothing here reads files or merges
records; it imports no other report module.
"""

from __future__ import annotations

from pathlib import Path

from . import archs

UNSTABLE_MARK = "⚠"


# ---------------------------------------------------------------------------- numbers
def fmt_bytes(n) -> str:
    if not n:
        return "-"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def fmt_num(x, digits=3) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_ms(step: dict) -> str:
    """A step-time summary as "median (IQR)", marked where it is unstable."""
    s = f"{fmt_num(step['median'])} ({fmt_num(step['iqr'], 2)})"
    return s + (f" {UNSTABLE_MARK}" if step.get("unstable") else "")


def pct(x) -> str:
    """A fraction as a percentage with one decimal, "-" for None."""
    return "-" if x is None else f"{x * 100:.1f}%"


# ---------------------------------------------------------------------------- labels
def model_label(rec: dict) -> str:
    """The model's sizes ("mamba2 D768 L24 N128 P64"), after the checkpoint's name where --model ran one."""
    c = rec.get("config") or {}
    arch = archs.ARCHS.get(rec.get("arch"))
    label = arch.label(c) if arch else f"D{c.get('d_model')} L{c.get('n_layers')}"
    source = rec.get("model_source")
    return f"{Path(source['path']).name}: {label}" if source else label


def scan_label(rec: dict) -> str:
    """The record's scan, with whose implementation ran it where that is not ssmbench's own and the
    scan does not already say so ("recurrent (hf)"; an implementation's own scan is its name)."""
    impl = rec.get("impl") or "ssmbench"
    return rec["scan"] if impl in ("ssmbench", rec["scan"]) else f"{rec['scan']} ({impl})"


def arch_scan(rec: dict) -> str:
    """The arch and its scan ("mamba chunked", "mamba hf"), or the arch alone where the scan says
    nothing more (attention, recurrent) and ssmbench's own model ran."""
    scan = scan_label(rec)
    return rec["arch"] if scan in ("attention", "recurrent") else f"{rec['arch']} {scan}"


# ---------------------------------------------------------------------------- markdown
def md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def md_table(head: list, rows: list) -> list[str]:
    """A markdown table's lines (heading, rule, rows) and the blank line after it."""
    return [md_row(head), md_row(["---"] * len(head))] + [md_row(r) for r in rows] + [""]


# ---------------------------------------------------------------------------- report cells
ROW_HEAD = ["arch", "mode", "scan", "dtype", "model", "batch", "seq"]
CELL_HEAD = ["tok/s", "ms/step", "peak"]
OP_HEAD = ["ms/call", "graph ms", "peak"]
PARITY_HEAD = ["rel err", "tolerance", "result"]


def row_fields(rec: dict) -> list[str]:
    """The point a record measured, under ROW_HEAD."""
    return [rec["arch"], rec["mode"], scan_label(rec), rec["dtype"], model_label(rec), str(rec["batch"]), str(rec["seq_len"])]


def _unfinished(rec: dict | None) -> list[str] | None:
    """The three cells of a group without a measurement (empty, or its status), else None."""
    if rec is None:
        return ["", "", ""]
    if rec["status"] != "ok":
        return [rec["status"].upper() if rec["status"] in ("oom",) else rec["status"], "", ""]
    return None


def cell_fields(rec: dict | None) -> list[str]:
    """[tok/s, ms/step median (IQR), peak memory] for one group."""
    if (cells := _unfinished(rec)) is not None:
        return cells
    m = rec.get("metrics") or {}
    return [fmt_num(m.get("tokens_per_s")), fmt_ms(m["step_ms"]), fmt_bytes(m.get("peak_mem_bytes"))]


def op_fields(rec: dict | None) -> list[str]:
    """[ms per call median (IQR), the same replayed from a device graph, peak memory] for one
    group of the scan suite (ops alone, where tokens/s means nothing)."""
    if (cells := _unfinished(rec)) is not None:
        return cells
    m = rec.get("metrics") or {}
    return [fmt_ms(m["step_ms"]), fmt_ms(m["graph_ms"]) if m.get("graph_ms") else "-", fmt_bytes(m.get("peak_mem_bytes"))]


def parity_fields(rec: dict | None) -> list[str]:
    """[relative error, tolerance, pass/FAIL] of a parity check."""
    if rec is None:
        return ["", "", ""]
    m = rec.get("metrics") or {}
    if "rel_err" not in m:
        return ["", "", rec["status"]]
    err = "-" if m["rel_err"] is None else f"{m['rel_err']:.2e}"
    return [err, f"{m['tolerance']:.0e}", "pass" if m.get("passed") else "FAIL"]
