"""Mamba-2 (SSD) in JAX: pure functions of a dict of arrays named as mamba-ssm's state dict, so the
model is ssmbench.archs.mamba2's function line for line. backend.py jits them and calls the
functions mamba.py lists; the config (a static argument) gives the sizes, ngroups and the chunk.

Mixed precision as Mamba-1: in_proj and out_proj (``linear``) run in the compute dtype; the conv,
the norms, the SSD's state and the decode state in fp32. In bf16 / fp16 the SSD's four large
contractions (C B^T, scores x, each chunk's state, C times the entering state) take half-precision
operands and accumulate in fp32, forward and backward (``_mm``), as torch-cuda's Triton kernels and
mamba-ssm's do; the cumulative sums, decays and the state passed between chunks stay fp32. Heads
are handled as (G, H / G) so B and C are read per group, never repeated per head.

Scans (the parallel / prefill path, ``SCANS``; x (B, L, H, P), Δ (B, L, H), A (H,), B and C
(B, L, G, N), fp32; ``dtype`` the compute dtype -> y (B, L, H, P) fp32 without the D skip, and
the final state (B, H, P, N)):

    ssd         the chunked state-space dual form, all einsums: the sequence is cut into chunks of
                T = min(chunk_size, L) steps (the last one filled with Δ = 0, x = 0, which change
                nothing); inside a chunk y = ((C B^T) ∘ decay) (Δ x), decay[t, s] = exp(a_t - a_s)
                for s <= t, a the in-chunk cumulative sum of Δ A (a lower-triangular matmul); each
                chunk's own end state is a contraction too. Between chunks no loop: the state
                entering chunk z is Σ_{c<z} exp(Σ_{c<k<z} a_end[k]) state[c], one more matmul over
                the (chunks + 1, chunks) matrix of segment sums of the chunk totals (summed, not
                differenced, so long sequences lose no precision); its last row is the final state.
                Every masked exponent is set to -1e30 before the exp, so no exp of a positive number is
                ever taken and the gradients stay finite. Only ops Apple's Metal plugin lowers:
                dot_general, concatenate (no pad), dynamic slices (scans.sl), select, exp; no while,
                cumsum (reduce_window) or multi-operand reduce.
    sequential  lax.scan over time of the recurrence (a while loop: not for Metal)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .layers import causal_conv, head, head_weight, linear, rmsnorm, split, stack_layers
from .scans import sl

F32 = jnp.float32
EMBEDDING = "backbone.embedding.weight"
LINEAR = ("in_proj.weight", "out_proj.weight")  # used only through linear()
MASKED = -1e30  # the exponent of a masked decay: exp gives exactly 0 (finite, so no inf meets Metal's fast math)


# ============================================================================ scans
def _recur(S, x, dt, A, Bm, Cm):
    """One step of the recurrence. S (B, H, P, N), x (B, H, P), dt (B, H), A (H,), Bm, Cm (B, G, N)
    -> (S_t, y_t (B, H, P)): S_t = exp(Δ A) S + Δ x B^T, y_t = S_t C."""
    Bt, H, P, N = S.shape
    G = Bm.shape[1]
    xg = (x * dt[..., None]).reshape(Bt, G, H // G, P)
    S = jnp.exp(dt * A)[..., None, None] * S + jnp.einsum("bgrp,bgn->bgrpn", xg, Bm).reshape(S.shape)
    y = jnp.einsum("bgrpn,bgn->bgrp", S.reshape(Bt, G, H // G, P, N), Cm)
    return S, y.reshape(Bt, H, P)


def ssd_sequential(x, dt, A, Bm, Cm, chunk=None, dtype=F32):
    def step(S, inp):
        x_t, dt_t, B_t, C_t = inp
        return _recur(S, x_t, dt_t, A, B_t, C_t)

    Bt, L, H, P = x.shape
    S0 = jnp.zeros((Bt, H, P, Bm.shape[-1]), F32)
    S, ys = jax.lax.scan(step, S0, tuple(jnp.swapaxes(t, 0, 1) for t in (x, dt, Bm, Cm)))
    return jnp.swapaxes(ys, 0, 1), S


def _chunk_decay(a_end):
    """a_end (..., n): each chunk's total Σ Δ A -> W (..., n + 1, n), W[z, c] = exp(Σ_{c<k<z} a_end[k])
    for c < z, else 0: what the state at chunk c's end is worth on entering chunk z (z = n: the end)."""
    n = a_end.shape[-1]
    before = np.tri(n + 1, n, -1, dtype=bool)  # [z, k]: k < z (and, read as [z, c], c < z)
    after = np.tri(n, n, -1, dtype=bool)  # [k, c]: k > c
    seg = jnp.einsum("zk,...kc->...zc", before.astype(np.float32), jnp.where(after, a_end[..., :, None], 0.0))
    return jnp.exp(jnp.where(before, seg, MASKED))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _half_mm(spec, half, a, b):
    return jnp.einsum(spec, a.astype(half), b.astype(half), preferred_element_type=F32)


