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
and the passes planned once per layout (buffers, launches, outputs) so that a call does no more
than allocate and launch (at short L the host's time is the call's time). ``_run`` runs a pass in
Python; once its launches are learnt, ``selective_scan`` runs the same passes from C++
(torch_host), the backward included. Each pass allocates one fp32 scratch
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
from . import torch_host
from .torch_launch import cdiv, direct_state, launch_now, next_power_of_2, signed_driver, triton
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
# only on its inputs' layout and the tiling, so it is planned once per such key and kept here: a
# pass (below). Each of its launches is also its sig (torch_launch): it fixes every argument but
# the tensors. Host time is the eager time at short L: planning and keying each launch took about
# 30 µs a forward on the H100's host. It grows by a few hundred bytes per layout seen, as Triton's
# own caches grow by a compiled kernel per specialization.
_plans: dict[tuple, object] = {}


class _Ref(int):
    """A place in a pass's table, written where a launch takes that tensor."""

    __slots__ = ()


# A pass's table: the 8 inputs, the forward's segment starts and dout (each None where the pass
# takes none), then the buffers the pass allocates, in order
X, DT, A_, B_, C_, D_, Z, BIAS, STARTS, DOUT = map(_Ref, range(10))
INPUTS = 10


@dataclass(eq=False)  # a sig by identity: hashing it costs nothing
class _Launch:
    kernel: object
    grid: tuple
    template: tuple  # the arguments, None where a tensor goes
    refs: tuple  # (argument position, table place) of each tensor
    meta: dict  # constexprs and warps
    allocs: int  # the pass's buffers allocated before it launches


@dataclass(eq=False)
class _Pass:
    """One call's kernels with the buffers they write, planned for a layout: what runs it
    allocates each buffer when the first launch that takes it comes (a buffer needed only later
    is allocated while the GPU runs the launches before it), launches, and returns the table. Run
    in Python (``_run``) or from C++ (torch_host: the same pass, built from this)."""

    buffers: tuple  # (shape, dtype, the table place whose dtype it has or -1 for fp32) each
    launches: tuple
    outputs: tuple  # table places of what the pass returns
    tiling: Tiling  # kept alive: the plan's key holds its id
    steps: int = 0  # a forward segment's length in steps


class _Builder:
    """Writes a pass: ``buffer`` adds a buffer and gives its place, ``launch`` a launch."""

    def __init__(self, dtypes, strides=None):
        self.dtypes = list(dtypes)  # of each table place so far
        self.strides = strides or {}  # the inputs' (B, L) strides by place
        self.buffers, self.launches = [], []

    def buffer(self, shape, like: _Ref | None = None) -> _Ref:
        dtype = torch.float32 if like is None else self.dtypes[like]
        self.buffers.append((tuple(shape), dtype, -1 if like is None else int(like)))
        self.dtypes.append(dtype)
        return _Ref(len(self.dtypes) - 1)

    def launch(self, kernel, grid, args, meta) -> None:
        refs = tuple((i, int(a)) for i, a in enumerate(args) if type(a) is _Ref)
        template = tuple(None if type(a) is _Ref else a for a in args)
        self.launches.append(_Launch(kernel, tuple(grid), template, refs, meta, len(self.buffers)))

    def done(self, outputs, tiling: Tiling, steps: int = 0) -> _Pass:
        return _Pass(tuple(self.buffers), tuple(self.launches), tuple(int(o) for o in outputs), tiling, steps)


def _run(p: _Pass, table: list, device: torch.device) -> list:
    """Run the pass on ``table`` (its INPUTS first places): the table, with the buffers after."""
    for launch in p.launches:
        for shape, dtype, _ in p.buffers[len(table) - INPUTS : launch.allocs]:
            table.append(torch.empty(shape, device=device, dtype=dtype))
        args = list(launch.template)
        for i, k in launch.refs:
            args[i] = table[k]
        launch_now(launch.kernel, launch.grid, tuple(args), launch.meta, launch)
    for shape, dtype, _ in p.buffers[len(table) - INPUTS :]:
        table.append(torch.empty(shape, device=device, dtype=dtype))
    return table


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


def _given(starts) -> tuple | None:
    """What a plan keys a forward's kept ``starts`` (tensor, steps) by."""
    return None if starts is None else (starts[0].shape, starts[0].dtype, starts[0].get_device(), starts[1])


def _kept_given(p, device: int) -> tuple:
    """``_given`` of the start states that forward pass ``p`` keeps, on device ``device``."""
    return torch.Size(p.buffers[p.outputs[2] - INPUTS][0]), torch.float32, device, p.steps


