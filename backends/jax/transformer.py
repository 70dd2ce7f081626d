"""The Transformer baseline in JAX: pure functions of a dict of arrays named as
ssmbench.archs.transformer's (GPT-2's), its function line for line. Attention is materialised
(softmax in fp32); decode keeps a KV cache at a device position. The functions backend.py calls
are those mamba.py lists."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .layers import head, head_weight, layernorm, linear

EMBEDDING = "transformer.wte.weight"
LINEAR = ("c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias", "c_fc.weight", "c_fc.bias")  # used only through linear()


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


def _run(p, tokens, *, cfg, dtype, caches=None, pos=0):
    """tokens (B, L) -> (the final norm's output (B, L, D) fp32, the caches). With caches
    [(k, v) (B, H, cap, hd)] the new keys are written at pos.."""
    emb = p[EMBEDDING]
    Bt, L = tokens.shape
    D, n_head = emb.shape[1], cfg.n_head
    x = emb[tokens] + _sinusoidal(L, D, pos)
    new = []
    for i in range(cfg.n_layers):
        pre = f"transformer.h.{i}."
        a = layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        qkv = linear(a, p[pre + "attn.c_attn.weight"], dtype, p[pre + "attn.c_attn.bias"])
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
        x = x + linear(o, p[pre + "attn.c_proj.weight"], dtype, p[pre + "attn.c_proj.bias"]).astype(jnp.float32)
        m = layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        m = jax.nn.gelu(linear(m, p[pre + "mlp.c_fc.weight"], dtype, p[pre + "mlp.c_fc.bias"]), approximate=True)
        x = x + linear(m, p[pre + "mlp.c_proj.weight"], dtype, p[pre + "mlp.c_proj.bias"]).astype(jnp.float32)
    return layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"]), new


def hidden(p, tokens, *, cfg, dtype, scan=None, chunk=None):
    """tokens (B, L) -> the final norm's output (B, L, D) fp32, the LM head's input."""
    return _run(p, tokens, cfg=cfg, dtype=dtype)[0]


def forward(p, tokens, *, cfg, dtype, scan=None, chunk=None):
    return head(hidden(p, tokens, cfg=cfg, dtype=dtype), p[EMBEDDING], dtype)


def init_state(cfg, batch, capacity, dtype, device):
    """(the KV caches [(k, v) (B, H, capacity, hd)] in the compute dtype, the position (int32))."""
    shape = (batch, cfg.n_head, capacity, cfg.d_model // cfg.n_head)
    caches = [(jnp.zeros(shape, dtype, device=device), jnp.zeros(shape, dtype, device=device)) for _ in range(cfg.n_layers)]
    return caches, jnp.zeros((), jnp.int32, device=device)


def prefill(p, tokens, state, *, cfg, dtype, scan=None, chunk=None):
    caches, pos = state
    _, caches = _run(p, tokens, cfg=cfg, dtype=dtype, caches=caches, pos=pos)
    return caches, pos + tokens.shape[1]


def step(p, token, state, *, cfg, dtype):
    """token (B,) at the state's position -> (logits (B, V), (caches, position + 1))."""
    caches, pos = state
    x, caches = _run(p, token[:, None], cfg=cfg, dtype=dtype, caches=caches, pos=pos)
    return head(x[:, 0], head_weight(p, EMBEDDING), dtype), (caches, pos + 1)


def op(scan: str, inputs: dict):
    """Causal attention alone, and its inputs in (B, L, H, hd): jax.nn.dot_product_attention's layout."""
    inputs = {k: np.ascontiguousarray(v.transpose(0, 2, 1, 3)) for k, v in inputs.items()}
    return (lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)), inputs
