"""The pieces every JAX architecture shares. Mixed precision: matmuls run in the run's dtype
(``linear``); the residual stream, norms, softmax and the SSM state in fp32."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .scans import sl


def rmsnorm(x, w, eps=1e-5):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps=1e-5):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def linear(x, w, dtype, b=None):
    """x @ w.T in the compute dtype (w is (out, in) as in torch)."""
    y = jnp.einsum("...i,oi->...o", x.astype(dtype), w.astype(dtype))
    return y if b is None else y + b.astype(dtype)


def split(x, sizes, axis=-1):
    """x cut along ``axis`` into pieces of ``sizes``, as dynamic slices (scans.sl)."""
    out, start = [], 0
    for n in sizes:
        out.append(sl(x, start, n, axis))
        start += n
    return out


def causal_conv(x, w, b):
    """Depthwise causal conv in fp32: x (B, L, C), w (C, 1, K) as torch's conv1d, b (C,) -> (B, L, C).
    Zeros go before the sequence by concatenation and the K taps are dynamic slices (no pad)."""
    Bt, L, C = x.shape
    K = w.shape[-1]
    w = w.reshape(C, K).astype(jnp.float32)
    xp = jnp.concatenate([jnp.zeros((Bt, K - 1, C), jnp.float32), x.astype(jnp.float32)], axis=1)
    return b + sum(sl(w, k, 1, 1)[:, 0] * sl(xp, k, L, 1) for k in range(K))


def cross_entropy(logits, targets):
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(lse - picked)
