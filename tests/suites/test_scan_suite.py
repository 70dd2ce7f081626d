"""`ssmbench run scan`: the op each backend times is the selective scan (and causal attention)
exactly, the plan covers every scan kind and attention, and records carry the memory floor."""

import json

import numpy as np
import pytest

from ssmbench import archs, ops
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.plan import Point

torch = pytest.importorskip("torch")

SHAPE = {"B": 2, "L": 23, "E": 12, "N": 5}
ATT = {"B": 2, "L": 19, "H": 3, "hd": 8}


def reference_scan(a: dict):
    """float64 torch, sequential, with autograd: (out, dL/dx for L = sum(out * dout))."""
    t = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_(k == "x") for k, v in a.items()}
    delta = torch.nn.functional.softplus(t["dt"] + t["dt_bias"])
    h = torch.zeros(SHAPE["B"], SHAPE["E"], SHAPE["N"], dtype=torch.float64)
    ys = []
    for i in range(SHAPE["L"]):
        h = torch.exp(delta[:, i, :, None] * t["A"]) * h + (delta[:, i] * t["x"][:, i])[:, :, None] * t["Bm"][:, i, None, :]
        ys.append(torch.einsum("ben,bn->be", h, t["Cm"][:, i]))
    out = (torch.stack(ys, 1) + t["D"] * t["x"]) * torch.nn.functional.silu(t["z"])
    (dx,) = torch.autograd.grad((out * t["dout"]).sum(), [t["x"]])
    return out.detach().numpy(), dx.numpy()


def reference_attention(a: dict):
    t = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_(k == "q") for k, v in a.items()}
    s = t["q"] @ t["k"].transpose(-1, -2) / np.sqrt(ATT["hd"])
    s = s.masked_fill(~torch.ones(ATT["L"], ATT["L"], dtype=torch.bool).tril(), float("-inf"))
    o = torch.softmax(s, -1) @ t["v"]
    (dq,) = torch.autograd.grad((o * t["dout"]).sum(), [t["q"]])
    return o.detach().numpy(), dq.numpy()


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _backend(name):
    from ssmbench import backends as registry

    cls = registry.get_class(name)
    if not cls.availability().available:
        pytest.skip(f"{name} not available here")
    return cls()


@pytest.mark.parametrize("name", ["torch-cpu", "jax-cpu", "tf-cpu"])
def test_every_scan_op_and_attention_op_compute_the_reference(name):
    be = _backend(name)
    a = archs.mamba.op_inputs(SHAPE, seed=4)
    out_ref, dx_ref = reference_scan(a)
    for scan in be.scans["mamba"]:
        out = be.to_numpy(be.op_step("mamba", scan, a, "float32", "forward")())
        dx = be.to_numpy(be.op_step("mamba", scan, a, "float32", "train")())
        assert rel(out, out_ref) < 1e-5, scan
        assert rel(dx, dx_ref) < 1e-5, scan
    b = archs.transformer.op_inputs(ATT, seed=5)
    o_ref, dq_ref = reference_attention(b)

    def bhld(y):  # JAX's attention works in (B, L, H, hd)
        y = be.to_numpy(y)
        return y if y.shape == o_ref.shape else y.transpose(0, 2, 1, 3)

    assert rel(bhld(be.op_step("transformer", "attention", b, "float32", "forward")()), o_ref) < 1e-5
    assert rel(bhld(be.op_step("transformer", "attention", b, "float32", "train")()), dq_ref) < 1e-5


