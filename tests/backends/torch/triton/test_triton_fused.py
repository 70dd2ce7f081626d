"""The Triton scan inside the model (logits, gradients, prefill into decode) and the other fused
kernels of the triton kind (backends/torch/triton/fused.py): causal conv + silu, residual add + RMSNorm
and the static-state decode step, against float64 or the eager ops. The scan op alone is in
test_triton_scan.py. Without a GPU the kernels run under Triton's interpreter."""

import numpy as np
import pytest

from ssmbench import archs
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.weights import init_weights

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
tf_ = pytest.importorskip("ssmbench.backends.torch.triton.fused")
decode = pytest.importorskip("ssmbench.backends.torch.triton.decode")
tb = pytest.importorskip("ssmbench.backends.torch.backend")
tmb = pytest.importorskip("ssmbench.backends.torch.mamba")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------------- in the model
ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)


@pytest.fixture(scope="module")
def odd_model():
    w = init_weights("mamba", ODD, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, ODD.vocab, (2, 37))
    return w, toks


def _module(w, scan):
    m = tmb.MambaLM(ODD, scan)
    m.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in w.items()})
    return m.to(DEVICE)


def test_model_logits_with_the_triton_scan_match_the_reference(odd_model):
    w, toks = odd_model
    with torch.no_grad():
        logits = _module(w, "triton")(torch.from_numpy(toks).to(DEVICE))
    assert rel(logits, torch.from_numpy(archs.mamba.logits(w, toks))) < 1e-5


def test_model_gradients_with_the_triton_scan_match_the_sequential_scan(odd_model):
    w, toks = odd_model
    tok = torch.from_numpy(toks).to(DEVICE)
    grads = {}
    for scan in ("triton", "sequential"):
        m = _module(w, scan)
        logits = m(tok)
        torch.nn.functional.cross_entropy(logits.reshape(-1, ODD.vocab), tok.roll(-1, 1).reshape(-1)).backward()
        grads[scan] = {k: p.grad for k, p in m.named_parameters()}
    for k, g in grads["sequential"].items():
        assert rel(grads["triton"][k], g) < 1e-5, k


def test_prefill_with_the_triton_scan_hands_decode_the_right_state(odd_model):
    w, toks = odd_model
    m = _module(w, "triton")
    tok = torch.from_numpy(toks).to(DEVICE)
    R = archs.mamba.logits(w, toks)
    with torch.no_grad():
        state = m.prefill(tok[:, :30], 37, torch.float32)
        outs = []
        for t in range(30, 37):
            logits, state = m.step(tok[:, t], state)
            outs.append(logits)
    assert rel(torch.stack(outs, 1), torch.from_numpy(R[:, 30:])) < 1e-5


# ---------------------------------------------------------------------------- causal conv + silu
@pytest.mark.parametrize("shape", [(2, 37, 70, 4), (1, 3, 5, 4), (2, 40, 64, 3)], ids=["odd", "L<K", "full-tiles-K3"])
def test_causal_conv_silu_and_its_gradients_match_float64(shape):
    Bt, L, E, K = shape
    g = torch.Generator().manual_seed(5)
    x = torch.randn(Bt, L, 2 * E, generator=g, dtype=torch.float64)[..., :E]  # a strided view, as in_proj's half
    w = torch.randn(E, 1, K, generator=g, dtype=torch.float64)
    b = torch.randn(E, generator=g, dtype=torch.float64)
    wt = torch.randn(Bt, L, E, generator=g, dtype=torch.float64)
    ins64 = [t.clone().requires_grad_() for t in (x, w, b)]
    x64, w64, b64 = ins64
    out64 = torch.nn.functional.silu(torch.nn.functional.conv1d(x64.transpose(1, 2), w64, b64, padding=K - 1, groups=E)[..., :L]).transpose(
        1, 2
    )
    (out64 * wt).sum().backward()
    ins = [t.detach().float().to(DEVICE).requires_grad_() for t in (x, w, b)]
    out = tf_.causal_conv_silu(*ins)
    (out * wt.float().to(DEVICE)).sum().backward()
    assert rel(out, out64) < 1e-5
    for name, a, r in zip(("x", "weight", "bias"), ins, ins64):
        assert rel(a.grad, r.grad) < 1e-5, name


