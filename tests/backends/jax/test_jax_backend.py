"""JAX-specific checks: the jax-metal path lowers only to ops Apple's Metal plugin handles,
the chunked scan's chunking, availability and process set-up. (Model numerics for jax-* are in
backends/test_backends.py with every other backend.)"""

import re
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jb = pytest.importorskip("ssmbench.backends.jax.backend")
js = pytest.importorskip("ssmbench.backends.jax.scans")

from ssmbench import archs  # noqa: E402
from ssmbench import backends as registry  # noqa: E402
from ssmbench.archs.mamba import Config as MambaConfig  # noqa: E402
from ssmbench.archs.mamba2 import Config as Mamba2Config  # noqa: E402
from ssmbench.weights import init_weights  # noqa: E402

jnp = jax.numpy
ODD = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
ODD2 = Mamba2Config(vocab=23, d_model=40, n_layers=2, d_state=6, d_conv=3, expand=2, headdim=10, ngroups=2, chunk_size=16)

# Known jax-metal lowering failures (jax#20119, #16366: pad; #20750, #21552, #23931: scan and
# while_loop; #21384, #21389: reduce_window and multi-operand reduce; #20938: no float64)
FORBIDDEN = {
    "pad": r"\b(stablehlo|mhlo)\.pad\b",
    "while": r"\b(stablehlo|mhlo)\.while\b",
    "reduce_window": r"\b(stablehlo|mhlo)\.reduce_window\b",
    "multi-operand reduce": r"(stablehlo|mhlo)\.reduce\([^)]*\)\s*,\s*\(",
    "float64": r"\bf64\b",
}


def forbidden_ops(hlo: str) -> list[str]:
    return [name for name, pat in FORBIDDEN.items() if re.search(pat, hlo)]


def _lowered(scan: str, chunk: int = 8, arch: str = "mamba", cfg=ODD, dtype="float32"):
    """StableHLO text of an architecture's train step and decode step, lowered on the CPU."""
    b = registry.get("jax-cpu")
    m = b.build(arch, init_weights(arch, cfg, seed=1), cfg, scan=scan, dtype=dtype)
    m.chunk = chunk
    toks = b.tokens(np.random.default_rng(0).integers(0, cfg.vocab, (2, 37)))
    train = m.jitted("train").lower(m.params, m.opt_state, toks, toks).as_text()
    step = m.jitted("step").lower(m.params, toks[:, 0], b.init_state(m, 2, 38)).as_text()
    return train, step


@pytest.mark.parametrize(
    "arch,cfg,scan,dtype", [("mamba", ODD, "chunked", "float32"), ("mamba2", ODD2, "ssd", "float32"), ("mamba2", ODD2, "ssd", "float16")]
)
def test_metal_default_scan_lowers_to_metal_safe_ops(arch, cfg, scan, dtype):
    assert jb.JaxMetal.default_scan[arch] == scan
    train, step = _lowered(scan, arch=arch, cfg=cfg, dtype=dtype)
    assert "dot_general" in train and "dynamic_update_slice" in train  # it really is the train step
    assert forbidden_ops(train) == []
    assert forbidden_ops(step) == []


def test_the_check_catches_what_metal_rejects():
    """Control: lax.associative_scan pads and lax.scan loops, and the detector sees both."""
    assert "pad" in forbidden_ops(_lowered("associative")[0])
    assert "while" in forbidden_ops(_lowered("sequential")[0])
    assert forbidden_ops("%3:2 = stablehlo.reduce(%a init: %b), (%c init: %d) across dimensions = [0]") == ["multi-operand reduce"]


def _scan_inputs(rng, L=37, E=6, N=5, dt_scale=1.0):
    x = rng.standard_normal((2, L, E)).astype(np.float32)
    dt = (np.log1p(np.exp(rng.standard_normal((2, L, E)))) * dt_scale).astype(np.float32)
    A = -np.exp(rng.uniform(-1, 2, (E, N))).astype(np.float32)
    Bm, Cm = (rng.standard_normal((2, L, N)).astype(np.float32) for _ in range(2))
    return x, dt, A, Bm, Cm


