"""Fused Triton kernels around the scan for torch-cuda (with the ``triton`` scan kind):

    causal_conv_silu   silu(causal depthwise conv1d + bias), forward and backward, in the
                       (B, L, E) layout the scan reads (cuDNN's depthwise conv1d backward had
                       dominated mamba-130m's train step)
    add_rmsnorm        the residual add and RMSNorm of every block in one pass: the residual
                       stream stays fp32, the normed output comes out in the compute dtype, and
                       the backward needs only the residual and 1/rms (eager RMSNorm keeps three
                       fp32 (B, L, D) tensors per layer)
    gated_rmsnorm      Mamba-2's gate and grouped RMSNorm, rms(y silu(z)) w, in one pass each way:
                       the backward recomputes the gate from y and z and keeps only 1/rms
    cross_entropy_     a chunk of logits -> each row's cross-entropy, and in place the gradient
                       (head.py's fused head + loss on CUDA)

A decode token's kernels are in decode.py. Without CUDA the kernels run under Triton's
interpreter (this package's __init__ sets it up).
"""

from __future__ import annotations

import torch

from . import bl_strides, cdiv, lastdim_contiguous, next_power_of_2, tl, triton
from .scan_kernels import sigmoid

# ============================================================================ causal conv + silu
# out[b, t, e] = silu(bias[e] + Σ_k w[e, k] x[b, t - (K-1) + k, e])   (zeros before t = 0)
# in the (B, L, E) layout the scan reads, so the model needs no transposes. The backward
# recomputes the pre-activation, stores g = dL/d(pre) once, and forms dx from g's shifts.
CONV_BLOCK_L, CONV_BLOCK_E = 32, 64


@triton.jit
def conv_forward_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, L, E, sx_b, sx_l, so_b, so_l, K: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr):
    pl, pe, pb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pl * BL + tl.arange(0, BL)
    e = pe * BE + tl.arange(0, BE)
    me = e < E
    acc = tl.zeros((BL, BE), dtype=tl.float32) + tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        s = t - (K - 1) + k
        m = ((s >= 0) & (s < L))[:, None] & me[None, :]
        xk = tl.load(x_ptr + pb * sx_b + s[:, None] * sx_l + e[None, :], mask=m, other=0.0).to(tl.float32)
        acc += tl.load(w_ptr + e * K + k, mask=me, other=0.0).to(tl.float32)[None, :] * xk
    out = acc * sigmoid(acc)
    tl.store(out_ptr + pb * so_b + t[:, None] * so_l + e[None, :], out.to(out_ptr.dtype.element_ty), mask=(t < L)[:, None] & me[None, :])


