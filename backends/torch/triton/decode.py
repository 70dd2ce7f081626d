"""One decode token of a Mamba mixer on torch-cuda (the ``triton`` scan kind), fused:

    conv_step          the conv state's shift + silu (Mamba-1's and Mamba-2's, any channel count)
    ssm_step           Mamba-1's SSM state update with the C contraction, D skip and gate
    ssd_step           Mamba-2's: a scalar decay per head over its (P, N) state, the C
                       contraction and D skip; its gate goes with the norm into
                       fused.gated_rmsnorm

Without CUDA the kernels run under Triton's interpreter (this package's __init__ sets it up).
"""

from __future__ import annotations

import torch

from . import cdiv, lastdim_contiguous, next_power_of_2, padded_states, tl, triton
from .scan_kernels import sigmoid, softplus

# The recurrent step of a Mamba mixer for one token, in two kernels (conv_step, then ssm_step or
# ssd_step) instead of some twenty small ops (decode is launch-bound: CUDA graphs remove the host,
# not the kernels). Each writes new state tensors: the step stays functional, like MambaMixer.step.
STEP_BLOCK_E = 32


@triton.jit
def conv_step_kernel(conv_ptr, x_ptr, w_ptr, bias_ptr, conv_out_ptr, xc_ptr, E, sx_b, K: tl.constexpr, KP: tl.constexpr, BE: tl.constexpr):
    """conv' = [conv[..., 1:], x]  (B, E, K) fp32;  xc = silu(Σ_k conv'[k] w[k] + bias)."""
    pb, pe = tl.program_id(0), tl.program_id(1)
    e = pe * BE + tl.arange(0, BE)
    k = tl.arange(0, KP)
    me = e < E
    m2 = me[:, None] & (k < K)[None, :]
    base = (pb * E + e[:, None]) * K + k[None, :]
    shifted = tl.load(conv_ptr + base + 1, mask=m2 & (k < K - 1)[None, :], other=0.0).to(tl.float32)
    x = tl.load(x_ptr + pb * sx_b + e, mask=me, other=0.0).to(tl.float32)
    new = tl.where((k == K - 1)[None, :], x[:, None], shifted)
    tl.store(conv_out_ptr + base, new, mask=m2)
    w = tl.load(w_ptr + e[:, None] * K + k[None, :], mask=m2, other=0.0).to(tl.float32)
    pre = tl.sum(new * w, axis=1) + tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)
    tl.store(xc_ptr + pb * E + e, (pre * sigmoid(pre)).to(xc_ptr.dtype.element_ty), mask=me)


@triton.jit
def ssm_step_kernel(
    xc_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_log_ptr, D_ptr, bias_ptr, h_ptr, h_out_ptr, y_ptr,
    E, N, sdt_b, sz_b, sB_b, sC_b, NP: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """Δ = softplus(dt + dt_bias); h' = exp(Δ A) h + Δ x B, A = -exp(A_log);
    y = (C · h' + D x) silu(z), in xc's dtype."""
    pb, pe = tl.program_id(0), tl.program_id(1)
    e = pe * BE + tl.arange(0, BE)
    n = tl.arange(0, NP)
    me, mn = e < E, n < N
    m2 = me[:, None] & mn[None, :]
    x = tl.load(xc_ptr + pb * E + e, mask=me, other=0.0).to(tl.float32)
    v = tl.load(dt_ptr + pb * sdt_b + e, mask=me, other=0.0).to(tl.float32) + tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)
    delta = softplus(v)
    A = -tl.exp(tl.load(A_log_ptr + e[:, None] * N + n[None, :], mask=m2, other=0.0).to(tl.float32))
    Bv = tl.load(B_ptr + pb * sB_b + n, mask=mn, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + pb * sC_b + n, mask=mn, other=0.0).to(tl.float32)
    hidx = (pb * E + e[:, None]) * N + n[None, :]
    h = tl.load(h_ptr + hidx, mask=m2, other=0.0)
    h = tl.exp(delta[:, None] * A) * h + (delta * x)[:, None] * Bv[None, :]
    tl.store(h_out_ptr + hidx, h, mask=m2)
    z = tl.load(z_ptr + pb * sz_b + e, mask=me, other=0.0).to(tl.float32)
    y = (tl.sum(h * Cv[None, :], axis=1) + tl.load(D_ptr + e, mask=me, other=0.0).to(tl.float32) * x) * z * sigmoid(z)
    tl.store(y_ptr + pb * E + e, y.to(y_ptr.dtype.element_ty), mask=me)


