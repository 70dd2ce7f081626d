"""The Transformer baseline (``--arch transformer``): GPT-2 style, pre-LayerNorm, causal
multi-head attention, GELU MLP, tied embeddings and fixed sinusoidal positions (no position
parameters, so any length runs), at the Mamba model's width with the depth whose parameter
count is nearest it, as in the Mamba paper's comparisons. Its config, parameter count,
initialisation, float64 reference, and what reports and the scan suite need of it.

Names follow GPT-2's under ``transformer.`` with torch's Linear layout (out_features, in_features).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .common import f64, gelu_tanh, layernorm, n_layers

NAME = "transformer"
FIXED_SCAN = "attention"  # recorded as its scan in every mode
DECODE_SCAN = "attention"
STATE_GROWS = True  # its KV cache grows a token a step: every timed decode step starts from the prefix's
OP = "attention"  # what the scan suite times alone for it: causal attention at the same length
OP_ARGS = ("q", "k", "v")
OP_FP32 = ()
LAYERS = "transformer.h."


@dataclass(frozen=True)
class Config:
    vocab: int = 65  # V
    d_model: int = 256  # D
    n_layers: int = 2  # Transformer blocks
    n_head: int = 4  # attention heads; head size D / n_head
    d_mlp: int = 0  # MLP hidden width; 0 means 4 * D
    matched_mamba_layers: int = 0  # the Mamba depth whose parameter count this one matches

    def __post_init__(self):
        if self.d_mlp == 0:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------- parameters
def layer_params(D: int, H: int) -> int:
    """qkv (3D*D + 3D) + proj (D*D + D) + fc (H*D + H) + fc2 (D*H + D) + 2 LayerNorms (4D)."""
    return 4 * D * D + 2 * D * H + 9 * D + H


def params(t: Config) -> int:
    return t.vocab * t.d_model + t.n_layers * layer_params(t.d_model, t.d_mlp) + 2 * t.d_model


def default_heads(d_model: int) -> int:
    """Head size 64 where it divides D, else the largest head count whose size is >= 32, else 1."""
    if d_model % 64 == 0:
        return d_model // 64
    for h in range(d_model // 32, 0, -1):
        if d_model % h == 0:
            return h
    return 1


MATCH_TOLERANCE = 0.10  # the baseline's parameter count is within 10% of Mamba's


def matched(model) -> Config:
    """The baseline at the same width as ``model`` (a Mamba config): the depth whose parameter
    count (with a 4x MLP) is closest to Mamba's. Whole layers move the count in steps of
    ~12 D^2, so where the closest depth is still more than 10% off, the MLP hidden width is set
    (a multiple of 8) to close the gap."""
    from .mamba import params as mamba_params

    D = model.d_model
    target = mamba_params(model)
    fixed = model.vocab * D + 2 * D
    per = layer_params(D, 4 * D)
    n = max(1, round((target - fixed) / per))
    n = min({max(1, n - 1), n, n + 1}, key=lambda k: abs(fixed + k * per - target))
    H = 4 * D
    if abs((fixed + n * per) / target - 1) > MATCH_TOLERANCE:
        # per-layer count is 4D^2 + 9D + H (2D + 1): solve for H
        H = ((target - fixed) / n - 4 * D * D - 9 * D) / (2 * D + 1)
        H = max(8, int(round(H / 8)) * 8)
    return Config(vocab=model.vocab, d_model=D, n_layers=n, n_head=default_heads(D), d_mlp=H, matched_mamba_layers=model.n_layers)


def config_for(model, **settings) -> Config:
    """This architecture's config for a run whose model is a Mamba config: matched to it."""
    return matched(model)


