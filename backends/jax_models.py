"""The JAX models: Mamba (forward, decode step) and the Transformer baseline, as pure functions
of a dict of arrays named as mamba-ssm's state dict (GPT-2's for the baseline), so each is
ssmbench.reference's function line for line. jax_backend.py jits them; the scans are in
jax_scans.py.

Mixed precision: matmuls run in the run's dtype (``_linear``), the residual stream, norms,
softmax and the SSM state in fp32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from ssmbench.backends.jax_scans import SCAN_FNS, _sl, scan_sequential


# ============================================================================ shared pieces
def _rmsnorm(x, w, eps=1e-5):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * w


def _layernorm(x, w, b, eps=1e-5):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def _linear(x, w, dtype, b=None):
    """x @ w.T in the compute dtype (w is (out, in) as in torch)."""
    y = jnp.einsum("...i,oi->...o", x.astype(dtype), w.astype(dtype))
    return y if b is None else y + b.astype(dtype)


def _split(x, sizes, axis=-1):
    out, start = [], 0
    for n in sizes:
        out.append(_sl(x, start, n, axis))
        start += n
    return out


# ============================================================================ Mamba
def _mixer_inputs(p, i, h, dtype):
    """h (B, L, D) -> x after conv + silu (B, L, E) fp32, z (B, L, E), conv input (B, L, E)."""
    pre = f"backbone.layers.{i}.mixer."
    E = p[pre + "D"].shape[0]
    x, z = _split(_linear(h, p[pre + "in_proj.weight"], dtype), (E, E))
    K, L = p[pre + "conv1d.weight"].shape[-1], x.shape[1]
    w = p[pre + "conv1d.weight"].reshape(E, K).astype(jnp.float32)
    xf = x.astype(jnp.float32)
    xp = jnp.concatenate([jnp.zeros((x.shape[0], K - 1, E), jnp.float32), xf], axis=1)  # causal: zeros before
    conv = p[pre + "conv1d.bias"] + sum(_sl(w, k, 1, 1)[:, 0] * _sl(xp, k, L, 1) for k in range(K))
    return jax.nn.silu(conv), z, xf


def _ssm_params(p, i, xc, dtype):
    pre = f"backbone.layers.{i}.mixer."
    R = p[pre + "dt_proj.weight"].shape[1]
    N = p[pre + "A_log"].shape[1]
    dt, Bm, Cm = _split(_linear(xc, p[pre + "x_proj.weight"], dtype), (R, N, N))
    dt = jax.nn.softplus(_linear(dt, p[pre + "dt_proj.weight"], dtype, p[pre + "dt_proj.bias"]).astype(jnp.float32))
    return dt, Bm.astype(jnp.float32), Cm.astype(jnp.float32), -jnp.exp(p[pre + "A_log"])


def mamba_forward(p, tokens, *, n_layers, scan, chunk, dtype, return_state=False):
    emb = p["backbone.embedding.weight"]
    hidden, residual, states = emb[tokens], None, []
    for i in range(n_layers):
        pre = f"backbone.layers.{i}."
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        xc, z, x_in = _mixer_inputs(p, i, _rmsnorm(residual, p[pre + "norm.weight"]), dtype)
        dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
        y, h_last = SCAN_FNS[scan](xc, dt, A, Bm, Cm, chunk)
        y = (y + xc * p[pre + "mixer.D"]) * jax.nn.silu(z.astype(jnp.float32))
        hidden = _linear(y, p[pre + "mixer.out_proj.weight"], dtype)
        if return_state:
            K = p[pre + "mixer.conv1d.weight"].shape[-1]
            L = x_in.shape[1]
            pad = jnp.zeros((x_in.shape[0], max(0, K - L), x_in.shape[2]), jnp.float32)
            conv_state = jnp.swapaxes(jnp.concatenate([pad, x_in], axis=1)[:, -K:], 1, 2)  # (B, E, K)
            states.append((conv_state, h_last))
    x = _rmsnorm(hidden.astype(jnp.float32) + residual, p["backbone.norm_f.weight"])
    logits = _linear(x, emb, dtype).astype(jnp.float32)
    return (logits, states) if return_state else logits


def mamba_step(p, token, state, *, n_layers, dtype):
    """token (B,), state [(conv (B, E, K), ssm (B, E, N))] -> logits (B, V), new state."""
    emb = p["backbone.embedding.weight"]
    hidden, residual, new = emb[token], None, []
    for i in range(n_layers):
        pre = f"backbone.layers.{i}."
        mix = pre + "mixer."
        conv, ssm = state[i]
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        E = p[mix + "D"].shape[0]
        xz = _linear(_rmsnorm(residual, p[pre + "norm.weight"]), p[mix + "in_proj.weight"], dtype)
        x, z = xz[:, :E], xz[:, E:]
        conv = jnp.concatenate([conv[..., 1:], x[..., None].astype(jnp.float32)], axis=-1)
        xc = jax.nn.silu(jnp.einsum("bek,ek->be", conv, p[mix + "conv1d.weight"][:, 0]) + p[mix + "conv1d.bias"])
        dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
        ssm = jnp.exp(dt[..., None] * A) * ssm + (dt * xc)[..., None] * Bm[:, None, :]
        y = jnp.einsum("ben,bn->be", ssm, Cm) + xc * p[mix + "D"]
        hidden = _linear(y * jax.nn.silu(z.astype(jnp.float32)), p[mix + "out_proj.weight"], dtype)
        new.append((conv, ssm))
    x = _rmsnorm(hidden.astype(jnp.float32) + residual, p["backbone.norm_f.weight"])
    return _linear(x, emb, dtype).astype(jnp.float32), new


def max_log_decay_step(p, tokens, *, n_layers, dtype) -> float:
    """max over layers of max(Δ) * max|A|: the bound the chunk length is chosen from."""
    emb = p["backbone.embedding.weight"]
    hidden, residual, worst = emb[tokens], None, 0.0
    for i in range(n_layers):
        pre = f"backbone.layers.{i}."
        residual = hidden.astype(jnp.float32) if residual is None else hidden.astype(jnp.float32) + residual
        xc, z, _ = _mixer_inputs(p, i, _rmsnorm(residual, p[pre + "norm.weight"]), dtype)
        dt, Bm, Cm, A = _ssm_params(p, i, xc, dtype)
        worst = max(worst, float(jnp.max(dt)) * float(jnp.max(-A)))
        y, _ = scan_sequential(xc, dt, A, Bm, Cm)
        y = (y + xc * p[pre + "mixer.D"]) * jax.nn.silu(z.astype(jnp.float32))
        hidden = _linear(y, p[pre + "mixer.out_proj.weight"], dtype)
    return worst


# ============================================================================ Transformer
def _sinusoidal(L, D, offset):
    half = D // 2
    freqs = 10000.0 ** (-np.arange(half) / max(half, 1))
    pos = offset + jnp.arange(L, dtype=jnp.float32)
    ang = pos[:, None] * jnp.asarray(freqs, jnp.float32)[None]
    pe = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=1)
    if D > 2 * half:
        pe = jnp.concatenate([pe, jnp.zeros((L, D - 2 * half), jnp.float32)], axis=1)
    return pe


def _attend(q, k, v, mask):
    """q (B, H, Lq, hd), k, v (B, H, Lk, hd), mask (Lq, Lk) True where allowed; softmax in fp32."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    s = jnp.where(mask, s, -1e30)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1).astype(v.dtype), v)


