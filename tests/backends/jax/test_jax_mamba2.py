"""Mamba-2 (SSD) on jax-cpu against the float64 reference (ssmbench.archs.mamba2): both scans and
the decode step at an odd config with two groups, prefill + decode from prompts shorter than the
chunk and than the conv, a train step, and the SSD op alone (values and gradients)."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jm2 = pytest.importorskip("ssmbench.backends.jax.mamba2")

import ssmbench  # noqa: E402
from ssmbench import backends as registry  # noqa: E402
from ssmbench.archs import mamba2 as arch  # noqa: E402
from ssmbench.parity import decode_all  # noqa: E402

jnp = jax.numpy
CFG = arch.Config(vocab=23, d_model=40, n_layers=2, d_state=6, d_conv=3, expand=2, headdim=10, ngroups=2, chunk_size=16)
TOL = {"float32": 1e-5, "bfloat16": 3e-2}


def rel(a, ref):
    return float(np.linalg.norm(np.asarray(a, np.float64) - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def odd():
    """Weights (every one perturbed), tokens (2, 37): two full chunks and a short one, and the reference logits."""
    w = arch.init(CFG, seed=7, jitter=True)
    toks = np.random.default_rng(3).integers(0, CFG.vocab, (2, 37))
    return w, toks, arch.logits(w, toks, CFG)


@pytest.fixture(scope="module")
def models(odd):
    """One built model per (scan, dtype), shared so each jitted function compiles once."""
    b, cache = registry.get("jax-cpu"), {}

    def get(scan, dtype="float32"):
        if (scan, dtype) not in cache:
            cache[scan, dtype] = b.build("mamba2", odd[0], CFG, scan=scan, dtype=dtype)
        return b, cache[scan, dtype]

    return get


@pytest.mark.parametrize("scan,dtype", [("ssd", "float32"), ("sequential", "float32"), ("ssd", "bfloat16")])
def test_forward_matches_reference(odd, models, scan, dtype):
    _, toks, R = odd
    b, m = models(scan, dtype)
    assert rel(b.to_numpy(b.forward(m, b.tokens(toks))), R) < TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decode_matches_reference(odd, models, dtype):
    _, toks, R = odd
    b, m = models("ssd", dtype)
    assert rel(decode_all(b, m, toks), R) < TOL[dtype]


@pytest.mark.parametrize("scan,n", [("ssd", 20), ("sequential", 2)])
def test_prefill_then_decode(odd, models, scan, n):
    """prefill(prompt) then decode steps == the reference, for a prompt over a chunk boundary (20)
    and one shorter than the conv (2: its conv state is zero-padded in front). (SSD's final state
    from a short chunk: test_op_matches_recurrence.)"""
    _, toks, R = odd
    b, m = models(scan)
    state = b.prefill(m, b.tokens(toks[:, :n]), 37)
    outs = []
    for t in range(n, 37):
        lg, state = b.decode_step(m, b.tokens(toks[:, t]), state)
        outs.append(b.to_numpy(lg))
    assert rel(np.stack(outs, 1), R[:, n:]) < 1e-5


def test_public_api_infers_the_config():
    """ssmbench.logits infers ngroups 1 and mamba-ssm's chunk (256 > L: one short chunk)."""
    cfg = CFG.with_(ngroups=1)
    w = arch.init(cfg, seed=2, jitter=True)
    toks = np.random.default_rng(5).integers(0, cfg.vocab, (2, 9))
    assert rel(ssmbench.logits("jax-cpu", w, toks, scan="ssd"), arch.logits(w, toks, cfg)) < 1e-5


def test_train_step_updates_weights(odd):
    """One layer (the train step's compile is the slowest thing here); tokens over three chunks."""
    cfg = CFG.with_(n_layers=1)
    w, toks = arch.init(cfg, seed=7, jitter=True), odd[1]
    b = registry.get("jax-cpu")
    m = b.build("mamba2", w, cfg, scan="ssd", dtype="float32")
    loss = float(b.train_step(m, b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])))
    assert np.isfinite(loss)
    after = b.weights(m)
    assert all(np.isfinite(v).all() for v in after.values())
    assert all(not np.allclose(after[k], w[k]) for k in w)


# ---------------------------------------------------------------------------- the op alone
SHAPE = dict(B=2, L=11, H=4, P=3, G=2, N=5)


@pytest.fixture(scope="module")
def op_run():
    """(scan, T, dt_shift) -> the op's y, the grads of sum(y * dout) for every OP_ARGS input and
    the scan's final state (B, H, P, N) from the same inputs, and the float64 reference's y and
    state, at SHAPE; one compile per (scan, T)."""
    jitted = {}

    def run(scan, T, dt_shift=0.0):
        inputs = arch.op_inputs({**SHAPE, "T": T}, seed=0)
        inputs["dt_bias"] = inputs["dt_bias"] + np.float32(dt_shift)
        fn, rest = jm2.op(scan, inputs)
        assert "chunk_size" not in rest
        if (scan, T) not in jitted:

            def outputs(dout, x, dt, A, Bm, Cm, D, dt_bias):
                y, vjp = jax.vjp(fn, x, dt, A, Bm, Cm, D, dt_bias)
                _, S = jm2.SCANS[scan](x, jax.nn.softplus(dt + dt_bias), A, Bm, Cm, T)
                return y, vjp(dout), S

            jitted[scan, T] = jax.jit(outputs)
        y, grads, S = jitted[scan, T](jnp.asarray(rest["dout"]), *(jnp.asarray(rest[k]) for k in arch.OP_ARGS))
        f64 = {k: rest[k].astype(np.float64) for k in arch.OP_ARGS}
        delta = np.logaddexp(0.0, f64["dt"] + f64["dt_bias"])
        y_ref, S_ref = arch.ssd_recurrence(f64["x"], delta, f64["A"], f64["Bm"], f64["Cm"], f64["D"])
        return y, grads, S, y_ref, S_ref

    return run


@pytest.mark.parametrize("scan,T", [("ssd", 4), ("ssd", 16), ("sequential", 4)])
def test_op_matches_recurrence(op_run, scan, T):
    """L = 11 in chunks of 4 (the last one short) or of 16 (longer than the sequence): y (with the
    D skip), the final state, and finite gradients."""
    y, grads, S, y_ref, S_ref = op_run(scan, T)
    assert y.shape == y_ref.shape and y.dtype == jnp.float32 and S.shape == S_ref.shape
    assert rel(y, y_ref) < 1e-5 and rel(S, S_ref) < 1e-5
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_ssd_gradients_match_sequential(op_run):
    for g, g_ref in zip(op_run("ssd", 4)[1], op_run("sequential", 4)[1]):
        assert rel(g, np.asarray(g_ref, np.float64)) < 1e-4


def test_ssd_strong_decay_stays_finite(op_run):
    """Δ A of hundreds per step: each chunk's decays span far past fp32's exp range. Masking before
    the exp keeps the values right and the gradients finite (no exp of a positive number)."""
    y, grads, S, y_ref, S_ref = op_run("ssd", 4, dt_shift=20.0)
    assert rel(y, y_ref) < 1e-5 and rel(S, S_ref) < 1e-5
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
