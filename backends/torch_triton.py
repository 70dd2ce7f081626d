"""The fused selective scan for torch-cuda, in Triton (the ``triton`` scan).

One kernel does what mamba-ssm's ``selective_scan_fn`` does, with its semantics::

    Δ_t   = softplus(dt_t + dt_bias)                        (B, L, E)   the step size
    h_t   = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) ⊗ B_t           (B, E, N)   fp32 state, h_{-1} = 0
    out_t = (C_t · h_t + D ⊙ x_t) ⊙ silu(z_t)                (B, L, E)

Glossary (Mamba paper, Algorithm 2): x the SSM input (u in mamba-ssm), dt the step before its
bias and softplus, A (E, N) the diagonal state matrix (negative), B, C (B, L, N) the
input-dependent projections, D (E,) the skip, z the gate. B batch, L length, E d_inner,
N d_state.

The kernels and their math are in torch_scan_kernels.py; this module is their host side: the
tilings, how many segments a call splits the sequence into, the buffers, the autograd Function,
and the plans that keep each layout's launch arithmetic so a call does little more than allocate
and launch (at short L the host's time is the call's time). Each pass allocates one fp32 scratch
for its kernels: A as (NP, E), which each program writes and reads back (so A is read in any
layout, without a host-side transpose), then the segments' carries where the pass splits the
sequence. The forward keeps each segment's start
state for the backward, which recomputes the chunk states from them instead of keeping the
(B, L, E, N) states.

Inputs may be fp32, bf16 or fp16; arithmetic and the state are fp32; out has x's dtype.
Without CUDA (this module's tests on CPU), kernels run under Triton's interpreter.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

# Triton as torch_launch set it up (interpreted without CUDA); its launch() skips Triton's per-call
# argument binding, which at short L costs more host time than the kernels take on the GPU
from .torch_launch import cdiv, launch_now, next_power_of_2, triton
from .torch_scan_kernels import _adjoint_carry_kernel, _backward_kernel, _forward_kernel, _reduce_kernel, _state_carry_kernel


@dataclass(frozen=True)
class Tiling:
    block_e: int  # channels per program (a power of two)
    chunk: int  # T, steps per chunk scanned in registers (a power of two)
    warps: int  # num_warps per program
    per_sm: int = 0  # programs per SM to aim for by splitting the sequence into segments (0: no split)


# Chosen on the lent H100 by benchmarks/tune_triton_scan.py at L=512 and 2048, GPU alone
# (reports/benchmarks/h100-tilings/; README: benchmarks)
FORWARD = Tiling(block_e=32, chunk=4, warps=1, per_sm=32)
BACKWARD = Tiling(block_e=32, chunk=2, warps=1, per_sm=32)
MAX_SEGMENTS = 64  # each program folds the carries of the segments before it: O(S) loads
REDUCE = {"BLOCK": 512, "KB": 8, "num_warps": 4}  # _reduce_kernel: columns a program, rows a load
PDL = os.environ.get("SSMBENCH_PDL", "1") != "0"  # 0: no programmatic dependent launches (below)


def _np(N: int) -> int:
    return max(2, next_power_of_2(N))


def _even(L, E, N, tiling) -> bool:
    """Whether every tile is full (no masks needed): the common case, compiled apart."""
    return L % tiling.chunk == 0 and E % tiling.block_e == 0 and N == _np(N)


def _meta(tiling: Tiling, L: int, E: int, N: int, device: torch.device) -> dict:
    """The constexprs and warps every scan kernel takes at this tiling and shape."""
    even = _even(L, E, N, tiling)
    return {"BLOCK_E": tiling.block_e, "NP": _np(N), "T": tiling.chunk, "EVEN": even, "num_warps": tiling.warps, "PDL": _pdl(device)}


@functools.cache
def _pdl(device: torch.device) -> bool:
    """Whether a pass launches its kernels after the first as programmatic dependents (PDL,
    sm_90 on; torch_scan_kernels says what each one runs before it waits). A dependent's programs
    start while the kernel before it finishes, in the SMs its last wave leaves idle, with no
    launch gap: 119 -> 111 µs GPU-alone for the forward at 512 bf16 on the H100
    (reports/benchmarks/h100-pdl/). Never under Triton's interpreter, which runs no PTX."""
    return PDL and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def _dependent(meta: dict) -> dict:
    """``meta`` for a launch as a programmatic dependent of the kernel launched before it, where
    the GPU can (Triton sets the launch attribute; the kernel waits with ``gdc_wait``)."""
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


