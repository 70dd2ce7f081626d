"""The CUDA-graph train step (graphs.StaticTrainer) is the eager step, replayed: same
loss from the model as built, same weights after several updates. The Transformer's graphed
decode step (KVCacheDecoder) continues a prefill as the reference does. The graphs run on CUDA
only; on a CPU the choice of when to graph and the decode step's math (eagerly) are tested."""

import numpy as np
import pytest

from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.weights import init_weights

torch = pytest.importorskip("torch")
tb = pytest.importorskip("ssmbench.backends.torch.backend")

ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
cuda = pytest.mark.gpu  # CUDA graphs need a CUDA GPU


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def test_the_chunked_scan_is_never_graphed_and_the_others_are():
    from ssmbench.backends.torch import mamba, transformer

    for scan in ("chunked", "parallel", "sequential"):
        refusal = mamba.MambaLM(ODD, scan).graph_refusal()
        assert (refusal is not None) == (scan == "chunked"), scan
    assert "host" in mamba.MambaLM(ODD, "chunked").graph_refusal()
    assert transformer.GPT(matched_transformer(ODD)).graph_refusal() is None


def test_cpu_train_steps_and_forwards_are_eager_and_say_nothing():
    b = tb.TorchCPU()
    model = b.build("mamba", init_weights("mamba", ODD, seed=1), ODD, scan="parallel")
    toks = b.tokens(np.random.default_rng(0).integers(0, ODD.vocab, (2, 9)))
    b.train_step(model, toks[:, :-1], toks[:, 1:])
    b.forward(model, toks)
    assert b.execution(model) == {} and model.trainers == {} and model.forwards == {}


@cuda
@pytest.mark.parametrize("arch,scan", [("mamba", "triton"), ("mamba", "chunked"), ("transformer", None)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graphed_forwards_match_eager_forwards(arch, scan, dtype):
    """Each call's tokens reach the graph (the logits returned are the graph's, valid until the
    next call, so each is copied here). The chunked scan reads back to the host: it stays eager."""
    cfg = ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=9, jitter=True)
    rng = np.random.default_rng(5)
    batches = [rng.integers(0, cfg.vocab, (3, 29)) for _ in range(3)]
    b = tb.TorchCUDA()
    runs = {}
    for graph in (False, True):
        b.graph_forward = graph
        model = b.build(arch, w, cfg, scan=scan, dtype=dtype)
        runs[graph] = ([b.forward(model, b.tokens(t)).clone() for t in batches], b.execution(model))
    (eager, _), (graphed, how) = runs[False], runs[True]
    if scan == "chunked":
        assert how["forward"].startswith("eager") and "host" in how["forward"]  # the result says why
    else:
        assert how == {"forward": "CUDA graph"}
    for e, g in zip(eager, graphed):
        assert rel(g, e) < (1e-6 if dtype == "float32" else 1e-2)
    assert rel(graphed[0], graphed[1]) > 0.01  # different tokens, different logits


@cuda
@pytest.mark.parametrize("arch,scan", [("mamba", "triton"), ("mamba", "parallel"), ("transformer", None)])
def test_graphed_steps_match_eager_steps(arch, scan):
    cfg = ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=9, jitter=True)
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, cfg.vocab, (3, 31)) for _ in range(4)]
    b = tb.TorchCUDA()
    runs = {}
    for graph in (False, True):
        b.graph_train = graph
        model = b.build(arch, w, cfg, scan=scan)
        losses = [float(b.train_step(model, b.tokens(t[:, :-1]), b.tokens(t[:, 1:]))) for t in batches]
        runs[graph] = (losses, b.weights(model), b.execution(model))
    (eager, w_eager, _), (graphed, w_graph, how) = runs[False], runs[True]
    assert how == {"train_step": "CUDA graph"}
    assert abs(graphed[0] - eager[0]) / eager[0] < 1e-6  # the warm-up steps were undone
    assert np.allclose(graphed, eager, rtol=1e-5)  # new tokens reach the graph each step
    for k in w:
        assert np.abs(w_graph[k] - w[k]).max() > 0, k
        assert np.linalg.norm(w_graph[k] - w_eager[k]) <= 1e-5 * np.linalg.norm(w_eager[k] - w[k]) + 1e-7, k


# ---------------------------------------------------------------------------- Transformer decode
@pytest.fixture(scope="module")
def odd_gpt():
    from ssmbench import archs
    from ssmbench.archs.transformer import Config as TransformerConfig

    t = TransformerConfig(vocab=23, d_model=96, n_layers=2, n_head=3)
    w = init_weights("transformer", t, seed=5, jitter=True)
    toks = np.random.default_rng(4).integers(0, 23, (2, 19))
    return w, toks, archs.transformer.logits(w, toks, t), t


def _gpt_and_decoder(odd_gpt, amp_dtype=None):
    from ssmbench.backends.torch.graphs import KVCacheDecoder

    w, toks, _, t = odd_gpt
    b = tb.TorchCUDA() if torch.cuda.is_available() else tb.TorchCPU()
    module = b.build("transformer", w, t, dtype="float32").module
    dec = KVCacheDecoder(module, toks.shape[0], b.device, amp_dtype, graph=torch.cuda.is_available())
    return module, dec, torch.from_numpy(toks).to(b.device)


def test_kv_cache_decoder_steps_like_the_reference(odd_gpt):
    """The masked full-capacity step (a CUDA graph on a GPU, eager here) continues a prefill
    token after token as the reference does, re-decodes a position alike when handed the same
    state again (as the latency suite times it), and refuses a full cache."""
    module, dec, tok = _gpt_and_decoder(odd_gpt)
    R = odd_gpt[2]
    with torch.no_grad():
        state = module.prefill(tok[:, :11], 19, torch.float32)
    first, _ = dec(tok[:, 11], state)
    again, _ = dec(tok[:, 11], state)
    assert torch.equal(first, again)
    outs = []
    for i in range(11, 19):
        logits, state = dec(tok[:, i], state)
        outs.append(logits)
    assert rel(torch.stack(outs, 1), torch.from_numpy(R[:, 11:])) < 1e-5
    with pytest.raises(ValueError, match="full at position 19"):
        dec(tok[:, 0], state)


def test_kv_cache_decoder_in_bfloat16_matches_autocast_steps(odd_gpt):
    """Pre-cast Linear weights and the masked attention give what autocast's eager step gives."""
    module, dec, tok = _gpt_and_decoder(odd_gpt, torch.bfloat16)
    kind = tok.device.type
    with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16):
        s_ref = module.prefill(tok[:, :5], 12, torch.bfloat16)
    s_dec = (([(k.clone(), v.clone()) for k, v in s_ref[0]]), s_ref[1])
    for i in range(5, 12):
        with torch.no_grad(), torch.autocast(kind, dtype=torch.bfloat16):
            want, s_ref = module.step(tok[:, i], s_ref)
        got, s_dec = dec(tok[:, i], s_dec)
        # equal on a CPU; on a GPU the masked step runs another SDPA kernel than the sliced one
        assert rel(got, want) < 1e-2, i