# ---------------------------------------------------------------------------- residual add + RMSNorm
def _add_norm64(h, res, w, eps=1e-5):
    r = h if res is None else h + res
    return r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * w, r


@pytest.mark.parametrize("D,with_residual", [(40, True), (37, False), (256, True)], ids=["D40", "D37-first-block", "D256"])
def test_add_rmsnorm_and_its_gradients_match_float64(D, with_residual):
    """Both outputs carry gradient (the normed one into the mixer, r into the next block's add);
    more rows than one backward program takes, so dw sums across programs."""
    g = torch.Generator().manual_seed(D)
    shape = (3, 29, D)
    h, res = torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)
    w = 1.0 + 0.3 * torch.randn(D, generator=g, dtype=torch.float64)
    wo, wr = torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)
    ins64 = [h.clone().requires_grad_(), res.clone().requires_grad_() if with_residual else None, w.clone().requires_grad_()]
    out64, r64 = _add_norm64(*ins64)
    ((out64 * wo).sum() + (r64 * wr).sum()).backward()
    ins = [t.detach().float().to(DEVICE).requires_grad_() if t is not None else None for t in ins64]
    out, r = tf_.add_rmsnorm(*ins)
    assert out.dtype == torch.float32 and r.dtype == torch.float32
    ((out * wo.float().to(DEVICE)).sum() + (r * wr.float().to(DEVICE)).sum()).backward()
    assert rel(out, out64) < 1e-6 and rel(r, r64) < 1e-7
    for name, a, b in zip(("hidden", "residual", "weight"), ins, ins64):
        if b is not None:
            assert rel(a.grad, b.grad) < 1e-5, name


def test_add_rmsnorm_under_autocast_gives_the_compute_dtype_and_an_fp32_residual():
    h = torch.randn(2, 7, 24, dtype=torch.float64)
    res = torch.randn(2, 7, 24, dtype=torch.float64)
    w = torch.rand(24, dtype=torch.float64) + 0.5
    out64, r64 = _add_norm64(h.bfloat16().double(), res, w)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        out, r = tf_.add_rmsnorm(h.bfloat16().to(DEVICE), res.float().to(DEVICE), w.float().to(DEVICE))
    assert out.dtype == torch.bfloat16 and r.dtype == torch.float32
    assert rel(r, r64) < 1e-7 and rel(out, out64) < 1e-2


# ---------------------------------------------------------------------------- static-state decode
@pytest.mark.parametrize("scan", ["sequential", "triton"])
def test_static_decoder_steps_like_the_functional_step(odd_model, scan):
    """The in-place, preallocated-state decode (eager here; a CUDA graph on torch-cuda) gives the
    reference's logits token after token, from an empty state and from a prefill state."""
    from ssmbench.backends.torch.graphs import StaticDecoder

    w, toks = odd_model
    m = _module(w, scan)  # triton: the fused add + norm, conv and SSM step kernels
    tok = torch.from_numpy(toks).to(DEVICE)
    R = archs.mamba.logits(w, toks)
    dec = StaticDecoder(m, tok.shape[0], DEVICE, None, graph=DEVICE == "cuda")
    with torch.no_grad():
        state = m.prefill(tok[:, :30], 37, torch.float32)
    outs = []
    for t in range(30, 37):
        logits, state = dec(tok[:, t], state)
        assert state is dec.state
        outs.append(logits)
    assert rel(torch.stack(outs, 1), torch.from_numpy(R[:, 30:])) < 1e-5
    state = m.init_state(tok.shape[0], 0, DEVICE, None)  # a state from elsewhere is copied in
    outs = []
    for t in range(37):
        logits, state = dec(tok[:, t], state)
        outs.append(logits)
    assert rel(torch.stack(outs, 1), torch.from_numpy(R)) < 1e-5


@pytest.mark.parametrize("scan", ["sequential", "triton"])
def test_static_decoder_in_bfloat16_matches_autocast_steps(odd_model, scan):
    """Pre-cast Linear weights give what autocast's per-call casts give."""
    from ssmbench.backends.torch.graphs import StaticDecoder

    w, toks = odd_model
    m, eager = _module(w, scan), _module(w, "sequential")
    tok = torch.from_numpy(toks).to(DEVICE)
    dec = StaticDecoder(m, tok.shape[0], DEVICE, torch.bfloat16, graph=DEVICE == "cuda")
    s_ref = s_eager = m.init_state(tok.shape[0], 0, DEVICE, None)
    s_dec = s_ref
    for t in range(9):
        with torch.no_grad(), torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            want, s_ref = m.step(tok[:, t], s_ref)
            plain, s_eager = eager.step(tok[:, t], s_eager)  # the fused step kernels vs eager ops
        got, s_dec = dec(tok[:, t], s_dec)
        assert rel(got, want) < 1e-6, t
        assert rel(want, plain) < 3e-2, t  # bf16 roundings in other places (the parity tolerance)


