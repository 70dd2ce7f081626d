"""The fused selective scan for torch-cuda, in Triton (the ``triton`` scan).

One op does what mamba-ssm's ``selective_scan_fn`` does, with its semantics::

    Δ_t   = softplus(dt_t + dt_bias)                        (B, L, E)   the step size
    h_t   = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) ⊗ B_t           (B, E, N)   fp32 state, h_{-1} = 0
    out_t = (C_t · h_t + D ⊙ x_t) ⊙ silu(z_t)                (B, L, E)

Glossary (Mamba paper, Algorithm 2): x the SSM input (u in mamba-ssm), dt the step before its
bias and softplus, A (E, N) the diagonal state matrix (negative), B, C (B, L, N) the
input-dependent projections, D (E,) the skip, z the gate. B batch, L length, E d_inner,
N d_state.

The kernels and their math are in scan_kernels.py; this module is their host side: the tilings,
how many segments a call splits the sequence into, the buffers, and ``selective_scan``, a torch
custom op (``ssmbench::selective_scan``, its backward ``ssmbench::selective_scan_backward``) so
that autograd, CUDA-graph capture and torch.compile each see one op. A call's launch arithmetic
(segments, grids, the kernels' integer arguments, buffer shapes) depends only on its inputs'
layout and the tiling, so it is planned once per layout and kept (``_plans``); a call then
allocates and launches, each kernel the ordinary Triton way.

Each pass allocates one fp32 scratch for its kernels: A as (NP, E), which each program writes and
reads back (so A is read in any layout, without a host-side transpose), then the segments'
carries where the pass splits the sequence. The forward keeps each segment's start state for the
backward, which recomputes the chunk states from them instead of keeping the (B, L, E, N) states.

Inputs may be fp32, bf16 or fp16; arithmetic and the state are fp32; out has x's dtype.
Without CUDA (this module's tests on CPU), kernels run under Triton's interpreter.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

from . import bl_strides, cdiv, lastdim_contiguous, padded_states, triton
from .scan_kernels import adjoint_carry_kernel, backward_kernel, forward_kernel, reduce_kernel, state_carry_kernel


@dataclass(frozen=True)
class Tiling:
    block_e: int  # channels per program (a power of two)
    chunk: int  # T, steps per chunk scanned in registers (a power of two)
    warps: int  # num_warps per program
    per_sm: int = 0  # programs per SM to aim for by splitting the sequence into segments (0: no split)


# Chosen on the lent H100 by tools/tune_triton_scan.py at L=512 and 2048, GPU alone, on 2026-11-23
# (its output is in git history: reports/benchmarks/h100-tilings/ at fbf2d35)
FORWARD = Tiling(block_e=32, chunk=4, warps=1, per_sm=32)
BACKWARD = Tiling(block_e=32, chunk=2, warps=1, per_sm=32)
MAX_SEGMENTS = 64  # each program folds the carries of the segments before it: O(S) loads
REDUCE = {"BLOCK": 512, "KB": 8, "num_warps": 4}  # reduce_kernel: columns a program, rows a load
PDL = os.environ.get("SSMBENCH_PDL", "1") != "0"  # 0: no programmatic dependent launches (below)


def _even(L, E, N, tiling) -> bool:
    """Whether every tile is full (no masks needed): the common case, compiled apart."""
    return L % tiling.chunk == 0 and E % tiling.block_e == 0 and N == padded_states(N)


def _meta(tiling: Tiling, L: int, E: int, N: int, device: torch.device) -> dict:
    """The constexprs and warps every scan kernel takes at this tiling and shape."""
    even = _even(L, E, N, tiling)
    return {
        "BLOCK_E": tiling.block_e,
        "NP": padded_states(N),
        "T": tiling.chunk,
        "EVEN": even,
        "num_warps": tiling.warps,
        "PDL": _pdl(device),
    }


@functools.cache
def _pdl(device: torch.device) -> bool:
    """Whether a pass launches its kernels after the first as programmatic dependents (PDL,
    sm_90 on; scan_kernels says what each one runs before it waits). A dependent's programs
    start while the kernel before it finishes, in the SMs its last wave leaves idle, with no
    launch gap: 119 -> 111 µs GPU-alone for the forward at 512 bf16 on the H100. Never under
    Triton's interpreter, which runs no PTX."""
    return PDL and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def _dependent(meta: dict) -> dict:
    """``meta`` for a launch as a programmatic dependent of the kernel launched before it, where
    the GPU can (Triton's ``launch_pdl`` option; the kernel waits with ``gdc_wait``)."""
    return {**meta, "launch_pdl": True} if meta["PDL"] else meta


