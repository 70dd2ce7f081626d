"""Mamba-2 (SSD) in TensorFlow against the float64 reference: both scans' forward (fp32, and bf16
for the chunked one), token-by-token decode, prefill then decode, a train step, and the SSD op
alone at a length that is not a multiple of the chunk. Tiny odd shapes: XLA compiles dominate."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ssmbench import archs, parity  # noqa: E402
from ssmbench import backends as registry  # noqa: E402
from ssmbench.archs import mamba2 as arch  # noqa: E402

tf_mamba2 = archs.framework_module("mamba2", "tf")

# odd on purpose: 8 heads of 10 channels in 2 groups, N 6, K 3; 37 tokens are 2 full chunks of 16 and a short one
CFG = arch.Config(vocab=23, d_model=40, n_layers=2, d_state=6, d_conv=3, expand=2, headdim=10, ngroups=2, chunk_size=16)
TOKENS = np.random.default_rng(0).integers(0, CFG.vocab, (2, 37))


def rel_err(got, ref):
    return float(np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def setup():
    w = arch.init(CFG, seed=7, jitter=True)
    return registry.get("tf-cpu"), w, arch.logits(w, TOKENS, CFG)


@pytest.fixture(scope="module")
def ssd_model(setup):
    b, w, _ = setup
    return b.build("mamba2", w, CFG, scan="ssd", dtype="float32")


@pytest.mark.parametrize("scan", ["ssd", "sequential"])
def test_forward_matches_reference(setup, ssd_model, scan):
    b, w, ref = setup
    m = ssd_model if scan == "ssd" else b.build("mamba2", w, CFG, scan=scan, dtype="float32")
    assert rel_err(b.to_numpy(b.forward(m, b.tokens(TOKENS))), ref) < 1e-5


def test_forward_bfloat16(setup):
    b, w, ref = setup
    m = b.build("mamba2", w, CFG, scan="ssd", dtype="bfloat16")
    assert rel_err(b.to_numpy(b.forward(m, b.tokens(TOKENS))), ref) < 3e-2


def test_decode_matches_reference(setup, ssd_model):
    b, _, ref = setup
    assert rel_err(parity.decode_all(b, ssd_model, TOKENS), ref) < 1e-5


def test_prefill_then_decode(setup, ssd_model):
    b, _, ref = setup
    state = b.prefill(ssd_model, b.tokens(TOKENS[:, :20]), TOKENS.shape[1])
    assert [tuple(t.shape) for t in state[0]] == [(2, CFG.conv_dim, CFG.d_conv), (2, CFG.nheads, CFG.headdim, CFG.d_state)]
    steps = []
    for t in range(20, TOKENS.shape[1]):
        logits, state = b.decode_step(ssd_model, b.tokens(TOKENS[:, t]), state)
        steps.append(b.to_numpy(logits))
    assert rel_err(np.stack(steps, axis=1), ref[:, 20:]) < 1e-5


def test_train_step_is_finite_and_moves_weights(setup):
    b, w, _ = setup
    m = b.build("mamba2", w, CFG, scan="ssd", dtype="float32")
    loss = float(b.train_step(m, b.tokens(TOKENS[:, :-1]), b.tokens(TOKENS[:, 1:])))
    after = b.weights(m)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(v)) for v in after.values())
    assert not np.array_equal(after["backbone.layers.0.mixer.A_log"], w["backbone.layers.0.mixer.A_log"])
    assert not np.array_equal(after["backbone.layers.1.mixer.in_proj.weight"], w["backbone.layers.1.mixer.in_proj.weight"])


@pytest.mark.parametrize("scan", ["ssd", "sequential"])
def test_op_matches_recurrence(setup, scan):
    b = setup[0]
    inputs = arch.op_inputs(dict(B=2, L=21, H=4, P=3, G=2, N=5, T=8), seed=1)
    f = {k: np.asarray(v, np.float64) for k, v in inputs.items() if k != "chunk_size"}
    ref, _ = arch.ssd_recurrence(f["x"], np.logaddexp(0.0, f["dt"] + f["dt_bias"]), f["A"], f["Bm"], f["Cm"], f["D"])
    assert rel_err(b.op_step("mamba2", scan, inputs, "float32", "forward")().numpy(), ref) < 1e-5


def test_ssd_gradients_finite_and_match_sequential_with_steep_decay():
    """Large Δ |A| makes a_t - a_s large and positive above each chunk's diagonal: masked before
    the exp, it must not reach the gradients of Δ, A, B and C as inf * 0; and the chunked form's
    gradients are the recurrence's. Eager (the same ops; an XLA compile of each costs seconds)."""
    inputs = arch.op_inputs(dict(B=1, L=12, H=2, P=3, G=1, N=4, T=8), seed=2)
    inputs["dt"] = inputs["dt"] + 8.0  # Δ ~ 8, |A| up to 16: log-decays of ~ -1000 within a chunk

    def grads(scan):
        fn, a = tf_mamba2.op(scan, inputs)

        def g(*xs):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                loss = tf.reduce_sum(fn(*xs) * a["dout"])
            return tape.gradient(loss, xs)

        return [t.numpy() for t in g(*[tf.constant(a[k]) for k in arch.OP_ARGS])]

    for name, got, ref in zip(arch.OP_ARGS, grads("ssd"), grads("sequential")):
        assert np.all(np.isfinite(got)), name
        assert rel_err(got, ref) < 1e-4, name
