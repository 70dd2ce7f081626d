"""Mamba-1's decode step between its matmuls as two fused Pallas kernels, for jax-cuda: what
torch-cuda's Triton decode.py does (its ``conv_step`` and ``ssm_step``).

A decode step moves one token through every layer, so it is bound by how many kernels it
launches, not by arithmetic. Left to XLA, the work between a layer's matmuls is some ten small
fusions (the conv state's shift, the taps, silu, the slices of x_proj's output, dt_proj's bias,
softplus, the state update, the C contraction, the D skip, the gate, the casts). Here it is two
kernels a layer, each program owning BE channels of one sequence:

    conv_step   conv (B, E, K) <- [conv[..., 1:], x]      xc = silu(Σ_k w_k conv_k + b)
    ssm_step    Δ = softplus(W_dt δ + b_dt)               h = exp(Δ A) ⊙ h + (Δ xc) B^T,  A = -exp(A_log)
                out = (h C + D xc) ⊙ silu(z)              h (BE, N) fp32; out in the compute dtype

x and z are read from in_proj's output xz (B, 2E); δ (Δ's rank-R input), B and C from x_proj's
(B, R + 2N), so XLA slices nothing. dt_proj (R -> E, 48 a channel at 130M) is summed in ssm_step
over R's power-of-2 pieces (48 = 32 + 16: Triton's blocks are powers of two). The states are
every layer's in one array each, (n_layers, B, E, ·) as mamba.init_state makes them, and so are
the weights the kernels read (a stacked decode copy, layers.decode_weights): a kernel reads its
layer's and updates that layer's states in place (input_output_aliases; the decode step donates
them). The arithmetic is the XLA step's (mamba.py) op for op, in fp32, rounded where it rounds
(dt_proj's output, to the compute dtype). Shapes: E is split into blocks of the largest power of
two up to 64 dividing it; N is padded to a power of two where it is not one, which only odd test
shapes need. Without a GPU the kernels run in Pallas' interpreter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .pallas_scan import interpret, next_power_of_2, pad_axis

F32 = jnp.float32
BE_MAX = 64  # channels a program (at most)
WARPS = 4  # num_warps of both kernels


def _silu(v):
    return v / (1.0 + jnp.exp(-v))


def _softplus(v):
    return jnp.where(v > 20.0, v, jnp.log1p(jnp.exp(v)))  # torch's threshold: equal in fp32 past it


def _block(E: int) -> int:
    """The largest power of two up to BE_MAX dividing E."""
    be = 1
    while be < BE_MAX and E % (2 * be) == 0:
        be *= 2
    return be


def _call(kernel, out_shapes, grid, aliases, name):
    from jax.experimental.pallas import triton as plgpu

    return pl.pallas_call(
        kernel,
        out_shape=out_shapes,
        grid=grid,
        input_output_aliases=aliases,
        interpret=interpret(),
        compiler_params=plgpu.CompilerParams(num_warps=WARPS),
        name=name,
    )


def _powers_of_2(n: int) -> list[tuple[int, int]]:
    """[0, n) as (start, size) pieces of power-of-2 sizes, largest first: 48 -> (0, 32), (32, 16)."""
    out, start = [], 0
    for bit in reversed(range(n.bit_length())):
        if n >> bit & 1:
            out.append((start, 1 << bit))
            start += 1 << bit
    return out


def _conv_kernel(conv_ref, xz_ref, w_ref, b_ref, new_ref, xc_ref, *, layer: int, be: int, k: int):
    b, e = pl.program_id(0), pl.ds(pl.program_id(1) * be, be)
    taps = [conv_ref[layer, b, e, j] for j in range(1, k)] + [xz_ref[b, e].astype(F32)]  # the window after the shift
    acc = b_ref[layer, e]
    for j, t in enumerate(taps):
        new_ref[layer, b, e, j] = t
        acc = acc + t * w_ref[layer, e, j]
    xc_ref[b, e] = _silu(acc)


def conv_step(conv, layer, xz, w, bias):
    """conv (n_layers, B, E, K) fp32, every layer's; layer: which one steps; xz (B, 2E) (x its
    first E); w (n_layers, E, 1, K), bias (n_layers, E) fp32, every layer's -> (conv with that
    layer's state shifted in place, xc (B, E) fp32)."""
    n, Bt, E, K = conv.shape
    be = _block(E)
    kernel = functools.partial(_conv_kernel, layer=layer, be=be, k=K)
    shapes = (jax.ShapeDtypeStruct(conv.shape, F32), jax.ShapeDtypeStruct((Bt, E), F32))
    return _call(kernel, shapes, (Bt, E // be), {0: 0}, "mamba_conv_step")(conv, xz, w.reshape(n, E, K), bias)


def _ssm_kernel(h_ref, xc_ref, xdbl_ref, dtw_ref, dtb_ref, alog_ref, d_ref, xz_ref, new_ref, out_ref, *, layer, be, E, R, N):
    b, e = pl.program_id(0), pl.ds(pl.program_id(1) * be, be)
    xc = xc_ref[b, e]
    dt = sum(  # dt_proj: Σ_r xdbl_r W_er over R's power-of-2 pieces, rounded as linear() rounds
        jnp.sum(xdbl_ref[b, pl.ds(r, n)].astype(F32)[None, :] * dtw_ref[layer, e, pl.ds(r, n)].astype(F32), axis=1)
        for r, n in _powers_of_2(R)
    )
    dt = _softplus((dt.astype(out_ref.dtype) + dtb_ref[layer, e].astype(out_ref.dtype)).astype(F32))
    Bt = xdbl_ref[b, pl.ds(R, N)].astype(F32)
    Ct = xdbl_ref[b, pl.ds(R + N, N)].astype(F32)
    h = jnp.exp(dt[:, None] * -jnp.exp(alog_ref[layer, e, :])) * h_ref[layer, b, e, :] + (dt * xc)[:, None] * Bt[None, :]
    new_ref[layer, b, e, :] = h
    z = xz_ref[b, pl.ds(pl.program_id(1) * be + E, be)].astype(F32)
    y = jnp.sum(h * Ct[None, :], axis=1) + xc * d_ref[layer, e]
    out_ref[b, e] = (y * _silu(z)).astype(out_ref.dtype)


def ssm_step(h, layer, xc, xdbl, dt_w, dt_b, A_log, D, xz, dtype):
    """h (n_layers, B, E, N) fp32, every layer's; layer: which one steps; xc (B, E) fp32; xdbl
    (B, R + 2N) (x_proj's output: Δ's rank-R input, then B, then C); dt_w (n_layers, E, R),
    dt_b (n_layers, E), A_log (n_layers, E, N), D (n_layers, E), every layer's; xz (B, 2E) (z its
    last E) -> (h with that layer's updated in place, y ⊙ silu(z) (B, E) in ``dtype``)."""
    _, Bt, E, N = h.shape
    R = dt_w.shape[2]
    NP = max(2, next_power_of_2(N))  # as pallas_scan pads it
    if NP != N:  # padded states: A = -1, B = C = 0 there, so they stay 0 and add nothing
        h, A_log = pad_axis(h, 3, NP), pad_axis(A_log, 2, NP)
        Bm, Cm = (pad_axis(xdbl[:, R + i * N : R + (i + 1) * N], 1, NP) for i in (0, 1))
        xdbl = jnp.concatenate([xdbl[:, :R], Bm, Cm], axis=1)
    be = _block(E)
    kernel = functools.partial(_ssm_kernel, layer=layer, be=be, E=E, R=R, N=NP)
    shapes = (jax.ShapeDtypeStruct(h.shape, F32), jax.ShapeDtypeStruct((Bt, E), dtype))
    new, out = _call(kernel, shapes, (Bt, E // be), {0: 0}, "mamba_ssm_step")(h, xc, xdbl, dt_w, dt_b, A_log, D, xz)
    return new[..., :N], out
