"""Sweeps and searches: the memory-ceiling bisection, series that stop at an OOM, the CLI's
sweep command, and each new suite end to end on fake-mem (a device whose OOM point is known)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_backend import MEM_PER_TOKEN_LAYER
from ssmbench.suites.memory_ceiling import search

from ssmbench.plan import Point

QUICK_L, QUICK_LAYERS = 64, 2  # the --quick model's length and depth
SMALL = ("--seq-len", "64", "--layers", "2", "--d-model", "32")  # a full (not --quick) search on a small model


def drive(gen, fits):
    """Run a search generator against an oracle; returns the probed values in order."""
    probed, rec = [], None
    try:
        p = next(gen)
        while True:
            probed.append(p.batch)
            status = fits(p.batch)
            rec = {"status": status}
            p = gen.send(rec)
    except StopIteration:
        return probed


def seed_point():
    return Point("memory-ceiling", "fake-mem", "mamba", "train", "chunked", "float32", {}, batch=1, seq_len=64)


def ceiling_of(probed, boundary):
    return max(v for v in probed if v <= boundary)


@pytest.mark.parametrize("boundary", [1, 2, 3, 37, 64, 100, 1000, 4097])
@pytest.mark.parametrize("start", [1, 8])
def test_bisection_finds_a_known_boundary(boundary, start):
    probed = drive(search(seed_point(), "batch", start), lambda b: "ok" if b <= boundary else "oom")
    fit, oom = [v for v in probed if v <= boundary], [v for v in probed if v > boundary]
    assert len(set(probed)) == len(probed), f"probed a value twice: {probed}"
    if boundary >= start:
        assert max(fit) == boundary if boundary <= 50 else boundary - max(fit) <= 0.02 * boundary
    else:
        assert max(fit) == boundary  # the start did not fit: halving found it
    assert min(oom) - max(fit) <= max(1, int(0.02 * max(fit)))
    assert len(probed) <= 2 * boundary.bit_length() + 3


def test_search_with_no_fit_at_one_stops():
    assert drive(search(seed_point(), "batch", 4), lambda b: "oom") == [4, 2, 1]


def test_search_stops_at_an_error_and_at_the_cap():
    assert drive(search(seed_point(), "batch", 1), lambda b: "ok" if b < 8 else "timeout") == [1, 2, 4, 8]
    probed = drive(search(seed_point(), "batch", 1, cap=64), lambda b: "ok")
    assert probed[-1] == 64 and len(probed) == 7


# ---------------------------------------------------------------------------- end to end (fake-mem)
def records_of(out: Path, suite: str) -> list[dict]:
    (f,) = out.glob(f"{suite}-*.jsonl")
    return [json.loads(line) for line in f.read_text().splitlines()]


def test_memory_ceiling_end_to_end(fake_backends, run_cli, tmp_path):
    ceiling = 37
    per_sample = 2 * MEM_PER_TOKEN_LAYER * QUICK_L * QUICK_LAYERS  # fake-mem's train step
    limit = per_sample * ceiling + per_sample // 2
    rc, out, err = run_cli("run", "memory-ceiling", "--backend", "fake-mem", *SMALL, "--memory-limit", str(limit), "--out", tmp_path)
    assert rc == 0, err
    recs = records_of(tmp_path, "memory-ceiling")
    probes = [(r["batch"], r["status"]) for r in recs]
    assert probes[:7] == [(1, "ok"), (2, "ok"), (4, "ok"), (8, "ok"), (16, "ok"), (32, "ok"), (64, "oom")]
    assert max(b for b, s in probes if s == "ok") == ceiling
    assert min(b for b, s in probes if s == "oom") == ceiling + 1
    assert all(r["axis"] == "batch" and r["settings"]["memory_limit"] == limit for r in recs)
    assert all(r["settings"]["min_iters"] == 2 and r["settings"]["warmup"] == 1 for r in recs)  # probe settings

    from ssmbench import analysis

    (c,) = analysis.memory_ceilings(recs)
    assert (c.ceiling, c.first_oom, c.stopped, c.limit_bytes) == (ceiling, ceiling + 1, None, limit)
    assert c.peak_bytes == per_sample * ceiling
    assert c.predicted is not None and c.error is not None

    rc, md, err = run_cli("report", tmp_path)
    assert rc == 0, err
    assert "first OOM" in md and f"| {ceiling} | {ceiling + 1} |" in md


def test_memory_ceiling_searches_length(fake_backends, run_cli, tmp_path):
    per_token = 2 * MEM_PER_TOKEN_LAYER * QUICK_LAYERS * 2  # batch 2 at --quick
    limit = per_token * 300
    rc, _, err = run_cli(
        "run", "memory-ceiling", "--backend", "fake-mem", *SMALL, "--batch", "2", "--search", "seq-len", "--memory-limit", str(limit),
        "--out", tmp_path,
    )  # fmt: skip
    assert rc == 0, err
    recs = records_of(tmp_path, "memory-ceiling")
    assert recs[0]["seq_len"] == QUICK_L and all(r["batch"] == 2 for r in recs)
    fits = [r["seq_len"] for r in recs if r["status"] == "ok"]
    ooms = [r["seq_len"] for r in recs if r["status"] == "oom"]
    assert max(fits) <= 300 < min(ooms) and min(ooms) - max(fits) <= max(1, int(0.02 * max(fits)))


@pytest.mark.parametrize(
    "ceiling,probes",
    [
        (11, [(2, "ok"), (4, "ok"), (8, "ok"), (16, "oom"), (12, "oom"), (10, "ok")]),  # bracket 10..12 is within 25%
        (20, [(2, "ok"), (4, "ok"), (8, "ok"), (16, "ok")]),  # the quick cap: "at least 16"
    ],
)
def test_quick_search_is_short(fake_backends, run_cli, tmp_path, ceiling, probes):
    """--quick starts at the quick batch (2), stops doubling at 16 and bisects to 25%."""
    limit = 2 * MEM_PER_TOKEN_LAYER * QUICK_L * QUICK_LAYERS * ceiling
    rc, _, err = run_cli("run", "memory-ceiling", "--backend", "fake-mem", "--quick", "--memory-limit", str(limit), "--out", tmp_path)
    assert rc == 0, err
    recs = records_of(tmp_path, "memory-ceiling")
    assert [(r["batch"], r["status"]) for r in recs] == probes
    from ssmbench import analysis

    (c,) = analysis.memory_ceilings(recs)
    bracketed = any(s == "oom" for _, s in probes)
    assert (c.first_oom is not None, c.error is not None) == (bracketed, bracketed)  # no error for a lower bound
    assert bracketed or c.stopped == "search cap reached without an OOM"


def test_a_sweep_skips_longer_lengths_after_an_oom(fake_backends, run_cli, tmp_path):
    # forward needs 1000 * B * L * layers: at batch 2, 2 layers, L=256 needs 1,024,000 B
    rc, out, err = run_cli(
        "sweep", "seqlen", "--backend", "fake-mem", "--quick", "--mode", "forward", "--arch", "mamba",
        "--memory-limit", "600000", "--out", tmp_path,
    )  # fmt: skip
    assert rc == 0, err  # oom and skipped are not failures
    recs = records_of(tmp_path, "seqlen")
    assert [(r["seq_len"], r["status"]) for r in recs] == [(64, "ok"), (128, "ok"), (256, "oom"), (512, "skipped"), (1024, "skipped")]
    assert recs[3]["error"] == "not run: seq_len 256 already ended oom"


def test_resume_continues_an_adaptive_plan(fake_backends, run_cli, tmp_path):
    args = ("run", "memory-ceiling", "--backend", "fake-mem", *SMALL, "--memory-limit", str(256000 * 5), "--out", tmp_path)
    assert run_cli(*args)[0] == 0
    first = records_of(tmp_path, "memory-ceiling")
    rc, _, err = run_cli(*args, "--resume")
    assert rc == 0 and f"{len(first)} point(s) already recorded" in err
    assert records_of(tmp_path, "memory-ceiling") == first  # nothing re-run, nothing added


@pytest.mark.parametrize(
    "param,values,field",
    [("depth", "1,3", "n_layers"), ("batch", "1,3", "batch"), ("dstate", "2,5", "d_state"), ("seqlen", "16,48", "seq_len")],
)
def test_sweep_command_varies_its_axis(fake_backends, run_cli, tmp_path, param, values, field):
    rc, out, err = run_cli(
        "sweep", param, "--values", values, "--backend", "fake-ok", "--quick", "--mode", "forward", "--arch", "mamba", "--out", tmp_path
    )
    assert rc == 0, err
    (f,) = tmp_path.glob("*.jsonl")
    recs = [json.loads(line) for line in f.read_text().splitlines()]
    got = [r[field] if field in ("batch", "seq_len") else r["config"][field] for r in recs]
    assert got == [int(v) for v in values.split(",")] and all(r["axis"] == field for r in recs)


def test_depth_sweep_matches_the_transformer_at_each_depth(fake_backends, run_cli, tmp_path):
    rc, _, err = run_cli(
        "run",
        "depth-scaling",
        "--layers-list",
        "2,8",
        "--backend",
        "fake-ok",
        "--quick",
        "--arch",
        "both",
        "--mode",
        "forward",
        "--out",
        tmp_path,
    )
    assert rc == 0, err
    recs = records_of(tmp_path, "depth-scaling")
    trans = [r for r in recs if r["arch"] == "transformer"]
    assert [r["config"]["matched_mamba_layers"] for r in trans] == [2, 8]
    assert trans[1]["config"]["n_layers"] > trans[0]["config"]["n_layers"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "depth-scaling", "--layers-list", "1,x"], "--layers-list '1,x' is not a comma list"),
        (["run", "depth-scaling", "--layers-list", "4,4"], "repeats a value"),
        (["run", "depth-scaling", "--layers-list", "0,2"], "--layers-list 0 must be >= 1"),
        (["run", "throughput", "--layers-list", "1,2"], "--layers-list applies to `run depth-scaling` only"),
        (["run", "memory-ceiling", "--search", "depth"], "--search 'depth' is not allowed; choose from: batch, seq-len"),
        (["run", "seqlen", "--max-len", "0"], "--max-len 0 must be >= 1"),
        (["run", "latency", "--max-len", "512"], "--max-len applies to `run seqlen | scan` only"),
        (["sweep", "width"], "PARAM 'width' is not allowed; choose from: seqlen, depth, batch, dstate"),
        (["sweep", "batch", "--values", ""], "--values '' names no values"),
        (["sweep", "dstate", "--arch", "both"], "the SSM state size N sweep varies an SSM setting the Transformer lacks"),
        (["sweep", "depth", "--max-len", "64"], "--max-len applies to `sweep seqlen` only"),
        (["sweep", "batch", "--batch", "-1"], "--batch -1 must be >= 1"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(run_cli, tmp_path, argv, needle):
    rc, out, err = run_cli(*argv, "--backend", "torch-cpu", "--out", tmp_path / "never")
    assert rc == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_seed_000s_memory_case_is_expressible():
    """`--preset tinyshakespeare-m2 --memory-limit 12.7GB`: the M2 Pro's 12.7 GB allocator
    threshold, searched over the batch at seed 000's model and length."""
    from conftest import options
    from ssmbench.suites import memory_ceiling

    opts = options(backend=["torch-cpu"], arch="mamba", preset="tinyshakespeare-m2", dtype="float32", memory_limit="12.7GB")
    plan = memory_ceiling.plan(opts)
    (seed,) = plan.grid
    assert (seed.batch, seed.seq_len, seed.mode, seed.memory_limit, seed.preset) == (1, 128, "train", 12_700_000_000, "tinyshakespeare-m2")
    assert (seed.config["d_model"], seed.config["n_layers"], seed.config["vocab"]) == (256, 4, 65)
    assert next(plan.run()).batch == 1