def test_mamba2_fused_decode_step_matches_the_reference():
    """Mamba-2's decode with the triton kind (conv_step, ssd_step over P in blocks, then the fused
    gate + grouped norm) token by token against the float64 parallel path, at 2 groups and headdim 10."""
    from ssmbench.backends.torch.mamba2 import build

    from ssmbench import parity

    cfg = parity.model_config("mamba2")
    w = init_weights("mamba2", cfg, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, cfg.vocab, (2, 9))
    m = build(cfg, "triton").to(DEVICE)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()})
    state, outs = m.init_state(2, 9, DEVICE, None), []
    with torch.no_grad():
        for t in range(9):
            logits, state = m.step(torch.from_numpy(toks[:, t]).to(DEVICE), state)
            outs.append(logits)
    assert rel(torch.stack(outs, 1), torch.from_numpy(archs.mamba2.logits(w, toks, cfg))) < 1e-5


def test_ssd_step_over_several_channel_blocks_matches_float64():
    """ssd_step with a head's P = 37 split over three programs of 16 (the last one masked), 6 heads
    in 3 groups, N 5: the new state and y = S' C + D x against the recurrence in float64."""
    g = torch.Generator().manual_seed(5)
    Bt, H, P, G, N = 2, 6, 37, 3, 5
    E = H * P
    xbc, dt = torch.randn(Bt, E + 2 * G * N, generator=g), torch.randn(Bt, H, generator=g)
    A_log, D, bias = (torch.randn(H, generator=g) for _ in range(3))
    S = torch.randn(Bt, H, P, N, generator=g)
    y, S_new = decode.ssd_step(*(t.to(DEVICE) for t in (xbc, dt, A_log, D, bias, S)), G)
    xbc, dt, A_log, D, bias, S = (t.double() for t in (xbc, dt, A_log, D, bias, S))
    x = xbc[:, :E].reshape(Bt, H, P)
    Bm, Cm = (xbc[:, E + i * G * N : E + (i + 1) * G * N].reshape(Bt, G, N).repeat_interleave(H // G, 1) for i in (0, 1))
    delta = torch.nn.functional.softplus(dt + bias)
    want_S = torch.exp(-delta * A_log.exp())[..., None, None] * S + (delta[..., None] * x)[..., None] * Bm[:, :, None]
    want_y = torch.einsum("bhpn,bhn->bhp", want_S, Cm) + D[:, None] * x
    assert rel(S_new, want_S) < 1e-6 and rel(y, want_y.reshape(Bt, E)) < 1e-6


@pytest.mark.parametrize("groups", [1, 2])
def test_gated_rmsnorm_and_its_gradients_match_float64(groups):
    """Mamba-2's gate + grouped RMSNorm, fused, against the eager form in float64: z a strided view
    (a slice of in_proj's output, as in the model), E / G not a power of two."""
    from ssmbench.backends.torch.ssd import gated_rmsnorm

    g = torch.Generator().manual_seed(groups)
    leaves = [torch.randn(3, 5, 60, generator=g), torch.randn(3, 5, 70, generator=g), torch.rand(60, generator=g) + 0.5]
    dout = torch.randn(3, 5, 60, generator=g).to(DEVICE)
    got = [t.to(DEVICE).requires_grad_(True) for t in leaves]
    want = [t.double().requires_grad_(True) for t in leaves]
    out = gated_rmsnorm("triton", got[0], got[1][..., 3:63], got[2], groups)  # z: a view with row stride 70
    ref = gated_rmsnorm("eager", want[0], want[1][..., 3:63], want[2], groups)
    assert rel(out, ref) < 1e-6
    for a, b in zip(torch.autograd.grad(out, got, dout), torch.autograd.grad(ref, want, dout.double().cpu())):
        assert rel(a, b) < 1e-5
