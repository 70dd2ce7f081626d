"""Mamba-2 (SSD) in TensorFlow: ssmbench.archs.mamba2's math over one tf.Variable per weight,
named as mamba-ssm's state dict (common.Net says what the backend calls).

The projections run in the compute dtype (``linear``); the conv, the SSD, the norms and the
decode state in fp32. Heads are kept as (G, R = H / G), so B and C are read per group, never
repeated per head. Two forms of the SSD (``--scan``):

    ssd         chunked (state space duality), matmul-shaped, any L (the last chunk is
                zero-padded: Δ = 0 and x = 0 change nothing). Inside a chunk the masked
                quadratic form (L ∘ C B^T)(Δ x), with a = cumsum(Δ A) and the decay
                exp(a_t - a_s) masked on its exponent before the exp: -inf above the diagonal (no
                positive exponent is ever taken, so no inf reaches a gradient), 0 on it (exactly
                1, without two O(1) gradient terms that cancel). Between chunks the states pass
                in one matmul, not a loop: with S_c chunk c's own state at its end and α_c its
                total log-decay, the state entering chunk z is Σ_{c<z} exp(Σ_{c<r<z} α_r) S_c;
                those sums are differences of a float64 cumsum of α, exact at any length.
    sequential  the recurrence S_t = exp(Δ_t A) S_{t-1} + Δ_t x_t B_t^T, y_t = S_t C_t over time,
                a while loop that keeps y, not every step's state, in the forward.
"""

from __future__ import annotations

import numpy as np

from .common import Net, linear, rmsnorm, tf


