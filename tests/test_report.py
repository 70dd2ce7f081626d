"""Reports merged from result files of two machines (SPEC "Results"; ssmbench.report).

Fixtures: tests/fixtures/report/ (regenerate with tests/fixtures/make_report_fixtures.py).

  cpu-box/throughput-...-a1b2.jsonl          torch-cpu  "AMD EPYC 7B13"
      line 1  train  L64   ok   8 ms   (the later duplicate, started 2025-01-11, written first)
      line 2  train  L64   ok   12 ms  (the older duplicate, started 2025-01-10)
      line 3  corrupt (cut off mid-write)
      line 4  train  L256  ok   40 ms
      line 5  forward L64  error "RuntimeError: boom in the forward pass" (+ a second line)
  gpu-box/nested/throughput-...-c3d4.jsonl   torch-cuda "NVIDIA H100 80GB HBM3"
      line 1  train  L64   ok   1 ms
      line 2  foreign (schema "other/1")
      line 3  train  L256  oom  "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
      line 4  forward L64  ok   1..5 ms, unstable (IQR 2 / median 3)
  gpu-box/latency-...-c3d4.jsonl             torch-cuda, one decode point, 0.5 ms
  README.txt                                 not a result file

Every model is D64 L2 N8 (63,488 parameters), batch 2 (latency: 1), float32, scan parallel.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from ssmbench import report
from ssmbench.results import collect_files, read_records

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "report"
CPU = FIX / "cpu-box" / "throughput-20250110-100000-cpu-box-a1b2.jsonl"
GPU = FIX / "gpu-box" / "nested" / "throughput-20250112-080000-gpu-box-c3d4.jsonl"
LAT = FIX / "gpu-box" / "latency-20250112-090000-gpu-box-c3d4.jsonl"
G_CPU = "torch-cpu · EPYC 7B13"
G_GPU = "torch-cuda · H100 80GB HBM3"


def load(*paths) -> list[dict]:
    recs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            recs += read_records(p)
    return recs


@pytest.fixture(scope="module")
def records():
    return load(CPU, GPU, LAT)


@pytest.fixture(scope="module")
def md(records):
    return report.markdown(records, [str(CPU), str(GPU), str(LAT)])


def md_tables(text: str) -> dict:
    """{section heading: (header cells, [row cells, ...])} of each section's last markdown table: a
    suite's full table, which follows what the run found."""
    out, heading, lines = {}, None, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("| "):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip()[1:-1].split(" | ")])
                i += 1
            assert set(rows[1]) == {"---"}, rows[1]
            out[heading] = (rows[0], rows[2:])
            continue
        i += 1
    return out


def as_dicts(table) -> list[dict]:
    head, rows = table
    assert all(len(r) == len(head) for r in rows), rows
    return [dict(zip(head, r, strict=True)) for r in rows]


def find(rows, **want) -> dict:
    hits = [r for r in rows if all(r[k] == v for k, v in want.items())]
    assert len(hits) == 1, (want, hits)
    return hits[0]


# ---------------------------------------------------------------------------- reading
def test_collect_files_recurses_and_keeps_only_jsonl():
    assert collect_files([FIX]) == [CPU, LAT, GPU]  # sorted; README.txt skipped; nested/ found


def test_collect_files_mixes_files_and_directories(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "x.jsonl").write_text("")
    (tmp_path / "a" / "y.jsonl").write_text("")
    (tmp_path / "a" / "b" / "z.json").write_text("{}")
    single = tmp_path / "single.txt"
    single.write_text("")
    got = collect_files([tmp_path / "a", single])
    assert got == [tmp_path / "a" / "b" / "c" / "x.jsonl", tmp_path / "a" / "y.jsonl", single]


def test_collect_files_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_files([FIX, tmp_path / "nope"])


def test_corrupt_line_warns_with_file_and_line():
    with pytest.warns(UserWarning, match=r"throughput-20250110-100000-cpu-box-a1b2\.jsonl:3: .*corrupt") as rec:
        recs = read_records(CPU)
    assert len(rec) == 1
    assert str(CPU) in str(rec[0].message)
    assert len(recs) == 4
    assert [r["seq_len"] for r in recs] == [64, 64, 256, 64]


def test_foreign_line_warns_with_file_and_line():
    with pytest.warns(UserWarning, match=r"throughput-20250112-080000-gpu-box-c3d4\.jsonl:2: .*'other/1'") as rec:
        recs = read_records(GPU)
    assert len(rec) == 1
    assert str(GPU) in str(rec[0].message)
    assert [r["status"] for r in recs] == ["ok", "oom", "ok"]
    assert all(r["schema"] == "ssmbench/1" for r in recs)