@triton.jit
def conv_grad_pre_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, g_ptr, dwp_ptr, dbp_ptr, L, E, n_ltiles, sx_b, sx_l, sd_b, sd_l,
    K: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr,
):  # fmt: skip
    """g = dout * silu'(pre) (fp32, (B, L, E)) and this tile's share of dw (K, E) and dbias (E)."""
    pl, pe, pb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pl * BL + tl.arange(0, BL)
    e = pe * BE + tl.arange(0, BE)
    me = e < E
    mt = (t < L)[:, None] & me[None, :]
    pre = tl.zeros((BL, BE), dtype=tl.float32) + tl.load(bias_ptr + e, mask=me, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(K):
        s = t - (K - 1) + k
        m = ((s >= 0) & (s < L))[:, None] & me[None, :]
        xk = tl.load(x_ptr + pb * sx_b + s[:, None] * sx_l + e[None, :], mask=m, other=0.0).to(tl.float32)
        pre += tl.load(w_ptr + e * K + k, mask=me, other=0.0).to(tl.float32)[None, :] * xk
    sg = sigmoid(pre)
    do = tl.load(dout_ptr + pb * sd_b + t[:, None] * sd_l + e[None, :], mask=mt, other=0.0).to(tl.float32)
    g = tl.where(mt, do * sg * (1.0 + pre * (1.0 - sg)), 0.0)
    tl.store(g_ptr + (pb * L + t[:, None]) * E + e[None, :], g, mask=mt)
    part = (pb * n_ltiles + pl) * E
    for k in tl.static_range(K):  # dw[e, k] = Σ_t g[t] x[t - (K-1) + k]
        s = t - (K - 1) + k
        m = ((s >= 0) & (s < L))[:, None] & me[None, :]
        xk = tl.load(x_ptr + pb * sx_b + s[:, None] * sx_l + e[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(dwp_ptr + (part * K) + e * K + k, tl.sum(g * xk, axis=0), mask=me)
    tl.store(dbp_ptr + part + e, tl.sum(g, axis=0), mask=me)


@triton.jit
def conv_grad_x_kernel(g_ptr, w_ptr, dx_ptr, L, E, K: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr):
    """dx[t] = Σ_k w[k] g[t + (K-1) - k]."""
    pl, pe, pb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t = pl * BL + tl.arange(0, BL)
    e = pe * BE + tl.arange(0, BE)
    me = e < E
    acc = tl.zeros((BL, BE), dtype=tl.float32)
    for k in tl.static_range(K):
        s = t + (K - 1) - k
        m = (s < L)[:, None] & me[None, :]
        gk = tl.load(g_ptr + (pb * L + s[:, None]) * E + e[None, :], mask=m, other=0.0)
        acc += tl.load(w_ptr + e * K + k, mask=me, other=0.0).to(tl.float32)[None, :] * gk
    tl.store(dx_ptr + (pb * L + t[:, None]) * E + e[None, :], acc.to(dx_ptr.dtype.element_ty), mask=(t < L)[:, None] & me[None, :])


def _conv_grid(Bt, L, E):
    return (cdiv(L, CONV_BLOCK_L), cdiv(E, CONV_BLOCK_E), Bt)


class CausalConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        Bt, L, E = x.shape
        K = weight.shape[-1]
        w = weight.reshape(E, K).contiguous()
        (x,) = lastdim_contiguous(x)
        out = torch.empty(Bt, L, E, device=x.device, dtype=x.dtype)
        conv_forward_kernel[_conv_grid(Bt, L, E)](
            x, w, bias, out, L, E, *bl_strides(x), *bl_strides(out), K=K, BL=CONV_BLOCK_L, BE=CONV_BLOCK_E
        )
        ctx.save_for_backward(x, weight, bias)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        Bt, L, E = x.shape
        K = weight.shape[-1]
        w = weight.reshape(E, K).contiguous()
        (dout,) = lastdim_contiguous(dout)
        n_lt = cdiv(L, CONV_BLOCK_L)
        g = torch.empty(Bt, L, E, device=x.device, dtype=torch.float32)
        dwp = torch.empty(Bt, n_lt, E, K, device=x.device, dtype=torch.float32)
        dbp = torch.empty(Bt, n_lt, E, device=x.device, dtype=torch.float32)
        grid = _conv_grid(Bt, L, E)
        conv_grad_pre_kernel[grid](
            x, w, bias, dout, g, dwp, dbp, L, E, n_lt, *bl_strides(x), *bl_strides(dout), K=K, BL=CONV_BLOCK_L, BE=CONV_BLOCK_E
        )
        dx = torch.empty(Bt, L, E, device=x.device, dtype=x.dtype)
        conv_grad_x_kernel[grid](g, w, dx, L, E, K=K, BL=CONV_BLOCK_L, BE=CONV_BLOCK_E)
        dw = dwp.sum((0, 1)).reshape(weight.shape).to(weight.dtype)
        return dx, dw, dbp.sum((0, 1)).to(bias.dtype)


def causal_conv_silu(x, weight, bias):
    """silu(causal depthwise conv) in the (B, L, E) layout: x (B, L, E), weight (E, 1, K),
    bias (E,) -> (B, L, E) in x's dtype; differentiable in all three."""
    return CausalConvSilu.apply(x, weight, bias)


# ============================================================================ residual add + RMSNorm
# r = hidden + residual (fp32; hidden alone in the first block), out = r / rms(r) * weight with
# rms(r) = sqrt(mean(r²) + eps), one row of D per program. Backward, with r̂ = r / rms(r):
#   dr = dr' + (w dy - r̂ mean(r̂ w dy)) / rms(r)      (dr' flows in from the next block's add)
#   dw = Σ_rows dy r̂,   dhidden = dresidual = dr
NORM_ROWS = 32  # rows per backward program: each sums its rows' share of dw in registers


@triton.jit
def add_norm_forward_kernel(h_ptr, res_ptr, w_ptr, out_ptr, r_ptr, rstd_ptr, D, eps, BD: tl.constexpr, HAS_RES: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, BD)
    md = d < D
    r = tl.load(h_ptr + row * D + d, mask=md, other=0.0).to(tl.float32)
    if HAS_RES:
        r += tl.load(res_ptr + row * D + d, mask=md, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=0) / D + eps)
    w = tl.load(w_ptr + d, mask=md, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * D + d, (r * rstd * w).to(out_ptr.dtype.element_ty), mask=md)
    tl.store(r_ptr + row * D + d, r, mask=md)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def add_norm_backward_kernel(
    dy_ptr, dr_next_ptr, r_ptr, rstd_ptr, w_ptr, dh_ptr, dres_ptr, dwp_ptr, M, D,
    BD: tl.constexpr, ROWS: tl.constexpr, HAS_DR_NEXT: tl.constexpr, HAS_RES: tl.constexpr,
):  # fmt: skip
    p = tl.program_id(0)
    d = tl.arange(0, BD)
    md = d < D
    w = tl.load(w_ptr + d, mask=md, other=0.0).to(tl.float32)
    dw = tl.zeros((BD,), dtype=tl.float32)
    row = p * ROWS
    end = tl.minimum(row + ROWS, M)
    while row < end:
        off = row.to(tl.int64) * D + d
        rstd = tl.load(rstd_ptr + row)
        rh = tl.load(r_ptr + off, mask=md, other=0.0) * rstd
        dy = tl.load(dy_ptr + off, mask=md, other=0.0).to(tl.float32)
        wdy = w * dy
        dr = (wdy - rh * (tl.sum(rh * wdy, axis=0) / D)) * rstd
        if HAS_DR_NEXT:
            dr += tl.load(dr_next_ptr + off, mask=md, other=0.0).to(tl.float32)
        tl.store(dh_ptr + off, dr.to(dh_ptr.dtype.element_ty), mask=md)
        if HAS_RES:
            tl.store(dres_ptr + off, dr, mask=md)
        dw += dy * rh
        row += 1
    tl.store(dwp_ptr + p * D + d, dw, mask=md)


def norm_meta(D):
    BD = next_power_of_2(D)
    return {"BD": BD, "num_warps": max(1, min(8, BD // 256))}


class AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, residual, weight, eps, out_dtype):
        shape, D = hidden.shape, hidden.shape[-1]
        h = hidden.reshape(-1, D).contiguous()
        res = residual.reshape(-1, D).contiguous() if residual is not None else h
        M = h.shape[0]
        out = torch.empty(M, D, device=h.device, dtype=out_dtype)
        r = torch.empty(M, D, device=h.device, dtype=torch.float32)
        rstd = torch.empty(M, device=h.device, dtype=torch.float32)
        add_norm_forward_kernel[(M,)](h, res, weight, out, r, rstd, D, eps, HAS_RES=residual is not None, **norm_meta(D))
        ctx.save_for_backward(r, rstd, weight)
        ctx.hidden_dtype, ctx.has_res = hidden.dtype, residual is not None
        ctx.set_materialize_grads(False)
        return out.view(shape), r.view(shape)

    @staticmethod
    def backward(ctx, dout, dr_next):
        r, rstd, weight = ctx.saved_tensors
        M, D = r.shape
        dy = torch.zeros_like(r) if dout is None else dout.reshape(M, D).contiguous()
        drn = dr_next.reshape(M, D).contiguous() if dr_next is not None else dy
        dh = torch.empty(M, D, device=r.device, dtype=ctx.hidden_dtype)
        dres = torch.empty(M, D, device=r.device, dtype=torch.float32) if ctx.has_res else dh
        n_prog = cdiv(M, NORM_ROWS)
        dwp = torch.empty(n_prog, D, device=r.device, dtype=torch.float32)
        add_norm_backward_kernel[(n_prog,)](
            dy, drn, r, rstd, weight, dh, dres, dwp, M, D,
            ROWS=NORM_ROWS, HAS_DR_NEXT=dr_next is not None, HAS_RES=ctx.has_res, **norm_meta(D),
        )  # fmt: skip
        shape = dout.shape if dout is not None else dr_next.shape
        dw = dwp.sum(0).to(weight.dtype)
        return dh.view(shape), (dres.view(shape) if ctx.has_res else None), dw, None, None


def add_rmsnorm(hidden, residual, weight, eps: float = 1e-5):
    """(RMSNorm(r) * weight, r) with r = hidden + residual in fp32 (hidden alone when residual is
    None): hidden (..., D) in any dtype, residual (..., D) fp32 | None, weight (D,). The normed
    output has autocast's dtype where autocast is on (what the next Linear would cast it to),
    else fp32. Differentiable in hidden, residual and weight."""
    dev = hidden.device.type
    out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32
    return AddRMSNorm.apply(hidden, residual, weight, eps, out_dtype)


# ============================================================================ gated, grouped RMSNorm
# g = y silu(z) (fp32), out = g / rms(g) * w over each group of E / G channels of a row. Backward,
# with ĝ = g / rms(g):  dg = (w dout - ĝ mean(ĝ w dout)) / rms(g);  dy = dg silu(z);
# dz = dg y silu'(z), silu'(z) = σ(z)(1 + z (1 - σ(z)));  dw = Σ_rows dout ĝ.
@triton.jit
def gated_norm_forward_kernel(y_ptr, z_ptr, w_ptr, out_ptr, rstd_ptr, Dg, G, sy, sz, eps, BD: tl.constexpr):
    row, grp = tl.program_id(0).to(tl.int64), tl.program_id(1)
    d = grp * Dg + tl.arange(0, BD)
    md = tl.arange(0, BD) < Dg
    y = tl.load(y_ptr + row * sy + d, mask=md, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + row * sz + d, mask=md, other=0.0).to(tl.float32)
    g = y * z * sigmoid(z)
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=0) / Dg + eps)
    w = tl.load(w_ptr + d, mask=md, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * G * Dg + d, (g * rstd * w).to(out_ptr.dtype.element_ty), mask=md)
    tl.store(rstd_ptr + row * G + grp, rstd)


@triton.jit
def gated_norm_backward_kernel(
    dout_ptr, y_ptr, z_ptr, w_ptr, rstd_ptr, dy_ptr, dz_ptr, dwp_ptr, M, Dg, G, sy, sz,
    BD: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    p, grp = tl.program_id(0), tl.program_id(1)
    d = grp * Dg + tl.arange(0, BD)
    md = tl.arange(0, BD) < Dg
    E = G * Dg
    w = tl.load(w_ptr + d, mask=md, other=0.0).to(tl.float32)
    dw = tl.zeros((BD,), dtype=tl.float32)
    row = p * ROWS
    end = tl.minimum(row + ROWS, M)
    while row < end:
        r = row.to(tl.int64)
        y = tl.load(y_ptr + r * sy + d, mask=md, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + r * sz + d, mask=md, other=0.0).to(tl.float32)
        sg = sigmoid(z)
        rstd = tl.load(rstd_ptr + r * G + grp)
        gh = y * z * sg * rstd
        dout = tl.load(dout_ptr + r * E + d, mask=md, other=0.0).to(tl.float32)
        wdo = w * dout
        dg = (wdo - gh * (tl.sum(gh * wdo, axis=0) / Dg)) * rstd
        tl.store(dy_ptr + r * E + d, (dg * z * sg).to(dy_ptr.dtype.element_ty), mask=md)
        tl.store(dz_ptr + r * E + d, (dg * y * sg * (1.0 + z * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=md)
        dw += dout * gh
        row += 1
    tl.store(dwp_ptr + p * E + d, dw, mask=md)


class GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, weight, groups, eps, out_dtype):
        shape, E = y.shape, y.shape[-1]
        y2, z2 = lastdim_contiguous(y.reshape(-1, E), z.reshape(-1, E))
        M, Dg = y2.shape[0], E // groups
        out = torch.empty(M, E, device=y.device, dtype=out_dtype)
        rstd = torch.empty(M, groups, device=y.device, dtype=torch.float32)
        meta = norm_meta(Dg)
        gated_norm_forward_kernel[(M, groups)](y2, z2, weight, out, rstd, Dg, groups, y2.stride(0), z2.stride(0), eps, **meta)
        ctx.save_for_backward(y2, z2, weight, rstd)
        ctx.shape, ctx.groups = shape, groups
        return out.view(shape)

    @staticmethod
    def backward(ctx, dout):
        y, z, weight, rstd = ctx.saved_tensors
        M, E = dout.numel() // dout.shape[-1], dout.shape[-1]
        Dg = E // ctx.groups
        dout = dout.reshape(M, E).contiguous()
        dy = torch.empty(M, E, device=y.device, dtype=y.dtype)
        dz = torch.empty(M, E, device=y.device, dtype=z.dtype)
        n_prog = cdiv(M, NORM_ROWS)
        dwp = torch.empty(n_prog, E, device=y.device, dtype=torch.float32)
        gated_norm_backward_kernel[(n_prog, ctx.groups)](
            dout, y, z, weight, rstd, dy, dz, dwp, M, Dg, ctx.groups, y.stride(0), z.stride(0), ROWS=NORM_ROWS, **norm_meta(Dg)
        )  # fmt: skip
        return dy.view(ctx.shape), dz.view(ctx.shape), dwp.sum(0).to(weight.dtype), None, None, None


def gated_rmsnorm(y, z, weight, groups: int, eps: float = 1e-5):
    """rms(y silu(z)) * weight over each of ``groups`` groups of the last dim (mamba-ssm's
    RMSNormGated, norm_before_gate False): y, z (..., E) in any dtype (z may be a view with unit
    stride along E), weight (E,). The output has autocast's dtype where autocast is on (what
    out_proj would cast it to), else fp32. Differentiable in y, z and weight."""
    dev = y.device.type
    out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32
    return GatedRMSNorm.apply(y, z, weight, groups, eps, out_dtype)


# ============================================================================ cross-entropy rows
# For one row l (V,) of logits and its target y: loss = lse - l[y] with lse = log Σ_v exp(l_v),
# and in place l <- scale (softmax(l) - onehot(y)). Two sweeps of V: the first keeps a running
# max and sum per lane (combined at the end) and picks l[y], the second writes the gradient
# (l[y] is read in the first: with several warps, the second may overwrite it before another
# warp reads it). fp32 arithmetic. Targets must lie in [0, V): they are not checked.
CE_BLOCK_V = 4096


@triton.jit
def cross_entropy_kernel(logits_ptr, targets_ptr, loss_ptr, V, stride, scale, BV: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    v = tl.arange(0, BV)
    y = tl.load(targets_ptr + row)
    m = tl.full((BV,), -1.0e30, tl.float32)  # finite: exp(m - m') stays defined for empty lanes
    s = tl.zeros((BV,), dtype=tl.float32)
    picked = tl.zeros((BV,), dtype=tl.float32)  # l[y], read in this sweep: the next overwrites it
    start = 0  # while, not range: Triton's interpreter cannot loop to a runtime bound
    while start < V:
        mask = start + v < V
        x = tl.load(base + start + v, mask=mask, other=-1.0e30).to(tl.float32)
        m_new = tl.maximum(m, x)
        s = s * tl.exp(m - m_new) + tl.where(mask, tl.exp(x - m_new), 0.0)
        m = m_new
        picked += tl.where(start + v == y, x, 0.0)
        start += BV
    top = tl.max(m, axis=0)
    lse = top + tl.log(tl.sum(s * tl.exp(m - top), axis=0))
    tl.store(loss_ptr + row, lse - tl.sum(picked, axis=0))
    start = 0
    while start < V:
        mask = start + v < V
        x = tl.load(base + start + v, mask=mask, other=0.0).to(tl.float32)
        g = scale * (tl.exp(x - lse) - tl.where(start + v == y, 1.0, 0.0))
        tl.store(base + start + v, g.to(logits_ptr.dtype.element_ty), mask=mask)
        start += BV


def cross_entropy_(logits, targets, scale: float):
    """logits (R, V) with unit stride along V, targets (R,) int -> each row's loss (R,) fp32;
    overwrites logits with scale * (softmax(logits) - onehot(targets)) in their dtype."""
    R, V = logits.shape
    loss = torch.empty(R, device=logits.device, dtype=torch.float32)
    bv = min(CE_BLOCK_V, next_power_of_2(V))
    cross_entropy_kernel[(R,)](logits, targets, loss, V, logits.stride(0), scale, BV=bv, num_warps=max(1, min(8, bv // 512)))
    return loss
