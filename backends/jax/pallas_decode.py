"""Mamba-1's decode step between its matmuls as two fused Pallas kernels, for jax-cuda: what
torch-cuda's Triton decode.py does (its ``conv_step`` and ``ssm_step``).

A decode step moves one token through every layer, so it is bound by how many kernels it
launches, not by arithmetic. Left to XLA, the work between a layer's four matmuls is some ten
small fusions (the conv state's shift, the taps, silu, the slices of x_proj's output, softplus,
the state update, the C contraction, the D skip, the gate, the casts). Here it is two kernels a
layer, each program owning BE channels of one sequence:

    conv_step   conv (B, E, K) <- [conv[..., 1:], x]         xc = silu(Σ_k w_k conv_k + b)
    ssm_step    Δ = softplus(dt)    h = exp(Δ A) ⊙ h + (Δ xc) B^T    (BE, N) fp32, A = -exp(A_log)
                out = (h C + D xc) ⊙ silu(z)                  in the compute dtype, out_proj's input

x and z are read from in_proj's output xz (B, 2E), B and C from x_proj's (B, R + 2N), so XLA
slices nothing. dt is dt_proj's output, its bias added (that matmul is XLA's). The states are
every layer's in one array each, (n_layers, B, E, ·) as mamba.init_state makes them; a kernel
updates its layer's in place (input_output_aliases; the decode step donates them). The
arithmetic is the XLA step's (mamba.py) op for op, in fp32. Shapes: E is split into blocks of
the largest power of two up to 64 dividing it; N is padded to a power of two where it is not one
(Triton's blocks), which only odd test shapes need. Without a GPU the kernels run in Pallas'
interpreter.
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


def _conv_kernel(conv_ref, xz_ref, w_ref, b_ref, new_ref, xc_ref, *, layer: int, be: int, k: int):
    b, e = pl.program_id(0), pl.ds(pl.program_id(1) * be, be)
    taps = [conv_ref[layer, b, e, j] for j in range(1, k)] + [xz_ref[b, e].astype(F32)]  # the window after the shift
    acc = b_ref[e]
    for j, t in enumerate(taps):
        new_ref[layer, b, e, j] = t
        acc = acc + t * w_ref[e, j]
    xc_ref[b, e] = _silu(acc)


def conv_step(conv, layer, xz, w, bias):
    """conv (n_layers, B, E, K) fp32, every layer's; layer: which one steps; xz (B, 2E) (x its
    first E), w (E, 1, K), bias (E,) fp32 -> (conv with that layer's state shifted in place, xc
    (B, E) fp32)."""
    _, Bt, E, K = conv.shape
    be = _block(E)
    kernel = functools.partial(_conv_kernel, layer=layer, be=be, k=K)
    shapes = (jax.ShapeDtypeStruct(conv.shape, F32), jax.ShapeDtypeStruct((Bt, E), F32))
    return _call(kernel, shapes, (Bt, E // be), {0: 0}, "mamba_conv_step")(conv, xz, w.reshape(E, K), bias)


def _ssm_kernel(h_ref, xc_ref, dt_ref, alog_ref, xdbl_ref, d_ref, xz_ref, new_ref, out_ref, *, layer: int, be: int, E: int, R: int, N: int):
    b, e = pl.program_id(0), pl.ds(pl.program_id(1) * be, be)
    xc = xc_ref[b, e]
    dt = _softplus(dt_ref[b, e].astype(F32))
    Bt = xdbl_ref[b, pl.ds(R, N)].astype(F32)
    Ct = xdbl_ref[b, pl.ds(R + N, N)].astype(F32)
    h = jnp.exp(dt[:, None] * -jnp.exp(alog_ref[e, :])) * h_ref[layer, b, e, :] + (dt * xc)[:, None] * Bt[None, :]
    new_ref[layer, b, e, :] = h
    z = xz_ref[b, pl.ds(pl.program_id(1) * be + E, be)].astype(F32)
    y = jnp.sum(h * Ct[None, :], axis=1) + xc * d_ref[e]
    out_ref[b, e] = (y * _silu(z)).astype(out_ref.dtype)


def ssm_step(h, layer, xc, dt, A_log, xdbl, D, xz, dtype):
    """h (n_layers, B, E, N) fp32, every layer's; layer: which one steps; xc (B, E) fp32; dt (B, E)
    (dt_proj's output with its bias); A_log (E, N); xdbl (B, R + 2N) (x_proj's output: Δ's rank R,
    then B, then C); D (E,); xz (B, 2E) (z its last E) -> (h with that layer's updated in place,
    y ⊙ silu(z) (B, E) in ``dtype``)."""
    _, Bt, E, N = h.shape
    R = xdbl.shape[1] - 2 * N
    NP = max(2, next_power_of_2(N))  # as pallas_scan pads it
    if NP != N:  # padded states: A = -1, B = C = 0 there, so they stay 0 and add nothing
        h, A_log = pad_axis(h, 3, NP), pad_axis(A_log, 1, NP)
        Bm, Cm = (pad_axis(xdbl[:, R + i * N : R + (i + 1) * N], 1, NP) for i in (0, 1))
        xdbl = jnp.concatenate([xdbl[:, :R], Bm, Cm], axis=1)
    be = _block(E)
    kernel = functools.partial(_ssm_kernel, layer=layer, be=be, E=E, R=R, N=NP)
    shapes = (jax.ShapeDtypeStruct(h.shape, F32), jax.ShapeDtypeStruct((Bt, E), dtype))
    new, out = _call(kernel, shapes, (Bt, E // be), {0: 0}, "mamba_ssm_step")(h, xc, dt, A_log, xdbl, D, xz)
    return new[..., :N], out