def _lastdim_contiguous(*ts):
    return [t if t.stride(-1) == 1 else t.contiguous() for t in ts]


def _bl(t):
    return t.stride(0), t.stride(1)


# A call's launch arithmetic (segments, grids, the kernels' integer arguments, buffer sizes) depends
# only on its inputs' layout and the tiling, so it is planned once per such key and kept here. A
# plan is also each of its launches' sig (torch_launch): it fixes every argument but the tensors.
# Host time is the eager time at short L: planning and keying each launch took about 30 µs a
# forward on the H100's host. It grows by a few hundred bytes per layout seen, as Triton's own
# caches grow by a compiled kernel per specialization.
_plans: dict[tuple, object] = {}


def _layout(x, dt, A, Bm, Cm, D, z, dt_bias) -> tuple:
    """What a plan derives from the inputs: x's shape (B, L, E), A's (E, N), and each input's
    strides, dtype and device (the launches a plan signs pass addresses, which Triton then does
    not check: an input on another device is another plan, whose first launches Triton checks)."""
    return (
        x.device, x.shape, x.stride(), x.dtype, dt.stride(), dt.dtype, z.stride(), z.dtype, Bm.stride(), Bm.dtype,
        Cm.stride(), Cm.dtype, A.shape, A.stride(), A.dtype, D.stride(), D.dtype, dt_bias.stride(), dt_bias.dtype,
        dt.get_device(), z.get_device(), Bm.get_device(), Cm.get_device(), A.get_device(), D.get_device(), dt_bias.get_device(),
    )  # fmt: skip


def forward(x, dt, A, Bm, Cm, D, z, dt_bias, *, states_only=False, keep_starts=False, starts=None, tiling: Tiling | None = None):
    """x, dt, z (B, L, E); A (E, N); Bm, Cm (B, L, N); D, dt_bias (E,) -> (out (B, L, E) in x's
    dtype, last state (B, E, N) fp32, kept), where kept is None, or with ``keep_starts`` the
    segments' start states and their length in steps ((B, S, NP, E) fp32, int).

    ``states_only`` (the backward's recompute): out is None and kept is each chunk's end state
    (B, L/T, NP, E) fp32. Given a forward's ``starts``, it runs on that forward's segments from
    their start states, without the carry kernel (where the segments are whole chunks here)."""
    ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    return _forward(*ins, layout, states_only=states_only, keep_starts=keep_starts, starts=starts, tiling=tiling)


def _prepared(x, dt, A, Bm, Cm, D, z, dt_bias):
    """(the inputs in the kernels' layouts, their ``_layout``): unit stride along the last dim, D
    and dt_bias contiguous (A, read at its strides, as it is; autograd's forward saves what it
    prepared). Whether any needs a copy is known from the layout after its first call."""
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
    x, dt, z, Bm, Cm = _lastdim_contiguous(x, dt, z, Bm, Cm)
    ins = (x, dt, A, Bm, Cm, D.contiguous(), z, dt_bias.contiguous())
    return ins, _layout(*ins)


def _scratch_size(S: int, Bt: int, NP: int, E: int) -> int:
    """The floats of a pass's fp32 scratch: A as (NP, E), then (B, S, NP + 1, E) carries where S > 1."""
    return (NP + (Bt * S * (NP + 1) if S > 1 else 0)) * E