def conv_step(conv, x, weight, bias):
    """conv (B, E, K) fp32, x (B, E) (a view with unit stride along E), weight (E, 1, K), bias (E,)
    -> (new conv state (B, E, K) fp32, silu(conv output) (B, E) in x's dtype)."""
    Bt, E, K = conv.shape
    conv = conv.contiguous()
    (x,) = lastdim_contiguous(x)  # the kernel steps batch rows by x.stride(0), channels by 1
    new, xc = torch.empty_like(conv), torch.empty(Bt, E, device=x.device, dtype=x.dtype)
    conv_step_kernel[(Bt, cdiv(E, STEP_BLOCK_E))](
        conv, x, weight.reshape(E, K).contiguous(), bias, new, xc, E, x.stride(0), K=K, KP=next_power_of_2(K), BE=STEP_BLOCK_E
    )  # fmt: skip
    return new, xc


def ssm_step(xc, dt, z, Bm, Cm, A_log, D, dt_bias, h):
    """One token of the selective SSM: xc, dt (before bias and softplus), z (B, E); Bm, Cm (B, N);
    A_log (E, N); D, dt_bias (E,); h (B, E, N) fp32 -> (gated y (B, E) in xc's dtype, new h)."""
    Bt, E, N = h.shape
    xc = xc.contiguous()  # indexed as (B, E) rows of E
    dt, z, Bm, Cm = lastdim_contiguous(dt, z, Bm, Cm)
    h = h.contiguous()
    h_new, y = torch.empty_like(h), torch.empty(Bt, E, device=xc.device, dtype=xc.dtype)
    ssm_step_kernel[(Bt, cdiv(E, STEP_BLOCK_E))](
        xc, dt, z, Bm, Cm, A_log.contiguous(), D, dt_bias, h, h_new, y, E, N,
        dt.stride(0), z.stride(0), Bm.stride(0), Cm.stride(0), NP=padded_states(N), BE=STEP_BLOCK_E,
    )  # fmt: skip
    return y, h_new


@triton.jit
def ssd_step_kernel(
    xbc_ptr, dt_ptr, A_log_ptr, D_ptr, bias_ptr, s_ptr, s_out_ptr, y_ptr,
    P, N, E, GN, heads_per_group, sx_b, sdt_b, BP: tl.constexpr, NP: tl.constexpr,
):  # fmt: skip
    """BP channels of head h of row b: Δ = softplus(dt + dt_bias); S' = exp(Δ A) S + Δ x B^T
    (BP, N) fp32, A = -exp(A_log[h]); y = S' C + D x fp32 (the gate is the norm's). x is head h's
    channels of xBC, B and C its group's N each."""
    pb, h, pp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g = h // heads_per_group
    p, n = pp * BP + tl.arange(0, BP), tl.arange(0, NP)
    mp, mn = p < P, n < N
    m2 = mp[:, None] & mn[None, :]
    row = xbc_ptr + pb * sx_b
    x = tl.load(row + h * P + p, mask=mp, other=0.0).to(tl.float32)
    Bv = tl.load(row + E + g * N + n, mask=mn, other=0.0).to(tl.float32)
    Cv = tl.load(row + E + GN + g * N + n, mask=mn, other=0.0).to(tl.float32)
    delta = softplus(tl.load(dt_ptr + pb * sdt_b + h).to(tl.float32) + tl.load(bias_ptr + h).to(tl.float32))
    decay = tl.exp(-delta * tl.exp(tl.load(A_log_ptr + h).to(tl.float32)))
    sidx = ((pb * tl.num_programs(1) + h) * P + p[:, None]) * N + n[None, :]
    S = decay * tl.load(s_ptr + sidx, mask=m2, other=0.0) + (delta * x)[:, None] * Bv[None, :]
    tl.store(s_out_ptr + sidx, S, mask=m2)
    y = tl.sum(S * Cv[None, :], axis=1) + tl.load(D_ptr + h).to(tl.float32) * x
    tl.store(y_ptr + pb * E + h * P + p, y, mask=mp)


STEP_BLOCK_P = 16  # channels of a head per ssd_step program: 130M's 24 heads make 96 programs, not 24


def ssd_step(xbc, dt, A_log, D, dt_bias, S, ngroups: int):
    """One token of Mamba-2's SSM: xbc (B, E + 2GN) after conv + silu (x, B, C), dt (B, H) before
    bias and softplus (views with unit stride along their last dim), A_log, D, dt_bias (H,), S
    (B, H, P, N) fp32 -> (y (B, E) fp32 before the gate, new S)."""
    Bt, H, P, N = S.shape
    E = H * P
    xbc, dt = lastdim_contiguous(xbc, dt)
    S = S.contiguous()
    S_new, y = torch.empty_like(S), torch.empty(Bt, E, device=S.device, dtype=torch.float32)
    BP = min(STEP_BLOCK_P, next_power_of_2(P))
    ssd_step_kernel[(Bt, H, cdiv(P, BP))](
        xbc, dt, A_log, D, dt_bias, S, S_new, y, P, N, E, ngroups * N, H // ngroups,
        xbc.stride(0), dt.stride(0), BP=BP, NP=padded_states(N),
    )  # fmt: skip
    return y, S_new
