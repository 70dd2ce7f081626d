"""Mamba-2's SSD scans for the PyTorch backend (the parallel / prefill path), and its gated norm.

Scans (ssmbench.archs.mamba2 states the math; shapes below):
    ssd         the chunked SSD in torch ops, any length: inside each chunk of T steps the masked
                quadratic form y = (C B^T ∘ decay) (Δ x), matmul-shaped; between chunks the
                (H, P, N) states, combined in one more masked product over the chunks' totals
                (no loop over chunks). Only exp of non-positive numbers: each decay's exponent is
                masked before the exp, so neither values nor gradients overflow.
    sequential  a Python loop over time, S_t = exp(Δ_t A) S_{t-1} + Δ_t x_t B_t^T
    triton      (CUDA) the fused SSD kernels, forward and backward (triton/ssd.py)

Shapes: x (B, L, H, P); dt (B, L, H) before dt_bias and softplus; A (H,) < 0; Bm, Cm
(B, L, G, N), head h reading group h // (H / G); D, dt_bias (H,). ``ssd`` returns y (B, L, H, P)
with the D skip, and the last state (B, H, P, N) fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ssd_sequential(x, delta, A, Bm, Cm, S0=None):
    """fp32 x (B, L, H, P), delta (B, L, H) after softplus, A (H,), Bm, Cm (B, L, G, N) ->
    y (B, L, H, P) without the D skip, last state (B, H, P, N)."""
    Bt, L, H, P = x.shape
    G, N = Bm.shape[2:]
    xg, dg = x.reshape(Bt, L, G, H // G, P), delta.reshape(Bt, L, G, H // G)  # head h = g (H / G) + r
    Ag = A.reshape(G, H // G)
    S = x.new_zeros(Bt, G, H // G, P, N) if S0 is None else S0.reshape(Bt, G, H // G, P, N)
    ys = []
    for t in range(L):
        S = torch.exp(dg[:, t] * Ag)[..., None, None] * S + torch.einsum("bgr,bgrp,bgn->bgrpn", dg[:, t], xg[:, t], Bm[:, t])
        ys.append(torch.einsum("bgrpn,bgn->bgrp", S, Cm[:, t]))
    return torch.stack(ys, 1).reshape(Bt, L, H, P), S.reshape(Bt, H, P, N)


def _decay(seg, n: int):
    """exp(seg) strictly below the diagonal of the leading (n, n) dims, 1 on it, 0 above; the exp
    never sees a positive exponent. The diagonal is a constant, not seg's a_t - a_t: at a steep
    decay the two O(1) gradient terms of that difference cancel only up to rounding."""
    strict = torch.ones(n, n, dtype=torch.bool, device=seg.device).tril(-1)[:, :, None, None]
    on = torch.eye(n, dtype=torch.bool, device=seg.device)[:, :, None, None]
    return torch.exp(seg.masked_fill(~strict, float("-inf")).masked_fill(on, 0.0))


def ssd_chunked(x, delta, A, Bm, Cm, T: int, S0=None):
    """The chunked SSD, same arguments and results as ssd_sequential, chunk T. The length is padded
    to a multiple of T with Δ = 0 steps, which leave the state as it is."""
    Bt, L, H, P = x.shape
    G, N = Bm.shape[2:]
    R = H // G
    T = min(T, L)  # a sequence shorter than the chunk is one chunk of its own length
    pad = (-L) % T
    if pad:
        x, delta, Bm, Cm = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, delta, Bm, Cm))
    c = (L + pad) // T
    x = x.reshape(Bt, c, T, G, R, P)
    delta = delta.reshape(Bt, c, T, G, R)
    Bm, Cm = Bm.reshape(Bt, c, T, G, N), Cm.reshape(Bt, c, T, G, N)
    dA = delta * A.reshape(G, R)  # (B, c, T, G, R)
    a = torch.cumsum(dA, dim=2)  # log-decay from the chunk's start
    # inside each chunk: y_t = Σ_{s<=t} (C_t·B_s) exp(a_t - a_s) Δ_s x_s
    decay = _decay(a[:, :, :, None] - a[:, :, None], T)  # (B, c, t, s, G, R)
    scores = torch.einsum("bctgn,bcsgn->bctsg", Cm, Bm)[..., None] * decay * delta[:, :, None]
    y = torch.einsum("bctsgr,bcsgrp->bctgrp", scores, x)
    # each chunk's own end state, then the states entering each chunk: a masked product over the
    # chunks' log-decay totals, with S0 (or zeros) as chunk -1; the totals' cumsum in float64, so
    # its differences stay exact at any length
    to_end = torch.exp(a[:, :, -1:] - a) * delta  # (B, c, T, G, R): exp(Σ_{s<r<=T} Δ_r A) Δ_s
    own = torch.einsum("bctgr,bctgrp,bctgn->bcgrpn", to_end, x, Bm)
    start = x.new_zeros(Bt, 1, G, R, P, N) if S0 is None else S0.reshape(Bt, 1, G, R, P, N)
    own = torch.cat([start, own], 1)  # (B, c + 1, G, R, P, N)
    totals = torch.cumsum(F.pad(a[:, :, -1].double(), (0, 0, 0, 0, 1, 0)), dim=1)  # (B, c + 1, G, R)
    passing = _decay((totals[:, :, None] - totals[:, None]).float(), c + 1)  # (B, z, w, G, R)
    states = torch.einsum("bzwgr,bwgrpn->bzgrpn", passing, own)  # states[z]: entering chunk z; [c]: the last
    y = y + torch.einsum("bctgn,bcgrpn->bctgrp", Cm, states[:, :-1]) * torch.exp(a)[..., None]
    return y.reshape(Bt, c * T, H, P)[:, :L], states[:, -1].reshape(Bt, H, P, N)


def ssd(kind, x, dt, A, Bm, Cm, D, dt_bias, chunk_size: int):
    """y = SSD(x, softplus(dt + dt_bias), A, B, C) + D x and the last state.

    x (B, L, H, P), dt (B, L, H) and Bm, Cm (B, L, G, N) in the compute dtype; A, D, dt_bias (H,)
    fp32 -> y (B, L, H, P) (fp32, or x's dtype from the triton kind), last state (B, H, P, N) fp32."""
    if kind == "triton":
        from .triton import ssd as fused  # imports Triton: only where the kind is used

        return fused.ssd(x, dt, A, Bm, Cm, D, dt_bias, chunk_size, return_final_state=True)
    xf = x.float()
    delta = F.softplus(dt.float() + dt_bias)
    args = (xf, delta, A, Bm.float(), Cm.float())
    y, S = ssd_sequential(*args) if kind == "sequential" else ssd_chunked(*args, chunk_size)
    return y + xf * D[:, None], S


def gated_rmsnorm(kind, y, z, weight, groups: int, eps: float = 1e-5):
    """mamba-ssm's RMSNormGated (norm_before_gate False): rms(y * silu(z)) over each of ``groups``
    groups of the last dim, times weight. y, z (..., E) -> (..., E) fp32 (the triton kind: one
    fused kernel each way, its output in autocast's dtype)."""
    if kind == "triton":
        from .triton import fused

        return fused.gated_rmsnorm(y, z, weight, groups, eps)
    return group_rmsnorm(y.float() * F.silu(z.float()), weight, groups, eps)


def group_rmsnorm(g, weight, groups: int, eps: float = 1e-5):
    """g (..., E) fp32 normalised by its rms over each of ``groups`` groups of E / groups, times weight."""
    shape = g.shape
    g = g.reshape(*shape[:-1], groups, shape[-1] // groups)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.reshape(shape) * weight.float()
