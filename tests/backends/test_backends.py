"""Every backend computes the float64 reference's function: each scan's logits, the recurrent
decode path, prefill + decode, Mamba-2, the Transformer baseline and the training loss, on random
weights at odd shapes (fp32 relative error < 1e-5; half precision within mamba-ssm's bf16
tolerance). Backends that cannot run here are skipped; on a GPU machine the GPU ones run."""

import numpy as np
import pytest

import ssmbench
from ssmbench import archs, parity
from ssmbench import backends as registry
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.transformer import Config as TransformerConfig
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.weights import infer_config, init_weights

ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)


@pytest.fixture(params=registry.names())
def device(request):
    """Each backend that runs here."""
    if not registry.availability(request.param).available:
        pytest.skip(f"{request.param} not available here")
    return request.param


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def odd_mamba():
    w = init_weights("mamba", ODD, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, ODD.vocab, (2, 37))
    return w, toks, archs.mamba.logits(w, toks)


def test_mamba_logits_fp32_every_scan(odd_mamba, device):
    w, toks, R = odd_mamba
    for scan in registry.get_class(device).scans["mamba"]:
        assert rel(ssmbench.logits(device, w, toks, scan=scan), R) < 1e-5, scan


def test_mamba_decode_fp32(odd_mamba, device):
    w, toks, R = odd_mamba
    assert rel(ssmbench.decode_logits(device, w, toks), R) < 1e-5


def test_reference_decode_equals_reference_parallel(odd_mamba):
    w, toks, R = odd_mamba
    assert rel(archs.mamba.decode_logits(w, toks), R) < 1e-12


def test_reference_backend_in_public_api(odd_mamba):
    w, toks, R = odd_mamba
    np.testing.assert_allclose(ssmbench.logits("reference", w, toks), R)
    with pytest.raises(ValueError, match="token ids"):
        ssmbench.logits("reference", w, toks + 100)


def test_prefill_state_continues_like_decode(odd_mamba, device):
    """prefill(prompt) then decode steps == decoding the whole sequence token by token."""
    w, toks, R = odd_mamba
    b = ssmbench.backends.get(device)
    model = b.build("mamba", w, ODD, scan=None, dtype="float32")
    state = b.prefill(model, b.tokens(toks[:, :30]), 37)
    outs = []
    for t in range(30, 37):
        lg, state = b.decode_step(model, b.tokens(toks[:, t]), state)
        outs.append(b.to_numpy(lg))
    assert rel(np.stack(outs, 1), R[:, 30:]) < 1e-5


# ---------------------------------------------------------------------------- Mamba-2
@pytest.fixture(scope="module")
def odd_mamba2():
    """8 heads of 10 channels (not a power of two) in 2 groups, N 6, K 3, chunk 16: 37 tokens are
    two whole chunks and a short one."""
    cfg = parity.model_config("mamba2")
    assert (cfg.headdim, cfg.ngroups, cfg.chunk_size) == (10, 2, 16)
    w = init_weights("mamba2", cfg, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, cfg.vocab, (2, 37))
    return w, toks, archs.mamba2.logits(w, toks, cfg), cfg


def test_mamba2_every_scan_decode_and_prefill_fp32(odd_mamba2, device):
    w, toks, R, cfg = odd_mamba2
    b = registry.get(device)
    for scan in registry.get_class(device).scans["mamba2"]:
        model = b.build("mamba2", w, cfg, scan=scan, dtype="float32")
        assert rel(b.to_numpy(b.forward(model, b.tokens(toks))), R) < 1e-5, scan
    model = b.build("mamba2", w, cfg, scan=None, dtype="float32")
    assert rel(parity.decode_all(b, model, toks), R) < 1e-5
    for split in (2, 30):  # a prompt shorter than the conv, and one past a chunk
        state = b.prefill(model, b.tokens(toks[:, :split]), 37)
        outs = []
        for t in range(split, 37):
            lg, state = b.decode_step(model, b.tokens(toks[:, t]), state)
            outs.append(b.to_numpy(lg))
        assert rel(np.stack(outs, 1), R[:, split:]) < 1e-5, split


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mamba2_half_precision_close_to_reference(dtype, odd_mamba2, device):
    w, toks, R, cfg = odd_mamba2
    if dtype not in registry.get_class(device).dtypes:
        pytest.skip(f"{device} does not run {dtype}")
    b = registry.get(device)
    model = b.build("mamba2", w, cfg, scan=None, dtype=dtype)
    err = rel(b.to_numpy(b.forward(model, b.tokens(toks))), R)
    assert 1e-7 < err < (3e-2 if dtype == "bfloat16" else 5e-3)
    assert rel(parity.decode_all(b, model, toks), R) < (3e-2 if dtype == "bfloat16" else 5e-3)


