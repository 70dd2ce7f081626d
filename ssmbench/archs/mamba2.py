"""Mamba-2 (``--arch mamba2``), exactly as mamba-ssm's Mamba2 mixer inside its MambaLMHeadModel
(Dao & Gu 2024, "Transformers are SSMs", arXiv 2405.21060): its config, parameter count,
initialisation, the float64 NumPy reference (the recurrence: the one statement of the math
every backend must match), a float64 chunked SSD (the form the fast scans compute, checked
against the recurrence), and what reports and the scan suite need of it.

Glossary (symbol in the paper -> name here, shape):
    V  vocab size                       Bt batch            L  sequence length
    D  d_model, residual width          E  d_inner = expand * D
    H  heads = E / P                    P  headdim, channels per head
    G  ngroups: heads share B and C in G groups of H / G heads
    N  d_state, state size per head     K  d_conv, causal conv width over x, B and C
    T  chunk_size, the SSD chunk
    x  (Bt, L, H, P)   the SSM input      z  (Bt, L, E) the gate
    Δ  dt  (Bt, L, H)  step size, softplus(dt + dt_bias)     A  (H,) = -exp(A_log), a scalar per head
    B  (Bt, L, G, N)   input matrix       C  (Bt, L, G, N) output matrix     D_skip (H,)
    S_t = exp(Δ_t A) S_{t-1} + Δ_t x_t B_t^T   (Bt, H, P, N)      y_t = S_t C_t + D_skip x_t

SSD (state space duality): inside a chunk of T steps, y = (L ∘ C B^T) (Δ x) with the decay
matrix L[t, s] = exp(Σ_{s<r<=t} Δ_r A) for s <= t: a masked, matmul-shaped form; between
chunks only the (H, P, N) state is passed on.

Block i (pre-norm, residual carried separately, as in mamba-ssm; same LM wrapper as Mamba-1):
    residual = hidden + residual;  hidden = mixer(RMSNorm(residual))
Mixer: z, xBC, dt = in_proj(h) split [E, E + 2GN, H];  xBC = silu(causal_conv(xBC));
    x, B, C = xBC split [E, GN, GN];  y = SSD(x, softplus(dt + dt_bias), A, B, C) + D x;
    y = RMSNorm_grouped(y * silu(z)) * norm.weight  (groups of E / G);  out = out_proj(y).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from .common import f64, n_layers, rmsnorm, silu, softplus

NAME = "mamba2"
FIXED_SCAN = None  # its parallel path takes the backend's scans (--scan: ssd, sequential, triton)
DECODE_SCAN = "recurrent"
STATE_GROWS = False  # O(1) decode state: conv (Bt, E + 2GN, K) and SSM (Bt, H, P, N)
OP = "ssd"  # what the scan suite times alone for it
OP_ARGS = ("x", "dt", "A", "Bm", "Cm", "D", "dt_bias")  # mamba_chunk_scan_combined's, in order
OP_FP32 = ("A", "D", "dt_bias")
LAYERS = "backbone.layers."
DEFAULTS = dict(d_state=128, headdim=64, ngroups=1, chunk_size=256)  # mamba-ssm's Mamba2 defaults
SETTINGS = tuple(DEFAULTS)  # its own settings (RunOptions.settings["mamba2"]): flags, presets and sweeps set them


@dataclass(frozen=True)
class Config:
    vocab: int = 65  # V: vocabulary size (tied embedding / LM head)
    d_model: int = 256  # D: residual stream width
    n_layers: int = 4  # Mamba-2 blocks
    d_state: int = 128  # N: state size per head
    d_conv: int = 4  # K: causal depthwise conv width (over x, B and C)
    expand: int = 2  # E = expand * D: inner width
    headdim: int = 64  # P: channels per head; H = E / P heads
    ngroups: int = 1  # G: groups of heads sharing B and C
    chunk_size: int = 256  # T: the SSD chunk (a compute choice: the function does not depend on it)

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why this config is not a Mamba-2 model, naming the setting, or None."""
        E = self.expand * self.d_model
        if self.headdim < 1 or E % self.headdim:
            return f"headdim {self.headdim} does not divide d_inner {E} (= expand {self.expand} x d_model {self.d_model})"
        if self.ngroups < 1 or (E // self.headdim) % self.ngroups:
            return f"ngroups {self.ngroups} does not divide the {E // self.headdim} heads (d_inner {E} / headdim {self.headdim})"
        if self.chunk_size < 1:
            return f"chunk_size {self.chunk_size} must be >= 1"
        return None

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x, B and C."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **kw) -> Config:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def config_for(model, **settings) -> Config:
    """Its config for a run whose shared sizes are ``model`` (a Mamba config: vocab, d_model,
    n_layers, d_conv, expand) and whose Mamba-2 settings (d_state, headdim, ngroups, chunk_size)
    are ``settings``; a setting not given takes mamba-ssm's default (DEFAULTS), so d_state is 128
    unless told, whatever Mamba-1's is."""
    own = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    return Config(vocab=model.vocab, d_model=model.d_model, n_layers=model.n_layers, d_conv=model.d_conv, expand=model.expand, **own)


# ---------------------------------------------------------------------------- parameters
def layer_params(c: Config) -> int:
    """SPEC: D(2E + 2GN + H) + (E + 2GN)(K + 1) + 3H + E + ED + D per layer."""
    D, E, G, N, H, K = c.d_model, c.d_inner, c.ngroups, c.d_state, c.nheads, c.d_conv
    return D * (2 * E + 2 * G * N + H) + (E + 2 * G * N) * (K + 1) + 3 * H + E + E * D + D


def params(c: Config) -> int:
    return c.vocab * c.d_model + c.n_layers * layer_params(c) + c.d_model


# ---------------------------------------------------------------------------- weights
def init(cfg: Config, seed: int = 0, jitter: bool = False) -> dict:
    """mamba-ssm's Mamba2 initialisation: Linear and conv U(+-1/sqrt(fan_in)), embedding N(0, 0.02),
    dt_bias so softplus(dt_bias) is log-uniform in [1e-3, 1e-1] (floor 1e-4), A uniform in
    [1, 16] (A_log = log A), D = 1, the gated norm's weight 1, out_proj scaled by 1/sqrt(n_layers).
    ``jitter`` also randomises the norms and D so tests exercise every weight."""
    rng = np.random.default_rng(seed)
    D, E, H, K, C = cfg.d_model, cfg.d_inner, cfg.nheads, cfg.d_conv, cfg.conv_dim
    d_in_proj = 2 * E + 2 * cfg.ngroups * cfg.d_state + H

    def unif(shape, bound):
        return ((rng.random(shape, dtype=np.float32) * 2 - 1) * bound).astype(np.float32)

    w = {"backbone.embedding.weight": (rng.standard_normal((cfg.vocab, D), dtype=np.float32) * 0.02)}
    for i in range(cfg.n_layers):
        p = f"{LAYERS}{i}."
        dt = np.exp(rng.random(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = np.maximum(dt, 1e-4)
        w.update(
            {
                p + "norm.weight": np.ones(D, np.float32),
                p + "mixer.in_proj.weight": unif((d_in_proj, D), 1 / math.sqrt(D)),
                p + "mixer.conv1d.weight": unif((C, 1, K), 1 / math.sqrt(K)),
                p + "mixer.conv1d.bias": unif((C,), 1 / math.sqrt(K)),
                p + "mixer.dt_bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
                p + "mixer.A_log": np.log(rng.uniform(1, 16, H)).astype(np.float32),
                p + "mixer.D": np.ones(H, np.float32),
                p + "mixer.norm.weight": np.ones(E, np.float32),
                p + "mixer.out_proj.weight": unif((D, E), 1 / math.sqrt(E)) / math.sqrt(cfg.n_layers),
            }
        )
        if jitter:
            w[p + "norm.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32)
            w[p + "mixer.D"] = rng.standard_normal(H).astype(np.float32)
            w[p + "mixer.norm.weight"] = rng.uniform(0.5, 1.5, E).astype(np.float32)
    w["backbone.norm_f.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32) if jitter else np.ones(D, np.float32)
    return w


def owns(weights: dict) -> bool:
    """A Mamba-2 state dict: a mixer with ``dt_bias`` and a gated ``norm.weight``."""
    p = f"{LAYERS}0.mixer."
    return "backbone.embedding.weight" in weights and p + "dt_bias" in weights and p + "norm.weight" in weights


def infer_config(weights: dict, ngroups: int = 1, chunk_size: int = DEFAULTS["chunk_size"]) -> Config:
    """The config from the weight shapes. G and N are not separable from the shapes alone (the
    conv has E + 2GN channels), so ``ngroups`` is taken as given (1 unless told), as is the
    chunk, which the function does not depend on."""
    V, D = weights["backbone.embedding.weight"].shape
    p = f"{LAYERS}0.mixer."
    (H,) = weights[p + "A_log"].shape
    (E,) = weights[p + "norm.weight"].shape
    C, _, K = weights[p + "conv1d.weight"].shape
    if E % D:
        raise ValueError(f"d_inner {E} is not a multiple of d_model {D}")
    if E % H or (C - E) % (2 * ngroups):
        raise ValueError(f"Mamba-2 weights with {H} heads, d_inner {E} and {C} conv channels do not fit ngroups {ngroups}")
    return Config(
        vocab=V,
        d_model=D,
        n_layers=n_layers(weights, LAYERS),
        d_state=(C - E) // (2 * ngroups),
        d_conv=K,
        expand=E // D,
        headdim=E // H,
        ngroups=ngroups,
        chunk_size=chunk_size,
    )


def label(c: dict) -> str:
    return f"D{c.get('d_model')} L{c.get('n_layers')} N{c.get('d_state')} P{c.get('headdim')}"


# ---------------------------------------------------------------------------- the float64 reference
def causal_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Depthwise causal conv. x (Bt, L, C), w (C, 1, K), b (C,) -> (Bt, L, C)."""
    K, L = w.shape[-1], x.shape[1]
    xp = np.pad(x, ((0, 0), (K - 1, 0), (0, 0)))
    return b + sum(w[:, 0, k] * xp[:, k : k + L] for k in range(K))


def heads_of(Bm: np.ndarray, H: int) -> np.ndarray:
    """B or C (..., G, N) -> (..., H, N): head h reads group h // (H / G)."""
    return np.repeat(Bm, H // Bm.shape[-2], axis=-2)


def ssd_recurrence(x, dt, A, Bm, Cm, D_skip, S0=None):
    """The sequential recurrence. x (Bt, L, H, P); dt (Bt, L, H) after softplus; A (H,) < 0;
    Bm, Cm (Bt, L, G, N); D_skip (H,). Returns y (Bt, L, H, P) and the last state (Bt, H, P, N)."""
    Bt, L, H, P = x.shape
    Bh, Ch = heads_of(Bm, H), heads_of(Cm, H)
    S = np.zeros((Bt, H, P, Bm.shape[-1])) if S0 is None else S0
    ys = []
    for t in range(L):
        decay = np.exp(dt[:, t] * A)  # (Bt, H)
        S = decay[..., None, None] * S + np.einsum("bh,bhp,bhn->bhpn", dt[:, t], x[:, t], Bh[:, t])
        ys.append(np.einsum("bhpn,bhn->bhp", S, Ch[:, t]) + D_skip[:, None] * x[:, t])
    return np.stack(ys, axis=1), S


def ssd_chunked(x, dt, A, Bm, Cm, D_skip, T):
    """The same function in SSD's chunked form (what the fast scans compute), float64: inside
    each chunk of T steps the masked quadratic form, between chunks the state. Any L (the last
    chunk is short). Returns y (Bt, L, H, P) and the last state (Bt, H, P, N)."""
    Bt, L, H, P = x.shape
    Bh, Ch = heads_of(Bm, H), heads_of(Cm, H)
    S = np.zeros((Bt, H, P, Bm.shape[-1]))
    ys = []
    for c0 in range(0, L, T):
        sl = slice(c0, min(L, c0 + T))
        a = np.cumsum(dt[:, sl] * A, axis=1)  # (Bt, t, H): log-decay from the chunk's start
        seg = a[:, :, None, :] - a[:, None, :, :]  # (Bt, t, s, H): Σ_{s<r<=t} Δ_r A
        n = seg.shape[1]
        decay = np.where(np.tril(np.ones((n, n), bool))[None, :, :, None], np.exp(np.minimum(seg, 0.0)), 0.0)
        scores = np.einsum("bthn,bshn->btsh", Ch[:, sl], Bh[:, sl]) * decay  # (L ∘ C B^T)
        y = np.einsum("btsh,bsh,bshp->bthp", scores, dt[:, sl], x[:, sl])  # inside the chunk
        y += np.einsum("bthn,bhpn,bth->bthp", Ch[:, sl], S, np.exp(a))  # from the state entering it
        to_end = np.exp(a[:, -1:] - a)  # (Bt, t, H): decay from step s to the chunk's end
        S = np.exp(a[:, -1])[..., None, None] * S + np.einsum("bsh,bsh,bshp,bshn->bhpn", to_end, dt[:, sl], x[:, sl], Bh[:, sl])
        ys.append(y + D_skip[:, None] * x[:, sl])
    return np.concatenate(ys, axis=1), S


def _mixer_params(w: dict, i: int) -> dict:
    p = f"{LAYERS}{i}.mixer."
    return {k[len(p) :]: v for k, v in w.items() if k.startswith(p)}


def _dims(p: dict, cfg: Config | None):
    """E, H, G, N of one mixer (G from the config: the shapes do not separate it from N)."""
    H = p["A_log"].shape[0]
    E = p["norm.weight"].shape[0]
    G = cfg.ngroups if cfg is not None else 1
    return E, H, G, (p["conv1d.weight"].shape[0] - E) // (2 * G)


def gated_norm(y: np.ndarray, z: np.ndarray, w: np.ndarray, G: int) -> np.ndarray:
    """RMSNormGated (norm_before_gate False): rms(y * silu(z)) over each of G groups of E / G, times w."""
    g = y * silu(z)
    shape = g.shape
    g = g.reshape(*shape[:-1], G, shape[-1] // G)
    g = g / np.sqrt(np.mean(g * g, axis=-1, keepdims=True) + 1e-5)
    return g.reshape(shape) * w


def _split_in(p, h, E, H, G, N):
    zxbcdt = h @ p["in_proj.weight"].T
    z, xBC, dt = zxbcdt[..., :E], zxbcdt[..., E : 2 * E + 2 * G * N], zxbcdt[..., 2 * E + 2 * G * N :]
    assert dt.shape[-1] == H
    return z, xBC, dt


def _ssm_inputs(p, xBC, dt, E, H, G, N):
    """xBC after conv + silu (..., E + 2GN), raw dt (..., H) -> x (..., H, P), Δ (..., H), B, C (..., G, N)."""
    x = xBC[..., :E].reshape(*xBC.shape[:-1], H, E // H)
    Bm = xBC[..., E : E + G * N].reshape(*xBC.shape[:-1], G, N)
    Cm = xBC[..., E + G * N :].reshape(*xBC.shape[:-1], G, N)
    return x, softplus(dt + p["dt_bias"]), Bm, Cm


def mixer(p: dict, h: np.ndarray, cfg: Config | None = None, chunk: int | None = None) -> np.ndarray:
    """h (Bt, L, D) -> (Bt, L, D); ``chunk`` computes the SSD chunked instead of as the recurrence."""
    E, H, G, N = _dims(p, cfg)
    z, xBC, dt = _split_in(p, h, E, H, G, N)
    xBC = silu(causal_conv(xBC, p["conv1d.weight"], p["conv1d.bias"]))
    x, delta, Bm, Cm = _ssm_inputs(p, xBC, dt, E, H, G, N)
    A = -np.exp(p["A_log"])
    y, _ = ssd_chunked(x, delta, A, Bm, Cm, p["D"], chunk) if chunk else ssd_recurrence(x, delta, A, Bm, Cm, p["D"])
    y = gated_norm(y.reshape(*y.shape[:2], E), z, p["norm.weight"], G)
    return y @ p["out_proj.weight"].T


def logits(weights: dict, tokens: np.ndarray, cfg: Config | None = None, chunk: int | None = None) -> np.ndarray:
    """tokens (Bt, L) int -> logits (Bt, L, V), float64. ``cfg`` gives ngroups (default 1)."""
    w = f64(weights)
    emb = w["backbone.embedding.weight"]
    head = w.get("lm_head.weight", emb)  # an untied head, else the embedding
    hidden, residual = emb[tokens], None
    for i in range(n_layers(w, LAYERS)):
        residual = hidden if residual is None else hidden + residual
        hidden = mixer(_mixer_params(w, i), rmsnorm(residual, w[f"{LAYERS}{i}.norm.weight"]), cfg, chunk)
    return rmsnorm(hidden + residual, w["backbone.norm_f.weight"]) @ head.T


def decode_logits(weights: dict, tokens: np.ndarray, cfg: Config | None = None) -> np.ndarray:
    """Token by token with O(1) state per layer: conv (Bt, E + 2GN, K), SSM (Bt, H, P, N)."""
    w = f64(weights)
    emb = w["backbone.embedding.weight"]
    head = w.get("lm_head.weight", emb)  # an untied head, else the embedding
    ps = [_mixer_params(w, i) for i in range(n_layers(w, LAYERS))]
    Bt, L = tokens.shape
    dims = [_dims(p, cfg) for p in ps]
    conv = [np.zeros((Bt, p["conv1d.weight"].shape[0], p["conv1d.weight"].shape[-1])) for p in ps]
    ssm = [np.zeros((Bt, H, E // H, N)) for E, H, G, N in dims]
    out = []
    for t in range(L):
        hidden, residual = emb[tokens[:, t]], None
        for i, p in enumerate(ps):
            E, H, G, N = dims[i]
            residual = hidden if residual is None else hidden + residual
            z, xBC, dt = _split_in(p, rmsnorm(residual, w[f"{LAYERS}{i}.norm.weight"]), E, H, G, N)
            conv[i] = np.concatenate([conv[i][:, :, 1:], xBC[:, :, None]], axis=2)
            xBC = silu(np.einsum("bck,ck->bc", conv[i], p["conv1d.weight"][:, 0]) + p["conv1d.bias"])
            x, delta, Bm, Cm = _ssm_inputs(p, xBC[:, None], dt[:, None], E, H, G, N)
            y, ssm[i] = ssd_recurrence(x, delta, -np.exp(p["A_log"]), Bm, Cm, p["D"], S0=ssm[i])
            hidden = gated_norm(y[:, 0].reshape(Bt, E), z, p["norm.weight"], G) @ p["out_proj.weight"].T
        out.append(rmsnorm(hidden + residual, w["backbone.norm_f.weight"]) @ head.T)
    return np.stack(out, axis=1)


# ---------------------------------------------------------------------------- model FLOPs (ssmbench.flops)
def flops_per_token(c: dict, ctx: float) -> float:
    """Per token: in_proj 2 D (2E + 2GN + H), out_proj 2 E D, the conv 2 (E + 2GN) K, and SSD in
    its chunked form, per head: C·B over the T/2 earlier steps of its chunk on average (T N) and
    their product with x (T P), the state's read and update (4 P N); per layer, plus the tied
    head 2 D V. The chunk is at most the context ``ctx``."""
    D, E, N, K = c["d_model"], c["expand"] * c["d_model"], c["d_state"], c["d_conv"]
    P, G, T = c.get("headdim", 64), c.get("ngroups", 1), c.get("chunk_size", 256)
    H = E // P
    T = min(T, max(1, int(ctx))) if ctx else T
    proj = 2 * D * (2 * E + 2 * G * N + H) + 2 * E * D
    ssd = H * (T * (N + P) + 4 * P * N)
    return c["n_layers"] * (proj + 2 * (E + 2 * G * N) * K + ssd) + 2 * D * c["vocab"]


# ---------------------------------------------------------------------------- training memory (ssmbench.memory_model)
FUSED = ("triton",)  # scans whose layer runs the fused SSD kernels, which keep no (T, T) or (P, N) per-step tensors


def layer_bytes_per_token(c: dict, *, scan: str, act: int, seq_len: int, framework: str) -> float:
    """Activation bytes one layer keeps per token for the backward (``act``: bytes per activation
    element): the in_proj output (2E + 2GN + H), the conv's output, the SSD output, the gated
    norm's input and output, and the residual stream's fp32 copy and 1/rms. The fused SSD keeps
    only its inputs (and fp32 per-chunk states, (H, P, N) per T tokens); the chunked ``ssd`` in
    framework ops keeps its (H, T) decay and score rows per token in fp32 (several of them), and
    the sequential form an fp32 (H, P, N) state per token."""
    D, E, N = c["d_model"], c["expand"] * c["d_model"], c["d_state"]
    P, G, T = c.get("headdim", 64), c.get("ngroups", 1), c.get("chunk_size", 256)
    H = E // P
    T = min(T, seq_len)
    base = 4 * D + (D + (2 * E + 2 * G * N + H) + (E + 2 * G * N) + 3 * E) * act
    if scan in FUSED:
        return base + 4 * H * P * N / T + 4 * 2 * H
    if scan == "sequential":
        return base + 4 * 2 * H * P * N
    return base + 4 * (4 * H * T + 2 * H * P * N / T) + 4 * G * T  # decay, scores, their grads; per-chunk states


# ---------------------------------------------------------------------------- the op alone (ssmbench.ops)
def op_shape(c: dict, batch: int, seq_len: int) -> dict:
    """SSD's B, L, H, P, G, N and its chunk T."""
    P = c.get("headdim", 64)
    return {
        "B": batch,
        "L": seq_len,
        "H": c["expand"] * c["d_model"] // P,
        "P": P,
        "G": c.get("ngroups", 1),
        "N": c["d_state"],
        "T": c.get("chunk_size", 256),
    }


def op_inputs(s: dict, seed: int) -> dict:
    """mamba_chunk_scan_combined's inputs (dt_softplus, D per head, no z), float32: x (B, L, H, P),
    dt (B, L, H) before dt_bias, A (H,) in [-16, -1], Bm, Cm (B, L, G, N), D, dt_bias (H,), dout
    (B, L, H, P); and ``chunk_size`` (an int: each framework's op takes it out)."""
    rng = np.random.default_rng(seed)
    B, L, H, P, G, N = s["B"], s["L"], s["H"], s["P"], s["G"], s["N"]

    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    dt0 = np.exp(rng.uniform(math.log(1e-3), math.log(0.1), H))  # Mamba-2's dt init through dt_bias
    return {
        "x": r(B, L, H, P),
        "dt": r(B, L, H, scale=0.5),
        "A": -rng.uniform(1, 16, H).astype(np.float32),
        "Bm": r(B, L, G, N),
        "Cm": r(B, L, G, N),
        "D": r(H),
        "dt_bias": (dt0 + np.log(-np.expm1(-dt0))).astype(np.float32),
        "dout": r(B, L, H, P),
        "chunk_size": s["T"],
    }


def op_min_bytes(mode: str, s: dict, element_bytes: int) -> int:
    """Forward reads x, dt, B, C and writes y; train also reads them again with dout and writes
    dx, ddt, dB, dC."""
    blhp, blh, blgn = s["B"] * s["L"] * s["H"] * s["P"], s["B"] * s["L"] * s["H"], s["B"] * s["L"] * s["G"] * s["N"]
    fwd = 2 * blhp + blh + 2 * blgn
    return element_bytes * (fwd if mode == "forward" else fwd + 3 * blhp + 2 * blh + 4 * blgn)
