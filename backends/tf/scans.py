"""The Mamba selective scans for the TensorFlow backends (the parallel / prefill path):
``sequential`` (tf.scan) and ``chunked`` (the log-space chunked scan; its static chunk length is
chosen on the first call from the data, as in the JAX backend)."""

from __future__ import annotations

from ssmbench.archs.mamba import CHUNK_LOG_BUDGET

from .common import tf


def _forward_loop(xT, dtT, A, BT, CT):
    """The recurrence, a step at a time, over time-major inputs (L, B, ·): (y (L, B, E), h_L
    (B, E, N), every h_t (L, B, E, N))."""
    L = xT.shape[0]

    def body(t, h, ys, hs):
        x_t, dt_t, B_t, C_t = xT[t], dtT[t], BT[t], CT[t]
        h = tf.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]
        return t + 1, h, ys.write(t, tf.einsum("ben,bn->be", h, C_t)), hs.write(t, h)

    h0 = tf.zeros(tf.stack([tf.shape(xT)[1], tf.shape(xT)[2], tf.shape(A)[1]]), tf.float32)
    arrays = (tf.TensorArray(tf.float32, size=L), tf.TensorArray(tf.float32, size=L))
    _, h, ys, hs = tf.while_loop(lambda t, *_: t < L, body, (0, h0, *arrays), maximum_iterations=L)
    return ys.stack(), h, hs.stack()


def _time_major(*ts):
    """(B, L, ·) <-> (L, B, ·)."""
    return tuple(tf.transpose(t, [1, 0, 2]) for t in ts)


@tf.custom_gradient
def scan_sequential_fn(x, dt, A, Bm, Cm):
    """The sequential scan with its backward written out: one reverse loop in which each step's
    gradients come from that step's (B, E, N) tensors, as a fused scan's backward does. TensorFlow's
    own gradient of the forward loop ran 2x slower (1.03 against 0.54 s at seed 000's layer, XLA,
    2-core CPU), and of tf.scan 9x."""
    xT, dtT, BT, CT = _time_major(x, dt, Bm, Cm)
    yT, h_last, hs = _forward_loop(xT, dtT, A, BT, CT)

    def grad(dy, dh_last):
        L = xT.shape[0]
        (dyT,) = _time_major(dy)

        def body(k, dh, dA, d_dt, dx, dB, dC):  # dh: the gradient of h_t, carried from t + 1
            t = L - 1 - k
            dy_t, dt_t, B_t, C_t, x_t = dyT[t], dtT[t], BT[t], CT[t], xT[t]
            dh = dh + dy_t[..., None] * C_t[:, None, :]
            decay = tf.exp(dt_t[..., None] * A)
            h_prev = hs[tf.maximum(t - 1, 0)] * tf.cast(t > 0, tf.float32)  # h_{t-1}, zero before the start
            g = dh * h_prev * decay  # the gradient of Δ A at step t
            dh_B = tf.reduce_sum(dh * B_t[:, None, :], -1)
            d_dt = d_dt.write(t, tf.reduce_sum(g * A, -1) + dh_B * x_t)
            dx = dx.write(t, dh_B * dt_t)
            dB = dB.write(t, tf.einsum("ben,be->bn", dh, dt_t * x_t))
            dC = dC.write(t, tf.einsum("ben,be->bn", hs[t], dy_t))
            return k + 1, dh * decay, dA + tf.reduce_sum(g * dt_t[..., None], 0), d_dt, dx, dB, dC

        arrays = [tf.TensorArray(tf.float32, size=L) for _ in range(4)]
        dh0 = tf.zeros_like(h_last) if dh_last is None else dh_last
        _, _, dA, d_dt, dx, dB, dC = tf.while_loop(lambda k, *_: k < L, body, (0, dh0, tf.zeros_like(A), *arrays), maximum_iterations=L)
        dx, d_dt, dB, dC = _time_major(*(a.stack() for a in (dx, d_dt, dB, dC)))
        return dx, d_dt, dA, dB, dC

    (y,) = _time_major(yT)
    return (y, h_last), grad


def scan_sequential(x, dt, A, Bm, Cm, chunk=None):
    """x, dt (B, L, E); A (E, N); Bm, Cm (B, L, N) -> y (B, L, E), h (B, E, N)."""
    return scan_sequential_fn(x, dt, A, Bm, Cm)


def scan_chunked(x, dt, A, Bm, Cm, chunk):
    L = x.shape[1]
    h = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(x)[2], tf.shape(A)[1]]), tf.float32)
    ys = []
    for s in range(0, L, chunk):
        T = min(chunk, L - s)
        dts = dt[:, s : s + T]
        c = tf.cumsum(tf.maximum(dts[..., None] * A, -CHUNK_LOG_BUDGET), axis=1)  # (B, T, E, N)
        u = (dts * x[:, s : s + T])[..., None] * Bm[:, s : s + T, None, :]
        hs = tf.exp(c) * (tf.cumsum(u * tf.exp(-c), axis=1) + h[:, None])
        ys.append(tf.einsum("bten,btn->bte", hs, Cm[:, s : s + T]))
        h = hs[:, -1]
    return tf.concat(ys, axis=1), h


SCAN_FNS = {"sequential": scan_sequential, "chunked": scan_chunked}
