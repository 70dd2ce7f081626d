"""MFU and energy: the FLOP count against the weights it multiplies, and the worker's metrics
from a device with known ceilings and a known power draw."""

import numpy as np
import pytest

from ssmbench import flops
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.measure import time_steps
from ssmbench.weights import init_weights

CFG = MambaConfig(vocab=50, d_model=48, n_layers=3, d_state=7, d_conv=4, expand=2)


def _matmul_params(w, names):
    return sum(v.size for k, v in w.items() if any(k.endswith(n) for n in names))


def test_mamba_flops_are_twice_the_multiplied_weights_plus_conv_scan_and_head():
    w = init_weights("mamba", CFG)
    proj = _matmul_params(w, ("in_proj.weight", "x_proj.weight", "dt_proj.weight", "out_proj.weight"))
    E, N, K = CFG.d_inner, CFG.d_state, CFG.d_conv
    per_token = 2 * proj + CFG.n_layers * (2 * E * K + 9 * E * N) + 2 * CFG.d_model * CFG.vocab
    c = CFG.to_dict()
    assert flops.step_flops("mamba", c, 4, 10, "forward") == per_token * 40
    assert flops.step_flops("mamba", c, 4, 10, "train") == 3 * per_token * 40
    assert flops.step_flops("mamba", c, 4, 10, "decode") == per_token * 4  # one token per stream


def test_transformer_flops_count_attention_over_the_visible_keys():
    t = matched_transformer(CFG)
    w = init_weights("transformer", t)
    mm = 2 * _matmul_params(w, ("c_attn.weight", "attn.c_proj.weight", "c_fc.weight", "mlp.c_proj.weight")) + 2 * t.d_model * t.vocab
    L = 9
    fwd = flops.step_flops("transformer", t.to_dict(), 2, L, "forward")
    assert fwd == pytest.approx(2 * L * (mm + t.n_layers * 4 * t.d_model * (L + 1) / 2))
    dec = flops.step_flops("transformer", t.to_dict(), 2, L, "decode")
    assert dec == pytest.approx(2 * (mm + t.n_layers * 4 * t.d_model * (L + 1)))


def test_mfu_uses_the_rate_of_the_runs_dtype():
    c = CFG.to_dict()
    f = flops.step_flops("mamba", c, 2, 8, "train")
    rates = {"float32": 1e12, "bfloat16": 4e12}
    assert flops.mfu("mamba", c, 2, 8, "train", "float32", 1.0, rates)["mfu"] == pytest.approx(f / 1e-3 / 1e12)
    assert flops.mfu("mamba", c, 2, 8, "train", "float16", 1.0, rates)["mfu"] == pytest.approx(f / 1e-3 / 4e12)
    assert flops.mfu("mamba", c, 2, 8, "train", "float32", 1.0, None) == {}


def test_the_meter_is_read_around_the_timed_steps_only():
    reads = []

    def meter():
        reads.append(len(calls))
        return float(len(calls))

    calls = []
    t = time_steps(lambda: calls.append(1), lambda out: None, warmup=2, min_iters=5, min_time=0.0, meter=meter)
    assert reads == [3, 8]  # after the first call and 2 warm-ups; after 5 timed steps
    assert t.meter_delta == 5.0 and len(t.samples_s) == 5


def test_worker_reports_mfu_energy_and_ceilings(fake_backends, tmp_path):
    from fake_backend import FakeGpu
    from ssmbench.suites import throughput

    from ssmbench.plan import RunOptions
    from ssmbench.results import read_records
    from ssmbench.runner import run_points

    opts = RunOptions(backends=["fake-gpu"], modes=["train"], batch=2, seq_len=8, warmup=1, min_iters=20, min_time=0.2, timeout=60)
    run_points(throughput.plan(opts), tmp_path / "r.jsonl", "run1", {"host": "test"})
    (rec,) = read_records(tmp_path / "r.jsonl")
    m = rec["metrics"]
    assert rec["env_backend"]["device_ceilings"] == FakeGpu.CEILINGS
    assert rec["env_backend"]["train_step"] == "fake graph"  # Backend.execution, after timing
    median_s = m["step_ms"]["median"] / 1e3
    assert m["mfu"] == pytest.approx(flops.step_flops("mamba", rec["config"], 2, 8, "train") / median_s / 1e12)
    assert m["power_w"] == pytest.approx(FakeGpu.WATTS, rel=0.2)  # the timed window includes host gaps
    assert m["energy_j_per_token"] == pytest.approx(m["energy_j_per_step"] / 16)
    assert np.isclose(m["energy_j_per_step"], m["power_w"] * np.mean(m["step_ms"]["samples"]) / 1e3, rtol=0.2)
    from ssmbench.report import markdown

    md = markdown(read_records(tmp_path / "r.jsonl"))
    assert "## Hardware efficiency" in md and f"{m['mfu'] * 100:.1f}%" in md