def _split_last(t, *dims):
    """t (..., prod(dims)) -> (..., *dims)."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:-1], dims], 0))


def _merge_last(t):
    """t (..., a, b) -> (..., a * b)."""
    return tf.reshape(t, tf.concat([tf.shape(t)[:-2], [-1]], 0))


def _groups(t, G):
    """t (B, nc, T, H, ...) -> (B, nc, T, G, H / G, ...): head h = g R + r."""
    s = t.shape
    return tf.reshape(t, [-1, s[1], s[2], G, s[3] // G, *s[4:]])


def ssd_chunked(x, dt, A, Bm, Cm, chunk):
    """x (B, L, H, P); dt (B, L, H) after softplus; A (H,) < 0; Bm, Cm (B, L, G, N); all fp32;
    ``chunk`` T (static). Returns y (B, L, H, P) (without D x) and the last state (B, H, P, N)."""
    L, H, P = x.shape[1:]
    G, N = Bm.shape[2:]
    T = min(chunk, L)
    nc = -(-L // T)

    def chunks(t):  # (B, L, ...) -> (B, nc, T, ...), zero-padded at the end
        t = tf.pad(t, [[0, 0], [0, nc * T - L]] + [[0, 0]] * (t.shape.rank - 2))
        return tf.reshape(t, [-1, nc, T, *t.shape[2:]])

    x, dt = _groups(chunks(x), G), _groups(chunks(dt), G)  # (B, nc, T, G, R, P), (B, nc, T, G, R)
    Bm, Cm = chunks(Bm), chunks(Cm)  # (B, nc, T, G, N)
    dA = dt * tf.reshape(A, [G, H // G])  # (B, nc, T, G, R)
    a = tf.cumsum(dA, axis=2)  # log-decay from the chunk's start

    # inside each chunk: y_t = Σ_{s<=t} exp(a_t - a_s) (C_t · B_s) Δ_s x_s
    dx = dt[..., None] * x  # (B, nc, T, G, R, P)
    at = tf.transpose(a, [0, 1, 3, 4, 2])  # (B, nc, G, R, T)
    below, on_and_above = np.tril(np.ones((T, T), bool), -1), np.triu(np.full((T, T), -np.inf, np.float32), 1)  # 0 on, -inf above
    decay = tf.exp(tf.where(below, at[..., :, None] - at[..., None, :], on_and_above))  # (B, nc, G, R, t, s)
    y = tf.einsum("bcgrts,bcsgrp->bctgrp", tf.einsum("bctgn,bcsgn->bcgts", Cm, Bm)[:, :, :, None] * decay, dx)

    # each chunk's own state at its end, then the states entering chunks 0..nc (nc: the last state)
    to_end = tf.exp(tf.cumsum(dA, axis=2, exclusive=True, reverse=True))  # (B, nc, T, G, R): exp(Σ_{s<r<=T} Δ_r A)
    own = tf.einsum("bcsgrp,bcsgn->bcgrpn", to_end[..., None] * dx, Bm)  # (B, nc, G, R, P, N)
    cum = tf.cumsum(tf.cast(a[:, :, -1], tf.float64), axis=1)  # (B, nc, G, R): Σ_{r<=c} α_r
    cum0 = tf.pad(cum, [[0, 0], [1, 0], [0, 0], [0, 0]])  # (B, nc + 1, G, R): Σ_{r<z} α_r
    between = tf.cast(cum0[:, :, None] - cum[:, None], tf.float32)  # (B, z, c, G, R): Σ_{c<r<z} α_r for c < z
    passing = tf.exp(tf.where(np.tril(np.ones((nc + 1, nc), bool), -1)[..., None, None], between, -np.inf))
    entering = tf.einsum("bzcgr,bcgrpn->bzgrpn", passing, own)  # (B, nc + 1, G, R, P, N)

    # plus, from the state entering each chunk: exp(a_t) C_t · S_in
    y += tf.einsum("bctgn,bcgrpn->bctgrp", Cm, entering[:, :nc]) * tf.exp(a)[..., None]
    return tf.reshape(y, [-1, nc * T, H, P])[:, :L], tf.reshape(entering[:, nc], [-1, H, P, N])


def ssd_step(S, x, dt, A, Bm, Cm):
    """One step of the recurrence. S (B, H, P, N); x (B, H, P); dt (B, H) after softplus; A (H,);
    Bm, Cm (B, G, N). Returns the new S and y (B, H, P) (without D x)."""
    H, P, N = S.shape[1:]
    G = Bm.shape[1]
    S = tf.reshape(S, [-1, G, H // G, P, N])  # head h = g R + r reads group g
    decay = tf.reshape(tf.exp(dt * A), [-1, G, H // G, 1, 1])
    S = decay * S + tf.reshape(dt[..., None] * x, [-1, G, H // G, P, 1]) * Bm[:, :, None, None, :]
    return tf.reshape(S, [-1, H, P, N]), tf.reshape(tf.einsum("bgrpn,bgn->bgrp", S, Cm), [-1, H, P])


def ssd_sequential(x, dt, A, Bm, Cm, chunk=None):
    """As ssd_chunked, step by step over time (``chunk`` unused)."""
    L, H, P = x.shape[1:]
    N = Bm.shape[-1]
    xs, dts, Bs, Cs = (tf.transpose(t, [1, 0, *range(2, t.shape.rank)]) for t in (x, dt, Bm, Cm))  # time first

    def body(t, S, ys):
        S, y = ssd_step(S, xs[t], dts[t], A, Bs[t], Cs[t])
        return t + 1, S, ys.write(t, y)

    S0 = tf.zeros(tf.stack([tf.shape(x)[0], H, P, N]), tf.float32)
    ys = tf.TensorArray(tf.float32, size=L, element_shape=tf.TensorShape([None, H, P]))
    _, S, ys = tf.while_loop(lambda t, *_: t < L, body, (tf.constant(0), S0, ys), maximum_iterations=L)
    return tf.transpose(ys.stack(), [1, 0, 2, 3]), S


SSD_FNS = {"ssd": ssd_chunked, "sequential": ssd_sequential}


class Model(Net):
    def _mix(self, i, h):
        """h (..., D) -> z (..., E) in the compute dtype, xBC (..., E + 2GN) and dt (..., H) in fp32, before the conv."""
        c = self.cfg
        E = c.d_inner
        zxbcdt = linear(h, self.p[f"backbone.layers.{i}.mixer.in_proj.weight"], self.dtype)
        return zxbcdt[..., :E], tf.cast(zxbcdt[..., E : E + c.conv_dim], tf.float32), tf.cast(zxbcdt[..., E + c.conv_dim :], tf.float32)

    def _ssm_inputs(self, i, xBC, dt):
        """xBC after conv + silu (..., E + 2GN), raw dt (..., H) -> x (..., H, P), Δ (..., H), Bm, Cm (..., G, N), A (H,)."""
        c, pre = self.cfg, f"backbone.layers.{i}.mixer."
        E, GN = c.d_inner, c.ngroups * c.d_state
        x = _split_last(xBC[..., :E], c.nheads, c.headdim)
        Bm = _split_last(xBC[..., E : E + GN], c.ngroups, c.d_state)
        Cm = _split_last(xBC[..., E + GN :], c.ngroups, c.d_state)
        return x, tf.nn.softplus(dt + self.p[pre + "dt_bias"]), Bm, Cm, -tf.exp(self.p[pre + "A_log"])

    def _mix_out(self, i, y, x, z):
        """y (..., H, P) from the SSD, x (..., H, P), z (..., E) -> the mixer's output (..., D): + D x, the gated norm, out_proj."""
        c, pre = self.cfg, f"backbone.layers.{i}.mixer."
        y = y + x * self.p[pre + "D"][:, None]
        g = _merge_last(y) * tf.nn.silu(tf.cast(z, tf.float32))
        g = rmsnorm(_split_last(g, c.ngroups, c.d_inner // c.ngroups), tf.reshape(self.p[pre + "norm.weight"], [c.ngroups, -1]))
        return linear(_merge_last(g), self.p[pre + "out_proj.weight"], self.dtype)

    def _layers(self, tokens, return_state=False):
        p, c = self.p, self.cfg
        K, L = c.d_conv, tokens.shape[1]
        hidden, residual, states = tf.gather(p["backbone.embedding.weight"], tokens), None, []
        for i in range(c.n_layers):
            pre = f"backbone.layers.{i}."
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            z, xBC, dt = self._mix(i, rmsnorm(residual, p[pre + "norm.weight"]))
            w = tf.reshape(p[pre + "mixer.conv1d.weight"], [c.conv_dim, K])
            xp = tf.pad(xBC, [[0, 0], [K - 1, 0], [0, 0]])  # causal: zeros before
            conv = tf.nn.silu(p[pre + "mixer.conv1d.bias"] + tf.add_n([w[:, k] * xp[:, k : k + L] for k in range(K)]))
            x, delta, Bm, Cm, A = self._ssm_inputs(i, conv, dt)
            y, S = SSD_FNS[self.scan](x, delta, A, Bm, Cm, c.chunk_size)
            hidden = self._mix_out(i, y, x, z)
            if return_state:  # the conv state: the last K conv inputs, zeros before the first
                states.append((tf.transpose(tf.pad(xBC, [[0, 0], [max(0, K - L), 0], [0, 0]])[:, -K:], [0, 2, 1]), S))
        x = rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        logits = self.head(x)
        return (logits, states) if return_state else logits

    def logits(self, tokens):
        return self._layers(tokens)

    def init_state(self, batch, capacity):
        """[(conv (B, E + 2GN, K), ssm (B, H, P, N))] per layer, fp32 whatever the compute dtype."""
        c = self.cfg
        return [(tf.zeros([batch, c.conv_dim, c.d_conv]), tf.zeros([batch, c.nheads, c.headdim, c.d_state])) for _ in range(c.n_layers)]

    def _prefill(self, tokens):
        return self._layers(tokens, return_state=True)[1]

    def prefill(self, tokens, state):
        return self.compiled("prefill")(tokens)

    def _step(self, token, state):
        p, c = self.p, self.cfg
        hidden, residual, new = tf.gather(p["backbone.embedding.weight"], token), None, []
        for i in range(c.n_layers):
            pre = f"backbone.layers.{i}."
            conv, S = state[i]
            residual = tf.cast(hidden, tf.float32) if residual is None else tf.cast(hidden, tf.float32) + residual
            z, xBC, dt = self._mix(i, rmsnorm(residual, p[pre + "norm.weight"]))
            conv = tf.concat([conv[..., 1:], xBC[..., None]], axis=-1)
            w = tf.reshape(p[pre + "mixer.conv1d.weight"], [c.conv_dim, -1])
            x, delta, Bm, Cm, A = self._ssm_inputs(i, tf.nn.silu(tf.einsum("bck,ck->bc", conv, w) + p[pre + "mixer.conv1d.bias"]), dt)
            S, y = ssd_step(S, x, delta, A, Bm, Cm)
            hidden = self._mix_out(i, y, x, z)
            new.append((conv, S))
        x = rmsnorm(tf.cast(hidden, tf.float32) + residual, p["backbone.norm_f.weight"])
        return self.head(x), new

    def decode(self, token, state):
        return self.compiled("step")(token, state)


def op(scan: str, inputs: dict):
    """SSD alone with ``scan`` (mamba-ssm's mamba_chunk_scan_combined with dt_softplus, D per head,
    no z): (a function of arch.OP_ARGS -> y (B, L, H, P) fp32, the inputs less ``chunk_size``)."""
    f32, chunk = tf.float32, inputs["chunk_size"]

    def fn(x, dt, A, Bm, Cm, D, dt_bias):
        x = tf.cast(x, f32)
        y, _ = SSD_FNS[scan](x, tf.nn.softplus(tf.cast(dt, f32) + dt_bias), A, tf.cast(Bm, f32), tf.cast(Cm, f32), chunk)
        return y + x * D[:, None]

    return fn, {k: v for k, v in inputs.items() if k != "chunk_size"}