@dataclass(eq=False)  # a sig by identity: hashing it costs nothing
class _ForwardPlan:
    tiling: Tiling  # kept alive: the plan's key holds its id
    carry: tuple | None  # the carry kernel's grid and integer arguments; None: no carries
    grid: tuple  # the forward kernel's grid
    ints: tuple  # its integer arguments
    meta: dict  # the carry kernel's constexprs and warps
    kw: dict  # the forward kernel's: meta's, its own, and whether it launches as the carry kernel's dependent
    scratch: int  # floats
    last: tuple  # (B, N, E)
    states: tuple | None  # (B, L/T, NP, E) where states_only
    starts: tuple | None  # (B, S, NP, E) where kept, None where given (FROM_STARTS) or not kept
    steps: int  # a segment's length in steps


def _plan_forward(x, dt, A, Bm, Cm, z, tiling: Tiling, states_only: bool, keep_starts: bool, starts) -> _ForwardPlan:
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = _np(N)
    n_chunks = math.ceil(L / tiling.chunk)
    n_eb = cdiv(E, tiling.block_e)
    from_starts = starts is not None and states_only and starts[1] % tiling.chunk == 0
    if from_starts:
        S, SC = starts[0].shape[1], starts[1] // tiling.chunk
    else:
        S, SC = segments(n_chunks, n_eb * Bt, tiling, x.device)
    carried = S > 1 and not from_starts  # else no carries: one segment, or the start states given
    head = (L, E, N, SC, S, *A.stride())
    carry = ((n_eb, Bt, S - 1), (*head, *_bl(x), *_bl(dt), *_bl(Bm))) if carried else None
    out_bl = (n_chunks * NP * E, NP * E) if states_only else (L * E, E)  # out's: states, or a contiguous (B, L, E)
    meta = _meta(tiling, L, E, N, x.device)
    kept = keep_starts and not from_starts
    own = {"STATES_ONLY": states_only, "KEEP_STARTS": kept, "FROM_STARTS": from_starts}
    return _ForwardPlan(
        tiling=tiling,
        carry=carry,
        grid=(n_eb, Bt, S),
        ints=(*head, *_bl(x), *_bl(dt), *_bl(z), *_bl(Bm), *_bl(Cm), *out_bl),
        meta=meta,
        kw=_dependent({**meta, **own}) if carried else {**meta, **own},  # after the carry kernel, its dependent
        scratch=_scratch_size(S if carried else 1, Bt, NP, E),
        last=(Bt, N, E),
        states=(Bt, n_chunks, NP, E) if states_only else None,
        starts=(Bt, S, NP, E) if kept else None,
        steps=SC * tiling.chunk,
    )


def _forward(x, dt, A, Bm, Cm, D, z, dt_bias, layout, *, states_only, keep_starts, starts, tiling, hold=None):
    """``forward`` on prepared inputs of this ``_layout``. ``hold``: a list to which it appends the
    buffers its kernels use that it does not return, for a caller that launches dependents after
    it (their memory must not be handed to those while these kernels may still run)."""
    tl_ = tiling or (BACKWARD if states_only else FORWARD)
    # the plan keeps its tiling alive, so the tiling's id is not reused while the key is kept
    given = None if starts is None else (starts[0].shape, starts[0].dtype, starts[0].get_device(), starts[1])
    key = ("forward", layout, id(tl_), states_only, keep_starts, given)
    p = _plans.get(key)
    if p is None:
        p = _plans[key] = _plan_forward(x, dt, A, Bm, Cm, z, tl_, states_only, keep_starts, starts)
    f32 = {"device": x.device, "dtype": torch.float32}
    # the carry kernel first, then the forward's own buffers: their allocations (host time)
    # overlap its GPU time instead of delaying it
    ws = torch.empty(p.scratch, **f32)
    if p.carry is not None:
        launch_now(_state_carry_kernel, p.carry[0], (x, dt, Bm, A, dt_bias, ws, *p.carry[1]), p.meta, p)
    last = torch.empty(p.last, **f32)
    states = torch.empty(p.states, **f32) if states_only else last
    out = states if states_only else torch.empty_like(x, memory_format=torch.contiguous_format)
    if p.kw["FROM_STARTS"]:
        start_states = starts[0]
    else:
        start_states = last if p.starts is None else torch.empty(p.starts, **f32)
    launch_now(_forward_kernel, p.grid, (x, dt, z, Bm, Cm, A, D, dt_bias, out, last, states, ws, start_states, *p.ints), p.kw, p)
    if hold is not None:
        hold += (ws, last)
    if states_only:
        return None, last.transpose(1, 2), states
    return out, last.transpose(1, 2), ((start_states, p.steps) if keep_starts else None)


def backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, *, starts=None, tiling: Tiling | None = None):
    """The gradients of ``forward``'s out for every input, each in its input's dtype. ``starts``:
    what ``forward(keep_starts=True)`` kept, to recompute the states without the carry kernel."""
    ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    return _backward(dout, *ins, layout, starts=starts, tiling=tiling)


@dataclass(eq=False)
class _BackwardPlan:
    tiling: Tiling  # kept alive: the plan's key holds its id
    carry: tuple | None  # the adjoint carry kernel's grid and integer arguments; None: one segment
    grid: tuple  # the backward kernel's grid
    ints: tuple  # its integer arguments
    meta: dict  # the adjoint carry and backward kernels': each launches as a dependent of the kernel before it
    scratch: int
    dBCp: tuple  # (2, B, n_eblocks, L, NP): dB, dC per channel block
    parts: tuple  # (B, S, NP + 2, E): dA (NP rows), dD, dbias per sequence and segment
    reduce: dict  # _reduce_kernel's constexprs and warps


def _plan_backward(x, dt, A, Bm, Cm, z, dout, tiling: Tiling) -> _BackwardPlan:
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = _np(N)
    n_eb = cdiv(E, tiling.block_e)
    S, SC = segments(math.ceil(L / tiling.chunk), n_eb * Bt, tiling, x.device)  # over the recompute's chunks
    head = (L, E, N, SC, S, *A.stride())
    return _BackwardPlan(
        tiling=tiling,
        carry=((n_eb, Bt, S - 1), (*head, *_bl(dt), *_bl(z), *_bl(Cm), *_bl(dout))) if S > 1 else None,
        grid=(n_eb, Bt, S),
        ints=(L, E, N, n_eb, SC, S, *A.stride(), *_bl(x), *_bl(dt), *_bl(z), *_bl(Bm), *_bl(Cm), *_bl(dout), L * E, E),
        meta=_dependent(_meta(tiling, L, E, N, x.device)),  # each after the kernel before it
        scratch=_scratch_size(S, Bt, NP, E),
        dBCp=(2, Bt, n_eb, L, NP),
        parts=(Bt, S, NP + 2, E),
        reduce=_reduce_meta(NP, x.device),
    )


def _backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, layout, *, starts, tiling):
    """``backward`` on prepared inputs of this ``_layout``."""
    tl_ = tiling or BACKWARD
    (dout,) = _lastdim_contiguous(dout)
    # the recompute's buffers stay held until every kernel after it is launched: the adjoint carry
    # kernel runs beside it (PDL), so its scratch must not be handed memory the recompute still uses
    held = []
    states = _forward(x, dt, A, Bm, Cm, D, z, dt_bias, layout, states_only=True, keep_starts=False, starts=starts, tiling=tl_, hold=held)[2]
    key = ("backward", layout, id(tl_), dout.stride(), dout.dtype, dout.get_device())
    p = _plans.get(key)
    if p is None:
        p = _plans[key] = _plan_backward(x, dt, A, Bm, Cm, z, dout, tl_)
    dx, ddt, dz = (torch.empty(x.shape, device=x.device, dtype=t.dtype) for t in (x, dt, z))
    f32 = {"device": x.device, "dtype": torch.float32}
    # per-program partial sums, which _reduce_kernel finishes
    dBCp = torch.empty(p.dBCp, **f32)
    parts = torch.empty(p.parts, **f32)
    ws = torch.empty(p.scratch, **f32)
    if p.carry is not None:
        launch_now(_adjoint_carry_kernel, p.carry[0], (dt, z, Cm, A, dt_bias, dout, ws, *p.carry[1]), p.meta, p)
    launch_now(_backward_kernel, p.grid, (x, dt, z, Bm, Cm, A, D, dt_bias, dout, states, ws, dx, ddt, dz, dBCp, parts, *p.ints), p.meta, p)
    dA, dB, dC, dD, dbias = _sum_partials(dBCp, parts, A, Bm.dtype, Cm.dtype, D, dt_bias, meta=p.reduce, sig=p)
    return dx, ddt, dA, dB, dC, dD, dz, dbias


