"""The pieces every JAX architecture shares. Mixed precision: matmuls run in the run's dtype
(``linear``); the residual stream, norms, softmax and the SSM state in fp32."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from ssmbench.weights import LM_HEAD

from .scans import sl

F32 = jnp.float32
CHUNK_ELEMENTS = 1 << 28  # logits per chunk of the fused head + loss, as torch's head.py


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


def head(x, emb, dtype):
    """The tied LM head: x (..., D), the embedding ``emb`` (V, D) -> logits (..., V) fp32."""
    return linear(x, emb, dtype).astype(F32)


HEAD = LM_HEAD  # an untied LM head; or, in a decode copy, the head cast to the compute dtype (decode_weights)
LAYER = "backbone.layers.{}."  # layer i's weights in the state dict: LAYER.format(i) + name
STACKED = "layers."  # a stacked decode copy's: STACKED + name, every layer's in one (n_layers, ...) array


def decode_weights(p, linear_keys, emb, dtype, stack_layers=0):
    """The weights a decode step reads: those only ever multiplied (keys ending in ``linear_keys``)
    and the head (an untied one, or the embedding ``p[emb]``, kept as it is for the lookup) cast
    once to the compute dtype, as torch's decoders hold them. linear() then casts nothing;
    otherwise XLA reads every fp32 weight and writes its cast on every token (half a GB a token at
    130M).

    stack_layers: the model's layer count, to hold each per-layer weight as one (n_layers, ...)
    array under STACKED + name, read through layer_weight(). A call's host cost grows with its
    arguments (246 at 130M; stacked, 13). For a GPU's step only: there XLA reads a layer's slice
    inside the fusion that uses it, where the CPU's copies each slice out first (12x slower)."""
    if dtype != F32:
        p = {k: v.astype(dtype) if k.endswith(linear_keys) else v for k, v in p.items()} | {HEAD: head_weight(p, emb).astype(dtype)}
    if not stack_layers:
        return p
    first = LAYER.format(0)
    q = {k: v for k, v in p.items() if not k.startswith(LAYER[: LAYER.index("{")])}
    names = [k[len(first) :] for k in p if k.startswith(first)]
    return q | {STACKED + name: jnp.stack([p[LAYER.format(i) + name] for i in range(stack_layers)]) for name in names}


def layer_weight(p, i, name):
    """Layer i's weight ``name`` (``"norm.weight"``, ``"mixer.in_proj.weight"``): a stacked decode
    copy's slice, or the state dict's own."""
    return p[STACKED + name][i] if STACKED + name in p else p[LAYER.format(i) + name]


def head_weight(p, emb):
    """The LM head's weight: an untied head's or a decode copy's (HEAD), else the embedding ``p[emb]``."""
    return p[HEAD] if HEAD in p else p[emb]


def stack_layers(states):
    """[(a_0, b_0), ... per layer] -> (a (n_layers, ...), b (n_layers, ...)): an O(1) decode state
    as two arrays for all layers (mamba.init_state says why), stacked once rather than written a
    layer at a time, which made XLA copy the whole stack every layer."""
    return tuple(jnp.stack(s) for s in zip(*states))


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


def chunk_rows(T, V):
    """Tokens a chunk of the fused head + loss: equal chunks of about CHUNK_ELEMENTS logits."""
    return -(-T // math.ceil(T * V / CHUNK_ELEMENTS))


def head_loss(x, w, targets, dtype, rows=None):
    """The LM head and the cross-entropy as one op, a chunk of tokens at a time (torch's head.py):

        logits = x Wᵀ                       x (T, D) the final norm's output, W (V, D) the tied embedding
        loss   = mean_t [ lse(logits_t) - logits_t[y_t] ],   lse(l) = log Σ_v exp(l_v)

    The loss is a scalar, so its gradient is known in the forward: for each chunk of ``rows``
    tokens (default ``chunk_rows``; T padded up to whole chunks, the padded rows masked out of
    the loss and both gradients)

        l    = x_c Wᵀ                       (rows, V) in the compute dtype, one chunk's at a time
        g    = (softmax(l) - onehot(y_c)) / T, the softmax in fp32, g rounded to the compute dtype
        dx_c = g W,   dW += gᵀ x_c          compute-dtype operands, fp32 accumulation

    and the backward only scales dx and dW by the incoming gradient. x (..., D) fp32, w (V, D)
    fp32, targets (...) int in [0, V) -> scalar fp32."""
    V, D = w.shape
    x, targets = x.reshape(-1, D), targets.reshape(-1)
    return _head_loss(jnp.dtype(dtype), min(rows or chunk_rows(x.shape[0], V), x.shape[0]), x, w, targets)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _head_loss(dtype, rows, x, w, y):
    return _head_loss_fwd(dtype, rows, x, w, y)[0]


def _head_loss_fwd(dtype, rows, x, w, y):
    (T, D), V = x.shape, w.shape[0]
    n = -(-T // rows)
    pad = n * rows - T
    x = jnp.concatenate([x, jnp.zeros((pad, D), x.dtype)]) if pad else x
    y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]) if pad else y
    scale = jnp.where(jnp.arange(n * rows) < T, 1.0 / T, 0.0)  # 0 on the padded rows
    wd = w.astype(dtype)

    def chunk(carry, c):
        total, dw = carry
        xc, yc, sc = c
        xc = xc.astype(dtype)
        lf = jnp.einsum("rd,vd->rv", xc, wd).astype(F32)  # the logits, rounded to the compute dtype
        lse = jax.nn.logsumexp(lf, axis=-1)
        total += jnp.sum(sc * (lse - jnp.take_along_axis(lf, yc[:, None], axis=-1)[:, 0]))
        g = ((jnp.exp(lf - lse[:, None]) - (jnp.arange(V) == yc[:, None])) * sc[:, None]).astype(dtype)
        dw += jnp.einsum("rv,rd->vd", g, xc, preferred_element_type=F32)
        return (total, dw), jnp.einsum("rv,vd->rd", g, wd, preferred_element_type=F32)

    init = (jnp.zeros((), F32), jnp.zeros((V, D), F32))
    (total, dw), dx = jax.lax.scan(chunk, init, (x.reshape(n, rows, D), y.reshape(n, rows), scale.reshape(n, rows)))
    return total, (dx.reshape(n * rows, D)[:T], dw)


def _head_loss_bwd(dtype, rows, res, ct):
    dx, dw = res
    return dx * ct, dw * ct, None


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)