# ---------------------------------------------------------------------------- each suite on a real CPU backend
@pytest.mark.parametrize(
    "argv,suite,section",
    [
        (["run", "depth-scaling", "--layers-list", "1,2", "--mode", "forward"], "depth-scaling", "**Depth scaling.**"),
        (["run", "seqlen", "--max-len", "128", "--mode", "decode"], "seqlen", "Crossover"),
        (["run", "memory-ceiling", "--memory-limit", "200MB"], "memory-ceiling", "**Memory ceiling.**"),
        (["sweep", "batch", "--values", "1,2", "--mode", "forward"], "sweep-batch", "**batch sweep.**"),
        (["sweep", "dstate", "--values", "4,8", "--mode", "forward"], "sweep-dstate", "**state size N sweep.**"),
        # Mamba-2 in each suite that sweeps or searches (its own settings follow the swept d_state)
        (["run", "depth-scaling", "--arch", "mamba2", "--layers-list", "1,2", "--mode", "forward"], "depth-scaling", "mamba2"),
        (["run", "seqlen", "--arch", "mamba2,transformer", "--max-len", "128", "--mode", "forward"], "seqlen", "| mamba2 ssd |"),
        (["run", "memory-ceiling", "--arch", "mamba2", "--memory-limit", "200MB"], "memory-ceiling", "**Memory ceiling.**"),
        (["sweep", "dstate", "--arch", "mamba,mamba2", "--values", "16,32", "--mode", "forward"], "sweep-dstate", "mamba2"),
    ],
)
def test_each_suite_end_to_end_on_torch_cpu(run_cli, tmp_path, argv, suite, section):
    pytest.importorskip("torch")
    rc, out, err = run_cli(*argv, "--backend", "torch-cpu", "--quick", "--out", tmp_path)
    assert rc == 0, err
    recs = records_of(tmp_path, suite)
    assert recs and all(r["status"] in ("ok", "oom") for r in recs) and any(r["status"] == "ok" for r in recs)
    assert all(r["metrics"]["parity"]["passed"] for r in recs if r["status"] == "ok")  # gated by parity
    if "mamba2" in (argv[argv.index("--arch") + 1] if "--arch" in argv else ""):
        assert {r["arch"] for r in recs} >= {"mamba2"}
        if suite == "sweep-dstate":  # Mamba-2's N is the swept value, not its default 128
            assert sorted(r["config"]["d_state"] for r in recs if r["arch"] == "mamba2") == [16, 32]
    rc, md, err = run_cli("report", tmp_path)
    assert rc == 0 and section in md
