"""The LM head on JAX: the fused head + cross-entropy (layers.head_loss, jax-cuda's train step)
against the unfused loss and a float64 NumPy one, values and gradients, at shapes that need
padded chunks; and one train step fused against unfused."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jl = pytest.importorskip("ssmbench.backends.jax.layers")

from ssmbench import backends as registry  # noqa: E402
from ssmbench.archs.mamba import Config as MambaConfig  # noqa: E402
from ssmbench.weights import init_weights  # noqa: E402

jnp = jax.numpy
MAMBA = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
# bf16: the fused and unfused losses differ in where they round (the unfused rounds dx and dW to
# bf16 after its matmuls, the fused accumulates dW over chunks in fp32): both gradients sit some
# 3e-3 from float64 and from each other, the loss within 3e-4
TOL = {"float32": (1e-6, 1e-5), "bfloat16": (1e-3, 1e-2)}  # (loss, gradients) relative


def rel(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a.reshape(ref.shape) - ref) / np.linalg.norm(ref))


def float64_loss(x, w, y):
    """(loss, dloss/dx, dloss/dW) in float64: the mean cross-entropy of x Wᵀ."""
    x, w, y = x.reshape(-1, x.shape[-1]).astype(np.float64), w.astype(np.float64), y.reshape(-1)
    T, logits = len(y), x @ w.T
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
    g = np.exp(logits - lse[:, None])
    g[np.arange(T), y] -= 1
    g /= T
    return np.mean(lse - logits[np.arange(T), y]), g @ w, g.T @ x


# (token shape, V, D, rows): T not a multiple of the chunk (37 = 4 x 8 + 5, 38 = 2 x 16 + 6,
# 150 = 3 x 40 + 30), V odd, several chunks; None: the default (one chunk here)
SHAPES = [((37,), 29, 12, 8), ((2, 19), 31, 16, 16), ((2, 19), 31, 16, None), ((3, 50), 257, 24, 40)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape,V,D,rows", SHAPES)
def test_fused_head_loss_matches_unfused_and_float64(shape, V, D, rows, dtype, rng):
    x = rng.standard_normal((*shape, D)).astype(np.float32)
    w = (0.5 * rng.standard_normal((V, D))).astype(np.float32)
    y = rng.integers(0, V, shape)
    if rows:
        assert -(-np.prod(shape) // rows) > 1 and np.prod(shape) % rows  # several chunks, the last padded
    dt, yj = jnp.dtype(dtype), jnp.asarray(y)

    def fused(x, w):  # 2.5 x: the backward scales by the incoming gradient
        return 2.5 * jl.head_loss(x, w, yj, dt, rows)

    def unfused(x, w):
        return 2.5 * jl.cross_entropy(jl.linear(x, w, dt).astype(jnp.float32), yj)

    loss, grads = jax.value_and_grad(fused, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
    ref_loss, ref_grads = jax.value_and_grad(unfused, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
    l64, *g64 = float64_loss(x, w, y)
    tol_loss, tol_grad = TOL[dtype]
    assert loss.dtype == np.float32 and loss.shape == ()
    assert abs(float(loss) - float(ref_loss)) < tol_loss * abs(float(ref_loss))
    assert abs(float(loss) - 2.5 * l64) < tol_loss * 2.5 * l64
    for g, r, r64 in zip(grads, ref_grads, g64):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert rel(g, r) < tol_grad
        assert rel(g, 2.5 * r64) < tol_grad


def test_default_chunks_at_mamba_130m_train_shape():
    """8 x 2048 tokens, V = 50,280: 4 chunks of 4096 tokens (about 2^28 logits each), no padding."""
    assert jl.chunk_rows(8 * 2048, 50280) == 4096


def test_fused_loss_on_jax_cuda_only():
    """On the 2-core CPU an earlier version was 25% slower than XLA's own loss; Metal lowers no while loop."""
    from ssmbench.backends.jax.backend import JaxCPU, JaxCUDA, JaxMetal

    assert (JaxCPU.fused_loss, JaxCUDA.fused_loss, JaxMetal.fused_loss) == (False, True, False)


def _avals(jaxpr):
    """The shapes of every value a (closed) jaxpr computes, sub-jaxprs included."""
    out = []
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for sub in eqn.params.values():
            if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                out += _avals(sub)
    return out


def test_train_step_fused_loss_matches_unfused(monkeypatch, rng):
    """One AdamW step of a small Mamba in fp32, fused and unfused loss: the same loss and nearly
    the same new weights. The chunk is made small so 74 tokens take 4 chunks of 19, the last with
    2 padded rows; the fused step never forms a (tokens, V) array, the unfused one does."""
    cfg = MAMBA
    monkeypatch.setattr(jl, "CHUNK_ELEMENTS", 20 * cfg.vocab)
    assert jl.chunk_rows(74, cfg.vocab) == 19  # 4 x 19 = 76 > 74
    b, w = registry.get("jax-cpu"), init_weights("mamba", cfg, seed=1)
    toks = b.tokens(rng.integers(0, cfg.vocab, (2, 37)))
    out = {}
    for fused in (False, True):
        m = b.build("mamba", w, cfg, dtype="float32")
        assert m.fused_loss is False  # jax-cpu's default, flipped here
        m.fused_loss = fused
        shapes = _avals(jax.make_jaxpr(m.jitted("train"))(m.params, m.opt_state, toks, toks))
        assert ((2, 37, cfg.vocab) in shapes or (74, cfg.vocab) in shapes) is not fused
        loss = float(b.train_step(m, toks, toks))
        out[fused] = loss, b.weights(m)
    (loss, new), (ref_loss, ref_new) = out[True], out[False]
    assert abs(loss - ref_loss) < 1e-6 * ref_loss
    for k in ref_new:
        np.testing.assert_allclose(new[k], ref_new[k], rtol=1e-5, atol=1e-6, err_msg=k)
    moved = np.abs(ref_new["backbone.embedding.weight"] - w["backbone.embedding.weight"]).max()
    assert moved > 1e-4  # the step did move the tied weight (lr 1e-3)
