"""The Mamba selective scans for the TensorFlow backends (the parallel / prefill path):
``sequential`` (tf.scan) and ``chunked`` (the log-space chunked scan; its static chunk length is
chosen on the first call from the data, as in the JAX backend)."""

from __future__ import annotations

from ssmbench.archs.mamba import CHUNK_LOG_BUDGET

from .common import tf


def scan_sequential(x, dt, A, Bm, Cm, chunk=None):
    """x, dt (B, L, E); A (E, N); Bm, Cm (B, L, N) -> y (B, L, E), h (B, E, N)."""

    def step(h, inp):
        x_t, dt_t, B_t = inp
        return tf.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]

    h0 = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(x)[2], tf.shape(A)[1]]), tf.float32)
    hs = tf.scan(step, tuple(tf.transpose(t, [1, 0, 2]) for t in (x, dt, Bm)), initializer=h0)  # (L, B, E, N)
    y = tf.einsum("lben,lbn->ble", hs, tf.transpose(Cm, [1, 0, 2]))
    return y, hs[-1]


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
