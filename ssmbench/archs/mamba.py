"""Mamba-1 (``--arch mamba``), exactly as mamba-ssm's MambaLMHeadModel (Gu & Dao 2023,
arXiv 2312.00752): its config, parameter count, initialisation, the float64 NumPy reference
(the one statement of the math every backend must match), and what reports and the scan suite
need of it.

Glossary (symbol in the paper -> name here, shape):
    V  vocab size                       B  batch (``Bt`` where it would clash with the SSM's B)
    D  d_model, residual width          L  sequence length
    E  d_inner = expand * D             N  d_state, SSM state size per channel
    K  d_conv, causal conv width        R  dt_rank, ceil(D / 16)
    x  input to the SSM  (Bt, L, E)     z  gate branch (Bt, L, E)
    Δ  dt, step size     (Bt, L, E)     A  = -exp(A_log)  (E, N), the continuous state matrix (diagonal)
    B  input matrix      (Bt, L, N)     C  output matrix (Bt, L, N)       D_skip  (E,) skip weight
    Ā = exp(Δ A)  (zero-order hold),  B̄ x ≈ Δ B x (the simplified Euler form mamba-ssm uses)
    h_t = Ā_t h_{t-1} + Δ_t B_t x_t      (Bt, E, N)      y_t = C_t · h_t + D_skip x_t

Block i (pre-norm, residual carried separately as in mamba-ssm):
    residual = hidden + residual;  hidden = mixer(RMSNorm(residual))
    logits = RMSNorm_f(hidden + residual) @ embedding.T
Mixer: x, z = in_proj(h); x = silu(causal_conv(x)); dt, B, C = x_proj(x);
    dt = softplus(dt_proj(dt)); the scan above; out = out_proj(y * silu(z)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from .common import f64, n_layers, rmsnorm, silu, softplus

NAME = "mamba"
FIXED_SCAN = None  # its parallel path takes the backend's scans (--scan)
DECODE_SCAN = "recurrent"  # what a decode point records as its scan
STATE_GROWS = False  # its decode state is O(1) in the context: a timed decode step may feed it back
OP = "scan"  # what the scan suite times alone for it
OP_ARGS = ("x", "dt", "A", "Bm", "Cm", "D", "z", "dt_bias")  # its inputs, in the order the op takes them
OP_FP32 = ("A", "D", "dt_bias")  # inputs kept in float32; the others (and dout) are in the run's dtype
LAYERS = "backbone.layers."


@dataclass(frozen=True)
class Config:
    vocab: int = 65  # V: vocabulary size (tied embedding / LM head)
    d_model: int = 256  # D: residual stream width
    n_layers: int = 4  # Mamba blocks (the Transformer baseline derives its own depth)
    d_state: int = 16  # N: SSM state size per channel
    d_conv: int = 4  # K: causal depthwise conv width
    expand: int = 2  # E = expand * D: inner (mixer) width
    dt_rank: int = 0  # R: rank of the dt projection; 0 means auto, ceil(D / 16)

    def __post_init__(self):
        if self.dt_rank == 0:
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16))

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **kw) -> Config:
        kw = {k: v for k, v in kw.items() if v is not None}
        if "d_model" in kw and "dt_rank" not in kw:
            kw["dt_rank"] = 0  # keep "auto" following the new width
        return replace(self, **kw)


def config_for(model: Config, **settings) -> Config:
    """This architecture's config for a run whose model is ``model`` (it has no own settings)."""
    return model


# ---------------------------------------------------------------------------- parameters
def layer_params(c: Config) -> int:
    """SPEC: 3*D*E + E*(2R + 3N + K + 3) + D per layer."""
    D, E, R, N, K = c.d_model, c.d_inner, c.dt_rank, c.d_state, c.d_conv
    return 3 * D * E + E * (2 * R + 3 * N + K + 3) + D


def params(c: Config) -> int:
    """Embedding (tied head) + layers + final norm."""
    return c.vocab * c.d_model + c.n_layers * layer_params(c) + c.d_model


