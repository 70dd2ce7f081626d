"""Mamba-1 in TensorFlow: ssmbench.archs.mamba's math over one tf.Variable per weight, named as
mamba-ssm's state dict (common.Net says what the backend calls)."""

from __future__ import annotations

from ssmbench.archs import mamba as arch

from .common import Net, linear, rmsnorm, tf
from .scans import SCAN_FNS


class Model(Net):
    def _mixer_in(self, i, h):
        p, E, K = self.p, self.cfg.d_inner, self.cfg.d_conv
        pre = f"backbone.layers.{i}.mixer."
        xz = linear(h, p[pre + "in_proj.weight"], self.dtype)
        x, z = xz[..., :E], xz[..., E:]
        xf = tf.cast(x, tf.float32)
        w = tf.reshape(p[pre + "conv1d.weight"], [E, K])
        xp = tf.concat([tf.zeros_like(xf[:, :1])] * (K - 1) + [xf], axis=1) if K > 1 else xf
        L = x.shape[1]
        conv = p[pre + "conv1d.bias"] + tf.add_n([w[:, k] * xp[:, k : k + L] for k in range(K)])
        return tf.nn.silu(conv), z, xf

    def _ssm(self, i, xc):
        p, R, N = self.p, self.cfg.dt_rank, self.cfg.d_state
        pre = f"backbone.layers.{i}.mixer."
        dbc = linear(xc, p[pre + "x_proj.weight"], self.dtype)
        dt = tf.nn.softplus(tf.cast(linear(dbc[..., :R], p[pre + "dt_proj.weight"], self.dtype, p[pre + "dt_proj.bias"]), tf.float32))
        return dt, tf.cast(dbc[..., R : R + N], tf.float32), tf.cast(dbc[..., R + N :], tf.float32), -tf.exp(p[pre + "A_log"])

    def _layers(self, tokens, return_state=False, probe=False):
        p = self.p
        hidden, residual, states, worst = tf.gather(p["backbone.embedding.weight"], tokens), None, [], 0.0
        for i in range(self.cfg.n_layers):
            pre = f"backbone.layers.{i}."
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            xc, z, x_in = self._mixer_in(i, rmsnorm(residual, p[pre + "norm.weight"]))
            dt, Bm, Cm, A = self._ssm(i, xc)
            if probe:
                worst = max(worst, float(tf.reduce_max(dt)) * float(tf.reduce_max(-A)))
            y, h_last = SCAN_FNS["sequential" if probe else self.scan](xc, dt, A, Bm, Cm, self.chunk)
            y = (y + xc * p[pre + "mixer.D"]) * tf.nn.silu(tf.cast(z, tf.float32))
            hidden = linear(y, p[pre + "mixer.out_proj.weight"], self.dtype)
            if return_state:
                K = self.cfg.d_conv
                padded = tf.concat([tf.zeros_like(x_in[:, :1])] * max(0, K - x_in.shape[1]) + [x_in], axis=1)
                states.append((tf.transpose(padded[:, -K:], [0, 2, 1]), h_last))
        if probe:
            return worst
        x = rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        logits = self.head(x)
        return (logits, states) if return_state else logits

    def logits(self, tokens):
        return self._layers(tokens)

    def max_log_decay_step(self, tokens) -> float:
        """max over layers of max(Δ) * max|A|: the bound the chunked scan's chunk is chosen from (eager)."""
        return self._layers(tokens, probe=True)

    def init_state(self, batch, capacity):
        c = self.cfg  # the SSM state stays fp32 whatever the compute dtype
        return [(tf.zeros([batch, c.d_inner, c.d_conv]), tf.zeros([batch, c.d_inner, c.d_state])) for _ in range(c.n_layers)]

    def _prefill(self, tokens):
        return self._layers(tokens, return_state=True)[1]

    def prefill(self, tokens, state):
        return self.compiled("prefill")(tokens)

    def _step(self, token, state):
        p, E = self.p, self.cfg.d_inner
        hidden, residual, new = tf.gather(p["backbone.embedding.weight"], token), None, []
        for i in range(self.cfg.n_layers):
            pre, mix = f"backbone.layers.{i}.", f"backbone.layers.{i}.mixer."
            conv, ssm = state[i]
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            xz = linear(rmsnorm(residual, p[pre + "norm.weight"]), p[mix + "in_proj.weight"], self.dtype)
            x, z = xz[:, :E], xz[:, E:]
            conv = tf.concat([conv[..., 1:], tf.cast(x, tf.float32)[..., None]], axis=-1)
            xc = tf.nn.silu(tf.einsum("bek,ek->be", conv, tf.reshape(p[mix + "conv1d.weight"], [E, -1])) + p[mix + "conv1d.bias"])
            dt, Bm, Cm, A = self._ssm(i, xc)
            ssm = tf.exp(dt[..., None] * A) * ssm + (dt * xc)[..., None] * Bm[:, None, :]
            y = tf.einsum("ben,bn->be", ssm, Cm) + xc * p[mix + "D"]
            hidden = linear(y * tf.nn.silu(tf.cast(z, tf.float32)), p[mix + "out_proj.weight"], self.dtype)
            new.append((conv, ssm))
        x = rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        return self.head(x), new

    def decode(self, token, state):
        return self.compiled("step")(token, state)


def op(scan: str, inputs: dict):
    """The selective scan alone with ``scan`` (mamba-ssm's selective_scan_fn semantics): (a
    function of arch.OP_ARGS -> out (fp32), the inputs). The chunked scan's chunk comes from them."""
    f32, chunk = tf.float32, arch.op_chunk(inputs)

    def fn(x, dt, A, Bm, Cm, D, z, dt_bias):
        delta = tf.nn.softplus(tf.cast(dt, f32) + dt_bias)
        y, _ = SCAN_FNS[scan](tf.cast(x, f32), delta, A, tf.cast(Bm, f32), tf.cast(Cm, f32), chunk)
        return (y + tf.cast(x, f32) * D) * tf.nn.silu(tf.cast(z, f32))

    return fn, inputs
