"""The PyTorch backend computes the reference's function: every scan, the decode path, the
Transformer baseline and the training loss, on random weights at odd shapes."""

import numpy as np
import pytest

import ssmbench
from ssmbench import archs
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.mamba import params as mamba_params
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.archs.transformer import params as transformer_params
from ssmbench.weights import count_params, infer_config, init_weights

torch = pytest.importorskip("torch")
tb = pytest.importorskip("ssmbench.backends.torch.backend")
tmb = pytest.importorskip("ssmbench.backends.torch.mamba")
ts = pytest.importorskip("ssmbench.backends.torch.scans")

ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
SCANS = ("sequential", "chunked", "parallel")


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------- parameter count
@pytest.mark.parametrize("cfg", [ODD, MambaConfig(), MambaConfig(vocab=7, d_model=33, n_layers=3, d_state=3, d_conv=2, expand=3)])
def test_param_count_matches_formula(cfg):
    assert count_params(init_weights("mamba", cfg)) == mamba_params(cfg)
    t = matched_transformer(cfg)
    assert count_params(init_weights("transformer", t)) == transformer_params(t)


def test_mamba_130m_formula():
    assert mamba_params(MambaConfig(vocab=50280, d_model=768, n_layers=24, d_state=16, d_conv=4, expand=2)) == 129_135_360


def test_torch_module_has_the_formula_params():
    m = tmb.MambaLM(ODD, "chunked")
    assert sum(p.numel() for p in m.parameters()) == mamba_params(ODD)


@pytest.mark.parametrize("cfg", [MambaConfig(), MambaConfig(d_model=768, n_layers=24, vocab=50280), MambaConfig(d_model=192, vocab=256)])
def test_transformer_baseline_within_10_percent(cfg):
    t = matched_transformer(cfg)
    assert abs(transformer_params(t) / mamba_params(cfg) - 1) <= 0.10


# ---------------------------------------------------------------------------- scans in float64
def _scan_inputs(rng, Bt=2, L=37, E=6, N=5, dt_scale=1.0):
    x = torch.from_numpy(rng.standard_normal((Bt, L, E)))
    dt = torch.from_numpy(np.log1p(np.exp(rng.standard_normal((Bt, L, E)))) * dt_scale)
    A = -torch.from_numpy(np.exp(rng.uniform(-1, 2, (E, N))))
    Bm = torch.from_numpy(rng.standard_normal((Bt, L, N)))
    Cm = torch.from_numpy(rng.standard_normal((Bt, L, N)))
    h0 = torch.from_numpy(rng.standard_normal((Bt, E, N)))
    return x, dt, A, Bm, Cm, h0


def _ref_scan(x, dt, A, Bm, Cm, h0):
    y, h = archs.mamba.selective_scan(*(t.numpy() for t in (x, dt, A, Bm, Cm)), np.zeros(x.shape[-1]), h0=h0.numpy().copy())
    return y, h


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("L", [1, 2, 3, 5, 37, 64])
def test_scan_exact_in_float64(scan, L, rng):
    x, dt, A, Bm, Cm, h0 = _scan_inputs(rng, L=L)
    y, h = ts.SCAN_FNS[scan](x, dt, A, Bm, Cm, h0)
    y_ref, h_ref = _ref_scan(x, dt, A, Bm, Cm, h0)
    assert rel(y.numpy(), y_ref) < 1e-12
    assert rel(h.numpy(), h_ref) < 1e-12


def test_chunked_scan_carries_state_across_many_chunks(rng, monkeypatch):
    x, dt, A, Bm, Cm, h0 = _scan_inputs(rng, L=37, dt_scale=0.05)
    monkeypatch.setattr(ts, "chunk_length", lambda dt, A, L: 4)  # 10 chunks, the last one short
    y, h = ts.scan_chunked(x, dt, A, Bm, Cm, h0)
    y_ref, h_ref = _ref_scan(x, dt, A, Bm, Cm, h0)
    assert rel(y.numpy(), y_ref) < 1e-12 and rel(h.numpy(), h_ref) < 1e-12


def test_chunk_length_keeps_exponents_in_budget(rng):
    x, dt, A, Bm, Cm, h0 = _scan_inputs(rng, L=200, dt_scale=0.3)
    T = ts.chunk_length(dt, A, 200)
    assert 1 <= T < 200
    assert T * float(dt.max()) * float((-A).max()) <= ts.CHUNK_LOG_BUDGET


@pytest.mark.parametrize("scan", SCANS)
def test_huge_steps_stay_finite_and_exact_in_float32(scan, rng):
    """dt*A of hundreds per step: exp(-c) would overflow fp32 without the chunk budget."""
    x, dt, A, Bm, Cm, h0 = _scan_inputs(rng, L=50, dt_scale=30.0)
    y, h = ts.SCAN_FNS[scan](*(t.float() for t in (x, dt, A, Bm, Cm, h0)))
    y_ref, _ = _ref_scan(x, dt, A, Bm, Cm, h0)
    assert torch.isfinite(y).all()
    assert rel(y.numpy(), y_ref) < 1e-5


@pytest.mark.parametrize("scan", ["chunked", "parallel"])
def test_scan_gradients_match_sequential(scan, rng):
    ins = [t.clone().requires_grad_(True) for t in _scan_inputs(rng, L=23, dt_scale=0.5)]
    ins_seq = [t.detach().clone().requires_grad_(True) for t in ins]
    w = torch.from_numpy(rng.standard_normal((2, 23, 6)))
    (ts.SCAN_FNS[scan](*ins)[0] * w).sum().backward()
    (ts.scan_sequential(*ins_seq)[0] * w).sum().backward()
    for a, b, name in zip(ins, ins_seq, ("x", "dt", "A", "B", "C", "h0")):
        assert rel(a.grad.numpy(), b.grad.numpy()) < 1e-10, name


# ---------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("fmt", [".npz", ".safetensors", ".pt", ".bin"])
def test_load_weights_roundtrip(fmt, tmp_path):
    w = init_weights("mamba", ODD, seed=1)
    path = tmp_path / f"model{fmt}"
    full = {**w, "lm_head.weight": w["backbone.embedding.weight"]}  # mamba-ssm saves the tied head too
    if fmt == ".npz":
        np.savez(path, **full)
    elif fmt == ".safetensors":
        from safetensors.numpy import save_file

        save_file(full, str(path))
    else:
        torch.save({k: torch.from_numpy(v.copy()) for k, v in full.items()}, path)
    loaded = ssmbench.load_weights(path)
    assert set(loaded) == set(w)
    for k in w:
        np.testing.assert_array_equal(loaded[k], w[k])
    assert infer_config(loaded) == ("mamba", ODD)


def test_load_bf16_safetensors_becomes_float32(tmp_path):
    from safetensors.torch import save_file

    w = init_weights("mamba", ODD, seed=1)
    save_file({k: torch.from_numpy(v).bfloat16() for k, v in w.items()}, str(tmp_path / "m.safetensors"))
    loaded = ssmbench.load_weights(tmp_path / "m.safetensors")
    assert loaded["backbone.embedding.weight"].dtype == np.float32
    assert rel(loaded["backbone.embedding.weight"], w["backbone.embedding.weight"]) < 1e-2


def test_load_weights_rejects_unknown_format(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="allowed: .safetensors"):
        ssmbench.load_weights(tmp_path / "w.h5")