@pytest.mark.parametrize(
    "scan,chunk,dt_scale",
    [
        ("sequential", None, 1.0),
        ("associative", None, 1.0),
        ("chunked", 4, 0.3),
        ("chunked", 1, 30.0),
        ("chunked", 37, 0.02),
        ("pallas", None, 1.0),  # jax-cuda's fused kernels, run here by Pallas' interpreter
    ],
)
def test_scans_match_reference(scan, chunk, dt_scale, rng):
    x, dt, A, Bm, Cm = _scan_inputs(rng, dt_scale=dt_scale)
    if chunk:
        assert chunk <= archs.mamba.chunk_length(float(dt.max() * -A.min()), 37)  # within the budget
    y, h = js.SCAN_FNS[scan](*(jax.numpy.asarray(t) for t in (x, dt, A, Bm, Cm)), chunk)
    y_ref, h_ref = archs.mamba.selective_scan(*(t.astype(np.float64) for t in (x, dt, A, Bm, Cm)), np.zeros(6))
    assert np.linalg.norm(np.asarray(y) - y_ref) / np.linalg.norm(y_ref) < 1e-5
    assert np.linalg.norm(np.asarray(h) - h_ref) / np.linalg.norm(h_ref) < 1e-5


@pytest.mark.parametrize("tiling", [None, (4, 16, 2)], ids=["default", "tc4-be16-2warps"])
def test_pallas_scan_gradients_match_float64_autodiff(rng, tiling):
    """The fused Pallas scan's backward kernel (Pallas' interpreter here) against JAX's autodiff of
    the sequential scan in float64, for a loss on y and the final state, at shapes the kernels pad:
    L not a multiple of its chunk, E not of its channel block, N not a power of two; under the
    default tiling and another (tools/tune_pallas_scan.py times others)."""
    from ssmbench.backends.jax.pallas_scan import TILING, Tiling, scan_pallas

    t = Tiling(*tiling) if tiling else TILING
    L, E, N = 3 * t.tc + 5, t.be + 8, 5
    ins = _scan_inputs(rng, L=L, E=E, N=N)
    wy, wh = rng.standard_normal((2, L, E)), rng.standard_normal((2, E, N))

    def loss(scan):
        return lambda *a: (scan(*a)[0] * wy).sum() + (scan(*a)[1] * wh).sum()

    grads = jax.grad(loss(lambda *a: scan_pallas(*a, tiling=t)), argnums=range(5))(*(jax.numpy.asarray(v) for v in ins))
    with jax.enable_x64(True):
        ref = jax.grad(loss(js.scan_sequential), argnums=range(5))(*(jax.numpy.asarray(v, jax.numpy.float64) for v in ins))
        ref = [np.asarray(g) for g in ref]
    for name, g, r in zip(("x", "dt", "A", "Bm", "Cm"), grads, ref):
        assert g.dtype == np.float32 and g.shape == r.shape, name
        assert np.linalg.norm(np.asarray(g, np.float64) - r) / np.linalg.norm(r) < 1e-5, name


def _dot_operand_dtypes(jaxpr) -> list[str]:
    """The operand dtypes of every dot_general in a (closed) jaxpr, sub-jaxprs included."""
    out = []
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        if eqn.primitive.name == "dot_general":
            out.append("/".join(str(v.aval.dtype) for v in eqn.invars))
        out += [d for sub in eqn.params.values() if hasattr(sub, "eqns") or hasattr(sub, "jaxpr") for d in _dot_operand_dtypes(sub)]
    return out


@pytest.mark.parametrize("half,tol", [("bfloat16", 1e-2), ("float16", 2e-3)])
def test_ssd_half_operands_forward_and_backward(half, tol, rng):
    """In bf16 / fp16 the SSD's four large contractions and their eight gradient contractions take
    half-precision operands (the tensor-core path torch's kernels use); the result and every gradient
    stay within that dtype's rounding of the fp32 SSD's."""
    jm = pytest.importorskip("ssmbench.backends.jax.mamba2")
    jnp = jax.numpy
    Bt, L, H, P, G, N = 2, 77, 6, 10, 2, 12  # 77: not a multiple of the chunk
    x, wy = (jnp.asarray(rng.standard_normal((Bt, L, H, P)), jnp.float32) for _ in range(2))
    dt = jnp.asarray(np.log1p(np.exp(rng.standard_normal((Bt, L, H)))), jnp.float32)
    A = -jnp.asarray(rng.uniform(1, 16, H), jnp.float32)
    Bm, Cm = (jnp.asarray(rng.standard_normal((Bt, L, G, N)), jnp.float32) for _ in range(2))
    wS = jnp.asarray(rng.standard_normal((Bt, H, P, N)), jnp.float32)

    def loss(dtype):
        def f(x, dt, Bm, Cm):
            y, S = jm.ssd_chunked(x, dt, A, Bm, Cm, 16, dtype)
            return jnp.sum(y * wy) + jnp.sum(S * wS)

        return jax.grad(f, argnums=(0, 1, 2, 3))

    ref, got = loss(jnp.float32)(x, dt, Bm, Cm), loss(jnp.dtype(half))(x, dt, Bm, Cm)
    for g, r in zip(got, ref):
        err = float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
        assert 0 < err < tol  # > 0: the half path really ran
    dots = _dot_operand_dtypes(jax.make_jaxpr(loss(jnp.dtype(half)))(x, dt, Bm, Cm))
    assert dots.count(f"{half}/{half}") == 12  # 4 forward + 8 backward
    assert len(dots) - 12 == len(_dot_operand_dtypes(jax.make_jaxpr(loss(jnp.float32))(x, dt, Bm, Cm))) - 12  # the rest: fp32 as before