# ---------------------------------------------------------------------------- weights
def init(cfg: Config, seed: int = 0, jitter: bool = False) -> dict:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers)."""
    rng = np.random.default_rng(seed)
    D, H = cfg.d_model, cfg.d_mlp

    def normal(shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def ln(name):
        if jitter:
            return {name + ".weight": rng.uniform(0.5, 1.5, D).astype(np.float32), name + ".bias": normal(D, 0.1)}
        return {name + ".weight": np.ones(D, np.float32), name + ".bias": np.zeros(D, np.float32)}

    bias_std = 0.02 if jitter else 0.0
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layers)
    w = {"transformer.wte.weight": normal((cfg.vocab, D))}
    for i in range(cfg.n_layers):
        p = f"{LAYERS}{i}."
        w.update(ln(p + "ln_1"))
        w.update(ln(p + "ln_2"))
        w[p + "attn.c_attn.weight"] = normal((3 * D, D), 0.1 if jitter else 0.02)
        w[p + "attn.c_attn.bias"] = normal(3 * D, bias_std)
        w[p + "attn.c_proj.weight"] = normal((D, D), proj_std)
        w[p + "attn.c_proj.bias"] = normal(D, bias_std)
        w[p + "mlp.c_fc.weight"] = normal((H, D))
        w[p + "mlp.c_fc.bias"] = normal(H, bias_std)
        w[p + "mlp.c_proj.weight"] = normal((D, H), proj_std)
        w[p + "mlp.c_proj.bias"] = normal(D, bias_std)
    w.update(ln("transformer.ln_f"))
    return w


def owns(weights: dict) -> bool:
    return "transformer.wte.weight" in weights


def infer_config(weights: dict) -> Config:
    V, D = weights["transformer.wte.weight"].shape
    n = n_layers(weights, LAYERS)
    H = weights[f"{LAYERS}0.mlp.c_fc.weight"].shape[0] if n else 4 * D
    return Config(vocab=V, d_model=D, n_layers=n, n_head=default_heads(D), d_mlp=H)


def label(c: dict) -> str:
    return f"D{c.get('d_model')} L{c.get('n_layers')} H{c.get('n_head')}"


# ---------------------------------------------------------------------------- the float64 reference
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


def _block(w, i, x, H, kv=None):
    """x (Bt, L, D); kv: optional (k, v) cache from earlier positions. Returns x, (k, v)."""
    p = f"{LAYERS}{i}."
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


def logits(weights: dict, tokens: np.ndarray, cfg: Config) -> np.ndarray:
    w = f64(weights)
    emb = w["transformer.wte.weight"]
    x = emb[tokens] + sinusoidal_positions(tokens.shape[1], emb.shape[1])
    for i in range(cfg.n_layers):
        x, _ = _block(w, i, x, cfg.n_head)
    return layernorm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]) @ emb.T


def decode_logits(weights: dict, tokens: np.ndarray, cfg: Config) -> np.ndarray:
    w = f64(weights)
    emb = w["transformer.wte.weight"]
    caches = [None] * cfg.n_layers
    out = []
    for t in range(tokens.shape[1]):
        x = emb[tokens[:, t : t + 1]] + sinusoidal_positions(1, emb.shape[1], offset=t)
        for i in range(cfg.n_layers):
            x, caches[i] = _block(w, i, x, cfg.n_head, caches[i])
        out.append(layernorm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]) @ emb.T)
    return np.concatenate(out, axis=1)


# ---------------------------------------------------------------------------- model FLOPs (ssmbench.flops)
def flops_per_token(c: dict, ctx: float) -> float:
    """Per token: q, k, v, out and the MLP 2 (4 D² + 2 D·d_mlp), q kᵀ and p v over ``ctx``
    visible keys 2·2 D ctx, per layer, plus the tied head 2 D V."""
    D = c["d_model"]
    return c["n_layers"] * (2 * (4 * D * D + 2 * D * c["d_mlp"]) + 2 * 2 * D * ctx) + 2 * D * c["vocab"]


# ---------------------------------------------------------------------------- training memory (ssmbench.memory_model)
def layer_bytes_per_token(c: dict, *, scan: str, act: int, seq_len: int, framework: str) -> float:
    """Activation bytes one layer keeps per token: the block's (12 D + 2 d_mlp) activations, and
    where attention is materialised (not torch's SDPA) the fp32 (H, L) scores and probabilities."""
    D = c["d_model"]
    H, heads = c.get("d_mlp") or 4 * D, c.get("n_head") or 1
    per_layer = (12 * D + 2 * H) * act
    if framework != "torch":
        per_layer += 2 * heads * seq_len * 4
    return per_layer


# ---------------------------------------------------------------------------- the op alone (ssmbench.ops)
def op_shape(c: dict, batch: int, seq_len: int) -> dict:
    """Causal attention's B, L, H, hd."""
    return {"B": batch, "L": seq_len, "H": c["n_head"], "hd": c["d_model"] // c["n_head"]}


def op_inputs(s: dict, seed: int) -> dict:
    """q, k, v and dout (B, H, L, hd), float32."""
    rng = np.random.default_rng(seed)
    shape = (s["B"], s["H"], s["L"], s["hd"])
    return {k: rng.standard_normal(shape, dtype=np.float32) for k in ("q", "k", "v", "dout")}


def op_min_bytes(mode: str, s: dict, element_bytes: int) -> int:
    """Forward reads q, k, v and writes o; the backward reads q, k, v, o, do and writes dq, dk, dv."""
    return element_bytes * s["B"] * s["L"] * s["H"] * s["hd"] * (4 if mode == "forward" else 12)