def test_memory_floor_bytes_and_metrics():
    cfg = MambaConfig(d_model=768, d_state=16, expand=2).to_dict()
    p = Point("scan", "x", "mamba", "forward", "triton", "float32", cfg, 8, 2048, op=True)
    s = ops.shape_of(p)
    assert s == {"B": 8, "L": 2048, "E": 1536, "N": 16}
    ble, bln = 8 * 2048 * 1536, 8 * 2048 * 16
    assert ops.min_bytes("mamba", "forward", s, "float32") == 4 * (4 * ble + 2 * bln)
    assert ops.min_bytes("mamba", "train", s, "bfloat16") == 2 * (11 * ble + 6 * bln)
    m = ops.op_metrics(p, median_ms=1.0, copy_bytes_per_s=3.0e12)
    assert m["floor_ms"] == pytest.approx(4 * (4 * ble + 2 * bln) / 3.0e12 * 1e3)
    assert m["floor_multiple"] == pytest.approx(1.0 / m["floor_ms"])
    assert m["achieved_bytes_per_s"] == pytest.approx(4 * (4 * ble + 2 * bln) / 1e-3)
    t = matched_transformer(MambaConfig(d_model=768, d_state=16, expand=2)).to_dict()
    assert ops.shape_of(Point("scan", "x", "transformer", "train", "attention", "float32", t, 8, 512, op=True)) == {
        "B": 8,
        "L": 512,
        "H": t["n_head"],
        "hd": 768 // t["n_head"],
    }


def test_plan_covers_every_scan_and_attention_at_each_length():
    from conftest import options
    from ssmbench.suites import scan

    opts = options(backend=["torch-cpu"], default_archs=scan.DEFAULT_ARCHS, quick=True)
    p = scan.plan(opts)
    assert all(pt.op and pt.suite == "scan" for pt in p.grid)
    got = {(pt.arch, pt.scan, pt.mode, pt.seq_len) for pt in p.grid}
    from ssmbench.backends.torch.backend import TorchCPU

    want = {(a, s, m, L) for a in ("mamba", "mamba2") for s in TorchCPU.scans[a] for m in ("forward", "train") for L in (64, 128, 256)}
    want |= {("transformer", "attention", m, L) for m in ("forward", "train") for L in (64, 128, 256)}
    assert got == want


def test_plan_times_ssd_at_three_state_sizes_unless_one_is_given():
    """Mamba-2's SSD at N 16, 64 and 128 next to Mamba-1's scan at its N (the paper's Figure 10);
    --d-state fixes N for both."""
    from conftest import options
    from ssmbench.suites import scan

    def states(**kw):
        p = scan.plan(options(backend=["torch-cpu"], default_archs=scan.DEFAULT_ARCHS, mode=["forward"], scan=["sequential"], **kw))
        return {(pt.arch, pt.config.get("d_state")) for pt in p.grid if pt.seq_len == 512}

    assert states() == {("mamba", 16), ("mamba2", 16), ("mamba2", 64), ("mamba2", 128), ("transformer", None)}
    assert states(d_state=64) == {("mamba", 64), ("mamba2", 64), ("transformer", None)}


def test_run_scan_records_the_floor_and_the_report_shows_it(tmp_path, run_cli):
    code, out, err = run_cli(
        "run", "scan", "--backend", "torch-cpu", "--quick", "--max-len", "64", "--scan", "parallel", "--arch", "both", "--out", tmp_path
    )
    assert code == 0, out + err
    recs = [json.loads(line) for f in tmp_path.glob("scan-*.jsonl") for line in f.read_text().splitlines()]
    assert {(r["arch"], r["mode"]) for r in recs} == {(a, m) for a in ("mamba", "transformer") for m in ("forward", "train")}
    for r in recs:
        m = r["metrics"]
        assert r["status"] == "ok" and m["copy_bytes_per_s"] > 1e8 and m["floor_multiple"] > 0
        assert m["floor_ms"] == pytest.approx(m["op_min_bytes"] / m["copy_bytes_per_s"] * 1e3)
        assert m["graph"] == "torch-cpu does not capture device graphs" and "graph_ms" not in m  # said, not invented
    code, out, _ = run_cli("report", tmp_path, "--format", "markdown")
    assert code == 0 and "The scan alone" in out and "| mamba N8 (parallel) | attention | 64: " in out


