"""Mamba-1's selective scan as one fused Pallas kernel each way, for jax-cuda (the ``pallas`` scan).

XLA has no way to keep the (B, L, E, N) states on chip: every scan it compiles (associative,
chunked) writes them to HBM, several times over in the backward, and at mamba-130m's training
shape (8 x 2048, E 1536, N 16) that is 1.6 GB a layer a pass (the associative scan asked for
53.5 GiB there). These kernels walk the sequence as torch-cuda's Triton scan does: a program owns
BE channels of one sequence with all N states in registers and steps through time, reading x, Δ,
B, C and writing y, so the states never leave the chip.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t^T        (BE, N) a program, fp32
    y_t = h_t C_t                                        (BE,)

Forward (``_forward_kernel``): the steps in chunks of TC (a chunk's loads issued together, ahead
of its arithmetic); the state entering each chunk is written out, (B, L/TC + 1, E, N) fp32, the
last entry the final state. That is all the backward keeps: TC times smaller than the states.

Backward (``_backward_kernel``), the chunks in reverse: a chunk's TC states are recomputed from the
one entering it, in registers, then the adjoint g_t = dL/dh_t runs backwards through them,

    g_t = C_t dy_t^T + exp(Δ_{t+1} A) ⊙ g_{t+1}      (g after the last step: the final state's gradient)
    dx_t = Δ_t (g_t B_t)        dΔ_t = x_t (g_t B_t) + Σ_n (g_t ⊙ a_t h_{t-1} ⊙ A)
    dB_t = Σ_e g_t Δ_t x_t      dC_t = Σ_e dy_t h_t          dA = Σ_t g_t ⊙ a_t h_{t-1} Δ_t

with a_t h_{t-1} = h_t - Δ_t x_t B_t (no division by a decay). dB, dC are summed over channel
blocks and dA over sequences outside the kernel (partials, no atomics).

Shapes are padded here to what the kernels take: L to a multiple of TC (Δ = 0 past the end leaves
the state as it is), E to a multiple of BE, N to a power of two (A's padding 0, B's and C's 0, so
the padded states stay 0 and read nothing). Everything is fp32. Without a GPU the kernels run in
Pallas' interpreter (the tests), which computes the same thing with XLA ops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


@dataclass(frozen=True)
class Tiling:
    tc: int = 8  # TC, steps a chunk: the forward's loads issued together, the backward's recomputed states in registers
    be: int = 32  # BE, channels a program
    warps: int = 2  # num_warps of both kernels (Pallas' Triton default is 4: 2 cut forward + backward 36% at 130M)


TILING = Tiling()  # the default, as timed at mamba-130m (docs/results.md); tools/tune_pallas_scan.py times others


def next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def pad_axis(v, axis: int, size: int):
    """v zero-padded at the end of ``axis`` to ``size``."""
    if v.shape[axis] == size:
        return v
    widths = [(0, 0)] * v.ndim
    widths[axis] = (0, size - v.shape[axis])
    return jnp.pad(v, widths)


def _step_inputs(x_ref, dt_ref, B_ref, b, t0, e, tc: int):
    """The chunk's TC steps from t0: [(x_t (BE,), Δ_t (BE,), B_t (NP,))]."""
    return [(x_ref[b, t0 + k, e], dt_ref[b, t0 + k, e], B_ref[b, t0 + k, :]) for k in range(tc)]


def _forward_kernel(x_ref, dt_ref, A_ref, B_ref, C_ref, y_ref, hs_ref, *, nc: int, tc: int, be: int):
    """One sequence b, channels e: y (B, Lp, Ep) and the states entering each chunk, hs (B, nc + 1, Ep, NP)."""
    b, e = pl.program_id(0), pl.ds(pl.program_id(1) * be, be)
    A = A_ref[e, :]

    def chunk(c, h):
        hs_ref[b, c, e, :] = h
        t0 = c * tc
        steps = _step_inputs(x_ref, dt_ref, B_ref, b, t0, e, tc)
        Cs = [C_ref[b, t0 + k, :] for k in range(tc)]
        for k, (x, dt, Bt) in enumerate(steps):
            h = jnp.exp(dt[:, None] * A) * h + (dt * x)[:, None] * Bt[None, :]
            y_ref[b, t0 + k, e] = jnp.sum(h * Cs[k][None, :], axis=1)
        return h

    h = jax.lax.fori_loop(0, nc, chunk, jnp.zeros(A.shape, jnp.float32))
    hs_ref[b, nc, e, :] = h