def test_chunk_over_budget_fails_loudly(rng):
    """A chunk whose decay passes fp32's exp range gives inf/NaN, never a plausible wrong number."""
    x, dt, A, Bm, Cm = _scan_inputs(rng, dt_scale=3.0)
    y, _ = js.scan_chunked(*(jax.numpy.asarray(t) for t in (x, dt, A, Bm, Cm)), 37)
    assert not np.isfinite(np.asarray(y)).all()


def test_metal_unavailable_off_apple_silicon_names_reason_and_install():
    import platform
    import sys

    if sys.platform == "darwin" and platform.machine() == "arm64":
        pytest.skip("on Apple silicon jax-metal may be available")
    a = registry.availability("jax-metal")
    assert not a.available and "macOS on Apple silicon" in a.reason
    assert "jax-metal==0.1.1" in a.install and "jax==0.5.0" in a.install


def test_configure_process_sets_allocator_env(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.delenv("ENABLE_PJRT_COMPATIBILITY", raising=False)
    assert jb.JaxCPU.configure_process(None) is False  # CPU: the RSS watchdog enforces limits
    import os

    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    jb.JaxMetal.configure_process(None)
    assert os.environ["ENABLE_PJRT_COMPATIBILITY"] == "1"


@pytest.mark.parametrize(
    "msg,oom",
    [
        ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB", True),
        ("UNKNOWN: Command buffer failed: kIOGPUCommandBufferCallbackError...", True),
        ("INVALID_ARGUMENT: shapes must match", False),
    ],
)
def test_oom_classification(msg, oom):
    assert registry.get("jax-cpu").is_oom(RuntimeError(msg)) is oom


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "transformer"])
def test_decode_step_donates_an_o1_state_and_keeps_a_kv_cache(arch):
    """Mamba's and Mamba-2's state is donated to the jitted step (XLA updates it in place; the
    harness feeds the returned state back); the Transformer's KV cache is not, since every timed
    step starts again from the same prefix cache."""
    from ssmbench.archs.transformer import Config as TransformerConfig

    cfg = {"mamba": ODD, "mamba2": ODD2, "transformer": TransformerConfig(vocab=23, d_model=40, n_layers=1, n_head=2)}[arch]
    b = registry.get("jax-cpu")
    m = b.build(arch, init_weights(arch, cfg, seed=1), cfg)
    state = b.prefill(m, b.tokens(np.zeros((2, 5))), 8)
    logits, new = b.decode_step(m, b.tokens(np.zeros(2)), state)
    assert np.isfinite(b.to_numpy(logits)).all()
    donated = [a.is_deleted() for a in jax.tree_util.tree_leaves(state)]
    assert all(donated) if arch != "transformer" else not any(donated)
    if arch == "transformer":  # the same cache again gives the same logits
        again, _ = b.decode_step(m, b.tokens(np.zeros(2)), state)
        np.testing.assert_array_equal(b.to_numpy(again), b.to_numpy(logits))


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "transformer"])
def test_logits_buffer_keeps_the_steps_output_in_one_place_and_the_callers_logits_theirs(arch, rng):
    """With ``logits_buffer`` (jax-cuda's, for its CUDA graphs) every step writes its logits to the
    same device buffer, and what the caller gets is a copy that later steps leave alone: the
    logits are the plain step's, token after token."""
    from ssmbench.archs.transformer import Config as TransformerConfig

    cfg = {"mamba": ODD, "mamba2": ODD2, "transformer": TransformerConfig(vocab=23, d_model=40, n_layers=1, n_head=2)}[arch]
    b = registry.get("jax-cpu")
    w, prompt, nxt = init_weights(arch, cfg, seed=4), rng.integers(0, cfg.vocab, (2, 5)), rng.integers(0, cfg.vocab, (2, 4))
    got = {}
    for buffered in (False, True):
        m = b.build(arch, w, cfg)
        m.logits_buffer = buffered
        state, kept, written = b.prefill(m, b.tokens(prompt), 9), [], set()
        for t in range(nxt.shape[1]):
            with warnings.catch_warnings():
                warnings.filterwarnings("error", "Some donated buffers were not usable")  # the buffer is the output's
                lg, state = b.decode_step(m, b.tokens(nxt[:, t]), state)
            kept.append(lg)  # held across later steps, as a caller may
            written |= {a.unsafe_buffer_pointer() for a in m._logits.values()}
        got[buffered] = [b.to_numpy(lg) for lg in kept]
        assert len(written) == (1 if buffered else 0)
        assert all(lg.unsafe_buffer_pointer() not in written for lg in kept)
    for a, r in zip(got[True], got[False]):
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "transformer"])
def test_decode_copy_casts_the_matmul_weights_once(arch, rng):
    """In bf16 the decode step reads a copy whose matmul weights and tied head are already bf16
    (layers.decode_weights), the rest as they are: the same logits as casting them inside the step,
    every LINEAR name matching weights, and a new copy once a train step has moved the weights."""
    from ssmbench.archs.transformer import Config as TransformerConfig

    jl = pytest.importorskip("ssmbench.backends.jax.layers")
    cfg = {"mamba": ODD, "mamba2": ODD2, "transformer": TransformerConfig(vocab=23, d_model=40, n_layers=1, n_head=2)}[arch]
    b = registry.get("jax-cpu")
    m = b.build(arch, init_weights(arch, cfg, seed=1), cfg, dtype="bfloat16")
    toks = b.tokens(rng.integers(0, cfg.vocab, (2, 7)))
    copy = m.decode_params()
    for suffix in m.net.LINEAR:
        assert any(k.endswith(suffix) for k in m.params), suffix
    cast = {k for k, v in copy.items() if v.dtype == jnp.bfloat16}
    assert cast == {k for k in m.params if k.endswith(m.net.LINEAR)} | {jl.HEAD}
    assert copy[m.net.EMBEDDING] is m.params[m.net.EMBEDDING]  # the lookup stays fp32
    assert m.decode_params() is copy  # cast once

    def step(params):
        state = b.prefill(m, toks, 9)
        return b.to_numpy(m.jitted("step")(params, toks[:, -1], state)[0])

    np.testing.assert_allclose(step(copy), step(m.params), rtol=1e-6, atol=1e-6)
    read = []
    m.decode_params = lambda: read.append(1) or copy  # what the backend's decode step passes
    b.decode_step(m, toks[:, -1], b.prefill(m, toks, 9))
    assert read
    del m.decode_params
    b.train_step(m, toks, toks)
    fresh = m.decode_params()
    assert fresh is not copy
    np.testing.assert_array_equal(b.to_numpy(fresh[jl.HEAD]), b.to_numpy(m.params[m.net.EMBEDDING].astype(jnp.bfloat16)))


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
@pytest.mark.parametrize("cfg", [ODD, MambaConfig(vocab=23, d_model=24, n_layers=2, d_state=16, d_conv=4, expand=2)], ids=["odd", "n16"])
def test_fused_decode_step_matches_xla_step(cfg, dtype, tol, rng):
    """jax-cuda's decode step (pallas_decode's kernels; Pallas' interpreter here) against the XLA
    step over several tokens: the logits and both states. ODD has N 5 (padded to 8), K 3, E 80
    (blocks of 16) and R 3 (dt_proj's columns in pieces of 2 and 1); n16 the real models' N and K.
    bf16: the two round x_proj's input differently."""
    b = registry.get("jax-cpu")
    w = init_weights("mamba", cfg, seed=2)
    prompt = rng.integers(0, cfg.vocab, (3, 6))
    nxt = rng.integers(0, cfg.vocab, (3, 4))
    out = {}
    for fused in (False, True):
        m = b.build("mamba", w, cfg, dtype=dtype)
        m.fused_decode = fused
        state, logits = b.prefill(m, b.tokens(prompt), 10), []
        for t in range(nxt.shape[1]):
            lg, state = b.decode_step(m, b.tokens(nxt[:, t]), state)
            logits.append(b.to_numpy(lg))
        out[fused] = np.stack(logits), [np.asarray(a) for a in jax.tree_util.tree_leaves(state)]
        layered = [k for k in m.decode_params() if k.startswith("backbone.layers.")]
        if fused:  # one (n_layers, ...) array a weight, none a layer's: a call's arguments do not grow with depth
            assert not layered and m.decode_params()["layers.mixer.dt_proj.weight"].shape[0] == cfg.n_layers
        else:
            assert len(layered) == 10 * cfg.n_layers
    (lg, st), (ref_lg, ref_st) = out[True], out[False]
    assert np.linalg.norm(lg - ref_lg) <= tol * np.linalg.norm(ref_lg)
    for a, r in zip(st, ref_st):
        assert a.shape == r.shape and np.linalg.norm(a - r) <= tol * np.linalg.norm(r)
