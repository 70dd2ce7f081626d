"""The runner: every outcome of a point is recorded and the other points still run and are saved."""

import json
import subprocess
import sys

import pytest

from ssmbench.measure import time_steps
from ssmbench.plan import RunOptions
from ssmbench.results import read_records
from ssmbench.runner import run_points


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _points(registry, backends, timeout=60.0, **kw):
    from ssmbench.suites import throughput

    opts = RunOptions(backends=backends, modes=["train"], batch=2, seq_len=8, warmup=1, min_iters=3, min_time=0.0, timeout=timeout, **kw)
    return throughput.plan(opts)


def test_each_failure_is_recorded_and_the_run_goes_on(fake_backends, tmp_path):
    order = ["fake-ok", "fake-oom", "fake-crash", "fake-hang", "fake-nan", "fake-error", "fake-ok"]
    pts = _points(fake_backends, order[:-1], timeout=8.0)
    pts.append(_points(fake_backends, ["fake-ok"])[0])
    out = tmp_path / "r.jsonl"
    summary = run_points(pts, out, "run1", {"host": "test"})
    status = [r["status"] for r in read_records(out)]
    assert status == ["ok", "oom", "crash", "timeout", "error", "error", "ok"]
    recs = read_records(out)
    assert "SIGSEGV" in recs[2]["error"]
    assert "MemoryError" in recs[1]["error"]
    assert "8 s" in recs[3]["error"]
    assert "non-finite" in recs[4]["error"]
    assert "ValueError: fake failure" in recs[5]["error"] and "Traceback" in recs[5]["traceback"]
    assert recs[0]["metrics"]["step_ms"]["n"] >= 3 and recs[0]["device"] == "Fake Device 9000"
    assert summary.failed