def _backward_kernel(
    x_ref, dt_ref, A_ref, B_ref, C_ref, hs_ref, dy_ref, dh_ref, dx_ref, ddt_ref, dA_ref, dB_ref, dC_ref, *, nc: int, tc: int, be: int
):
    """One sequence b, channels e, the chunks in reverse: dx, dΔ (B, Lp, Ep); dA (B, Ep, NP) for
    this sequence; dB, dC (B, Lp, Ep / BE, NP) for this block of channels."""
    b, eb = pl.program_id(0), pl.program_id(1)
    e = pl.ds(eb * be, be)
    A = A_ref[e, :]

    def chunk(i, carry):
        g, dA = carry  # g: exp(Δ_{t+1} A) ⊙ g_{t+1}, what the step after this chunk hands back
        c = nc - 1 - i
        t0 = c * tc
        steps = _step_inputs(x_ref, dt_ref, B_ref, b, t0, e, tc)
        h, states = hs_ref[b, c, e, :], []
        for x, dt, Bt in steps:  # the chunk's states again, from the one entering it
            h = jnp.exp(dt[:, None] * A) * h + (dt * x)[:, None] * Bt[None, :]
            states.append(h)
        for k in reversed(range(tc)):
            x, dt, Bt = steps[k]
            t = t0 + k
            dy = dy_ref[b, t, e]
            g = g + dy[:, None] * C_ref[b, t, :][None, :]
            gB = jnp.sum(g * Bt[None, :], axis=1)
            u = dt * x
            gah = g * (states[k] - u[:, None] * Bt[None, :])  # g_t ⊙ a_t h_{t-1}
            dx_ref[b, t, e] = dt * gB
            ddt_ref[b, t, e] = x * gB + jnp.sum(gah * A, axis=1)
            dB_ref[b, t, eb, :] = jnp.sum(g * u[:, None], axis=0)
            dC_ref[b, t, eb, :] = jnp.sum(dy[:, None] * states[k], axis=0)
            dA = dA + gah * dt[:, None]
            g = jnp.exp(dt[:, None] * A) * g
        return g, dA

    _, dA = jax.lax.fori_loop(0, nc, chunk, (dh_ref[b, e, :], jnp.zeros(A.shape, jnp.float32)))
    dA_ref[b, e, :] = dA


def interpret() -> bool:
    """Pallas' interpreter where there is no GPU to compile for (the tests on a CPU)."""
    return jax.default_backend() != "gpu"


def _padded(x, dt, A, Bm, Cm, t: Tiling):
    """The inputs padded to the kernels' shapes (module docstring), and (Lp, Ep, NP)."""
    _, L, E = x.shape
    Lp, Ep, NP = -(-L // t.tc) * t.tc, -(-E // t.be) * t.be, max(2, next_power_of_2(A.shape[1]))
    x, dt = (pad_axis(pad_axis(v, 1, Lp), 2, Ep) for v in (x, dt))
    Bm, Cm = (pad_axis(pad_axis(v, 1, Lp), 2, NP) for v in (Bm, Cm))
    return x, dt, pad_axis(pad_axis(A, 0, Ep), 1, NP), Bm, Cm, (Lp, Ep, NP)


def _call(kernel, t: Tiling, nc: int, out_shapes, grid, name: str):
    """The pallas_call of ``kernel`` under tiling ``t``, its outputs fp32 arrays of ``out_shapes``."""
    from jax.experimental.pallas import triton as plgpu

    return pl.pallas_call(
        functools.partial(kernel, nc=nc, tc=t.tc, be=t.be),
        out_shape=tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in out_shapes),
        grid=grid,
        interpret=interpret(),
        compiler_params=plgpu.CompilerParams(num_warps=t.warps),
        name=name,
    )


def _forward(t: Tiling, x, dt, A, Bm, Cm):
    Bt, L, E = x.shape
    N = A.shape[1]
    x, dt, A, Bm, Cm, (Lp, Ep, NP) = _padded(x, dt, A, Bm, Cm, t)
    nc = Lp // t.tc
    shapes = ((Bt, Lp, Ep), (Bt, nc + 1, Ep, NP))
    y, hs = _call(_forward_kernel, t, nc, shapes, (Bt, Ep // t.be), "selective_scan_forward")(x, dt, A, Bm, Cm)
    return y[:, :L, :E], hs[:, -1, :E, :N], hs


def scan_pallas(x, dt, A, Bm, Cm, tiling: Tiling | None = None):
    """x, dt (B, L, E) (dt: Δ, after its softplus); A (E, N); Bm, Cm (B, L, N); fp32 -> y (B, L, E)
    (no D skip), the final state (B, E, N). Differentiable in every input."""
    return _scan(tiling or TILING, x, dt, A, Bm, Cm)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(t: Tiling, x, dt, A, Bm, Cm):
    y, last, _ = _forward(t, x, dt, A, Bm, Cm)
    return y, last


def _scan_fwd(t: Tiling, x, dt, A, Bm, Cm):
    y, last, hs = _forward(t, x, dt, A, Bm, Cm)
    return (y, last), (x, dt, A, Bm, Cm, hs)


def _scan_bwd(t: Tiling, res, cotangents):
    x0, dt0, A0, B0, C0, hs = res
    dy, dlast = cotangents
    Bt, L, E = x0.shape
    N = A0.shape[1]
    x, dt, A, Bm, Cm, (Lp, Ep, NP) = _padded(x0, dt0, A0, B0, C0, t)
    nc, n_eb = Lp // t.tc, Ep // t.be
    dy = pad_axis(pad_axis(dy.astype(jnp.float32), 1, Lp), 2, Ep)
    dlast = pad_axis(pad_axis(dlast.astype(jnp.float32), 1, Ep), 2, NP)
    shapes = ((Bt, Lp, Ep), (Bt, Lp, Ep), (Bt, Ep, NP), (Bt, Lp, n_eb, NP), (Bt, Lp, n_eb, NP))
    call = _call(_backward_kernel, t, nc, shapes, (Bt, n_eb), "selective_scan_backward")
    dx, ddt, dA, dB, dC = call(x, dt, A, Bm, Cm, hs, dy, dlast)
    return (
        dx[:, :L, :E],
        ddt[:, :L, :E],
        dA.sum(0)[:E, :N],
        dB.sum(2)[:, :L, :N].astype(B0.dtype),
        dC.sum(2)[:, :L, :N].astype(C0.dtype),
    )


_scan.defvjp(_scan_fwd, _scan_bwd)
