"""The pieces every JAX architecture shares. Mixed precision: matmuls run in the run's dtype
(``linear``); the residual stream, norms, softmax and the SSM state in fp32."""

from __future__ import annotations

import math
from functools import partial

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


CHUNK_ELEMENTS = 1 << 28  # logits a chunk of head_loss, as torch's head.py


def head_loss(x, w, targets, dtype):
    """Mean cross-entropy of the logits x wᵀ against ``targets`` without keeping the (tokens, V)
    logits, the train step's loss: torch's head.py written for XLA, so both frameworks' train
    steps do the same work. x (..., D) the final norm's output, w (V, D) the tied head, targets
    (...) int -> scalar fp32.

    The loss is a scalar, so its gradient is known in the forward: per chunk of tokens (a Python
    loop, unrolled: no while for Metal) the logits x_c wᵀ in ``dtype``, the softmax in fp32, g =
    (softmax - onehot) / T rounded to ``dtype``, then dx_c = g w and dW += g x_cᵀ with fp32
    accumulation; the backward only scales them. Unfused, XLA keeps fp32 (tokens, V) logits and
    their softmax for the backward."""
    D = w.shape[1]
    x, targets = x.reshape(-1, D).astype(jnp.float32), targets.reshape(-1)
    T, V = x.shape[0], w.shape[0]
    rows = max(1, min(T, 128 * math.ceil(T / math.ceil(T * V / CHUNK_ELEMENTS) / 128)))
    return _head_loss(x, w, targets, jnp.dtype(dtype), rows)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _head_loss(x, w, targets, dtype, rows):
    return _head_loss_fwd(x, w, targets, dtype, rows)[0]


def _head_loss_fwd(x, w, targets, dtype, rows):
    T, V = x.shape[0], w.shape[0]
    wd = w.astype(dtype)
    total, dx, dw = 0.0, [], jnp.zeros(w.shape, jnp.float32)
    for start in range(0, T, rows):
        n = min(rows, T - start)
        xc, yc = sl(x, start, n, 0).astype(dtype), sl(targets, start, n, 0)
        logits = jnp.einsum("td,vd->tv", xc, wd).astype(jnp.float32)  # rounded to dtype, as autocast's
        lse = jax.nn.logsumexp(logits, axis=-1)
        total += jnp.sum(lse - jnp.take_along_axis(logits, yc[:, None], axis=-1)[:, 0])
        g = ((jnp.exp(logits - lse[:, None]) - jax.nn.one_hot(yc, V, dtype=jnp.float32)) / T).astype(dtype)
        dx.append(jnp.einsum("tv,vd->td", g, wd, preferred_element_type=jnp.float32))
        dw += jnp.einsum("tv,td->vd", g, xc, preferred_element_type=jnp.float32)
    return total / T, (jnp.concatenate(dx), dw)


def _head_loss_bwd(dtype, rows, saved, grad):
    dx, dw = saved
    return dx * grad, dw * grad, None


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)