def test_clean_file_reads_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recs = read_records(LAT)
    assert len(recs) == 1 and recs[0]["suite"] == "latency"


# ---------------------------------------------------------------------------- markdown
def test_markdown_sections(md):
    tables = md_tables(md)
    assert list(tables) == ["throughput", "latency", "Points that did not complete", "Machines"]
    assert "from 3 file(s)" in md


def test_markdown_groups_side_by_side(md):
    head, rows = md_tables(md)["throughput"]
    assert head == [
        "arch",
        "mode",
        "scan",
        "dtype",
        "model",
        "batch",
        "seq",
        "params",
        f"{G_CPU} tok/s",
        f"{G_CPU} ms/step",
        f"{G_CPU} peak",
        f"{G_GPU} tok/s",
        f"{G_GPU} ms/step",
        f"{G_GPU} peak",
    ]
    assert len(rows) == 3  # one row per configuration point: the duplicate is not a row of its own


def test_markdown_one_row_per_point_with_both_machines(md):
    rows = as_dicts(md_tables(md)["throughput"])
    assert sorted((r["mode"], r["seq"]) for r in rows) == [("forward", "64"), ("train", "256"), ("train", "64")]
    for r in rows:
        assert (r["arch"], r["scan"], r["dtype"], r["model"], r["batch"], r["params"]) == (
            "mamba",
            "parallel",
            "float32",
            "D64 L2 N8",
            "2",
            "63,488",
        )
    r = find(rows, mode="train", seq="64")
    assert (r[f"{G_CPU} tok/s"], r[f"{G_CPU} ms/step"], r[f"{G_CPU} peak"]) == ("16,000", "8 (0)", "100.00 MiB")
    assert (r[f"{G_GPU} tok/s"], r[f"{G_GPU} ms/step"], r[f"{G_GPU} peak"]) == ("128,000", "1 (0)", "2.00 GiB")


def test_markdown_latest_duplicate_wins(md):
    r = find(as_dicts(md_tables(md)["throughput"]), mode="train", seq="64")
    assert r[f"{G_CPU} ms/step"] == "8 (0)"
    assert "10,667" not in md and "12 (0)" not in md  # the older measurement (12 ms) is gone


def test_markdown_latest_wins_whatever_the_input_order(records):
    def section(recs):
        return md_tables(report.markdown(recs))["throughput"]

    expected = section(records)
    for seed in range(3):
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        assert section(shuffled) == expected  # groups and rows ordered by started_at, not by input order
    assert find(as_dicts(expected), mode="train", seq="64")[f"{G_CPU} ms/step"] == "8 (0)"


def test_markdown_failed_points_show_status(md):
    rows = as_dicts(md_tables(md)["throughput"])
    oom = find(rows, mode="train", seq="256")
    assert oom[f"{G_GPU} tok/s"] == "OOM"
    assert oom[f"{G_GPU} ms/step"] == "" and oom[f"{G_GPU} peak"] == ""
    assert (oom[f"{G_CPU} tok/s"], oom[f"{G_CPU} ms/step"], oom[f"{G_CPU} peak"]) == ("12,800", "40 (0)", "300.00 MiB")
    err = find(rows, mode="forward", seq="64")
    assert err[f"{G_CPU} tok/s"] == "error"
    assert err[f"{G_CPU} ms/step"] == ""