def test_the_report_checks_the_mamba2_papers_claims(tmp_path, run_cli):
    code, out, err = run_cli(
        "run", "scan", "--backend", "torch-cpu", "--quick", "--max-len", "64", "--scan", "sequential", "--mode", "forward", "--arch", "all",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    code, out, _ = run_cli("report", tmp_path, "--format", "markdown")
    assert code == 0 and "The Mamba-2 paper's claims" in out
    assert "| mamba2 N16 (sequential) | mamba N8 (sequential) | 64: " in out
    claims = [line for line in out.splitlines() if "SSD is 2-8x faster" in line or "FlashAttention-2" in line]
    assert len(claims) == 2 and all("N 16: " in line for line in claims)


class _Replaying:
    """A backend stand-in whose graph replay is a known callable (the CPU backends capture none)."""

    def __init__(self, refusal=None, fail=False):
        self.refusal, self.fail, self.calls = refusal, fail, 0

    def synchronize(self, out=None):
        pass

    def graph_replay(self, step):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        if self.refusal:
            return None, self.refusal

        def replay():
            self.calls += 1
            return step()

        return replay, None


def test_graph_replays_are_timed_by_the_same_loop_and_summarised_beside_the_eager_time():
    from ssmbench import worker

    cfg = MambaConfig(d_model=768, d_state=16, expand=2).to_dict()
    p = Point("scan", "x", "mamba", "forward", "triton", "float32", cfg, 8, 2048, op=True, min_iters=7, min_time=0.0)
    fake = _Replaying()
    part = worker._graph_timing(fake, lambda: 1.0, dict(warmup=2, min_iters=7, min_time=0.0))
    assert fake.calls == 1 + 2 + 7 and len(part["graph_samples_s"]) == 7 and part["graph_note"] == "device graph replay"
    part |= {"samples_s": [2e-3] * 5, "compile_s": 0.1, "peak_mem_bytes": 1, "mem_source": "x", "copy_bytes_per_s": 3.0e12}
    part["graph_samples_s"] = [1e-3] * 7
    m = worker.metrics_from([part], p)
    assert m["step_ms"]["median"] == pytest.approx(2.0) and m["graph_ms"]["median"] == pytest.approx(1.0)
    assert m["graph_floor_multiple"] == pytest.approx(m["floor_multiple"] / 2)
    refused = worker._graph_timing(_Replaying(refusal="reads back to the host"), lambda: 1.0, {"warmup": 0, "min_iters": 1, "min_time": 0})
    assert refused == {"graph_note": "reads back to the host"}
    failed = worker._graph_timing(_Replaying(fail=True), lambda: 1.0, {"warmup": 0, "min_iters": 1, "min_time": 0})
    assert failed == {"graph_note": "capture failed: RuntimeError: operation not permitted when stream is capturing"}
    m = worker.metrics_from([{**part, "graph_samples_s": None, **failed}], p)
    assert "graph_ms" not in m and m["graph"].startswith("capture failed")


@pytest.mark.gpu
@pytest.mark.parametrize("arch, scan", [("mamba", "triton"), ("mamba", "parallel"), ("transformer", "attention")])
@pytest.mark.parametrize("mode", ["forward", "train"])
def test_cuda_graph_replays_compute_what_the_eager_op_computes(arch, scan, mode):
    """torch-cuda's graph replay of an op alone gives the eager call's result bit for bit (the
    same kernels, recorded once); the chunked scan reads back to the host and is refused."""
    be = _backend("torch-cuda")
    a = archs.mamba.op_inputs(SHAPE, seed=4) if arch == "mamba" else archs.transformer.op_inputs(ATT, seed=5)
    step = be.op_step(arch, scan, a, "float32", mode)
    eager = step().clone()
    replay, why = be.graph_replay(step)
    assert why is None
    assert torch.equal(replay().clone(), eager) and torch.equal(replay().clone(), eager)
    refused, why = be.graph_replay(be.op_step("mamba", "chunked", archs.mamba.op_inputs(SHAPE, seed=4), "float32", mode))
    assert refused is None and "host" in why


def test_max_len_belongs_to_seqlen_and_scan(run_cli):
    code, out, err = run_cli("run", "throughput", "--max-len", "64")
    assert code == 2 and "seqlen | scan" in out + err
