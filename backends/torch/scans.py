"""The Mamba selective scans for the PyTorch backend (the parallel / prefill path).

Scans (the Mamba parallel path; decode always uses the recurrent step):
    sequential  a Python loop over time, h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t
    chunked     seed 004's log-space scan: inside a chunk of T steps
                h_t = exp(c_t) * (h_0 + Σ_{s<=t} exp(-c_s) Δ_s B_s x_s),  c_t = Σ_{s<=t} Δ_s A,
                with T chosen from the data so |c| <= CHUNK_LOG_BUDGET: exp(±c) never leaves fp32
    parallel    a work-efficient associative (odd/even, Blelloch-style) scan over the operator
                (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2): O(L) work, O(log L) depth, any L
                without padding to a power of two
    triton      (CUDA) one fused Triton kernel for the whole selective scan, softplus, D skip and
                gate included, with a fused backward (triton/scan.py); it brings fused kernels
                for the causal conv + silu and the residual add + RMSNorm too (triton/fused.py)

``add_norm``, ``conv_silu`` and ``selective_scan`` are the entry points the model calls, the last
with mamba-ssm's selective_scan_fn semantics, whichever the scan.
"""

from __future__ import annotations

import torch

from ssmbench.archs import mamba as arch
from ssmbench.archs.mamba import CHUNK_LOG_BUDGET


# Every scan: dt (B, L, E), A (E, N), Bm, Cm (B, L, N), x (B, L, E), h0 (B, E, N) | None
# -> y (B, L, E) without the D skip, and the last state (B, E, N). Inputs are fp32.
def scan_sequential(x, dt, A, Bm, Cm, h0=None):
    Bt, L, E = x.shape
    h = x.new_zeros(Bt, E, A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(L):
        dA = torch.exp(dt[:, t, :, None] * A)
        h = dA * h + (dt[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append(torch.einsum("ben,bn->be", h, Cm[:, t]))
    return torch.stack(ys, 1), h


def chunk_length(dt, A, L: int) -> int:
    """Largest T with T * max|Δ A| <= CHUNK_LOG_BUDGET (one host read of the max step)."""
    return arch.chunk_length(float(dt.detach().amax()) * float((-A).detach().amax()), L)


def scan_chunked(x, dt, A, Bm, Cm, h0=None):
    """Each step's log-decay Δ A is clamped at -CHUNK_LOG_BUDGET: a decay of exp(-40) = 4e-18
    is below fp32 resolution, so the result is unchanged to rounding, and a single huge step can
    no longer make exp(c) * exp(-c) = 0 * inf."""
    Bt, L, E = x.shape
    T = chunk_length(dt, A, L)
    h = x.new_zeros(Bt, E, A.shape[1]) if h0 is None else h0
    ys = []
    for s in range(0, L, T):
        dts, xs = dt[:, s : s + T], x[:, s : s + T]
        c = torch.cumsum((dts[..., None] * A).clamp(min=-CHUNK_LOG_BUDGET), dim=1)  # (B, T, E, N) in [-budget, 0]
        u = (dts * xs)[..., None] * Bm[:, s : s + T, None, :]  # Δ B x
        hs = torch.exp(c) * (torch.cumsum(u * torch.exp(-c), dim=1) + h[:, None])
        ys.append(torch.einsum("bten,btn->bte", hs, Cm[:, s : s + T]))
        h = hs[:, -1]
    return torch.cat(ys, 1), h


def _assoc_scan(a, b):
    """h_t = a_t h_{t-1} + b_t along dim 1 with h_{-1} = 0, for any length (odd/even recursion)."""
    L = a.shape[1]
    if L == 1:
        return b
    m = L // 2
    a_ev, a_od = a[:, 0 : 2 * m : 2], a[:, 1 : 2 * m : 2]
    b_ev, b_od = b[:, 0 : 2 * m : 2], b[:, 1 : 2 * m : 2]
    h_od = _assoc_scan(a_od * a_ev, a_od * b_ev + b_od)  # h at positions 1, 3, ..., 2m-1
    rest = a[:, 2::2] * h_od[:, : (L - 1) // 2] + b[:, 2::2]  # h at positions 2, 4, ...
    h_ev = torch.cat([b[:, :1], rest], 1)
    out = torch.stack([h_ev[:, :m], h_od], 2).flatten(1, 2)
    return torch.cat([out, h_ev[:, m:]], 1) if L % 2 else out


def scan_parallel(x, dt, A, Bm, Cm, h0=None):
    a = torch.exp(dt[..., None] * A)  # (B, L, E, N)
    b = (dt * x)[..., None] * Bm[:, :, None, :]
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], 1)
    hs = _assoc_scan(a, b)
    return torch.einsum("blen,bln->ble", hs, Cm), hs[:, -1]


SCAN_FNS = {"sequential": scan_sequential, "chunked": scan_chunked, "parallel": scan_parallel}
# scans that read back to the host, with why: they cannot be captured in a CUDA graph
HOST_READS = {"chunked": "the chunked scan reads its chunk length back to the host"}


def rmsnorm(x, w, eps=1e-5):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float()


def add_norm(kind, hidden, residual, weight):
    """A block's residual add and RMSNorm: hidden (B, L, D), residual (B, L, D) fp32 | None ->
    (RMSNorm(r) * weight, r) with r = hidden + residual in fp32 (the residual stream). The normed
    output is fp32 here; the triton kind gives it in autocast's dtype, what the next Linear takes."""
    if kind == "triton":
        from .triton import fused

        return fused.add_rmsnorm(hidden, residual, weight)
    r = hidden.float() if residual is None else hidden.float() + residual
    return rmsnorm(r, weight), r


def conv_silu(kind, x, weight, bias):
    """silu(causal depthwise conv1d): x (B, L, E), weight (E, 1, K), bias (E,) -> (B, L, E)."""
    if kind == "triton":
        from .triton import fused

        return fused.causal_conv_silu(x, weight, bias)
    L, K = x.shape[1], weight.shape[-1]
    return torch.nn.functional.silu(
        torch.nn.functional.conv1d(x.transpose(1, 2), weight, bias, padding=K - 1, groups=x.shape[2])[..., :L]
    ).transpose(1, 2)


def selective_scan(kind, x, dt, A, Bm, Cm, D, z, dt_bias):
    """out = (scan(x, softplus(dt + dt_bias), A, B, C) + D x) * silu(z), and the last state.

    x, dt, z (B, L, E) in the compute dtype; A (E, N), D, dt_bias (E,) fp32; Bm, Cm (B, L, N)
    -> out (B, L, E) (fp32, or x's dtype from the triton scan), last state (B, E, N) fp32.
    """
    if kind == "triton":
        from .triton import scan  # imports Triton: only where the scan is used

        return scan.selective_scan(x, dt, A, Bm, Cm, D, z, dt_bias)
    xf = x.float()
    delta = torch.nn.functional.softplus(dt.float() + dt_bias)
    y, h_last = SCAN_FNS[kind](xf, delta, A, Bm.float(), Cm.float())
    return (y + xf * D) * torch.nn.functional.silu(z.float()), h_last