def test_mamba2_public_api_infers_it_with_the_groups_given(odd_mamba2):
    w, toks, R, cfg = odd_mamba2
    np.testing.assert_allclose(ssmbench.logits("reference", w, toks, ngroups=2), R)
    np.testing.assert_allclose(ssmbench.decode_logits("torch-cpu", w, toks, ngroups=2), R, rtol=0, atol=1e-5 * np.abs(R).max())
    assert rel(ssmbench.logits("reference", w, toks), R) > 1e-3  # read as one group of N 12: another function


@pytest.fixture(scope="module")
def odd_gpt():
    t = TransformerConfig(vocab=23, d_model=96, n_layers=2, n_head=3)  # infer_config also gives 3 heads at D=96
    w = init_weights("transformer", t, seed=5, jitter=True)
    toks = np.random.default_rng(4).integers(0, 23, (2, 19))
    assert infer_config(w)[1].n_head == 3
    return w, toks, archs.transformer.logits(w, toks, t), t


def test_transformer_logits_and_decode_fp32(odd_gpt, device):
    w, toks, R, t = odd_gpt
    assert rel(archs.transformer.decode_logits(w, toks, t), R) < 1e-12
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


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "transformer"])
def test_train_step_loss_is_reference_cross_entropy(arch, rng, device):
    cfg = parity.model_config(arch) if arch == "mamba2" else ODD if arch == "mamba" else matched_transformer(ODD)
    w = init_weights(arch, cfg, seed=9, jitter=True)
    toks = rng.integers(0, cfg.vocab, (3, 30))
    b = ssmbench.backends.get(device)
    model = b.build(arch, w, cfg, dtype="float32")
    loss = float(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    expect = archs.common.cross_entropy(archs.get(arch).logits(w, toks[:, :-1], cfg), toks[:, 1:])
    assert abs(loss - expect) / expect < 1e-5
    # the update happened: the second loss differs from the first
    loss2 = float(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    assert loss2 != loss


# ---------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_reference(dtype, odd_mamba, device):
    """autocast matmuls in half precision, fp32 scan state: within mamba-ssm's bf16 tolerance."""
    w, toks, R = odd_mamba
    if dtype not in registry.get_class(device).dtypes:
        pytest.skip(f"{device} does not run {dtype}")
    err = rel(ssmbench.logits(device, w, toks, dtype=dtype), R)
    assert err < (3e-2 if dtype == "bfloat16" else 5e-3)
    assert err > 1e-7  # it really ran in half precision


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_untied_head_forward_decode_and_train(arch, device, rng):
    """A model with its own LM head (a checkpoint's ``lm_head.weight``, as transformers' Mamba2Config
    makes by default) multiplies by it, not by the embedding: forward and decode are the float64
    reference's, the train step's loss is its cross-entropy, and the step moves the head."""
    cfg = parity.model_config(arch) if arch == "mamba2" else ODD
    w = init_weights(arch, cfg, seed=5, jitter=True)
    w["lm_head.weight"] = rng.standard_normal(w["backbone.embedding.weight"].shape).astype(np.float32) * 0.1
    toks = rng.integers(0, cfg.vocab, (2, 19))
    R = archs.get(arch).logits(w, toks, cfg)
    tied = archs.get(arch).logits({k: v for k, v in w.items() if k != "lm_head.weight"}, toks, cfg)
    assert rel(tied, R) > 0.1  # the two heads give other logits
    b = ssmbench.backends.get(device)
    assert rel(b.to_numpy(b.forward(b.build(arch, w, cfg), b.tokens(toks))), R) < 1e-5
    model = b.build(arch, w, cfg)
    assert rel(parity.decode_all(b, model, toks), R) < 1e-5
    loss = float(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    expect = archs.common.cross_entropy(archs.get(arch).logits(w, toks[:, :-1], cfg), toks[:, 1:])
    assert abs(loss - expect) / expect < 1e-5
    after = b.weights(model)
    assert np.abs(after["lm_head.weight"] - w["lm_head.weight"]).max() > 0


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_one_adamw_step_updates_weights_like_torch(arch, device, rng):
    """Same loss, same gradients, same optimiser: the weights after one step agree with torch-cpu's."""
    if device == "torch-cpu":
        pytest.skip("the yardstick itself")
    cfg = parity.model_config(arch)
    w = init_weights(arch, cfg, seed=11, jitter=True)
    toks = rng.integers(0, cfg.vocab, (2, 20))
    after = {}
    for name in ("torch-cpu", device):
        b = registry.get(name)
        model = b.build(arch, w, cfg, dtype="float32")
        b.synchronize(b.train_step(model, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
        after[name] = b.weights(model)
    assert set(after[device]) == set(w)
    for k in w:
        step_ref, step = after["torch-cpu"][k] - w[k], after[device][k] - w[k]
        assert np.abs(step_ref).max() > 0, k  # every weight moved
        assert rel(step, step_ref) < 1e-3, k