def _reduce_meta(NP: int, device: torch.device) -> dict:
    """_reduce_kernel's constexprs and warps: it launches as the backward kernel's dependent."""
    return _dependent({"NP": NP, **REDUCE, "PDL": _pdl(device)})


def _sum_partials(dBCp, parts, A, B_dtype, C_dtype, D, dt_bias, meta=None, sig=None):
    """The backward kernel's partials, dBCp (2, B, n_eblocks, L, NP) and parts (B, S, NP + 2, E),
    summed into (dA (E, N) like A, dB, dC (B, L, N), dD, dbias (E,)) in their inputs' dtypes in
    one launch: each torch op it replaces (two sums, the casts) would cost host time. ``meta``
    (``_reduce_meta``'s) and ``sig``: the launch's, from a plan that fixes these shapes and
    dtypes (None: derived here)."""
    _, Bt, n_eb, L, NP = dBCp.shape
    E, N = A.shape
    rows = parts.shape[0] * parts.shape[1]  # B S
    dB, dC = (torch.empty(Bt, L, N, device=A.device, dtype=t) for t in (B_dtype, C_dtype))
    dA, dD, dbias = torch.empty(E, N, device=A.device, dtype=A.dtype), torch.empty_like(D), torch.empty_like(dt_bias)
    meta = meta or _reduce_meta(NP, A.device)
    programs = 2 * Bt * cdiv(L * NP, meta["BLOCK"]) + cdiv((NP + 2) * E, meta["BLOCK"])
    launch_now(_reduce_kernel, (programs,), (dBCp, parts, dB, dC, dA, dD, dbias, Bt, L, E, N, n_eb, rows), meta, sig)
    return dA, dB, dC, dD, dbias


class SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, Bm, Cm, D, z, dt_bias):
        ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)  # once for both passes
        out, last, (starts, steps) = _forward(*ins, layout, states_only=False, keep_starts=True, starts=None, tiling=None)
        ctx.save_for_backward(*ins, starts)
        ctx.segment_steps, ctx.layout = steps, layout
        ctx.mark_non_differentiable(last)
        ctx.set_materialize_grads(False)  # no zeros for the last state's gradient (it has none)
        return out, last

    @staticmethod
    def backward(ctx, dout, _dlast):  # dout is given: out is the only differentiable output
        *ins, starts = ctx.saved_tensors
        return _backward(dout, *ins, ctx.layout, starts=(starts, ctx.segment_steps), tiling=None)


def selective_scan(x, dt, A, Bm, Cm, D, z, dt_bias):
    """mamba-ssm's selective_scan_fn(x, dt, A, B, C, D, z, dt_bias, delta_softplus=True) in the
    (B, L, E) layout -> (out (B, L, E), last state (B, E, N)); differentiable in every input.
    The backward recomputes what it needs from the inputs and the segments' start states."""
    ins = (x, dt, A, Bm, Cm, D, z, dt_bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in ins):
        return SelectiveScan.apply(*ins)
    return forward(*ins)[:2]