# ---------------------------------------------------------------------------- weights
def init(cfg: Config, seed: int = 0, jitter: bool = False) -> dict:
    """mamba-ssm's initialisation: Linear U(+-1/sqrt(fan_in)), embedding N(0, 0.02), dt bias so
    softplus(bias) is log-uniform in [1e-3, 1e-1], A_log = log(1..N), D = 1, out_proj scaled by
    1/sqrt(n_layers). ``jitter`` also randomises norms, D and A so tests exercise every weight."""
    rng = np.random.default_rng(seed)
    D, E, N, K, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv, cfg.dt_rank

    def unif(shape, bound):
        return ((rng.random(shape, dtype=np.float32) * 2 - 1) * bound).astype(np.float32)

    w = {"backbone.embedding.weight": (rng.standard_normal((cfg.vocab, D), dtype=np.float32) * 0.02)}
    for i in range(cfg.n_layers):
        p = f"{LAYERS}{i}."
        dt = np.exp(rng.random(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = np.maximum(dt, 1e-4)
        A = np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))
        if jitter:
            A = A * np.exp(rng.uniform(-0.5, 0.5, size=(E, N)))
        w.update(
            {
                p + "norm.weight": np.ones(D, np.float32),
                p + "mixer.in_proj.weight": unif((2 * E, D), 1 / math.sqrt(D)),
                p + "mixer.conv1d.weight": unif((E, 1, K), 1 / math.sqrt(K)),
                p + "mixer.conv1d.bias": unif((E,), 1 / math.sqrt(K)),
                p + "mixer.x_proj.weight": unif((R + 2 * N, E), 1 / math.sqrt(E)),
                p + "mixer.dt_proj.weight": unif((E, R), R**-0.5),
                p + "mixer.dt_proj.bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
                p + "mixer.A_log": np.log(A).astype(np.float32),
                p + "mixer.D": np.ones(E, np.float32),
                p + "mixer.out_proj.weight": unif((D, E), 1 / math.sqrt(E)) / math.sqrt(cfg.n_layers),
            }
        )
        if jitter:
            w[p + "norm.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32)
            w[p + "mixer.D"] = rng.standard_normal(E).astype(np.float32)
    w["backbone.norm_f.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32) if jitter else np.ones(D, np.float32)
    return w


def owns(weights: dict) -> bool:
    """Whether a state dict is this architecture's (by its names)."""
    return "backbone.embedding.weight" in weights and f"{LAYERS}0.mixer.x_proj.weight" in weights


def infer_config(weights: dict) -> Config:
    """The config from the weight shapes alone."""
    V, D = weights["backbone.embedding.weight"].shape
    p = f"{LAYERS}0.mixer."
    E, N = weights[p + "A_log"].shape
    K = weights[p + "conv1d.weight"].shape[-1]
    R = weights[p + "dt_proj.weight"].shape[1]
    if E % D:
        raise ValueError(f"d_inner {E} is not a multiple of d_model {D}")
    return Config(vocab=V, d_model=D, n_layers=n_layers(weights, LAYERS), d_state=N, d_conv=K, expand=E // D, dt_rank=R)


def label(c: dict) -> str:
    """A short model label for tables."""
    return f"D{c.get('d_model')} L{c.get('n_layers')} N{c.get('d_state')}"


# ---------------------------------------------------------------------------- the float64 reference
def causal_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Depthwise causal conv. x (Bt, L, E), w (E, 1, K), b (E,) -> (Bt, L, E).

    out[t] = b + sum_k w[:, 0, k] * x[t - (K-1) + k]   (zeros before the start)
    """
    K = w.shape[-1]
    L = x.shape[1]
    xp = np.pad(x, ((0, 0), (K - 1, 0), (0, 0)))
    return b + sum(w[:, 0, k] * xp[:, k : k + L] for k in range(K))


def selective_scan(x, dt, A, Bm, Cm, D_skip, h0=None):
    """The sequential recurrence. x, dt (Bt, L, E); A (E, N); Bm, Cm (Bt, L, N); D_skip (E,).

    Returns y (Bt, L, E) and the last state h (Bt, E, N).
    """
    Bt, L, E = x.shape
    h = np.zeros((Bt, E, A.shape[1])) if h0 is None else h0
    ys = []
    for t in range(L):
        dA = np.exp(np.einsum("be,en->ben", dt[:, t], A))  # Ā_t
        dBx = np.einsum("be,bn,be->ben", dt[:, t], Bm[:, t], x[:, t])  # Δ_t B_t x_t
        h = dA * h + dBx
        ys.append(np.einsum("ben,bn->be", h, Cm[:, t]) + D_skip * x[:, t])
    return np.stack(ys, axis=1), h


def _mixer_params(w: dict, i: int) -> dict:
    p = f"{LAYERS}{i}.mixer."
    return {k[len(p) :]: v for k, v in w.items() if k.startswith(p)}


def _ssm_inputs(p: dict, xc: np.ndarray):
    """xc (Bt, L, E) after conv+silu -> dt (Bt, L, E), Bm, Cm (Bt, L, N), A (E, N)."""
    R = p["dt_proj.weight"].shape[1]
    N = p["A_log"].shape[1]
    dbc = xc @ p["x_proj.weight"].T  # (Bt, L, R + 2N)
    dt, Bm, Cm = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
    dt = softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    return dt, Bm, Cm, -np.exp(p["A_log"])


def mixer(p: dict, h: np.ndarray) -> np.ndarray:
    """h (Bt, L, D) -> (Bt, L, D)."""
    E = p["D"].shape[0]
    xz = h @ p["in_proj.weight"].T  # (Bt, L, 2E)
    x, z = xz[..., :E], xz[..., E:]
    x = silu(causal_conv(x, p["conv1d.weight"], p["conv1d.bias"]))
    dt, Bm, Cm, A = _ssm_inputs(p, x)
    y, _ = selective_scan(x, dt, A, Bm, Cm, p["D"])
    return (y * silu(z)) @ p["out_proj.weight"].T


def logits(weights: dict, tokens: np.ndarray, cfg: Config | None = None) -> np.ndarray:
    """tokens (Bt, L) int -> logits (Bt, L, V), float64 (the depth is read off the weights)."""
    w = f64(weights)
    emb = w["backbone.embedding.weight"]
    head = w.get("lm_head.weight", emb)  # an untied head, else the embedding
    hidden, residual = emb[tokens], None
    for i in range(n_layers(w, LAYERS)):
        residual = hidden if residual is None else hidden + residual
        normed = rmsnorm(residual, w[f"{LAYERS}{i}.norm.weight"])
        hidden = mixer(_mixer_params(w, i), normed)
    residual = hidden + residual
    return rmsnorm(residual, w["backbone.norm_f.weight"]) @ head.T


def decode_logits(weights: dict, tokens: np.ndarray, cfg: Config | None = None) -> np.ndarray:
    """Token by token through the recurrent step with O(1) state per layer:
    conv_state (Bt, E, K) holds the last K conv inputs, ssm_state h (Bt, E, N)."""
    w = f64(weights)
    emb = w["backbone.embedding.weight"]
    head = w.get("lm_head.weight", emb)  # an untied head, else the embedding
    params_ = [_mixer_params(w, i) for i in range(n_layers(w, LAYERS))]
    Bt, L = tokens.shape
    conv = [np.zeros((Bt, p["D"].shape[0], p["conv1d.weight"].shape[-1])) for p in params_]
    ssm = [np.zeros((Bt, p["D"].shape[0], p["A_log"].shape[1])) for p in params_]
    out = []
    for t in range(L):
        hidden, residual = emb[tokens[:, t]], None  # (Bt, D)
        for i, p in enumerate(params_):
            residual = hidden if residual is None else hidden + residual
            hn = rmsnorm(residual, w[f"{LAYERS}{i}.norm.weight"])
            E = p["D"].shape[0]
            xz = hn @ p["in_proj.weight"].T
            x, z = xz[:, :E], xz[:, E:]
            conv[i] = np.concatenate([conv[i][:, :, 1:], x[:, :, None]], axis=2)
            x = silu(np.einsum("bek,ek->be", conv[i], p["conv1d.weight"][:, 0]) + p["conv1d.bias"])
            dt, Bm, Cm, A = _ssm_inputs(p, x[:, None])
            y, ssm[i] = selective_scan(x[:, None], dt, A, Bm, Cm, p["D"], h0=ssm[i])
            hidden = (y[:, 0] * silu(z)) @ p["out_proj.weight"].T
        residual = hidden + residual
        out.append(rmsnorm(residual, w["backbone.norm_f.weight"]) @ head.T)
    return np.stack(out, axis=1)


# ---------------------------------------------------------------------------- the chunked scans' budget
CHUNK_LOG_BUDGET = 40.0  # max |Σ Δ A| inside one chunk: exp(40) = 2.4e17, far from fp32's 3.4e38


def chunk_length(max_step: float, L: int) -> int:
    """The chunked (log-space) scans' chunk: the largest T with T * max_step <= CHUNK_LOG_BUDGET,
    where max_step bounds |Δ A| of one step (max Δ times max |A|). Every framework's chunked scan
    chooses its chunk here, so exp(±c) of a chunk's cumulative log-decay c never leaves fp32."""
    if not math.isfinite(max_step):
        raise FloatingPointError("non-finite dt: cannot choose a chunk length")
    max_step = min(max_step, CHUNK_LOG_BUDGET)
    return max(1, min(L, int(CHUNK_LOG_BUDGET / max_step) if max_step > 0 else L))


def op_chunk(inputs: dict) -> int:
    """The chunked scan's chunk for the op alone's inputs (op_inputs): from the largest step,
    softplus(dt + dt_bias), times the largest |A|."""
    delta_max = float(np.max(np.logaddexp(0.0, inputs["dt"] + inputs["dt_bias"])))
    return chunk_length(delta_max * float(np.max(-inputs["A"])), inputs["x"].shape[1])


# ---------------------------------------------------------------------------- model FLOPs (ssmbench.flops)
def flops_per_token(c: dict, ctx: float) -> float:
    """Per token: the five projections 2 (D·2E + E·(R + 2N) + R·E + E·D), the causal conv 2 E K
    and the scan 9 E N (Δ A and its exp, Δ B x, the update, the C contraction), per layer, plus
    the tied head 2 D V. Independent of the context ``ctx``."""
    D, E, N, K, R = c["d_model"], c["expand"] * c["d_model"], c["d_state"], c["d_conv"], c["dt_rank"]
    proj = 2 * (D * 2 * E + E * (R + 2 * N) + R * E + E * D)
    return c["n_layers"] * (proj + 2 * E * K + 9 * E * N) + 2 * D * c["vocab"]


# ---------------------------------------------------------------------------- training memory (ssmbench.memory_model)
SCAN_STATES = {  # fp32 (B, L, E, N) tensors kept per Mamba layer for the backward pass
    "sequential": 3,  # exp(dt A), dt B x, and the stacked states h_t
    "chunked": 5,  # seed 004's estimate for a chunked log-space scan
    "parallel": 5,  # log-space cumulative sums: exp(dt A), its cumsum, dt B x, ratios, h
    "associative": 4,  # exp(dt A) and dt B x, plus the up-sweep's pairs (about 2 more)
    "pallas": 1 / 8,  # jax-cuda's fused kernels keep the state entering every 8th step (pallas_scan.TC)
}
DEFAULT_SCAN_STATES = 5
FUSED = ("triton",)  # scans whose layer runs fused kernels, which keep no (B, L, E, N) states


def layer_bytes_per_token(c: dict, *, scan: str, act: int, seq_len: int, framework: str) -> float:
    """Activation bytes one layer keeps per token for the backward (``act``: bytes per
    activation element). The fused layer keeps its inputs, the residual and 1/rms; the others
    also keep SCAN_STATES fp32 (B, L, E, N) tensors."""
    D = c["d_model"]
    E, N = c["expand"] * D, c["d_state"]
    R = c.get("dt_rank") or -(-D // 16)
    if scan in FUSED:
        return 4 * D + (D + 5 * E + R + 2 * N) * act
    return (9 * E + 3 * D + R + 2 * N) * act + SCAN_STATES.get(scan, DEFAULT_SCAN_STATES) * E * N * 4


# ---------------------------------------------------------------------------- the op alone (ssmbench.ops)
def op_shape(c: dict, batch: int, seq_len: int) -> dict:
    """The selective scan's B, L, E, N."""
    return {"B": batch, "L": seq_len, "E": c["expand"] * c["d_model"], "N": c["d_state"]}


def op_inputs(s: dict, seed: int) -> dict:
    """mamba-ssm's selective_scan_fn inputs, float32: x, dt, z (B, L, E); A (E, N); Bm, Cm
    (B, L, N); D, dt_bias (E,); and dout (B, L, E)."""
    rng = np.random.default_rng(seed)
    B, L, E, N = s["B"], s["L"], s["E"], s["N"]

    def r(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape, dtype=np.float32) * scale + shift).astype(np.float32)

    return {
        "x": r(B, L, E),
        "dt": r(B, L, E, scale=0.5, shift=-1.0),  # softplus(dt + dt_bias) about 0.3, as Mamba's init gives
        "A": -np.exp(r(E, N, scale=0.5)),
        "Bm": r(B, L, N),
        "Cm": r(B, L, N),
        "D": r(E),
        "z": r(B, L, E),
        "dt_bias": r(E, scale=0.5),
        "dout": r(B, L, E),
    }


def op_min_bytes(mode: str, s: dict, element_bytes: int) -> int:
    """The memory floor's bytes: forward reads x, dt, z, B, C and writes out; train also reads
    them again with dout and writes dx, ddt, dz, dB, dC."""
    ble, bln = s["B"] * s["L"] * s["E"], s["B"] * s["L"] * s["N"]
    return element_bytes * (4 * ble + 2 * bln if mode == "forward" else 11 * ble + 6 * bln)
