"""The Mamba selective scans for the TensorFlow backends (the parallel / prefill path):
``sequential`` (tf.scan) and ``chunked`` (the log-space chunked scan; its static chunk length is
chosen on the first call from the data, as in the JAX backend)."""

from __future__ import annotations

from ssmbench.archs.mamba import CHUNK_LOG_BUDGET

from .common import tf


def scan_sequential(x, dt, A, Bm, Cm, chunk=None):
    """x, dt (B, L, E); A (E, N); Bm, Cm (B, L, N) -> y (B, L, E), h (B, E, N).

    A tf.while_loop that writes y_t = C_t h_t into a TensorArray, as JAX's lax.scan does; not
    tf.scan over the states: XLA compiles tf.scan's gradient into a loop 5x slower on CPU."""
    L = x.shape[1]
    xs = [tf.transpose(t, [1, 0, 2]) for t in (x, dt, Bm, Cm)]  # (L, B, ·)

    def body(t, h, ys):
        x_t, dt_t, B_t, C_t = (a[t] for a in xs)
        h = tf.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]
        return t + 1, h, ys.write(t, tf.einsum("ben,bn->be", h, C_t))

    h0 = tf.zeros(tf.stack([tf.shape(x)[0], tf.shape(x)[2], tf.shape(A)[1]]), tf.float32)
    _, h, ys = tf.while_loop(lambda t, h, ys: t < L, body, (0, h0, tf.TensorArray(tf.float32, size=L)), maximum_iterations=L)
    return tf.transpose(ys.stack(), [1, 0, 2]), h


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