def gpt_forward(p, tokens, *, n_layers, n_head, dtype, caches=None, pos=0):
    """tokens (B, L). With caches [(k, v) (B, H, cap, hd)] the new keys are written at pos.."""
    emb = p["transformer.wte.weight"]
    Bt, L = tokens.shape
    D = emb.shape[1]
    x = emb[tokens] + _sinusoidal(L, D, pos)
    new = []
    for i in range(n_layers):
        pre = f"transformer.h.{i}."
        a = _layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = _linear(a, p[pre + "attn.c_attn.weight"], dtype, p[pre + "attn.c_attn.bias"])
        q, k, v = (t.reshape(Bt, L, n_head, D // n_head).transpose(0, 2, 1, 3) for t in jnp.split(qkv, 3, axis=-1))
        if caches is None:
            o = _attend(q, k, v, jnp.tril(jnp.ones((L, L), bool)))
        else:
            kc, vc = caches[i]
            kc = jax.lax.dynamic_update_slice(kc, k.astype(kc.dtype), (0, 0, pos, 0))
            vc = jax.lax.dynamic_update_slice(vc, v.astype(vc.dtype), (0, 0, pos, 0))
            cap = kc.shape[2]
            mask = jnp.arange(cap)[None, :] <= (pos + jnp.arange(L))[:, None]
            o = _attend(q, kc.astype(dtype), vc.astype(dtype), mask)
            new.append((kc, vc))
        o = o.transpose(0, 2, 1, 3).reshape(Bt, L, D)
        x = x + _linear(o, p[pre + "attn.c_proj.weight"], dtype, p[pre + "attn.c_proj.bias"]).astype(jnp.float32)
        m = _layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        m = jax.nn.gelu(_linear(m, p[pre + "mlp.c_fc.weight"], dtype, p[pre + "mlp.c_fc.bias"]), approximate=True)
        x = x + _linear(m, p[pre + "mlp.c_proj.weight"], dtype, p[pre + "mlp.c_proj.bias"]).astype(jnp.float32)
    x = _layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    logits = _linear(x, emb, dtype).astype(jnp.float32)
    return logits if caches is None else (logits, new)


# ============================================================================ loss
def _cross_entropy(logits, targets):
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(lse - picked)
