"""The parity suite and the parity gate in front of every timing suite."""

import os
import subprocess
import sys

import pytest

from ssmbench import parity
from ssmbench.results import read_records
from ssmbench.runner import ParityGate

TESTS = os.path.dirname(__file__)


def _cli(*args):
    env = {**os.environ, "SSMBENCH_PLUGINS": "broken_backend", "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ssmbench", *args], capture_output=True, text=True, env=env, timeout=600)


def test_checks_cover_every_scan_path_and_dtype():
    from ssmbench.backends.torch.backend import TorchCPU

    checks = parity.checks_for(TorchCPU, ["mamba", "mamba2", "transformer"])
    assert len(checks) == 3 * (3 + 1 + 2 + 1 + 2)  # dtypes x (mamba scans + decode, mamba2 scans + decode, transformer's two paths)
    assert parity.Check("mamba", "decode", "recurrent", "bfloat16") in checks
    assert parity.Check("mamba2", "forward", "ssd", "float16") in checks
    assert parity.check_for("mamba", "train", "chunked", "float32") == parity.Check("mamba", "forward", "chunked", "float32")


def test_wrong_backend_fails_parity_and_is_not_timed(tmp_path):
    r = _cli("run", "throughput", "--backend", "broken-cpu", "--quick", "--mode", "forward", "--out", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (rec,) = read_records(next(tmp_path.glob("throughput-*.jsonl")))
    assert rec["status"] == "error" and "parity check failed" in rec["error"] and "relative error 1.00e-02" in rec["error"]
    assert "step_ms" not in rec["metrics"] and rec["metrics"]["parity"]["passed"] is False
    (check,) = read_records(next(tmp_path.glob("parity-*.jsonl")))  # the check is recorded beside the results
    assert check["suite"] == "parity" and check["status"] == "error"


def test_half_precision_tolerance_lets_the_same_backend_through(tmp_path):
    r = _cli("run", "throughput", "--backend", "broken-cpu", "--quick", "--mode", "forward", "--dtype", "bfloat16", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (rec,) = read_records(next(tmp_path.glob("throughput-*.jsonl")))
    assert rec["status"] == "ok" and 1e-2 < rec["metrics"]["parity"]["rel_err"] < 3e-2


def test_parity_suite_exits_1_and_tabulates(tmp_path):
    r = _cli("run", "parity", "--backend", "broken-cpu,torch-cpu", "--out", str(tmp_path))
    assert r.returncode == 1
    recs = read_records(next(tmp_path.glob("parity-*.jsonl")))
    by = {(x["backend"], x["mode"], x["scan"], x["dtype"]): x for x in recs}
    assert by[("torch-cpu", "forward", "chunked", "float32")]["metrics"]["rel_err"] < 1e-5
    assert by[("broken-cpu", "forward", "chunked", "float32")]["status"] == "error"
    assert by[("broken-cpu", "decode", "recurrent", "float32")]["status"] == "ok"  # decode path is not broken
    assert "FAIL" in r.stdout and "1e-04" in r.stdout


@pytest.mark.parametrize("git,reused", [("abc123", True), ("abc123+dirty", False), (None, False)])
def test_gate_reuses_checks_only_from_the_same_clean_code(tmp_path, git, reused):
    from ssmbench.plan import Point
    from ssmbench.results import ResultWriter, make_record

    env = {"ssmbench": {"git": git}, "versions": {"torch": "x"}}
    c = parity.Check("mamba", "forward", "chunked", "float32")
    rec_point = Point(
        suite="parity", backend="torch-cpu", arch=c.arch, mode=c.mode, scan=c.scan, dtype=c.dtype, config={}, batch=2, seq_len=37
    )
    ResultWriter(tmp_path / "parity-old.jsonl").write(
        make_record(rec_point, "old", env, status="ok", metrics={"rel_err": 1e-7, "tolerance": 1e-4, "passed": True})
    )
    gate = ParityGate([], tmp_path, "new", env)
    assert bool(gate._reusable("torch-cpu")) is reused


def test_parity_checks_only_the_named_dtype(run_cli, tmp_path):
    """`run parity --dtype float32` checks float32 only; without --dtype, every dtype."""
    from conftest import options
    from ssmbench.suites import parity as suite

    named = options(backend=["torch-cpu"], arch="both", dtype="float32", quick=True)
    every = options(backend=["torch-cpu"], arch="both", quick=True)
    (p_named,), (p_every,) = suite.plan(named), suite.plan(every)
    assert {c["dtype"] for c in p_named.checks} == {"float32"}
    assert {c["dtype"] for c in p_every.checks} == {"float32", "bfloat16", "float16"}