def test_markdown_lists_failure_messages(md):
    rows = as_dicts(md_tables(md)["Points that did not complete"])
    assert len(rows) == 2
    oom = find(rows, status="oom")
    assert (oom["suite"], oom["group"]) == ("throughput", G_GPU)
    assert oom["message"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "256" in oom["point"]
    err = find(rows, status="error")
    assert (err["suite"], err["group"]) == ("throughput", G_CPU)
    assert err["message"] == "RuntimeError: boom in the forward pass"  # first line only
    assert "second line" not in md


def test_markdown_marks_unstable(md):
    rows = as_dicts(md_tables(md)["throughput"])
    unstable = find(rows, mode="forward", seq="64")
    assert unstable[f"{G_GPU} ms/step"] == f"3 (2) {report.UNSTABLE_MARK}"
    assert unstable[f"{G_GPU} tok/s"] == "42,667"
    marked = [(r["mode"], r["seq"], k) for r in rows for k, v in r.items() if report.UNSTABLE_MARK in v]
    assert marked == [("forward", "64", f"{G_GPU} ms/step")]
    assert report.UNSTABLE_MARK == "⚠"


def test_markdown_other_suite_has_its_own_table(md):
    head, rows = md_tables(md)["latency"]
    assert head[-3:] == [f"{G_GPU} tok/s", f"{G_GPU} ms/step", f"{G_GPU} peak"]
    assert not any(G_CPU in h for h in head)
    (r,) = as_dicts((head, rows))
    assert (r["mode"], r["scan"], r["batch"], r["seq"]) == ("decode", "recurrent", "1", "64")
    assert (r[f"{G_GPU} tok/s"], r[f"{G_GPU} ms/step"], r[f"{G_GPU} peak"]) == ("2,000", "0.5 (0)", "512.00 MiB")


def test_markdown_machines(md):
    rows = as_dicts(md_tables(md)["Machines"])
    assert [r["group"] for r in rows] == [G_CPU, G_GPU]
    cpu, gpu = rows
    assert (cpu["device"], cpu["host"], cpu["memory source"]) == ("AMD EPYC 7B13", "cpu-box", "rss")
    assert (gpu["device"], gpu["host"], gpu["memory source"]) == ("NVIDIA H100 80GB HBM3", "gpu-box", "cuda_max_allocated")
    assert "torch 2.5.1" in cpu["versions"]
    assert cpu["CUDA graphs"] == "-"


def test_machines_say_what_ran_as_cuda_graphs():
    """From env_backend's execution notes: all of a group's train steps (or forwards), or how
    many; decode."""

    def rec(mode, **env_backend):
        return {"suite": "throughput", "backend": "torch-cuda", "device": "H100", "mode": mode, "env_backend": env_backend}

    decode = {"mamba_decode": "CUDA graph, preallocated state", "transformer_decode": "CUDA graph, KV cache"}
    recs = [rec("train", train_step="CUDA graph", **decode), rec("forward", **decode)]
    assert report.graphed(recs) == "train step, Mamba decode, Transformer decode"
    recs.append(rec("train", train_step="eager: the chunked scan reads its chunk length on the host", mamba_decode="CUDA graph"))
    assert report.graphed(recs) == "train step (1 of 2), Mamba decode, Transformer decode"  # records without a note: not counted
    assert report.graphed([rec("decode")]) == "-"  # records from before the notes existed
    fwd = [rec("forward", forward="CUDA graph"), rec("forward", forward="eager (the chunked scan reads its chunk length back to the host)")]
    assert report.graphed(fwd) == "forward (1 of 2)"


# ---------------------------------------------------------------------------- csv, json
EXPECTED_COLUMNS = {
    "suite",
    "backend",
    "device",
    "host",
    "arch",
    "mode",
    "scan",
    "dtype",
    "cfg_vocab",
    "cfg_d_model",
    "cfg_n_layers",
    "cfg_d_state",
    "batch",
    "seq_len",
    "params",
    "status",
    "error",
    "tokens_per_s",
    "ms_median",
    "ms_iqr",
    "ms_p10",
    "ms_p90",
    "ms_p99",
    "ms_min",
    "ms_max",
    "ms_n",
    "ms_unstable",
    "graph_ms_median",
    "compile_s",
    "peak_mem_bytes",
    "mem_source",
    "run_id",
    "started_at",
}


def test_csv(records):
    df = pd.read_csv(io.StringIO(report.csv_text(records)))
    assert EXPECTED_COLUMNS <= set(df.columns)
    assert len(df) == 7  # 3 points x 2 machines + 1 latency point; the older duplicate dropped
    assert not df.duplicated(["suite", "backend", "mode", "seq_len"]).any()
    assert sorted(df["backend"].unique()) == ["torch-cpu", "torch-cuda"]
    assert set(df["cfg_d_model"]) == {64}

    def one(**kw):
        sel = df
        for k, v in kw.items():
            sel = sel[sel[k] == v]
        assert len(sel) == 1, kw
        return sel.iloc[0]

    r = one(suite="throughput", backend="torch-cpu", mode="train", seq_len=64)
    assert r["ms_median"] == pytest.approx(8.0)
    assert r["tokens_per_s"] == pytest.approx(16000.0)
    assert r["started_at"] == "2025-01-11T09:00:00+00:00"
    assert r["run_id"] == "20250111-090000-cpu-box-e5f6"
    assert r["device"] == "AMD EPYC 7B13" and r["host"] == "cpu-box"
    r = one(backend="torch-cuda", mode="train", seq_len=256)
    assert r["status"] == "oom"
    assert "CUDA out of memory" in r["error"]
    assert pd.isna(r["ms_median"])
    r = one(backend="torch-cuda", mode="forward")
    assert bool(r["ms_unstable"]) is True
    assert (r["ms_median"], r["ms_iqr"], r["ms_n"]) == (pytest.approx(3.0), pytest.approx(2.0), 5)
    assert one(backend="torch-cpu", mode="forward")["status"] == "error"
    assert set(df["status"]) == {"ok", "oom", "error"}


def test_json(records):
    sources = [str(CPU), str(GPU), str(LAT)]
    doc = json.loads(report.json_text(records, sources))
    assert doc["schema"] == "ssmbench-report/1"
    assert doc["sources"] == sources
    rows = doc["rows"]
    assert len(rows) == 7
    assert EXPECTED_COLUMNS <= set(rows[0])
    (r,) = [r for r in rows if r["backend"] == "torch-cpu" and r["mode"] == "train" and r["seq_len"] == 64]
    assert r["ms_median"] == pytest.approx(8.0) and r["started_at"] == "2025-01-11T09:00:00+00:00"
    (u,) = [r for r in rows if r["backend"] == "torch-cuda" and r["mode"] == "forward"]
    assert u["ms_unstable"] is True and u["tokens_per_s"] == pytest.approx(128 / 0.003)
    assert sorted(r["status"] for r in rows) == ["error", "ok", "ok", "ok", "ok", "ok", "oom"]


def test_render_dispatch_and_unknown_format(records):
    assert report.render(records, "markdown").startswith("# ssmbench report")
    assert report.render(records, "csv").splitlines()[0].startswith("suite,backend,device")
    assert json.loads(report.render(records, "json"))["rows"]
    with pytest.raises(ValueError):
        report.render(records, "pdf")


# ---------------------------------------------------------------------------- the report command
def assert_two_warnings(err: str, cpu_name: str, gpu_name: str):
    warns = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 2, err
    assert any(f"{cpu_name}:3:" in w and "corrupt" in w for w in warns), warns
    assert any(f"{gpu_name}:2:" in w and "other/1" in w for w in warns), warns
    assert "Traceback" not in err


def test_cli_report_markdown_warns_and_exits_0(run_cli, monkeypatch):
    monkeypatch.chdir(REPO)  # relative paths keep the warning lines short
    code, out, err = run_cli("report", "tests/fixtures/report")
    assert code == 0
    assert_two_warnings(
        err, "cpu-box/throughput-20250110-100000-cpu-box-a1b2.jsonl", "gpu-box/nested/throughput-20250112-080000-gpu-box-c3d4.jsonl"
    )
    tables = md_tables(out)
    assert len(tables["throughput"][1]) == 3
    assert find(as_dicts(tables["throughput"]), mode="train", seq="64")[f"{G_CPU} ms/step"] == "8 (0)"


def test_cli_report_csv_to_file(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    dest = tmp_path / "new" / "report.csv"
    code, out, err = run_cli(
        "report", "tests/fixtures/report/cpu-box", "tests/fixtures/report/gpu-box", "--format", "csv", "--output", dest
    )
    assert code == 0
    assert out == ""
    assert_two_warnings(err, CPU.name, GPU.name)
    assert str(dest) in err
    df = pd.read_csv(dest)
    assert len(df) == 7 and EXPECTED_COLUMNS <= set(df.columns)


def test_cli_report_json_stdout(run_cli, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run_cli("report", "tests/fixtures/report", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["rows"]) == 7
    assert len(doc["sources"]) == 3


def _subprocess(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "ssmbench", *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_subprocess_report(tmp_path):
    p = _subprocess("report", "tests/fixtures/report", cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert_two_warnings(p.stderr, CPU.name, GPU.name)
    assert len(md_tables(p.stdout)["throughput"][1]) == 3


def test_subprocess_report_long_path_warning_is_one_line(tmp_path):
    deep = tmp_path.joinpath(*(["results-from-a-machine-with-a-long-directory-name"] * 4))
    deep.mkdir(parents=True)
    shutil.copy(CPU, deep / CPU.name)
    shutil.copy(GPU, deep / GPU.name)
    p = _subprocess("report", deep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert_two_warnings(p.stderr, str(deep / CPU.name), str(deep / GPU.name))


def test_cli_report_warning_keeps_brackets_in_path(run_cli, tmp_path, monkeypatch):
    d = tmp_path / "results[old]"
    d.mkdir()
    shutil.copy(CPU, d / CPU.name)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("report", "results[old]")
    assert code == 0
    assert f"results[old]/{CPU.name}:3:" in err, err


def test_the_html_page_is_made_of_markdown_and_figures_alone():
    """ssmbench.html converts text and figures it is given (ssmbench.report writes and draws them)."""
    from ssmbench.html import figure_marker, page

    text = f"# t\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n{figure_marker(0)}\n\n{figure_marker(1)}\n"
    out = page(text, [("p<1>", "<svg>x</svg>"), ("q", "<svg>y</svg>")])
    assert out.startswith("<!DOCTYPE html>") and "<td>1</td>" in out
    assert '<figure id="p&lt;1&gt;"><svg>x</svg></figure>' in out and '<figure id="q"><svg>y</svg></figure>' in out
    assert "SSMBENCHFIGURE" not in out
