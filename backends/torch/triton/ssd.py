"""The fused SSD (Mamba-2's chunked state-space-dual scan) for torch-cuda, in Triton, forward and
backward (the ``triton`` scan of ``--arch mamba2``).

One op computes what mamba-ssm's ``mamba_chunk_scan_combined`` does (with dt_softplus and D):

    Δ_t = softplus(dt_t + dt_bias)                              (B, L, H)
    S_t = exp(Δ_t A) S_{t-1} + Δ_t x_t B_t^T                     (B, H, P, N) fp32, S_{-1} = initial state or 0
    y_t = S_t C_t + D x_t                                       (B, L, H, P)

Glossary (archs/mamba2.py): B batch, L length, H heads, P headdim, G groups (head h reads B and C
of group h // (H/G)), N d_state, T chunk_size; x (B, L, H, P) the SSM input, dt (B, L, H) the
step before its bias and softplus, A (H,) < 0, B and C (B, L, G, N) (``Bm``, ``Cm`` here), D (H,)
the skip, dt_bias (H,). nc = ceil(L / T) chunks.

The kernels and their math are in ssd_kernels.py: three forward (Δ and the cumulative
log-decays; the states entering each chunk, passed across chunks inside the same kernel; y) and
five backward (the state gradients, passed backwards the same way; dC; dB; dx; ddt), with
per-chunk partial sums of dA, dD and ddt_bias (and of dB, dC over runs of heads, where a
group's heads are split), summed by a sixth. This module is their host side: the tilings
(``TILINGS``), per-shape plans (``_plan``), buffers, and ``ssd``, a torch custom op
(``ssmbench::ssd``, its backward ``ssmbench::ssd_backward``) so that autograd, CUDA-graph capture
and torch.compile see one op each way. Nothing on the host depends on the data (no syncs), so
both directions capture in a CUDA graph.

What the backward keeps from the forward: the inputs (references, no copies), the state entering
each chunk (B, nc + 1, H, P, N) fp32 (its last entry the final state), and Δ with the cumulative
log-decays (2, B, H, nc T) fp32. At (8, 2048, 24 x 64, N 128, T 256) those are 57 MB and 3 MB a
layer; nothing of size L x T is kept ((B, nc, H, T, T) decays would be 400 MB). The backward
recomputes every in-chunk quantity (C B^T and dy x^T tiles, decays) from them.

Inputs: x, Bm, Cm, dt in fp32, bf16 or fp16, possibly strided views (slices of one in_proj or
conv output): any strides, except that x, Bm and Cm are copied where their last dim is not unit
stride. Dots take x's dtype (fp32 inputs dot in IEEE fp32, not TF32), with fp32 accumulation;
the state and every other quantity are fp32. y has x's dtype; each gradient has its input's
dtype. Any L (the last chunk is masked), any P and N up to 256 (tiles padded to powers of two, at
least 16), G dividing H; T a power of two, at least 16. Without CUDA (this module's tests) the
kernels run under Triton's interpreter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from . import cdiv, lastdim_contiguous, next_power_of_2, triton
from .ssd_kernels import (
    chunk_cumsum_kernel,
    chunk_grad_b_kernel,
    chunk_grad_c_kernel,
    chunk_grad_x_kernel,
    chunk_output_kernel,
    chunk_state_kernel,
    dt_grad_kernel,
    grad_sums_kernel,
    state_grad_kernel,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_DIM = 256  # P and N: the chunk kernels hold whole (BT, P) and (BT, N) tiles
SUMS_BLOCK = 1024  # grad_sums_kernel: elements of dB (dC) a program


@dataclass(frozen=True)
class Tiling:
    """Tile sizes and launch options; each tile is clipped to the shape (at most T, P or N
    padded, at least 16: tl.dot's least)."""

    state_p: int = 64  # chunk_state / state_grad: the state tile, (state_p, state_n) of (P, N)
    state_n: int = 64
    state_k: int = 64  # steps per dot in them
    state_warps: int = 4
    out_t: int = 128  # chunk_output: a program's own steps (BT)
    out_k: int = 32  # steps per tile of its loop over the earlier ones (BK)
    out_p: int = 64  # channels per program
    out_warps: int = 8
    grad_t: int = 64  # chunk_grad_c / chunk_grad_b / chunk_grad_x: a program's own steps (BT)
    grad_k: int = 32  # steps per tile of their loops over the other side (BK)
    grad_warps: int = 8
    c_t: int = 0  # chunk_grad_c alone (0: grad_t / grad_k / grad_warps / stages): it holds the most live tiles
    c_k: int = 0
    c_warps: int = 0
    c_stages: int = 0
    stages: int = 2  # num_stages of the kernels with dot loops
    heads_block: int = 8  # chunk_cumsum / dt_grad: heads per program
    per_sm: int = 4  # chunk_grad_c / chunk_grad_b: programs per SM to aim for (sets the head runs)


# The default tiling for each dtype of x. The 16-bit one was timed on the H100 at (8, L, 24 x 64,
# N 128), L 512 / 2048 / 8192, GPU alone, against the first guess (Tiling(), chosen by ptxas -v
# for no register spills): 3 stages, 4 warps in the gradient kernels and 64-step tiles over the
# other side cut forward + backward from 2.14 to 1.23 ms at 2048 (0.60 -> 0.37 at 512, 8.0 ->
# 4.5 at 8192); 32-step dots in chunk_state cut the forward 8-10% (tools/peer_mamba2.py tune,
# docs/results.md). fp32 dots are IEEE (FMA, not tensor cores), whose registers grow with the
# tiles: smaller ones (chunk_grad_c still spills 324 bytes); not yet timed. A later search (fourth
# session, reports/h100-2026-12-06-mamba2 tune-5..7): ncu showed chunk_grad_c at 255 registers with
# local-memory spills; 32-step tiles over the other side in it alone (c_k) and 12 programs an SM
# (more head runs, their sums now one kernel) took forward + backward to 0.334 / 1.164-1.166 /
# 4.35 ms at 512 / 2048 / 8192 (from 0.363 / 1.208-1.211 / 4.57), mamba-ssm's 0.403 / 1.138-1.149 /
# 4.53 in the same calls. More warps or shorter step tiles for chunk_grad_c were slower. Then
# (2026-12-07, reports/h100-2026-12-07 tune.jsonl) chunk_grad_c computing each C_t·B_s tile once a
# run of heads rather than once a head, with 64-step tiles again: 0.341 / 1.098 / 3.95 ms,
# mamba-ssm's 0.405 / 1.141 / 4.57 in the same call.
_SIXTEEN_BIT = Tiling(state_k=32, grad_k=64, grad_warps=4, stages=3, per_sm=12)
TILINGS = {
    torch.bfloat16: _SIXTEEN_BIT,
    torch.float16: _SIXTEEN_BIT,
    torch.float32: Tiling(state_p=32, state_n=32, state_k=16, out_t=64, out_k=16, out_warps=4, grad_t=16, grad_k=16),
}


@functools.cache
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors (1 under the interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _layout(x, dt, A, Bm, Cm, D, dt_bias, initial_state) -> tuple:
    """The inputs' shapes and dtypes, and the device: what ``_check`` looks at."""
    ts = (x, dt, A, Bm, Cm, D, dt_bias, initial_state)
    return (x.device, *(v for t in ts for v in ((None, None) if t is None else (tuple(t.shape), t.dtype))))


@functools.cache
def _check(layout: tuple, T: int) -> None:
    """ValueError naming what does not fit (once per layout: the checks cost host time)."""
    device, x, x_dtype, dt, dt_dtype, A, _, Bm, B_dtype, Cm, C_dtype, D, _, bias, _, s0, _ = layout
    if len(x) != 4 or len(Bm) != 4:
        raise ValueError(f"x must be (B, L, H, P) and Bm, Cm (B, L, G, N), not {x} and {Bm}")
    Bt, L, H, P = x
    G, N = Bm[-2:]
    want = {"dt": (dt, (Bt, L, H)), "A": (A, (H,)), "Cm": (Cm, Bm), "D": (D, (H,)), "dt_bias": (bias, (H,))}
    want["initial_state"] = (s0, (Bt, H, P, N) if s0 is not None else None)
    for name, (shape, expected) in want.items():
        if shape != expected:
            raise ValueError(f"{name} has shape {shape}, expected {expected} for x {x} and Bm {Bm}")
    if H % G:
        raise ValueError(f"ngroups {G} does not divide the {H} heads")
    if T < 16 or T & (T - 1):
        raise ValueError(f"chunk_size {T} must be a power of two >= 16")
    if P > MAX_DIM or N > MAX_DIM:
        raise ValueError(f"headdim {P} and d_state {N} must be <= {MAX_DIM}")
    for name, dtype in (("x", x_dtype), ("dt", dt_dtype), ("Bm", B_dtype), ("Cm", C_dtype)):
        if dtype not in DTYPES:
            raise ValueError(f"{name} is {dtype}; the SSD takes {', '.join(map(str, DTYPES))}")
    if device.type != "cuda" and not triton.knobs.runtime.interpret:
        raise RuntimeError(f"the triton SSD needs CUDA tensors, not {device.type} (or TRITON_INTERPRET=1 set before triton is imported)")


def _runs(HG: int, programs: int, tiling: Tiling, device: torch.device) -> int:
    """How many runs to split a group's HG heads into for chunk_grad_c/b (a divisor of HG): the
    fewest giving about ``tiling.per_sm`` programs per SM. More runs, more parallelism; fewer,
    fewer partials of dB and dC to sum, and each C·B tile shared by more heads, but chunk_grad_c
    keeps a row of ρ a head (a long run, as a big model's one group at long lengths gets, holds
    more registers: timed at 130M's 24 heads only)."""
    want = tiling.per_sm * _sm_count(device)
    return next((d for d in range(1, HG + 1) if HG % d == 0 and programs * d >= want), HG)


@dataclass(frozen=True)
class _Plan:
    """A call's launch arithmetic at one shape (``_plan``): each kernel family's constexprs and
    launch options, and its grid (1-D: the kernels unravel their program ids)."""

    nc: int  # chunks
    state: dict  # chunk_state / state_grad
    state_grid: tuple
    state_tiles: int  # (P, N) tiles a (sequence, head) state is split into
    out: dict  # chunk_output
    out_grid: tuple
    grad: dict  # chunk_grad_b / chunk_grad_x
    grad_c: dict  # chunk_grad_c
    c_grid: tuple  # chunk_grad_c's: as runs_grid, at its own step tile
    grad_grid: tuple  # chunk_grad_x's: one program per (step tile, head, sequence, chunk)
    runs_grid: tuple  # chunk_grad_c/b's: one per (step tile, head run, sequence, chunk)
    runs: int  # head runs per group (their partials of dB and dC summed by grad_sums_kernel where > 1)
    heads: dict  # chunk_cumsum / dt_grad
    heads_grid: tuple
    sums: dict  # grad_sums
    sums_grid: tuple  # its BLOCK-element blocks of dB and dC (where runs > 1), then one for dA, ddt_bias, dD


@functools.cache
def _plan(Bt, L, H, P, G, N, T, dtype, device, tiling: Tiling) -> _Plan:
    """The launch arithmetic at this shape, computed once per shape, dtype, device and tiling."""
    nc = cdiv(L, T)
    pad = lambda n: max(16, next_power_of_2(n))  # noqa: E731
    PP, NP = pad(P), pad(N)
    BPs, BNs, BKs = min(PP, pad(tiling.state_p)), min(NP, pad(tiling.state_n)), min(T, pad(tiling.state_k))
    out_t = min(T, pad(tiling.out_t))
    out_k, BP = min(out_t, pad(tiling.out_k)), min(PP, pad(tiling.out_p))
    BT = min(T, pad(tiling.grad_t))
    BK = min(BT, pad(tiling.grad_k))
    BTc = min(T, pad(tiling.c_t)) if tiling.c_t else BT
    BH = min(next_power_of_2(tiling.heads_block), next_power_of_2(H))
    state_tiles = cdiv(P, BPs) * cdiv(N, BNs)
    group_programs = (T // BT) * G * Bt * nc
    runs = _runs(H // G, group_programs, tiling, device)
    prec = "ieee" if dtype == torch.float32 else "tf32"  # for fp32 dots only: 16-bit ones ignore it
    dots = {"PREC": prec, "INTERPRET": bool(triton.knobs.runtime.interpret), "num_stages": tiling.stages}
    return _Plan(
        nc=nc,
        state={"T": T, "BP": BPs, "BN": BNs, "BK": BKs, "num_warps": tiling.state_warps, **dots},
        state_grid=(state_tiles * Bt * H,),
        state_tiles=state_tiles,
        out={"T": T, "BT": out_t, "BK": out_k, "BP": BP, "NP": NP, "num_warps": tiling.out_warps, **dots},
        out_grid=((T // out_t) * cdiv(P, BP) * H * Bt * nc,),
        grad={"T": T, "BT": BT, "BK": BK, "PP": PP, "NP": NP, "num_warps": tiling.grad_warps, **dots},
        grad_c={
            "T": T,
            "BT": BTc,
            "BK": min(BTc, pad(tiling.c_k or tiling.grad_k)),
            "PP": PP,
            "NP": NP,
            **dots,
            "num_warps": tiling.c_warps or tiling.grad_warps,
            "num_stages": tiling.c_stages or tiling.stages,
            "HSP": next_power_of_2(H // G // runs),
        },  # fmt: skip
        grad_grid=((T // BT) * H * Bt * nc,),
        runs_grid=(group_programs * runs,),
        c_grid=((T // BTc) * G * Bt * nc * runs,),
        runs=runs,
        heads={"T": T, "BH": BH},
        heads_grid=(cdiv(H, BH) * Bt * nc,),
        sums={"BLOCK": SUMS_BLOCK, "BR": 16, "BH": next_power_of_2(H), "INTERPRET": dots["INTERPRET"]},
        sums_grid=((2 * cdiv(Bt * L * G * N, SUMS_BLOCK) if runs > 1 else 0) + 1,),
    )


def _launch(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """Every launch of the SSD: ``kernel[grid](*args, **meta)``."""
    kernel[grid](*args, **meta)


def forward(x, dt, A, Bm, Cm, D, dt_bias, chunk_size: int, initial_state=None, tiling: Tiling | None = None):
    """x (B, L, H, P); dt (B, L, H); A, D, dt_bias (H,); Bm, Cm (B, L, G, N); initial_state
    (B, H, P, N) or None -> (y (B, L, H, P) in x's dtype, final state (B, H, P, N) fp32, the states
    entering each chunk then the final one (B, nc + 1, H, P, N) fp32, Δ and a (2, B, H, nc T) fp32)."""
    _check(_layout(x, dt, A, Bm, Cm, D, dt_bias, initial_state), chunk_size)
    x, Bm, Cm = lastdim_contiguous(x, Bm, Cm)
    A, D, dt_bias = A.contiguous(), D.contiguous(), dt_bias.contiguous()
    Bt, L, H, P = x.shape
    G, N = Bm.shape[-2:]
    p = _plan(Bt, L, H, P, G, N, chunk_size, x.dtype, x.device, tiling or TILINGS[x.dtype])
    dev, f32, T, nc = x.device, torch.float32, chunk_size, p.nc
    plane = Bt * H * nc * T
    da = torch.empty((2, Bt, H, nc * T), device=dev, dtype=f32)
    _launch(chunk_cumsum_kernel, p.heads_grid, (dt, A, dt_bias, da, L, H, nc, plane, *dt.stride()), p.heads)
    states = torch.empty((Bt, nc + 1, H, P, N), device=dev, dtype=f32)
    final = torch.empty((Bt, H, P, N), device=dev, dtype=f32)
    init = initial_state.contiguous() if initial_state is not None else final  # final: an unread stand-in
    common = (L, H, P, N, nc, H // G, plane)
    args = (x, Bm, da, init, states, final, *common, *x.stride()[:3], *Bm.stride()[:3])
    _launch(chunk_state_kernel, p.state_grid, args, {**p.state, "HAS_INIT": initial_state is not None})
    y = torch.empty((Bt, L, H, P), device=dev, dtype=x.dtype)
    args = (x, Bm, Cm, da, D, states, y, *common, *x.stride()[:3], *Bm.stride()[:3], *Cm.stride()[:3], *y.stride()[:3])
    _launch(chunk_output_kernel, p.out_grid, args, p.out)
    return y, final, states, da


def backward(dy, dfinal, x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da, chunk_size: int, tiling: Tiling | None = None):
    """The gradients of ``forward``'s y (``dy``, (B, L, H, P)) and final state (``dfinal``,
    (B, H, P, N), or None) for x, dt, A, Bm, Cm, D, dt_bias and (where given) initial_state, each
    in its input's dtype, from what ``forward`` returned (``states``, ``da``): (dx, ddt, dA, dB, dC,
    dD, ddt_bias, d initial_state or None)."""
    x, Bm, Cm, dy = lastdim_contiguous(x, Bm, Cm, dy.to(x.dtype))
    A, D, dt_bias = A.contiguous(), D.contiguous(), dt_bias.contiguous()
    Bt, L, H, P = x.shape
    G, N = Bm.shape[-2:]
    p = _plan(Bt, L, H, P, G, N, chunk_size, x.dtype, x.device, tiling or TILINGS[x.dtype])
    dev, f32, T, nc = x.device, torch.float32, chunk_size, p.nc
    plane = Bt * H * nc * T
    common = (L, H, P, N, nc, H // G, plane)

    dstates = torch.empty((Bt, nc, H, P, N), device=dev, dtype=f32)
    dinit = torch.empty((Bt, H, P, N), device=dev, dtype=f32) if initial_state is not None else None
    gs = torch.empty((Bt, H, nc, p.state_tiles), device=dev, dtype=f32)
    dfinal = dfinal.contiguous() if dfinal is not None else None
    args = (dy, Cm, da, states, dfinal if dfinal is not None else gs, dstates, dinit if dinit is not None else gs, gs, *common)
    meta = {**p.state, "HAS_DFINAL": dfinal is not None, "HAS_INIT": dinit is not None}  # gs: an unread stand-in
    _launch(state_grad_kernel, p.state_grid, (*args, *dy.stride()[:3], *Cm.stride()[:3]), meta)

    HS = H // G // p.runs
    runs_common = (L, H, P, N, nc, G, H // G, HS, plane)
    dB, dC = torch.empty_like(Bm, memory_format=torch.contiguous_format), torch.empty_like(Cm, memory_format=torch.contiguous_format)
    if p.runs == 1:  # the kernels write dB and dC in their dtypes
        run_parts = None
        dBk, dCk = dB.unsqueeze(0), dC.unsqueeze(0)
    else:  # one fp32 partial per head run, summed by grad_sums_kernel
        run_parts = torch.empty((2, p.runs, Bt, L, G, N), device=dev, dtype=f32)
        dBk, dCk = run_parts
    dat = torch.empty((Bt, H, nc * T), device=dev, dtype=f32)
    args = (x, Bm, Cm, dy, da, states, dCk, dat, *runs_common, *x.stride()[:3], *Bm.stride()[:3], *Cm.stride()[:3], *dy.stride()[:3])
    _launch(chunk_grad_c_kernel, p.c_grid, (*args, *dCk.stride()[:4]), p.grad_c)
    args = (x, Cm, dy, da, dstates, dBk, *runs_common, *x.stride()[:3], *Cm.stride()[:3], *dy.stride()[:3], *dBk.stride()[:4])
    _launch(chunk_grad_b_kernel, p.runs_grid, args, p.grad)
    dx = torch.empty((Bt, L, H, P), device=dev, dtype=x.dtype)
    dd = torch.empty((3, Bt, H, nc * T), device=dev, dtype=f32)
    args = (x, Bm, Cm, dy, da, D, dstates, dx, dd, *common, *x.stride()[:3], *Bm.stride()[:3], *Cm.stride()[:3], *dy.stride()[:3])
    _launch(chunk_grad_x_kernel, p.grad_grid, (*args, *dx.stride()[:3]), p.grad)

    ddt = torch.empty((Bt, L, H), device=dev, dtype=dt.dtype)
    parts = torch.empty((3, Bt * nc, H), device=dev, dtype=f32)
    tiles = p.state_tiles
    args = (dt, A, dt_bias, da, dat, dd, gs, ddt, parts, L, H, nc, plane, tiles, Bt * nc * H, *dt.stride(), *ddt.stride())
    _launch(dt_grad_kernel, p.heads_grid, args, {**p.heads, "TILES": next_power_of_2(tiles)})
    dA, dbias, dD = (torch.empty_like(t) for t in (A, dt_bias, D))
    args = (run_parts if run_parts is not None else parts, dB, dC, parts, dA, dbias, dD, Bt * L * G * N, p.runs, Bt * nc, H)
    _launch(grad_sums_kernel, p.sums_grid, args, p.sums)
    return dx, ddt, dA, dB, dC, dD, dbias, (dinit.to(initial_state.dtype) if dinit is not None else None)


# ============================================================================ the op
# Two torch custom ops: autograd, CUDA-graph capture and torch.compile see one op each way
# (torch.compile does not trace into the host code above); fake implementations give their
# outputs' shapes, dtypes and strides.
@torch.library.custom_op("ssmbench::ssd", mutates_args=())
def _ssd_op(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, D: torch.Tensor,
    dt_bias: torch.Tensor, initial_state: torch.Tensor | None, chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(y, final state, the states entering each chunk then the final one, Δ and a)."""
    return forward(x, dt, A, Bm, Cm, D, dt_bias, chunk_size, initial_state)


@_ssd_op.register_fake
def _(x, dt, A, Bm, Cm, D, dt_bias, initial_state, chunk_size):
    Bt, L, H, P = x.shape
    N = Bm.shape[-1]
    nc = cdiv(L, chunk_size)
    f32 = dict(device=x.device, dtype=torch.float32)
    y = x.new_empty((Bt, L, H, P))
    return y, x.new_empty((Bt, H, P, N), **f32), x.new_empty((Bt, nc + 1, H, P, N), **f32), x.new_empty((2, Bt, H, nc * chunk_size), **f32)


@torch.library.custom_op("ssmbench::ssd_backward", mutates_args=())
def _ssd_backward_op(
    dy: torch.Tensor, dfinal: torch.Tensor | None, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor,
    Cm: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor, initial_state: torch.Tensor | None, states: torch.Tensor,
    da: torch.Tensor, chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The gradients of every input; the initial state's is an empty tensor where there is none."""
    *grads, dinit = backward(dy, dfinal, x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da, chunk_size)
    return (*grads, dinit if dinit is not None else x.new_empty(0, dtype=torch.float32))


@_ssd_backward_op.register_fake
def _(dy, dfinal, x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da, chunk_size):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    dinit = like(initial_state) if initial_state is not None else x.new_empty(0, dtype=torch.float32)
    return like(x), like(dt), like(A), like(Bm), like(Cm), like(D), like(dt_bias), dinit


def _setup_context(ctx, inputs, output):
    x, dt, A, Bm, Cm, D, dt_bias, initial_state, chunk_size = inputs
    _, _, states, da = output
    ctx.chunk_size = chunk_size
    ctx.has_init = initial_state is not None
    ctx.save_for_backward(x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da)
    ctx.mark_non_differentiable(states, da)
    ctx.set_materialize_grads(False)  # no zeros for an unused final state's gradient


def _ssd_grads(ctx, dy, dfinal, _dstates, _dda):
    if dy is None and dfinal is None:
        return (None,) * 9
    x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    *grads, dinit = _ssd_backward_op(dy, dfinal, x, dt, A, Bm, Cm, D, dt_bias, initial_state, states, da, ctx.chunk_size)
    return (*grads, dinit if ctx.has_init else None, None)


_ssd_op.register_autograd(_ssd_grads, setup_context=_setup_context)


def ssd(x, dt, A, Bm, Cm, D, dt_bias, chunk_size: int = 256, initial_state=None, return_final_state: bool = False):
    """Mamba-2's SSD, as mamba-ssm's ``mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D,
    dt_bias=dt_bias, dt_softplus=True, initial_states=initial_state)``.

    x (B, L, H, P); dt (B, L, H), before its bias and softplus; A (H,) < 0; Bm, Cm (B, L, G, N);
    D, dt_bias (H,); initial_state (B, H, P, N) or None. Returns y (B, L, H, P) in x's dtype and,
    with ``return_final_state``, the final state (B, H, P, N) fp32. Differentiable in every input,
    initial_state included; the backward recomputes in-chunk quantities from the states entering
    each chunk and the cumulative log-decays, which the forward keeps (module docstring)."""
    y, final, _, _ = _ssd_op(x, dt, A, Bm, Cm, D, dt_bias, initial_state, chunk_size)
    return (y, final) if return_final_state else y