def _add_forward(b: _Builder, x, A, tiling: Tiling, states_only: bool, keep_starts: bool, given) -> tuple:
    """Add a forward's launches to ``b``, on the table's inputs (x, A: their tensors, for shapes
    and strides; the others share x's (B, L) strides' roles as the kernels take them): (out, last,
    states, start states) places and a segment's length in steps. ``given``: ``_given`` of the
    starts at STARTS, or None."""
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = _np(N)
    n_chunks = math.ceil(L / tiling.chunk)
    n_eb = cdiv(E, tiling.block_e)
    from_starts = given is not None and states_only and given[3] % tiling.chunk == 0
    if from_starts:
        S, SC = given[0][1], given[3] // tiling.chunk
    else:
        S, SC = segments(n_chunks, n_eb * Bt, tiling, x.device)
    carried = S > 1 and not from_starts  # else no carries: one segment, or the start states given
    head = (L, E, N, SC, S, *A.stride())
    meta = _meta(tiling, L, E, N, x.device)
    # the carry kernel first, then the forward's own buffers: their allocations (host time)
    # overlap its GPU time instead of delaying it
    s = b.strides
    ws = b.buffer((_scratch_size(S if carried else 1, Bt, NP, E),))
    if carried:
        b.launch(_state_carry_kernel, (n_eb, Bt, S - 1), (X, DT, B_, A_, BIAS, ws, *head, *s[X], *s[DT], *s[B_]), meta)
    last = b.buffer((Bt, N, E))
    states = b.buffer((Bt, n_chunks, NP, E)) if states_only else last
    out = states if states_only else b.buffer(x.shape, like=X)
    kept = keep_starts and not from_starts
    start_states = STARTS if from_starts else b.buffer((Bt, S, NP, E)) if kept else last
    out_bl = (n_chunks * NP * E, NP * E) if states_only else (L * E, E)  # out's: states, or a contiguous (B, L, E)
    ints = (*head, *s[X], *s[DT], *s[Z], *s[B_], *s[C_], *out_bl)
    own = {"STATES_ONLY": states_only, "KEEP_STARTS": kept, "FROM_STARTS": from_starts}
    kw = _dependent({**meta, **own}) if carried else {**meta, **own}  # after the carry kernel, its dependent
    b.launch(_forward_kernel, (n_eb, Bt, S), (X, DT, Z, B_, C_, A_, D_, BIAS, out, last, states, ws, start_states, *ints), kw)
    return out, last, states, start_states, SC * tiling.chunk


def _builder(ins, starts_given=None, dout=None) -> _Builder:
    """A builder for a pass on these inputs, a forward's kept starts (their ``_given``) and a dout
    of ((B, L) strides, dtype)."""
    x, dt, _, Bm, Cm, _, z, _ = ins
    strides = {X: _bl(x), DT: _bl(dt), Z: _bl(z), B_: _bl(Bm), C_: _bl(Cm), DOUT: None if dout is None else dout[0]}
    return _Builder([*(t.dtype for t in ins), torch.float32 if starts_given else None, None if dout is None else dout[1]], strides)


def _forward_pass(ins, layout, states_only: bool, keep_starts: bool, given, tiling: Tiling) -> _Pass:
    """The planned pass of ``forward`` on prepared inputs of this ``_layout`` (outputs: out, last
    state, and the states or start states)."""
    # the plan keeps its tiling alive, so the tiling's id is not reused while the key is kept
    key = ("forward", layout, id(tiling), states_only, keep_starts, given)
    p = _plans.get(key)
    if p is None:
        b = _builder(ins, given)
        out, last, states, start_states, steps = _add_forward(b, ins[0], ins[2], tiling, states_only, keep_starts, given)
        p = _plans[key] = b.done((out, last, states if states_only else start_states), tiling, steps)
    return p


def _forward(x, dt, A, Bm, Cm, D, z, dt_bias, layout, *, states_only, keep_starts, starts, tiling):
    """``forward`` on prepared inputs of this ``_layout``."""
    ins = (x, dt, A, Bm, Cm, D, z, dt_bias)
    p = _forward_pass(ins, layout, states_only, keep_starts, _given(starts), tiling or (BACKWARD if states_only else FORWARD))
    table = _run(p, [*ins, None if starts is None else starts[0], None], x.device)
    out, last, kept = (table[k] for k in p.outputs)
    if states_only:
        return None, last.transpose(1, 2), kept
    return out, last.transpose(1, 2), ((kept, p.steps) if keep_starts else None)


def backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, *, starts=None, tiling: Tiling | None = None):
    """The gradients of ``forward``'s out for every input, each in its input's dtype. ``starts``:
    what ``forward(keep_starts=True)`` kept, to recompute the states without the carry kernel."""
    ins, layout = _prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    return _backward(dout, *ins, layout, starts=starts, tiling=tiling)


def _backward_pass(ins, layout, dout: tuple, given, tiling: Tiling) -> _Pass:
    """The planned pass of ``backward`` on prepared inputs of this ``_layout``, for a dout of
    ``dout`` = ((B, L) strides, dtype, device index): the recompute of the chunk states, then the
    adjoint carry, backward and reduce kernels (outputs: the gradients in the inputs' order)."""
    key = ("backward", layout, id(tiling), dout, given)
    p = _plans.get(key)
    if p is not None:
        return p
    x, A = ins[0], ins[2]
    Bt, L, E = x.shape
    N = A.shape[1]
    NP = _np(N)
    n_eb = cdiv(E, tiling.block_e)
    b = _builder(ins, given, dout)
    states = _add_forward(b, x, A, tiling, True, False, given)[2]
    S, SC = segments(math.ceil(L / tiling.chunk), n_eb * Bt, tiling, x.device)  # over the recompute's chunks
    head = (L, E, N, SC, S, *A.stride())
    meta = _dependent(_meta(tiling, L, E, N, x.device))  # each after the kernel before it
    s = b.strides
    dx, ddt, dz = b.buffer(x.shape, like=X), b.buffer(x.shape, like=DT), b.buffer(x.shape, like=Z)
    # per-program partial sums, which _reduce_kernel finishes
    dBCp, parts, ws = b.buffer((2, Bt, n_eb, L, NP)), b.buffer((Bt, S, NP + 2, E)), b.buffer((_scratch_size(S, Bt, NP, E),))
    if S > 1:
        b.launch(_adjoint_carry_kernel, (n_eb, Bt, S - 1), (DT, Z, C_, A_, BIAS, DOUT, ws, *head, *s[DT], *s[Z], *s[C_], *s[DOUT]), meta)
    ints = (L, E, N, n_eb, SC, S, *A.stride(), *s[X], *s[DT], *s[Z], *s[B_], *s[C_], *s[DOUT], L * E, E)
    args = (X, DT, Z, B_, C_, A_, D_, BIAS, DOUT, states, ws, dx, ddt, dz, dBCp, parts, *ints)
    b.launch(_backward_kernel, (n_eb, Bt, S), args, meta)
    dA, dB, dC, dD, dbias = _add_reduce(b, dBCp, parts, Bt, L, E, N, n_eb, Bt * S, _reduce_meta(NP, x.device))
    p = _plans[key] = b.done((dx, ddt, dA, dB, dC, dD, dz, dbias), tiling)
    return p


def _backward(dout, x, dt, A, Bm, Cm, D, z, dt_bias, layout, *, starts, tiling):
    """``backward`` on prepared inputs of this ``_layout``."""
    ins = (x, dt, A, Bm, Cm, D, z, dt_bias)
    (dout,) = _lastdim_contiguous(dout)
    p = _backward_pass(ins, layout, (_bl(dout), dout.dtype, dout.get_device()), _given(starts), tiling or BACKWARD)
    table = _run(p, [*ins, None if starts is None else starts[0], dout], x.device)
    return tuple(table[k] for k in p.outputs)


def _reduce_meta(NP: int, device: torch.device) -> dict:
    """_reduce_kernel's constexprs and warps: it launches as the backward kernel's dependent."""
    return _dependent({"NP": NP, **REDUCE, "PDL": _pdl(device)})


def _add_reduce(b: _Builder, dBCp: _Ref, parts: _Ref, Bt, L, E, N, n_eb, rows, meta) -> tuple:
    """Add the launch that sums the backward kernel's partials, dBCp (2, B, n_eblocks, L, NP) and
    parts (B, S, NP + 2, E), into (dA (E, N) like A, dB, dC (B, L, N), dD, dbias (E,)), each in
    its input's dtype, in one launch: each torch op it replaces (two sums, the casts) would cost
    host time. Their places in the table."""
    NP = meta["NP"]
    dB, dC = b.buffer((Bt, L, N), like=B_), b.buffer((Bt, L, N), like=C_)
    dA, dD, dbias = b.buffer((E, N), like=A_), b.buffer((E,), like=D_), b.buffer((E,), like=BIAS)
    programs = 2 * Bt * cdiv(L * NP, meta["BLOCK"]) + cdiv((NP + 2) * E, meta["BLOCK"])
    b.launch(_reduce_kernel, (programs,), (dBCp, parts, dB, dC, dA, dD, dbias, Bt, L, E, N, n_eb, rows), meta)
    return dA, dB, dC, dD, dbias