@functools.cache
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors (1 under the interpreter, so tests choose S directly)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def segments(n_chunks: int, programs: int, tiling: Tiling, device: torch.device) -> tuple[int, int]:
    """(S segments, chunks per segment) for ``programs`` (sequence, channel block) pairs: enough
    segments for about ``tiling.per_sm`` programs per SM, each a whole number of chunks."""
    want = math.ceil(tiling.per_sm * _sm_count(device) / programs) if tiling.per_sm > 0 else 1
    per_segment = math.ceil(n_chunks / max(1, min(MAX_SEGMENTS, n_chunks, want)))
    return math.ceil(n_chunks / per_segment), per_segment


def _scratch_size(S: int, Bt: int, NP: int, E: int) -> int:
    """The floats of a pass's fp32 scratch: A as (NP, E), then (B, S, NP + 1, E) carries where S > 1."""
    return (NP + (Bt * S * (NP + 1) if S > 1 else 0)) * E


def _launch(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """Every launch of the scan: ``kernel[grid](*args, **meta)`` (one place, for the tests' stubs)."""
    kernel[grid](*args, **meta)


# ============================================================================ plans
# A plan is a call's launch arithmetic for one layout of its inputs, computed once and kept in
# _plans under a key of that layout (and the tiling, and what else the call depends on). It grows
# by a few hundred bytes per layout seen, as Triton's own caches grow by a compiled kernel per
# specialisation.
_plans: dict[tuple, object] = {}


def _layout(x, dt, A, Bm, Cm, D, z, dt_bias) -> tuple:
    """What a plan derives from the inputs: x's shape (B, L, E), A's (E, N), and each input's
    strides, dtype and device."""
    return (
        x.device, x.shape, x.stride(), x.dtype, dt.stride(), dt.dtype, z.stride(), z.dtype, Bm.stride(), Bm.dtype,
        Cm.stride(), Cm.dtype, A.shape, A.stride(), A.dtype, D.stride(), D.dtype, dt_bias.stride(), dt_bias.dtype,
    )  # fmt: skip


def _prepared(x, dt, A, Bm, Cm, D, z, dt_bias):
    """(the inputs in the kernels' layouts, their ``_layout``): unit stride along the last dim, D
    and dt_bias contiguous (A, read at its strides, as it is). Whether any needs a copy is known
    from the layout after its first call."""
    layout = _layout(x, dt, A, Bm, Cm, D, z, dt_bias)
    copy = _plans.get(("prepared", layout))
    if copy is None:
        if x.device.type != "cuda" and not triton.knobs.runtime.interpret:
            raise RuntimeError(
                f"the triton scan needs CUDA tensors, not {x.device.type} (or TRITON_INTERPRET=1 set before triton is imported)"
            )
        strided = any(t.stride(-1) != 1 for t in (x, dt, z, Bm, Cm))
        copy = _plans["prepared", layout] = strided or not (D.is_contiguous() and dt_bias.is_contiguous())
    if not copy:
        return (x, dt, A, Bm, Cm, D, z, dt_bias), layout
    x, dt, z, Bm, Cm = lastdim_contiguous(x, dt, z, Bm, Cm)
    ins = (x, dt, A, Bm, Cm, D.contiguous(), z, dt_bias.contiguous())
    return ins, _layout(*ins)


@dataclass(frozen=True)
class _ForwardPlan:
    """A forward's (or the backward's recompute's) launches and buffers at one layout."""

    scratch: int  # the fp32 scratch's floats
    carry: tuple | None  # the carry kernel's (grid, integer arguments, meta), None without one
    grid: tuple  # the forward kernel's
    ints: tuple  # its integer arguments
    meta: dict  # its constexprs and launch options
    last: tuple  # the last state's buffer, (B, N, E)
    states: tuple | None  # states_only: each chunk's end state, (B, L/T, NP, E)
    starts: tuple | None  # keep_starts: each segment's start state, (B, S, NP, E)
    steps: int  # a segment's length in steps


def _forward_plan(ins, layout, tiling: Tiling, states_only: bool, keep_starts: bool, given) -> _ForwardPlan:
    """The plan of ``forward`` on prepared inputs of this ``_layout``. ``given``: the start
    states handed in, as (their shape, a segment's steps), or None."""
    key = ("forward", layout, tiling, states_only, keep_starts, given)
    p = _plans.get(key)
    if p is not None:
        return p
    x, dt, A, Bm, Cm, _, z, _ = ins
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = padded_states(N)
    n_chunks = math.ceil(L / tiling.chunk)
    n_eb = cdiv(E, tiling.block_e)
    from_starts = given is not None and states_only and given[1] % tiling.chunk == 0
    if from_starts:  # the forward's segments, whole chunks here: no carry kernel
        S, SC = given[0][1], given[1] // tiling.chunk
    else:
        S, SC = segments(n_chunks, n_eb * Bt, tiling, x.device)
    carried = S > 1 and not from_starts
    head = (L, E, N, SC, S, *A.stride())
    meta = _meta(tiling, L, E, N, x.device)
    carry = ((n_eb, Bt, S - 1), (*head, *bl_strides(x), *bl_strides(dt), *bl_strides(Bm)), meta) if carried else None
    out_bl = (n_chunks * NP * E, NP * E) if states_only else (L * E, E)  # out's: states, or a contiguous (B, L, E)
    ints = (*head, *bl_strides(x), *bl_strides(dt), *bl_strides(z), *bl_strides(Bm), *bl_strides(Cm), *out_bl)
    kept = keep_starts and not from_starts
    own = {**meta, "STATES_ONLY": states_only, "KEEP_STARTS": kept, "FROM_STARTS": from_starts}
    p = _plans[key] = _ForwardPlan(
        scratch=_scratch_size(S if carried else 1, Bt, NP, E),
        carry=carry,
        grid=(n_eb, Bt, S),
        ints=ints,
        meta=_dependent(own) if carried else own,  # after the carry kernel, its dependent
        last=(Bt, N, E),
        states=(Bt, n_chunks, NP, E) if states_only else None,
        starts=(Bt, S, NP, E) if kept else None,
        steps=SC * tiling.chunk,
    )
    return p


def _run_forward(ins, p: _ForwardPlan, starts=None) -> tuple:
    """Launch a planned forward (``starts``: the start states it reads, where it was planned
    from them): (out or the chunk states, last state (B, N, E), kept start states or None, the
    scratch). The carry kernel is the GPU's first scan work, so only the
    scratch is allocated before it; the other buffers' allocations overlap its GPU time."""
    x, dt, A, Bm, Cm, D, z, dt_bias = ins
    dev = x.device
    ws = torch.empty(p.scratch, device=dev, dtype=torch.float32)
    if p.carry is not None:
        grid, ints, meta = p.carry
        _launch(state_carry_kernel, grid, (x, dt, Bm, A, dt_bias, ws, *ints), meta)
    last = torch.empty(p.last, device=dev, dtype=torch.float32)
    if p.states is not None:
        out = states = torch.empty(p.states, device=dev, dtype=torch.float32)
    else:
        out, states = torch.empty(x.shape, device=dev, dtype=x.dtype), last
    kept = torch.empty(p.starts, device=dev, dtype=torch.float32) if p.starts is not None else None
    start_states = starts if p.meta["FROM_STARTS"] else kept if kept is not None else last
    _launch(forward_kernel, p.grid, (x, dt, z, Bm, Cm, A, D, dt_bias, out, last, states, ws, start_states, *p.ints), p.meta)
    return out, last, kept, ws


def forward(x, dt, A, Bm, Cm, D, z, dt_bias, *, states_only=False, keep_starts=False, starts=None, tiling: Tiling | None = None):
    """x, dt, z (B, L, E); A (E, N); Bm, Cm (B, L, N); D, dt_bias (E,) -> (out (B, L, E) in x's
    dtype, last state (B, E, N) fp32, kept), where kept is None, or with ``keep_starts`` the
    segments' start states and their length in steps ((B, S, NP, E) fp32, int).

    ``states_only`` (the backward's recompute): out is None and kept is each chunk's end state
    (B, L/T, NP, E) fp32. Given a forward's ``starts``, it runs on that forward's segments from
    their start states, without the carry kernel (where the segments are whole chunks here)."""
    ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    tiling = tiling or (BACKWARD if states_only else FORWARD)
    given = None if starts is None else (tuple(starts[0].shape), starts[1])
    p = _forward_plan(ins, layout, tiling, states_only, keep_starts, given)
    out, last, kept, _ = _run_forward(ins, p, None if starts is None else starts[0])
    if states_only:
        return None, last.transpose(1, 2), out
    return out, last.transpose(1, 2), ((kept, p.steps) if keep_starts else None)


@dataclass(frozen=True)
class _BackwardPlan:
    """A backward's launches and buffers at one layout: the recompute, then the adjoint carry,
    backward and reduce kernels."""

    recompute: _ForwardPlan
    adjoint: tuple | None  # the adjoint carry kernel's (grid, integer arguments, meta), None without one
    grid: tuple  # the backward kernel's
    ints: tuple
    meta: dict
    partials: tuple  # dB and dC per channel block, (2, B, n_eblocks, L, NP) fp32
    parts: tuple  # dA, dD, dbias per segment, (B, S, NP + 2, E) fp32
    scratch: int
    reduce: tuple  # reduce_kernel's (grid, integer arguments, meta)


def _backward_plan(ins, layout, dout: tuple, given, tiling: Tiling) -> _BackwardPlan:
    """The plan of ``backward`` on prepared inputs of this ``_layout``, for a dout of ((B, L)
    strides, dtype) and the forward's start states ``given`` as ``forward`` takes them."""
    key = ("backward", layout, tiling, dout, given)
    p = _plans.get(key)
    if p is not None:
        return p
    x, dt, A, Bm, Cm, _, z, _ = ins
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = padded_states(N)
    n_eb = cdiv(E, tiling.block_e)
    recompute = _forward_plan(ins, layout, tiling, True, False, given)
    S, SC = segments(math.ceil(L / tiling.chunk), n_eb * Bt, tiling, x.device)  # over the recompute's chunks
    head = (L, E, N, SC, S, *A.stride())
    meta = _dependent(_meta(tiling, L, E, N, x.device))  # each after the kernel before it
    sdo = dout[0]
    adjoint = ((n_eb, Bt, S - 1), (*head, *bl_strides(dt), *bl_strides(z), *bl_strides(Cm), *sdo), meta) if S > 1 else None
    strides = (*bl_strides(x), *bl_strides(dt), *bl_strides(z), *bl_strides(Bm), *bl_strides(Cm), *sdo)
    ints = (L, E, N, n_eb, SC, S, *A.stride(), *strides, L * E, E)
    rmeta = _dependent({"NP": NP, **REDUCE, "PDL": _pdl(x.device)})
    p = _plans[key] = _BackwardPlan(
        recompute=recompute,
        adjoint=adjoint,
        grid=(n_eb, Bt, S),
        ints=ints,
        meta=meta,
        partials=(2, Bt, n_eb, L, NP),
        parts=(Bt, S, NP + 2, E),
        scratch=_scratch_size(S, Bt, NP, E),
        reduce=_reduce_plan(Bt, L, E, N, n_eb, Bt * S, rmeta),
    )
    return p


def _reduce_plan(Bt, L, E, N, n_eb, rows, meta) -> tuple:
    """reduce_kernel's (grid, integer arguments, meta): it sums the backward kernel's partials,
    dBCp (2, B, n_eblocks, L, NP) and parts (rows = B S, NP + 2, E), into dA, dB, dC, dD, dbias
    in their dtypes, in one launch (each torch op it replaces, two sums and the casts, would cost
    host time)."""
    NP, block = meta["NP"], meta["BLOCK"]
    programs = 2 * Bt * cdiv(L * NP, block) + cdiv((NP + 2) * E, block)
    return (programs,), (Bt, L, E, N, n_eb, rows), meta


def _run_reduce(plan: tuple, dBCp, parts, A, B_dtype, C_dtype, D, dt_bias) -> tuple:
    """Launch a planned reduce: (dA (E, N) like A, dB, dC (B, L, N), dD, dbias (E,))."""
    grid, ints, meta = plan
    Bt, L, E, N = ints[:4]
    dev = A.device
    dB = torch.empty(Bt, L, N, device=dev, dtype=B_dtype)
    dC = torch.empty(Bt, L, N, device=dev, dtype=C_dtype)
    dA, dD, dbias = torch.empty(E, N, device=dev, dtype=A.dtype), torch.empty_like(D), torch.empty_like(dt_bias)
    _launch(reduce_kernel, grid, (dBCp, parts, dB, dC, dA, dD, dbias, *ints), meta)
    return dA, dB, dC, dD, dbias


def backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, *, starts=None, tiling: Tiling | None = None):
    """The gradients of ``forward``'s out for every input, each in its input's dtype. ``starts``:
    what ``forward(keep_starts=True)`` kept, to recompute the states without the carry kernel."""
    ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    (dout,) = lastdim_contiguous(dout)
    given = None if starts is None else (tuple(starts[0].shape), starts[1])
    p = _backward_plan(ins, layout, (bl_strides(dout), dout.dtype), given, tiling or BACKWARD)
    x, dt, A, Bm, Cm, D, z, dt_bias = ins
    dev = x.device
    # the recompute; its scratch and last state stay referenced (``held``) until every later
    # kernel is launched: those may start while it runs (PDL), and the caching allocator would
    # hand memory freed here to the buffers below at once
    states, *held = _run_forward(ins, p.recompute, None if starts is None else starts[0])
    dx, ddt, dz = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(z)
    dBCp = torch.empty(p.partials, device=dev, dtype=torch.float32)  # per-program partial sums,
    parts = torch.empty(p.parts, device=dev, dtype=torch.float32)  # which reduce_kernel finishes
    ws = torch.empty(p.scratch, device=dev, dtype=torch.float32)
    if p.adjoint is not None:
        grid, ints, meta = p.adjoint
        _launch(adjoint_carry_kernel, grid, (dt, z, Cm, A, dt_bias, dout, ws, *ints), meta)
    args = (x, dt, z, Bm, Cm, A, D, dt_bias, dout, states, ws, dx, ddt, dz, dBCp, parts, *p.ints)
    _launch(backward_kernel, p.grid, args, p.meta)
    dA, dB, dC, dD, dbias = _run_reduce(p.reduce, dBCp, parts, A, Bm.dtype, Cm.dtype, D, dt_bias)
    del held
    return dx, ddt, dA, dB, dC, dD, dz, dbias


