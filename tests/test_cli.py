"""Bad usage and bad input (SPEC "CLI"): exit status 2, ONE line on stderr that starts with
"error:" and names the bad value (and what is allowed), no traceback, nothing written.

Most cases run in process through ssmbench.cli.main (fast); a few run `python -m ssmbench` in a
subprocess, the way a user or a script meets them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssmbench.cli as cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli(run_cli, monkeypatch):
    """conftest's in-process runner, with the benchmark itself disabled."""

    def never_execute(*a, **k):  # a bad input that slips through must fail here, not start a benchmark
        raise AssertionError("bad input was accepted: the benchmark was about to run")

    monkeypatch.setattr(cli, "execute", never_execute)
    return run_cli


def run_subprocess(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")}
    env["NO_COLOR"] = "1"
    p = subprocess.run([sys.executable, "-m", "ssmbench", *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def assert_bad_input(code, out, err, *names):
    """Exit 2 and exactly one non-empty 'error: ...' line on stderr naming every string in names."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, f"expected exactly one line on stderr, got: {err!r}"
    line = err.rstrip("\n")
    assert line.strip(), "empty error line"
    assert line.startswith("error:"), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    assert out == "", f"nothing should be printed on stdout: {out!r}"
    return line


# (argv after `run`, strings the message must contain: the bad value, and where sensible the allowed ones)
RUN_CASES = {
    "unknown suite": (["nope"], ["'nope'", "throughput", "latency", "depth-scaling", "memory-ceiling", "seqlen"]),
    "unknown backend": (["throughput", "--backend", "nope"], ["'nope'", "torch-cpu", "auto"]),
    "unknown backend in a list": (["throughput", "--backend", "torch-cpu,bogus-gpu"], ["'bogus-gpu'"]),
    "batch 0": (["throughput", "--batch", "0"], ["--batch", "0", ">= 1"]),
    "seq-len -1": (["throughput", "--seq-len", "-1"], ["--seq-len", "-1"]),
    "d-model 0": (["throughput", "--d-model", "0"], ["--d-model", "0"]),
    "layers 0": (["throughput", "--layers", "0"], ["--layers", "0"]),
    "dtype fp8": (["throughput", "--dtype", "fp8"], ["--dtype", "'fp8'", "float32", "bfloat16", "float16"]),
    "scan foo": (["throughput", "--scan", "foo"], ["--scan", "'foo'", "parallel"]),
    "scan all,parallel": (["throughput", "--scan", "all,parallel"], ["--scan", "'all'"]),
    "mode foo": (["throughput", "--mode", "foo"], ["--mode", "'foo'", "train", "forward", "decode"]),
    "mode list with a bad one": (["latency", "--mode", "forward,sideways"], ["--mode", "'sideways'"]),
    "arch foo": (["throughput", "--arch", "foo"], ["--arch", "'foo'", "mamba", "transformer", "both"]),
    "memory-limit 12XB": (["throughput", "--memory-limit", "12XB"], ["--memory-limit", "12XB", "GB"]),
    "memory-limit 0": (["throughput", "--memory-limit", "0"], ["--memory-limit", "'0'"]),
    "min-time -1": (["throughput", "--min-time", "-1"], ["--min-time", "-1"]),
    "timeout 0": (["throughput", "--timeout", "0"], ["--timeout", "0"]),
    "warmup -1": (["throughput", "--warmup", "-1"], ["--warmup", "-1", ">= 0"]),
    "preset nope": (["throughput", "--preset", "nope"], ["--preset", "'nope'", "mamba-130m"]),
    "unknown option": (["throughput", "--bogus-flag"], ["--bogus-flag"]),
    "bad value after good ones": (
        ["throughput", "--quick", "--backend", "torch-cpu", "--batch", "2", "--repeats", "0"],
        ["--repeats", "0"],
    ),
}


@pytest.mark.parametrize("argv, names", RUN_CASES.values(), ids=RUN_CASES.keys())
def test_run_bad_input(run_cli, tmp_path, argv, names):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("run", *argv, "--out", out_dir)
    assert_bad_input(code, out, err, *names)
    assert not out_dir.exists(), "nothing may be written on bad input"


def test_non_integer_batch_is_usage_error(run_cli, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("run", "throughput", "--batch", "abc", "--out", out_dir)
    assert_bad_input(code, out, err, "--batch")
    assert not out_dir.exists()


@pytest.mark.parametrize("flag", ["--batch", "--timeout"])
def test_non_numeric_value_is_named(run_cli, tmp_path, flag):
    code, out, err = run_cli("run", "throughput", flag, "abc", "--out", tmp_path / "out")
    assert_bad_input(code, out, err, flag, "abc")


def test_bad_value_with_brackets_is_named_verbatim(run_cli, tmp_path):
    code, out, err = run_cli("run", "throughput", "--preset", "[nope]", "--out", tmp_path / "out")
    assert_bad_input(code, out, err, "'[nope]'")


def test_out_that_is_a_file(run_cli, tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("not a directory\n")
    code, out, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--out", f)
    assert_bad_input(code, out, err, "--out", str(f))
    assert f.read_text() == "not a directory\n"


# ---------------------------------------------------------------------------- report
def test_report_bad_format(run_cli, tmp_path):
    (tmp_path / "r.jsonl").write_text("")
    dest = tmp_path / "out" / "report.pdf"
    code, out, err = run_cli("report", tmp_path / "r.jsonl", "--format", "pdf", "--output", dest)
    assert_bad_input(code, out, err, "--format", "'pdf'", "markdown", "csv", "json")
    assert not dest.parent.exists()


def test_report_missing_path(run_cli, tmp_path):
    missing = tmp_path / "no-such-results"
    dest = tmp_path / "out" / "report.md"
    code, out, err = run_cli("report", missing, "--output", dest)
    assert_bad_input(code, out, err, str(missing))
    assert not dest.parent.exists()


def test_report_empty_directory(run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "out" / "report.md"
    code, out, err = run_cli("report", empty, "--output", dest)
    assert_bad_input(code, out, err, str(empty))
    assert not dest.parent.exists()


def test_report_directory_with_only_foreign_files(run_cli, tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "notes.txt").write_text("hello\n")
    code, out, err = run_cli("report", d)
    assert_bad_input(code, out, err, str(d))


# ---------------------------------------------------------------------------- as a user runs it
def test_subprocess_unknown_suite(tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_subprocess("run", "nope", "--out", out_dir, cwd=tmp_path)
    assert_bad_input(code, out, err, "'nope'", "throughput")
    assert not out_dir.exists()


def test_subprocess_batch_zero(tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_subprocess("run", "throughput", "--batch", "0", "--out", out_dir, cwd=tmp_path)
    assert_bad_input(code, out, err, "--batch", "0")
    assert not out_dir.exists()
    assert not (tmp_path / "reports").exists()  # not the default --out either


def test_subprocess_report_bad_format(tmp_path):
    code, out, err = run_subprocess("report", REPO / "tests" / "fixtures" / "report", "--format", "pdf", cwd=tmp_path)
    assert_bad_input(code, out, err, "'pdf'")


def test_subprocess_markup_in_bad_value_is_not_a_traceback(tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run_subprocess("run", "throughput", "--preset", "[/]", "--out", out_dir, cwd=tmp_path)
    assert_bad_input(code, out, err, "'[/]'")
    assert not out_dir.exists()