def _sum_partials(dBCp, parts, A, B_dtype, C_dtype, D, dt_bias):
    """``_add_reduce``'s launch on its own (tests): the partials take the table's STARTS and DOUT
    places, which a backward's reduce does not read. -> (dA, dB, dC, dD, dbias)."""
    _, Bt, n_eb, L, NP = dBCp.shape
    E, N = A.shape
    b = _Builder([None, None, A.dtype, B_dtype, C_dtype, D.dtype, None, dt_bias.dtype, torch.float32, torch.float32])
    rows = parts.shape[0] * parts.shape[1]  # B S
    outs = _add_reduce(b, STARTS, DOUT, Bt, L, E, N, n_eb, rows, _reduce_meta(NP, A.device))
    p = b.done(outs, BACKWARD)
    table = _run(p, [None, None, A, None, None, D, None, dt_bias, dBCp, parts], A.device)
    return tuple(table[k] for k in p.outputs)


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
        grads = _backward(dout, *ins, ctx.layout, starts=(starts, ctx.segment_steps), tiling=None)
        state = _host_state(ins[0])
        if state is not None:  # the backward's launches may be learnt now: the next call can go to C++
            _learn_host(ins, ctx.layout, True, state)
        return grads


def selective_scan(x, dt, A, Bm, Cm, D, z, dt_bias):
    """mamba-ssm's selective_scan_fn(x, dt, A, B, C, D, z, dt_bias, delta_softplus=True) in the
    (B, L, E) layout -> (out (B, L, E), last state (B, E, N)); differentiable in every input.
    The backward recomputes what it needs from the inputs and the segments' start states.

    Once a layout's passes have run a few times here (Triton compiled them, torch_launch learnt
    their launches), the call runs them from C++ (torch_host), the backward included."""
    ins = (x, dt, A, Bm, Cm, D, z, dt_bias)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in ins)
    state = _host_state(x)
    if state is not None:
        layout = _layout(*ins)
        host = _plans.get(("host", layout, grad, state, id(FORWARD), id(BACKWARD)))
        if host is not None and not _misaligned(ins):
            return _host_scan(*host, *ins)
    out = SelectiveScan.apply(*ins) if grad else forward(*ins)[:2]
    if state is not None and host is None:
        _learn_host(ins, layout, grad, state)
    return out


def _host_state(x) -> tuple | None:
    """torch_launch's ``direct_state()`` where the host path may run this call, else None."""
    return direct_state() if x.is_cuda and torch_host.ENABLED and not torch.compiler.is_compiling() else None


def _misaligned(ins) -> int:
    """Whether any input's address is not 16-byte aligned (its launches key otherwise)."""
    x, dt, A, Bm, Cm, D, z, b = ins
    return (x.data_ptr() | dt.data_ptr() | A.data_ptr() | Bm.data_ptr() | Cm.data_ptr() | D.data_ptr() | z.data_ptr() | b.data_ptr()) & 15


def _host_scan(*args):
    return torch.ops.ssmbench_host.scan.default(*args)


def _learn_host(ins, layout, grad: bool, state: tuple) -> None:
    """Hand this layout's passes to torch_host once every launch of them has a driver launch
    (``("host", ...)`` in the plans: the forward's pass id and the backward's, -1 without grad).
    The backward's is the pass for a contiguous dout in out's dtype (what the C++ node passes)."""
    key = ("host", layout, grad, state, id(FORWARD), id(BACKWARD))  # the tilings: kept alive by the passes
    if key in _plans or _plans.get(("prepared", layout)) is not False:
        return  # learnt, or inputs copied first (the passes are planned for the copies)
    if not torch_host.available():
        return
    x, device = ins[0], ins[0].get_device()
    passes = [_forward_pass(ins, layout, False, grad, None, FORWARD)]  # the planned ones: their launches are the sigs
    if grad:
        Bt, L, E = x.shape
        passes.append(_backward_pass(ins, layout, ((L * E, E), x.dtype, device), _kept_given(passes[0], device), BACKWARD))
    drivers = [[signed_driver(launch.kernel, launch, device, state) for launch in p.launches] for p in passes]
    if any(d is None for ds in drivers for d in ds):
        return
    ids = [torch_host.register(p, ds, INPUTS) for p, ds in zip(passes, drivers)]
    _plans[key] = (ids[0], ids[1] if grad else -1)