def _sum_partials(dBCp, parts, A, B_dtype, C_dtype, D, dt_bias):
    """The reduce kernel on its own (tests): -> (dA, dB, dC, dD, dbias)."""
    _, Bt, n_eb, L, NP = dBCp.shape
    E, N = A.shape
    meta = _dependent({"NP": NP, **REDUCE, "PDL": _pdl(A.device)})
    plan = _reduce_plan(Bt, L, E, N, n_eb, parts.shape[0] * parts.shape[1], meta)
    return _run_reduce(plan, dBCp, parts, A, B_dtype, C_dtype, D, dt_bias)


# ============================================================================ the op
# The scan as two torch custom ops: autograd, CUDA-graph capture and torch.compile see one op each
# way (torch.compile does not trace into the host code above), with fake implementations giving
# their outputs' shapes, dtypes and strides.
@torch.library.custom_op("ssmbench::selective_scan", mutates_args=())
def _scan_op(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
    D: torch.Tensor, z: torch.Tensor, dt_bias: torch.Tensor, keep_starts: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(out, last state, the segments' start states, or an empty tensor without keep_starts)."""
    out, last, kept = forward(x, dt, A, Bm, Cm, D, z, dt_bias, keep_starts=keep_starts)
    return out, last, kept[0] if keep_starts else last.new_empty(0)


@_scan_op.register_fake
def _(x, dt, A, Bm, Cm, D, z, dt_bias, keep_starts):
    Bt, L, E = x.shape
    N = A.shape[1]
    S = segments(math.ceil(L / FORWARD.chunk), cdiv(E, FORWARD.block_e) * Bt, FORWARD, x.device)[0]
    last = x.new_empty(Bt, N, E, dtype=torch.float32).transpose(1, 2)
    starts = x.new_empty((Bt, S, padded_states(N), E) if keep_starts else (0,), dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), last, starts


@torch.library.custom_op("ssmbench::selective_scan_backward", mutates_args=())
def _scan_backward_op(
    dout: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
    D: torch.Tensor, z: torch.Tensor, dt_bias: torch.Tensor, starts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The gradients of every input, from the forward's kept start states."""
    if dout.dtype != x.dtype:
        dout = dout.to(x.dtype)
    steps = _forward_plan(*_prepared(x, dt, A, Bm, Cm, D, z, dt_bias), FORWARD, False, True, None).steps
    return backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, starts=(starts, steps))


@_scan_backward_op.register_fake
def _(dout, x, dt, A, Bm, Cm, D, z, dt_bias, starts):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    return like(x), like(dt), torch.empty(A.shape, device=A.device, dtype=A.dtype), like(Bm), like(Cm), like(D), like(z), like(dt_bias)


def _setup_context(ctx, inputs, output):
    *ins, _ = inputs
    ctx.save_for_backward(*ins, output[2])
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)  # no zeros for the last state's and the starts' gradients (they have none)


def _scan_grads(ctx, dout, _dlast, _dstarts):
    if dout is None:
        return (None,) * 9
    return (*_scan_backward_op(dout, *ctx.saved_tensors), None)


_scan_op.register_autograd(_scan_grads, setup_context=_setup_context)


def selective_scan(x, dt, A, Bm, Cm, D, z, dt_bias):
    """mamba-ssm's selective_scan_fn(x, dt, A, B, C, D, z, dt_bias, delta_softplus=True) in the
    (B, L, E) layout -> (out (B, L, E), last state (B, E, N)); differentiable in every input.
    The backward recomputes what it needs from the inputs and the segments' start states."""
    ins = (x, dt, A, Bm, Cm, D, z, dt_bias)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in ins)
    out, last, _ = _scan_op(*ins, grad)
    return out, last
