"""The float64 NumPy reference: the one statement of the model math every backend must match.

Mamba-1 exactly as mamba-ssm's MambaLMHeadModel (Gu & Dao 2023, arXiv 2312.00752).

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

The Transformer baseline (GPT-2 style, see config.TransformerConfig) is stated here too.
"""

from __future__ import annotations

import numpy as np

from .config import ModelConfig, TransformerConfig

EPS_RMS = 1e-5
EPS_LN = 1e-5


# ---------------------------------------------------------------------------- shared pieces
def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float = EPS_RMS) -> np.ndarray:
    """x (..., D), w (D,) -> x / sqrt(mean(x^2) + eps) * w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = EPS_LN) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _f64(weights: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


# ---------------------------------------------------------------------------- Mamba
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


def _mixer_params(w: dict, i: int):
    p = f"backbone.layers.{i}.mixer."
    return {k[len(p) :]: v for k, v in w.items() if k.startswith(p)}


def _ssm_inputs(p: dict, xc: np.ndarray):
    """xc (Bt, L, E) after conv+silu -> dt (Bt, L, E), Bm, Cm (Bt, L, N), A (E, N)."""
    R = p["dt_proj.weight"].shape[1]
    N = p["A_log"].shape[1]
    dbc = xc @ p["x_proj.weight"].T  # (Bt, L, R + 2N)
    dt, Bm, Cm = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
    dt = softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    return dt, Bm, Cm, -np.exp(p["A_log"])


def mamba_mixer(p: dict, h: np.ndarray) -> np.ndarray:
    """h (Bt, L, D) -> (Bt, L, D)."""
    E = p["D"].shape[0]
    xz = h @ p["in_proj.weight"].T  # (Bt, L, 2E)
    x, z = xz[..., :E], xz[..., E:]
    x = silu(causal_conv(x, p["conv1d.weight"], p["conv1d.bias"]))
    dt, Bm, Cm, A = _ssm_inputs(p, x)
    y, _ = selective_scan(x, dt, A, Bm, Cm, p["D"])
    return (y * silu(z)) @ p["out_proj.weight"].T


def n_mamba_layers(w: dict) -> int:
    idx = {int(k.split(".")[2]) for k in w if k.startswith("backbone.layers.")}
    return max(idx) + 1 if idx else 0


def mamba_logits(weights: dict, tokens: np.ndarray) -> np.ndarray:
    """tokens (Bt, L) int -> logits (Bt, L, V), float64."""
    w = _f64(weights)
    emb = w["backbone.embedding.weight"]
    hidden, residual = emb[tokens], None
    for i in range(n_mamba_layers(w)):
        residual = hidden if residual is None else hidden + residual
        normed = rmsnorm(residual, w[f"backbone.layers.{i}.norm.weight"])
        hidden = mamba_mixer(_mixer_params(w, i), normed)
    residual = hidden + residual
    return rmsnorm(residual, w["backbone.norm_f.weight"]) @ emb.T


def mamba_decode_logits(weights: dict, tokens: np.ndarray) -> np.ndarray:
    """Token by token through the recurrent step with O(1) state per layer:
    conv_state (Bt, E, K) holds the last K conv inputs, ssm_state h (Bt, E, N)."""
    w = _f64(weights)
    emb = w["backbone.embedding.weight"]
    n = n_mamba_layers(w)
    params = [_mixer_params(w, i) for i in range(n)]
    Bt, L = tokens.shape
    conv = [np.zeros((Bt, p["D"].shape[0], p["conv1d.weight"].shape[-1])) for p in params]
    ssm = [np.zeros((Bt, p["D"].shape[0], p["A_log"].shape[1])) for p in params]
    out = []
    for t in range(L):
        hidden, residual = emb[tokens[:, t]], None  # (Bt, D)
        for i, p in enumerate(params):
            residual = hidden if residual is None else hidden + residual
            hn = rmsnorm(residual, w[f"backbone.layers.{i}.norm.weight"])
            E = p["D"].shape[0]
            xz = hn @ p["in_proj.weight"].T
            x, z = xz[:, :E], xz[:, E:]
            conv[i] = np.concatenate([conv[i][:, :, 1:], x[:, :, None]], axis=2)
            x = silu(np.einsum("bek,ek->be", conv[i], p["conv1d.weight"][:, 0]) + p["conv1d.bias"])
            dt, Bm, Cm, A = _ssm_inputs(p, x[:, None])
            y, ssm[i] = selective_scan(x[:, None], dt, A, Bm, Cm, p["D"], h0=ssm[i])
            hidden = (y[:, 0] * silu(z)) @ p["out_proj.weight"].T
        residual = hidden + residual
        out.append(rmsnorm(residual, w["backbone.norm_f.weight"]) @ emb.T)
    return np.stack(out, axis=1)


# ---------------------------------------------------------------------------- Transformer
def sinusoidal_positions(L: int, D: int, offset: int = 0) -> np.ndarray:
    """(L, D): [sin(p * f_i) | cos(p * f_i)], f_i = 10000^(-i / (D//2)); a zero column if D is odd."""
    half = D // 2
    freqs = 10000.0 ** (-np.arange(half) / max(half, 1))
    ang = np.arange(offset, offset + L)[:, None] * freqs[None]
    pe = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    return np.pad(pe, ((0, 0), (0, D - 2 * half)))


def _attention(q, k, v):
    """q (Bt, H, Lq, hd), k, v (Bt, H, Lk, hd); query j sits at key position Lk - Lq + j (causal)."""
    Lq, Lk, hd = q.shape[2], k.shape[2], q.shape[3]
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    mask = np.arange(Lk)[None, :] > (Lk - Lq + np.arange(Lq))[:, None]
    s = np.where(mask, -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)) @ v


def _gpt_block(w, i, x, H, kv=None):
    """x (Bt, L, D); kv: optional (k, v) cache from earlier positions. Returns x, (k, v)."""
    p = f"transformer.h.{i}."
    Bt, L, D = x.shape
    a = layernorm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
    qkv = a @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
    q, k, v = (t.reshape(Bt, L, H, D // H).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
    if kv is not None:
        k, v = np.concatenate([kv[0], k], 2), np.concatenate([kv[1], v], 2)
    o = _attention(q, k, v).transpose(0, 2, 1, 3).reshape(Bt, L, D)
    x = x + o @ w[p + "attn.c_proj.weight"].T + w[p + "attn.c_proj.bias"]
    m = layernorm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
    m = gelu_tanh(m @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"])
    return x + m @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"], (k, v)


def transformer_logits(weights: dict, tokens: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
    w = _f64(weights)
    emb = w["transformer.wte.weight"]
    x = emb[tokens] + sinusoidal_positions(tokens.shape[1], emb.shape[1])
    for i in range(cfg.n_layers):
        x, _ = _gpt_block(w, i, x, cfg.n_head)
    return layernorm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]) @ emb.T


def transformer_decode_logits(weights: dict, tokens: np.ndarray, cfg: TransformerConfig) -> np.ndarray:
    w = _f64(weights)
    emb = w["transformer.wte.weight"]
    caches = [None] * cfg.n_layers
    out = []
    for t in range(tokens.shape[1]):
        x = emb[tokens[:, t : t + 1]] + sinusoidal_positions(1, emb.shape[1], offset=t)
        for i in range(cfg.n_layers):
            x, caches[i] = _gpt_block(w, i, x, cfg.n_head, caches[i])
        out.append(layernorm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]) @ emb.T)
    return np.concatenate(out, axis=1)


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-token cross-entropy. logits (Bt, L, V), targets (Bt, L)."""
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return float((lse - picked).mean())


def logits(arch: str, weights: dict, tokens: np.ndarray, tcfg: TransformerConfig | None = None):
    return mamba_logits(weights, tokens) if arch == "mamba" else transformer_logits(weights, tokens, tcfg)


def decode_logits(arch: str, weights: dict, tokens: np.ndarray, tcfg: TransformerConfig | None = None):
    if arch == "mamba":
        return mamba_decode_logits(weights, tokens)
    return transformer_decode_logits(weights, tokens, tcfg)


__all__ = ["ModelConfig", "TransformerConfig", "logits", "decode_logits", "cross_entropy"]