def test_cli_exit_codes_and_results_file(fake_backends, tmp_path):
    r = _cli(
        "run",
        "throughput",
        "--backend",
        "fake-ok,fake-oom",
        "--mode",
        "train",
        "--min-time",
        "0",
        "--min-iters",
        "3",
        "--out",
        str(tmp_path),
        "--batch",
        "2",
        "--seq-len",
        "8",
    )
    assert r.returncode == 0, r.stderr  # oom is not a failure of the run
    (f,) = tmp_path.glob("throughput-*.jsonl")
    assert [x["status"] for x in read_records(f)] == ["ok", "oom"]
    r = _cli("run", "throughput", "--backend", "fake-ok,fake-crash", "--mode", "train", "--min-time", "0", "--out", str(tmp_path / "b"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr


def test_resume_skips_recorded_points_and_reruns_failed(fake_backends, tmp_path):
    common = ["--mode", "train", "--min-time", "0", "--min-iters", "3", "--out", str(tmp_path), "--batch", "2", "--seq-len", "8"]
    r = _cli("run", "throughput", "--backend", "fake-ok,fake-crash", *common)
    assert r.returncode == 1
    (f,) = tmp_path.glob("throughput-*.jsonl")
    first = read_records(f)
    r = _cli("run", "throughput", "--backend", "fake-ok,fake-crash,fake-oom", "--resume", *common)
    assert "1 point(s) already recorded" in r.stderr
    assert list(tmp_path.glob("throughput-*.jsonl")) == [f]  # appended to the same file
    recs = read_records(f)
    assert [(x["backend"], x["status"]) for x in recs] == [
        ("fake-ok", "ok"),
        ("fake-crash", "crash"),
        ("fake-crash", "crash"),
        ("fake-oom", "oom"),
    ]
    assert {x["run_id"] for x in recs} == {first[0]["run_id"]}


def test_results_are_flushed_point_by_point(fake_backends, tmp_path):
    """After each point ends its record is on disk, before the next point starts."""
    out = tmp_path / "r.jsonl"
    seen = []
    pts = _points(fake_backends, ["fake-ok", "fake-oom", "fake-ok"])
    run_points(pts, out, "run1", {}, on_start=lambda p: seen.append(len(out.read_text().splitlines()) if out.exists() else 0))
    assert seen == [0, 1, 2]


def test_memory_limit_watchdog_ends_point_as_oom(tmp_path):
    """On CPU the emulated limit is a resident-memory watchdog on growth above the started
    framework: building a model and running it grows by more than 2 MB."""
    r = _cli("run", "throughput", "--backend", "torch-cpu", "--quick", "--mode", "forward", "--memory-limit", "2MB", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (rec,) = read_records(next(tmp_path.glob("throughput-*.jsonl")))
    assert rec["status"] == "oom" and "--memory-limit" in rec["error"]


def test_unavailable_backend_is_recorded_not_a_traceback(tmp_path):
    from ssmbench import backends as registry

    missing = [n for n in registry.names() if not registry.availability(n).available]
    if not missing:
        pytest.skip("every backend runs here")
    r = _cli("run", "throughput", "--backend", missing[0], "--quick", "--out", str(tmp_path))
    assert r.returncode == 0
    assert "Traceback" not in r.stderr and f"{missing[0]} is unavailable here" in r.stderr
    recs = read_records(next(tmp_path.glob("throughput-*.jsonl")))
    assert {x["status"] for x in recs} == {"unavailable"} and "install" in recs[0]["error"]


def test_scan_missing_on_a_backend_is_skipped(fake_backends, tmp_path):
    pts = _points(fake_backends, ["fake-ok"], scans=["parallel"])
    run_points(pts, tmp_path / "r.jsonl", "r", {})
    (rec,) = read_records(tmp_path / "r.jsonl")
    assert rec["status"] == "skipped" and "no 'parallel' scan" in rec["error"]


def test_repeats_pool_samples_from_fresh_processes(fake_backends, tmp_path):
    pts = _points(fake_backends, ["fake-ok"], repeats=3)
    run_points(pts, tmp_path / "r.jsonl", "r", {})
    (rec,) = read_records(tmp_path / "r.jsonl")
    reps = rec["metrics"]["repeats"]
    assert len(reps) == 3 and rec["metrics"]["step_ms"]["n"] == sum(x["n"] for x in reps)


# ---------------------------------------------------------------------------- timing loop
def test_time_steps_counts_first_call_warmup_and_min_iters():
    calls, syncs = [], []
    t = time_steps(lambda: calls.append(1) or len(calls), syncs.append, warmup=4, min_iters=7, min_time=0.0)
    assert len(calls) == 1 + 4 + 7 and len(t.samples_s) == 7
    assert t.first_output == 1
    assert syncs[0] is None and syncs[1:] == list(range(1, 13))  # synced before the first clock, then after every step
    assert t.compile_s >= 0 and all(s >= 0 for s in t.samples_s)


def test_time_steps_runs_until_min_time():
    t = time_steps(lambda: None, lambda _: None, warmup=0, min_iters=1, min_time=0.05)
    assert sum(t.samples_s) > 0 and len(t.samples_s) > 1


def test_batch_defaults_per_suite_and_explicit_batch(fake_backends):
    """--preset/--quick batches apply to train/forward; latency decodes at batch 1 unless --batch."""
    from ssmbench.suites import latency, throughput

    from ssmbench.options import build_options

    def opts(**kw):
        base = dict(
            backend=["fake-ok"],
            arch="mamba",
            preset="tinyshakespeare-m2",
            d_model=None,
            layers=None,
            d_state=None,
            d_conv=None,
            expand=None,
            vocab=None,
            batch=None,
            seq_len=None,
            dtype="float32",
            scan=None,
            mode=None,
            warmup=None,
            min_iters=None,
            min_time=None,
            repeats=None,
            quick=False,
            timeout=None,
            memory_limit=None,
            seed=0,
        )
        return build_options(**{**base, **kw})

    assert [(p.mode, p.batch) for p in latency.plan(opts())] == [("train", 32), ("decode", 1)]
    assert [(p.mode, p.batch) for p in latency.plan(opts(batch=4))] == [("train", 4), ("decode", 4)]
    assert [(p.mode, p.batch, p.seq_len) for p in throughput.plan(opts(quick=True, preset=None))] == [("train", 2, 64), ("forward", 2, 64)]
    assert [p.batch for p in throughput.plan(opts(preset="mamba-130m"))] == [8, 8]


def test_real_torch_point_end_to_end(tmp_path):
    r = _cli("run", "latency", "--backend", "torch-cpu", "--quick", "--arch", "both", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    recs = read_records(next(tmp_path.glob("latency-*.jsonl")))
    assert [(x["arch"], x["mode"], x["scan"], x["batch"]) for x in recs] == [
        ("mamba", "train", "sequential", 2),
        ("mamba", "decode", "recurrent", 1),
        ("transformer", "train", "attention", 2),
        ("transformer", "decode", "attention", 1),
    ]
    for x in recs:
        assert x["status"] == "ok" and x["schema"] == "ssmbench/1"
        m = x["metrics"]
        assert m["step_ms"]["n"] >= 5 and len(m["step_ms"]["samples"]) == m["step_ms"]["n"]
        assert m["tokens_per_s"] > 0 and m["peak_mem_bytes"] > 0 and m["compile_s"] > 0
        assert m["mem_source"].startswith("process RSS sampled")  # a host_memory backend: RSS during the run
        assert x["env"]["python"] and x["env_backend"]["torch"]
    assert recs[1]["metrics"]["tokens_per_step"] == 1  # decode: one token per stream, batch 1
    json.dumps(recs)  # records are plain JSON
