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
    for scan in be.scans:
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

    want = {("mamba", s, m, L) for s in TorchCPU.scans for m in ("forward", "train") for L in (64, 128, 256)}
    want |= {("transformer", "attention", m, L) for m in ("forward", "train") for L in (64, 128, 256)}
    assert got == want


def test_run_scan_records_the_floor_and_the_report_shows_it(tmp_path, run_cli):
    code, out, err = run_cli("run", "scan", "--backend", "torch-cpu", "--quick", "--max-len", "64", "--scan", "parallel", "--out", tmp_path)
    assert code == 0, out + err
    recs = [json.loads(line) for f in tmp_path.glob("scan-*.jsonl") for line in f.read_text().splitlines()]
    assert {(r["arch"], r["mode"]) for r in recs} == {(a, m) for a in ("mamba", "transformer") for m in ("forward", "train")}
    for r in recs:
        m = r["metrics"]
        assert r["status"] == "ok" and m["copy_bytes_per_s"] > 1e8 and m["floor_multiple"] > 0
        assert m["floor_ms"] == pytest.approx(m["op_min_bytes"] / m["copy_bytes_per_s"] * 1e3)
    code, out, _ = run_cli("report", tmp_path, "--format", "markdown")
    assert code == 0 and "The scan alone" in out and "Fastest scan ÷ attention" in out


def test_max_len_belongs_to_seqlen_and_scan(run_cli):
    code, out, err = run_cli("run", "throughput", "--max-len", "64")
    assert code == 2 and "seqlen | scan" in out + err
