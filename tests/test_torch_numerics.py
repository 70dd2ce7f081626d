"""The PyTorch backend computes the reference's function: every scan, the decode path, the
Transformer baseline and the training loss, on random weights at odd shapes."""

import numpy as np
import pytest

import ssmbench
from ssmbench import reference as ref
from ssmbench.config import ModelConfig, TransformerConfig, mamba_params, matched_transformer, transformer_params
from ssmbench.weights import count_params, infer_config, init_weights

torch = pytest.importorskip("torch")
tb = pytest.importorskip("ssmbench.backends.torch_backend")
ts = pytest.importorskip("ssmbench.backends.torch_scans")

ODD = ModelConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
SCANS = ("sequential", "chunked", "parallel")


DEVICES = ("torch-cpu", "torch-cuda", "torch-mps")


@pytest.fixture(params=DEVICES)
def device(request):
    """Each torch backend that runs here (the GPU ones on a GPU machine)."""
    from ssmbench import backends as registry

    if not registry.availability(request.param).available:
        pytest.skip(f"{request.param} not available here")
    return request.param


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def odd_mamba():
    w = init_weights("mamba", ODD, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, ODD.vocab, (2, 37))
    return w, toks, ref.mamba_logits(w, toks)


# ---------------------------------------------------------------------------- parameter count
@pytest.mark.parametrize("cfg", [ODD, ModelConfig(), ModelConfig(vocab=7, d_model=33, n_layers=3, d_state=3, d_conv=2, expand=3)])
def test_param_count_matches_formula(cfg):
    assert count_params(init_weights("mamba", cfg)) == mamba_params(cfg)
    t = matched_transformer(cfg)
    assert count_params(init_weights("transformer", t)) == transformer_params(t)


def test_mamba_130m_formula():
    assert mamba_params(ModelConfig(vocab=50280, d_model=768, n_layers=24, d_state=16, d_conv=4, expand=2)) == 129_135_360


def test_torch_module_has_the_formula_params():
    m = tb.MambaLM(ODD, "chunked")
    assert sum(p.numel() for p in m.parameters()) == mamba_params(ODD)


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(d_model=768, n_layers=24, vocab=50280), ModelConfig(d_model=192, vocab=256)])
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
    y, h = ref.selective_scan(*(t.numpy() for t in (x, dt, A, Bm, Cm)), np.zeros(x.shape[-1]), h0=h0.numpy().copy())
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


# ---------------------------------------------------------------------------- whole model, fp32
@pytest.mark.parametrize("scan", SCANS)
def test_mamba_logits_fp32(scan, odd_mamba, device):
    w, toks, R = odd_mamba
    assert rel(ssmbench.logits(device, w, toks, scan=scan), R) < 1e-5


def test_mamba_decode_fp32(odd_mamba, device):
    w, toks, R = odd_mamba
    assert rel(ssmbench.decode_logits(device, w, toks), R) < 1e-5


def test_reference_decode_equals_reference_parallel(odd_mamba):
    w, toks, R = odd_mamba
    assert rel(ref.mamba_decode_logits(w, toks), R) < 1e-12


def test_prefill_state_continues_like_decode(odd_mamba, device):
    """prefill(prompt) then decode steps == decoding the whole sequence token by token."""
    w, toks, R = odd_mamba
    b = ssmbench.backends.get(device)
    model = b.build("mamba", w, ODD, scan="parallel", dtype="float32")
    state = b.prefill(model, b.tokens(toks[:, :30]), 37)
    outs = []
    for t in range(30, 37):
        lg, state = b.decode_step(model, b.tokens(toks[:, t]), state)
        outs.append(b.to_numpy(lg))
    assert rel(np.stack(outs, 1), R[:, 30:]) < 1e-5


@pytest.fixture(scope="module")
def odd_gpt():
    t = TransformerConfig(vocab=23, d_model=96, n_layers=2, n_head=3)  # infer_config also gives 3 heads at D=96
    w = init_weights("transformer", t, seed=5, jitter=True)
    toks = np.random.default_rng(4).integers(0, 23, (2, 19))
    assert infer_config(w)[1].n_head == 3
    return w, toks, ref.transformer_logits(w, toks, t), t


def test_transformer_logits_and_decode_fp32(odd_gpt, device):
    w, toks, R, t = odd_gpt
    assert rel(ref.transformer_decode_logits(w, toks, t), R) < 1e-12
    assert rel(ssmbench.logits(device, w, toks), R) < 1e-5
    assert rel(ssmbench.decode_logits(device, w, toks), R) < 1e-5


def test_transformer_prefill_then_decode(odd_gpt, device):
    w, toks, R, t = odd_gpt
    b = ssmbench.backends.get(device)
    model = b.build("transformer", w, t, dtype="float32")
    state = b.prefill(model, b.tokens(toks[:, :11]), 19)
    outs = []
    for i in range(11, 19):
        lg, state = b.decode_step(model, b.tokens(toks[:, i]), state)
        outs.append(b.to_numpy(lg))
    assert rel(np.stack(outs, 1), R[:, 11:]) < 1e-5


@pytest.mark.parametrize("arch", ["mamba", "transformer"])
def test_train_step_loss_is_reference_cross_entropy(arch, rng, device):
    cfg = ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=9, jitter=True)
    toks = rng.integers(0, cfg.vocab, (3, 30))
    b = ssmbench.backends.get(device)
    model = b.build(arch, w, cfg, dtype="float32")
    loss = float(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    expect = ref.cross_entropy(ref.logits(arch, w, toks[:, :-1], cfg), toks[:, 1:])
    assert abs(loss - expect) / expect < 1e-5
    # the update happened: the second loss differs from the first
    loss2 = float(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    assert loss2 != loss


# ---------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_reference(dtype, odd_mamba, device):
    """autocast matmuls in half precision, fp32 scan state: within mamba-ssm's bf16 tolerance."""
    w, toks, R = odd_mamba
    err = rel(ssmbench.logits(device, w, toks, scan="chunked", dtype=dtype), R)
    assert err < (3e-2 if dtype == "bfloat16" else 5e-3)
    assert err > 1e-7  # it really ran in half precision


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


def test_reference_backend_in_public_api(odd_mamba):
    w, toks, R = odd_mamba
    np.testing.assert_allclose(ssmbench.logits("reference", w, toks), R)
    with pytest.raises(ValueError, match="token ids"):
        ssmbench.logits("reference", w, toks + 100)
