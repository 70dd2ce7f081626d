"""The Transformer baseline in TensorFlow: ssmbench.archs.transformer's math over one tf.Variable
per weight (GPT-2's names); attention is materialised (softmax in fp32), decode writes a KV cache
of tf.Variables in place (common.Net says what the backend calls)."""

from __future__ import annotations

import math

import numpy as np

from .common import Net, layernorm, linear, tf


def attention(q, k, v, mask):
    """softmax(q k^T / sqrt(hd), masked) v with q, k, v (B, H, L, hd); scores in fp32."""
    s = tf.cast(tf.einsum("bhqd,bhkd->bhqk", q, k), tf.float32) / math.sqrt(q.shape[-1])
    s = tf.where(mask, s, -1e30)
    return tf.einsum("bhqk,bhkd->bhqd", tf.cast(tf.nn.softmax(s, -1), v.dtype), v)


def _sinusoidal(L, D, offset):
    half = D // 2
    freqs = tf.constant(10000.0 ** (-np.arange(half) / max(half, 1)), tf.float32)
    pos = tf.cast(offset, tf.float32) + tf.range(L, dtype=tf.float32)
    ang = pos[:, None] * freqs[None]
    pe = tf.concat([tf.sin(ang), tf.cos(ang)], axis=1)
    return tf.concat([pe, tf.zeros([L, D - 2 * half])], axis=1) if D > 2 * half else pe


class Model(Net):
    def _run(self, tokens, caches=None, pos=0):
        p, c = self.p, self.cfg
        H, D = c.n_head, c.d_model
        Bt, L = tf.shape(tokens)[0], tokens.shape[1]
        x = tf.gather(p["transformer.wte.weight"], tokens) + _sinusoidal(L, D, pos)
        for i in range(c.n_layers):
            pre = f"transformer.h.{i}."
            a = layernorm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
            qkv = linear(a, p[pre + "attn.c_attn.weight"], self.dtype, p[pre + "attn.c_attn.bias"])
            q, k, v = (tf.transpose(tf.reshape(t, [Bt, L, H, D // H]), [0, 2, 1, 3]) for t in tf.split(qkv, 3, axis=-1))
            if caches is None:
                mask = tf.linalg.band_part(tf.ones([L, L], tf.bool), -1, 0)
            else:
                kc, vc = caches[i]  # tf.Variables (B, H, cap, hd)
                kc[:, :, pos : pos + L].assign(tf.cast(k, kc.dtype))
                vc[:, :, pos : pos + L].assign(tf.cast(v, vc.dtype))
                k, v = tf.cast(kc, self.dtype), tf.cast(vc, self.dtype)
                cap = kc.shape[2]
                mask = tf.range(cap)[None, :] <= (pos + tf.range(L))[:, None]
            o = attention(q, k, v, mask)
            o = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [Bt, L, D])
            x = x + tf.cast(linear(o, p[pre + "attn.c_proj.weight"], self.dtype, p[pre + "attn.c_proj.bias"]), tf.float32)
            m = layernorm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
            m = tf.nn.gelu(linear(m, p[pre + "mlp.c_fc.weight"], self.dtype, p[pre + "mlp.c_fc.bias"]), approximate=True)
            x = x + tf.cast(linear(m, p[pre + "mlp.c_proj.weight"], self.dtype, p[pre + "mlp.c_proj.bias"]), tf.float32)
        x = layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
        return tf.cast(linear(x, p["transformer.wte.weight"], self.dtype), tf.float32)

    def logits(self, tokens):
        return self._run(tokens)

    def init_state(self, batch, capacity):
        """(the KV caches [(k, v) tf.Variables (B, H, capacity, hd)] in the compute dtype, the position)."""
        c = self.cfg
        shape = [batch, c.n_head, capacity, c.d_model // c.n_head]
        return [(tf.Variable(tf.zeros(shape, self.dtype)), tf.Variable(tf.zeros(shape, self.dtype))) for _ in range(c.n_layers)], 0

    def _prefill(self, tokens, caches):
        return self._run(tokens, caches=caches, pos=0)

    def prefill(self, tokens, state):
        caches, _ = state
        self.compiled("prefill")(tokens, caches)
        return caches, tokens.shape[1]

    def _step(self, token, caches, pos):
        return self._run(token[:, None], caches=caches, pos=pos)[:, 0]

    def decode(self, token, state):
        caches, pos = state  # the position goes in as a tensor: one compiled step serves them all
        return self.compiled("step")(token, caches, tf.constant(pos, tf.int32)), (caches, pos + 1)


def op(scan: str, inputs: dict):
    """Causal attention alone: ((q, k, v) (B, H, L, hd) -> o; the inputs)."""
    L = inputs["q"].shape[2]
    return (lambda q, k, v: attention(q, k, v, tf.linalg.band_part(tf.ones([L, L], tf.bool), -1, 0))), inputs
