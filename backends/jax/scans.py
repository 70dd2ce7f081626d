"""The Mamba selective scans for the JAX backend (the parallel / prefill path).

Scans (the Mamba parallel path):
    sequential   lax.scan over time
    associative  lax.associative_scan over (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)
    chunked      the log-space chunked scan, built only from ops Apple's Metal plugin lowers:
                 chunks unrolled in Python, in-chunk cumulative sums as lower-triangular matmuls,
                 no pad, while, reduce_window or multi-operand reduce. Its static chunk length is
                 chosen on the first call from the data (|Σ Δ A| <= CHUNK_LOG_BUDGET per chunk);
                 a later input that exceeds it overflows to inf/NaN, which the harness reports.
    pallas       jax-cuda only: one fused Pallas kernel each way, the states kept on chip
                 (pallas_scan.py)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssmbench.archs.mamba import CHUNK_LOG_BUDGET


def sl(x, start: int, size: int, axis: int):
    """x[start : start + size] along ``axis`` as a dynamic slice. Its gradient is a
    dynamic_update_slice; a static slice's gradient is a `pad`, which Apple's Metal plugin
    cannot lower (jax#16366, jax#20119). Every slice on the Mamba training path goes here."""
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis % x.ndim)


def _tril(T):
    return jnp.tril(jnp.ones((T, T), jnp.float32))


# ============================================================================ scans
# Every scan: x, dt (B, L, E); A (E, N); Bm, Cm (B, L, N), fp32 -> y (B, L, E) (no D skip), h (B, E, N)
def scan_sequential(x, dt, A, Bm, Cm, chunk=None):
    def step(h, inp):
        x_t, dt_t, B_t, C_t = inp
        h = jnp.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * B_t[:, None, :]
        return h, jnp.einsum("ben,bn->be", h, C_t)

    h0 = jnp.zeros((x.shape[0], x.shape[2], A.shape[1]), x.dtype)
    h, ys = jax.lax.scan(step, h0, tuple(jnp.swapaxes(t, 0, 1) for t in (x, dt, Bm, Cm)))
    return jnp.swapaxes(ys, 0, 1), h


def scan_associative(x, dt, A, Bm, Cm, chunk=None):
    a = jnp.exp(dt[..., None] * A)  # (B, L, E, N)
    b = (dt * x)[..., None] * Bm[:, :, None, :]

    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    _, hs = jax.lax.associative_scan(combine, (a, b), axis=1)
    return jnp.einsum("blen,bln->ble", hs, Cm), hs[:, -1]


def scan_chunked(x, dt, A, Bm, Cm, chunk):
    """h_t = exp(c_t) (h_0 + Σ_{s<=t} exp(-c_s) Δ_s B_s x_s) inside each chunk of ``chunk`` steps."""
    Bt, L, E = x.shape
    h = jnp.zeros((Bt, E, A.shape[1]), jnp.float32)
    ys = []
    for s in range(0, L, chunk):
        T = min(chunk, L - s)
        tri = _tril(T)
        dts, xs, Bs, Cs = (sl(t, s, T, 1) for t in (dt, x, Bm, Cm))
        dA = jnp.maximum(dts[..., None] * A, -CHUNK_LOG_BUDGET)  # (B, T, E, N)
        c = jnp.einsum("ts,bsen->bten", tri, dA)  # cumsum as a lower-triangular matmul
        u = (dts * xs)[..., None] * Bs[:, :, None, :]
        hs = jnp.exp(c) * (jnp.einsum("ts,bsen->bten", tri, u * jnp.exp(-c)) + h[:, None])
        ys.append(jnp.einsum("bten,btn->bte", hs, Cs))
        h = sl(hs, T - 1, 1, 1)[:, 0]
    return jnp.concatenate(ys, axis=1), h


def scan_pallas(x, dt, A, Bm, Cm, chunk=None):
    """The fused Pallas kernels (pallas_scan.py; jax-cuda only: elsewhere Pallas interprets them)."""
    from .pallas_scan import scan_pallas as fused

    return fused(x, dt, A, Bm, Cm)


SCAN_FNS = {"sequential": scan_sequential, "associative": scan_associative, "chunked": scan_chunked, "pallas": scan_pallas}