def _half_mm_fwd(spec, half, a, b):
    a, b = a.astype(half), b.astype(half)  # saved in half precision: half the memory of fp32 copies
    return jnp.einsum(spec, a, b, preferred_element_type=F32), (a, b)


def _half_mm_bwd(spec, half, saved, g):
    """Both gradients as half-operand contractions too (every index of one operand is in the other or
    the output, true of every spec here); without this JAX differentiates the mixed-dtype dot in fp32."""
    a, b = saved
    operands, out = spec.split("->")
    sa, sb = operands.split(",")
    g = g.astype(half)
    da = jnp.einsum(f"{out},{sb}->{sa}", g, b, preferred_element_type=F32)
    return da, jnp.einsum(f"{sa},{out}->{sb}", a, g, preferred_element_type=F32)


_half_mm.defvjp(_half_mm_fwd, _half_mm_bwd)


def _mm(spec, a, b, dtype):
    """einsum(spec, a, b) of fp32 arrays -> fp32: in fp32 when ``dtype`` is, else with ``dtype`` operands."""
    return jnp.einsum(spec, a, b) if jnp.dtype(dtype) == F32 else _half_mm(spec, jnp.dtype(dtype), a, b)


def ssd_chunked(x, dt, A, Bm, Cm, chunk, dtype=F32):
    Bt, L, H, P = x.shape
    G, N = Bm.shape[2:]
    R, T = H // G, min(chunk, L)
    n = -(-L // T)  # chunks

    def chunked(t, heads):  # (B, L, ...) -> (B, n, G, [R,] T, ...): zeros after the end, batch axes first for the matmuls
        if n * T > L:
            t = jnp.concatenate([t, jnp.zeros((Bt, n * T - L, *t.shape[2:]), t.dtype)], axis=1)
        t = t.reshape(Bt, n, T, G, *((R,) if heads else ()), *t.shape[3:])
        return jnp.moveaxis(t, 2, 4 if heads else 3)

    xdt = chunked(x * dt[..., None], True)  # (B, n, G, R, T, P): Δ x
    dA = chunked(dt * A, True)  # (B, n, G, R, T)
    Bc, Cc = chunked(Bm, False), chunked(Cm, False)  # (B, n, G, T, N)

    tri = np.tri(T, dtype=bool)  # [t, s]: s <= t
    a = jnp.einsum("ts,bngrs->bngrt", tri.astype(np.float32), dA)  # in-chunk cumulative Σ Δ A
    decay = jnp.exp(jnp.where(tri, a[..., :, None] - a[..., None, :], MASKED))  # (B, n, G, R, T, T)
    scores = _mm("bngtk,bngsk->bngts", Cc, Bc, dtype)[:, :, :, None] * decay  # (L ∘ C B^T)
    y = _mm("bngrts,bngrsp->bngrtp", scores, xdt, dtype)  # inside each chunk

    a_end = sl(a, T - 1, 1, -1)  # (B, n, G, R, 1)
    own = _mm("bngrsp,bngsk->bngrpk", xdt * jnp.exp(a_end - a)[..., None], Bc, dtype)  # (B, n, G, R, P, N) from its own steps
    W = _chunk_decay(jnp.moveaxis(a_end[..., 0], 1, -1))  # (B, G, R, n + 1, n)
    entering = jnp.einsum("bgrzc,bcgrpk->bzgrpk", W, own)  # (B, n + 1, G, R, P, N)
    y = y + _mm("bngtk,bngrpk->bngrtp", Cc, sl(entering, 0, n, 1), dtype) * jnp.exp(a)[..., None]  # from the state entering
    y = sl(jnp.moveaxis(y, 4, 2).reshape(Bt, n * T, H, P), 0, L, 1)
    return y, sl(entering, n, 1, 1).reshape(Bt, H, P, N)


SCANS = {"ssd": ssd_chunked, "sequential": ssd_sequential}


# ============================================================================ the model
def _in_proj(p, mix, h, cfg, dtype):
    """h (..., D) -> z (..., E) in the compute dtype, xBC (..., E + 2GN) fp32 (the conv's input), dt (..., H)."""
    GN = cfg.ngroups * cfg.d_state
    z, xBC, dt = split(linear(h, p[mix + "in_proj.weight"], dtype), (cfg.d_inner, cfg.d_inner + 2 * GN, cfg.nheads))
    return z, xBC.astype(F32), dt


def _ssm_inputs(p, mix, xBC, dt, cfg):
    """xBC after conv + silu (..., E + 2GN), raw dt (..., H) -> x (..., H, P), Δ (..., H), Bm, Cm (..., G, N), fp32."""
    E, G, N = cfg.d_inner, cfg.ngroups, cfg.d_state
    x, Bm, Cm = split(xBC, (E, G * N, G * N))
    lead = xBC.shape[:-1]
    delta = jax.nn.softplus(dt.astype(F32) + p[mix + "dt_bias"])
    return x.reshape(*lead, cfg.nheads, cfg.headdim), delta, Bm.reshape(*lead, G, N), Cm.reshape(*lead, G, N)


def _out(p, mix, y, x, z, cfg, dtype):
    """y (..., H, P) from the SSD, x its input -> D skip, gated RMSNorm over G groups of E / G, out_proj (..., D)."""
    G, E = cfg.ngroups, cfg.d_inner
    y = (y + x * p[mix + "D"][:, None]).reshape(*y.shape[:-2], E) * jax.nn.silu(z.astype(F32))
    y = rmsnorm(y.reshape(*y.shape[:-1], G, E // G), p[mix + "norm.weight"].reshape(G, E // G)).reshape(y.shape)
    return linear(y, p[mix + "out_proj.weight"], dtype)


def _layers(p, tokens, *, cfg, dtype, scan, return_state):
    """-> (the final norm's output (B, L, D) fp32, [(conv, ssm)] per layer if return_state)."""
    hidden, residual, states = p[EMBEDDING][tokens], None, []
    for i in range(cfg.n_layers):
        pre = f"backbone.layers.{i}."
        mix = pre + "mixer."
        residual = hidden.astype(F32) if residual is None else hidden.astype(F32) + residual
        z, xBC, dt = _in_proj(p, mix, rmsnorm(residual, p[pre + "norm.weight"]), cfg, dtype)
        conv = jax.nn.silu(causal_conv(xBC, p[mix + "conv1d.weight"], p[mix + "conv1d.bias"]))
        x, delta, Bm, Cm = _ssm_inputs(p, mix, conv, dt, cfg)
        y, S = SCANS[scan](x, delta, -jnp.exp(p[mix + "A_log"]), Bm, Cm, cfg.chunk_size, dtype)
        hidden = _out(p, mix, y, x, z, cfg, dtype)
        if return_state:
            K, L = cfg.d_conv, xBC.shape[1]
            pad = jnp.zeros((xBC.shape[0], max(0, K - L), xBC.shape[2]), F32)
            states.append((jnp.swapaxes(jnp.concatenate([pad, xBC], axis=1)[:, -K:], 1, 2), S))  # conv (B, E + 2GN, K)
    return rmsnorm(hidden.astype(F32) + residual, p["backbone.norm_f.weight"]), states


def hidden(p, tokens, *, cfg, dtype, scan, chunk):
    """tokens (B, L) -> the final norm's output (B, L, D) fp32. ``chunk`` is Mamba-1's; the SSD's is cfg.chunk_size."""
    return _layers(p, tokens, cfg=cfg, dtype=dtype, scan=scan, return_state=False)[0]


def forward(p, tokens, *, cfg, dtype, scan, chunk):
    """tokens (B, L) -> logits (B, L, V) fp32."""
    return head(hidden(p, tokens, cfg=cfg, dtype=dtype, scan=scan, chunk=chunk), head_weight(p, EMBEDDING), dtype)


def init_state(cfg, batch, capacity, dtype, device):
    """(conv (n_layers, B, E + 2GN, K), ssm (n_layers, B, H, P, N)), fp32 whatever the compute
    dtype: every layer's state in two arrays, as Mamba-1's (mamba.init_state says why)."""
    z = partial(jnp.zeros, dtype=F32, device=device)
    return z((cfg.n_layers, batch, cfg.conv_dim, cfg.d_conv)), z((cfg.n_layers, batch, cfg.nheads, cfg.headdim, cfg.d_state))


def prefill(p, tokens, state, *, cfg, dtype, scan, chunk):
    """Each layer's conv state (the last K conv inputs, zeros before the sequence) and SSD state
    after ``tokens``, from the parallel path (``state``, the empty one, is not read)."""
    return stack_layers(_layers(p, tokens, cfg=cfg, dtype=dtype, scan=scan, return_state=True)[1])


def step(p, token, state, *, cfg, dtype):
    """token (B,), state (conv (n_layers, B, E + 2GN, K), ssm (n_layers, B, H, P, N)) -> logits
    (B, V), the next state."""
    (convs, ssms), hidden, residual, new = state, p[EMBEDDING][token], None, []
    for i in range(cfg.n_layers):
        pre = f"backbone.layers.{i}."
        mix = pre + "mixer."
        conv, ssm = convs[i], ssms[i]
        residual = hidden.astype(F32) if residual is None else hidden.astype(F32) + residual
        z, xBC, dt = _in_proj(p, mix, rmsnorm(residual, p[pre + "norm.weight"]), cfg, dtype)
        conv = jnp.concatenate([conv[..., 1:], xBC[..., None]], axis=-1)
        xBC = jax.nn.silu(jnp.einsum("bck,ck->bc", conv, p[mix + "conv1d.weight"][:, 0]) + p[mix + "conv1d.bias"])
        x, delta, Bm, Cm = _ssm_inputs(p, mix, xBC, dt, cfg)
        ssm, y = _recur(ssm, x, delta, -jnp.exp(p[mix + "A_log"]), Bm, Cm)
        hidden = _out(p, mix, y, x, z, cfg, dtype)
        new.append((conv, ssm))
    x = rmsnorm(hidden.astype(F32) + residual, p["backbone.norm_f.weight"])
    return head(x, head_weight(p, EMBEDDING), dtype), stack_layers(new)


def op(scan: str, inputs: dict):
    """SSD alone with ``scan`` (mamba_chunk_scan_combined's semantics, dt_softplus=True, z=None):
    (a function of arch.OP_ARGS -> y (B, L, H, P) fp32, the inputs without their ``chunk_size``,
    which is the chunk T)."""
    chunk = inputs["chunk_size"]

    def fn(x, dt, A, Bm, Cm, D, dt_bias):
        dtype, x = x.dtype, x.astype(F32)
        y, _ = SCANS[scan](x, jax.nn.softplus(dt.astype(F32) + dt_bias), A, Bm.astype(F32), Cm.astype(F32), chunk, dtype)
        return y + x * D[:, None]

    return fn, {k: v for k, v in inputs.items() if k != "chunk_size"}
