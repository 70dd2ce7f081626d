"""Bad usage and bad input (SPEC "CLI"): exit status 2, ONE line on stderr that starts with
"error:" and names the bad value (and what is allowed), no traceback, nothing written.

Most cases run in process through ssmbench.cli.main (fast); a few run `python -m ssmbench` in a
subprocess, the way a user or a script meets them.
"""

from __future__ import annotations

import json
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
    "memory-limit 1e999": (["throughput", "--memory-limit", "1e999"], ["--memory-limit", "'1e999'", "too large"]),
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


# ---------------------------------------------------------------------------- integers too large
BIG = "99999999999999999999"  # Typer hands this on as a Python int; no backend can address it
INT32_MAX = "2147483647"
SIZE_FLAGS = ["--batch", "--seq-len", "--d-model", "--layers", "--d-state", "--d-conv", "--expand", "--vocab"]
COUNT_FLAGS = ["--min-iters", "--repeats", "--warmup"]


@pytest.mark.parametrize("flag", SIZE_FLAGS + COUNT_FLAGS)
def test_integer_beyond_int32_is_bad_input(run_cli, tmp_path, flag):
    out_dir = tmp_path / "out"
    code, out, err = run_cli("run", "throughput", flag, BIG, "--out", out_dir)
    line = assert_bad_input(code, out, err, flag, BIG, f"<= {INT32_MAX}")
    assert line == f"error: {flag} {BIG} must be <= {INT32_MAX}"
    assert not out_dir.exists()


LIST_CASES = {
    "max-len": (["run", "seqlen", "--max-len", "4294967296"], ["--max-len", "4294967296"]),
    "layers-list": (["run", "depth-scaling", "--layers-list", f"1,2,{BIG}"], ["--layers-list", BIG]),
    "sweep values": (["sweep", "batch", "--values", "1,2147483648"], ["--values", "2147483648"]),
    "sweep max-len": (["sweep", "seqlen", "--max-len", BIG], ["--max-len", BIG]),
}


@pytest.mark.parametrize("argv, names", LIST_CASES.values(), ids=LIST_CASES.keys())
def test_lengths_and_list_entries_beyond_int32_are_bad_input(run_cli, tmp_path, argv, names):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(*argv, "--out", out_dir)
    assert_bad_input(code, out, err, *names, f"<= {INT32_MAX}")
    assert not out_dir.exists()


def test_seed_beyond_int64_is_bad_input(run_cli, tmp_path):
    code, out, err = run_cli("run", "throughput", "--seed", str(2**63), "--out", tmp_path / "out")
    assert_bad_input(code, out, err, "--seed", str(2**63), f"<= {2**63 - 1}")


def test_int32_max_itself_is_accepted():
    from conftest import options

    opts = options(batch=2**31 - 1, seq_len=2**31 - 1, seed=2**63 - 1)
    assert (opts.batch, opts.seq_len, opts.seed) == (2**31 - 1, 2**31 - 1, 2**63 - 1)


# ---------------------------------------------------------------------------- --out and --output
def _unwritable_outs(tmp_path):
    """(path, why) for --out values no run can write to, as root too."""
    f = tmp_path / "file.txt"
    f.write_text("x\n")
    cases = [(f / "sub", "not a directory"), (Path("/proc/nope"), "cannot be created")]
    if Path("/proc").is_dir():
        cases.append((Path("/proc"), "not writable"))  # exists, but nothing can be created in it
    return cases


def test_out_that_cannot_be_written(run_cli, tmp_path):
    for path, why in _unwritable_outs(tmp_path):
        code, out, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--out", path)
        assert_bad_input(code, out, err, "--out", repr(str(path)), why)
    assert (tmp_path / "file.txt").read_text() == "x\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory(run_cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for path in (ro, ro / "new"):
            code, out, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--out", path)
            assert_bad_input(code, out, err, "--out", str(path))
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_out_refused_after_making_it_leaves_no_directories(run_cli, monkeypatch, tmp_path):
    """Where the directory can be made but not written (a read-only mount, a quota, as root
    too), the directories made for the test are removed again: nothing is written."""
    import ssmbench.options as options

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(options.tempfile, "mkstemp", refuse)
    dest = tmp_path / "new" / "results"
    code, out, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--out", dest)
    line = assert_bad_input(code, out, err, "--out", repr(str(dest)))
    assert line == f"error: --out {str(dest)!r} is not writable (Permission denied)"
    assert list(tmp_path.iterdir()) == []


def test_out_is_created_and_left_clean(run_cli, monkeypatch, tmp_path):
    """A good --out is made before the run starts; the write test leaves nothing in it."""
    seen = {}
    monkeypatch.setattr(cli, "execute", lambda suite, plan, out_dir, resume: seen.setdefault("out", out_dir) and 0)
    dest = tmp_path / "a" / "b"
    code, _, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--out", dest)
    assert code == 0, err
    assert seen["out"] == dest and dest.is_dir() and list(dest.iterdir()) == []


def test_report_output_that_cannot_be_written(run_cli, tmp_path):
    from ssmbench.plan import Point
    from ssmbench.results import make_record

    point = Point(
        suite="throughput", backend="torch-cpu", arch="mamba", mode="train", scan="chunked", dtype="float32", config={}, batch=2, seq_len=64
    )
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(make_record(point, "r", {}, status="oom")) + "\n")
    for path, why in _unwritable_outs(tmp_path):
        dest = path / "report.md"
        code, out, err = run_cli("report", results, "--output", dest)
        assert_bad_input(code, out, err, "--output", repr(str(dest)), why)
    code, out, err = run_cli("report", results, "--output", tmp_path)
    assert_bad_input(code, out, err, "--output", repr(str(tmp_path)), "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "results.jsonl"]


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
