"""The fused Triton scan (torch-cuda's default) against the float64 reference: out, the last
state and every gradient, at odd shapes, ragged tiles and full ones; its host side (plans,
launches, the custom op). Without a GPU the kernels run under Triton's interpreter (the triton
package sets TRITON_INTERPRET=1 where CUDA is absent). The scan in the model and the other fused
kernels: test_triton_fused.py."""

import weakref

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
tt = pytest.importorskip("ssmbench.backends.torch.triton.scan")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def inputs(Bt, L, E, N, seed=0):
    """float64 inputs in mamba-ssm's ranges: dt about -1 (a step of ~0.3), A = -exp(...) < 0."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0, shift=0.0):
        return torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift

    return [
        r(Bt, L, E),
        r(Bt, L, E, scale=0.5, shift=-1.0),
        -torch.exp(r(E, N, scale=0.5)),
        r(Bt, L, N),
        r(Bt, L, N),
        r(E),
        r(Bt, L, E),
        r(E, scale=0.5),
    ]


def reference(x, dt, A, Bm, Cm, D, z, dt_bias):
    """The sequential recurrence in float64, with autograd: (out, last state)."""
    delta = torch.nn.functional.softplus(dt + dt_bias)
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append(torch.einsum("ben,bn->be", h, Cm[:, t]))
    return (torch.stack(ys, 1) + D * x) * torch.nn.functional.silu(z), h


def run_both(shape, tiling, monkeypatch, dtype=torch.float32, seed=0, backward_tiling=None):
    """(out, last, grads) from the kernel in ``dtype`` and from the reference on the same
    (rounded) inputs, for the loss sum(out * w)."""
    monkeypatch.setattr(tt, "FORWARD", tiling)
    monkeypatch.setattr(tt, "BACKWARD", backward_tiling or tiling)
    ins64 = inputs(*shape, seed=seed)
    lowp = {0, 1, 3, 4, 6}  # x, dt, B, C, z are activations in the compute dtype; A, D, dt_bias stay fp32
    ins = [(t.to(dtype) if i in lowp else t.float()).to(DEVICE).requires_grad_() for i, t in enumerate(ins64)]
    ins64 = [t.detach().double().cpu().requires_grad_() for t in ins]
    w = torch.randn(shape[0], shape[1], shape[2], generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    out64, last64 = reference(*ins64)
    (out64 * w).sum().backward()
    out, last = tt.selective_scan(*ins)
    (out.float() * w.float().to(DEVICE)).sum().backward()
    return (out, last, [t.grad for t in ins]), (out64, last64, [t.grad for t in ins64])


CASES = {
    "odd shapes, ragged tiles": ((2, 37, 6, 5), tt.Tiling(4, 4, 1)),
    "one step per chunk, L=5": ((1, 5, 3, 2), tt.Tiling(4, 1, 1)),
    "full tiles (no masks)": ((2, 32, 64, 16), tt.Tiling(32, 8, 1)),
    "3 segments, the last one ragged": ((2, 37, 6, 5), tt.Tiling(4, 4, 1, per_sm=12)),
    "a segment per chunk, full tiles": ((2, 32, 64, 16), tt.Tiling(32, 8, 1, per_sm=16)),
    "default tilings": ((2, 19, 40, 16), None),
}


def test_segments_split_whole_chunks_and_cover_the_sequence():
    cpu = torch.device("cpu")  # one SM under the interpreter: per_sm is the programs wanted
    assert tt.segments(10, 4, tt.Tiling(4, 4, 1, per_sm=12), cpu) == (3, 4)
    assert tt.segments(10, 4, tt.Tiling(4, 4, 1), cpu) == (1, 10)  # per_sm 0: no split
    assert tt.segments(3, 1, tt.Tiling(4, 4, 1, per_sm=99), cpu) == (3, 1)  # never more than the chunks
    assert tt.segments(1000, 1, tt.Tiling(4, 4, 1, per_sm=999), cpu) == (63, 16)  # at most MAX_SEGMENTS
    for n_chunks in range(1, 40):
        S, per = tt.segments(n_chunks, 3, tt.Tiling(4, 4, 1, per_sm=8), cpu)
        assert (S - 1) * per < n_chunks <= S * per  # every segment holds at least one chunk


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_out_state_and_every_gradient_within_1e5(case, monkeypatch):
    shape, tiling = CASES[case]  # None: the default pair, FORWARD's segments reused in BACKWARD's chunks
    (out, last, grads), (out64, last64, grads64) = run_both(shape, tiling or tt.FORWARD, monkeypatch, backward_tiling=tiling or tt.BACKWARD)
    assert out.dtype == torch.float32 and out.shape == out64.shape
    assert rel(out, out64) < 1e-5
    assert rel(last, last64) < 1e-5
    for name, g, g64 in zip(NAMES, grads, grads64):
        assert g.shape == g64.shape and g.dtype == torch.float32, name
        assert rel(g, g64) < 1e-5, name


@pytest.mark.parametrize(
    "forward_tiling, backward_tiling, carry_recomputed",
    [
        (tt.Tiling(4, 8, 1, per_sm=12), tt.Tiling(4, 4, 1, per_sm=3), False),  # 8-step segments, 4-step chunks
        (tt.Tiling(4, 2, 1, per_sm=12), tt.Tiling(4, 4, 1, per_sm=12), True),  # 2-step segments: not whole chunks
    ],
)
def test_backward_recomputes_from_the_forward_segment_starts_or_carries(forward_tiling, backward_tiling, carry_recomputed, monkeypatch):
    """The recompute reuses the start states the forward kept when its segments are whole
    backward chunks (no carry kernel), and computes carries otherwise; exact either way."""
    calls = []
    real = tt.segments
    monkeypatch.setattr(tt, "segments", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(tt, "_plans", {})  # segments run once a plan: none planned yet
    (out, last, grads), (out64, last64, grads64) = run_both((2, 37, 6, 5), forward_tiling, monkeypatch, backward_tiling=backward_tiling)
    assert len(calls) == (3 if carry_recomputed else 2)  # forward, [recompute,] backward kernel
    assert rel(out, out64) < 1e-5
    for name, g, g64 in zip(NAMES, grads, grads64):
        assert rel(g, g64) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("param_dtype", [torch.float32, torch.bfloat16])
def test_partial_sums_reduce_into_each_gradient_in_its_dtype(dtype, param_dtype, monkeypatch):
    """reduce_kernel against torch's sums, with small blocks so that several programs share each
    sequence's dB and dC and each loops over several loads of rows (KB rows a load, ragged)."""
    monkeypatch.setitem(tt.REDUCE, "BLOCK", 16)
    monkeypatch.setitem(tt.REDUCE, "KB", 2)
    g = torch.Generator().manual_seed(5)
    Bt, n_eb, L, NP, N, S, E = 3, 5, 7, 8, 5, 3, 6  # NP > N: the padded states are dropped
    dBCp = torch.randn(2, Bt, n_eb, L, NP, generator=g).to(DEVICE)
    parts = torch.randn(Bt, S, NP + 2, E, generator=g).to(DEVICE)
    A, D, bias = (torch.zeros(*s, device=DEVICE, dtype=param_dtype) for s in ((E, N), (E,), (E,)))
    dA, dB, dC, dD, dbias = tt._sum_partials(dBCp, parts, A, dtype, dtype, D, bias)
    dBC, sums = dBCp.double().sum(2)[..., :N], parts.double().sum((0, 1))
    for got, want in ((dB, dBC[0]), (dC, dBC[1]), (dA, sums[:N].t()), (dD, sums[NP]), (dbias, sums[NP + 1])):
        # bf16: rounding (the interpreter truncates, 2^-8 at worst; a GPU rounds to nearest)
        assert got.shape == want.shape and rel(got, want) < (1e-6 if got.dtype == torch.float32 else 4e-3)
    assert dB.dtype == dC.dtype == dtype and dA.dtype == dD.dtype == dbias.dtype == param_dtype


def test_A_as_a_transposed_view_gives_dA_in_its_shape():
    """A (E, N) as a transposed view of an (N, E) tensor (the kernels read A at its strides): dA
    comes back (E, N) like A."""
    ins = [t.float().to(DEVICE) for t in inputs(2, 9, 6, 3, seed=2)]
    ins[2] = ins[2].t().contiguous().t().requires_grad_()
    assert not ins[2].is_contiguous()
    ins64 = [t.detach().double().cpu().requires_grad_() for t in ins]
    out, _ = tt.selective_scan(*ins)
    out.sum().backward()
    out64, _ = reference(*ins64)
    out64.sum().backward()
    assert rel(out, out64) < 1e-5 and rel(ins[2].grad, ins64[2].grad) < 1e-5


def _logging_ops(log: list):
    """A dispatch mode that appends each torch op's name to ``log`` (the host work a call does)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            log.append(func.__name__)
            return func(*args, **(kwargs or {}))

    return Log()


def test_the_forward_and_backward_run_only_their_kernels_and_allocate(monkeypatch):
    """The host side of a forward and a backward: besides their Triton launches (two scans, a
    carry kernel each side where the sequence is split, the sums), torch sees only allocations
    and views, no kernel of its own (a zeros, a sum, a cast or a copy each cost host time, which
    at short L is the eager time; A too is read as it is, not transposed by a copy). Kernels
    stubbed: this counts, it does not compute."""
    launched, seen = [], []
    monkeypatch.setattr(tt, "_launch", lambda kernel, grid, args, meta: launched.append(kernel.fn.__name__))
    tiling = tt.Tiling(4, 4, 1, per_sm=12)
    cheap = {"empty.memory_format", "empty_like.default", "t.default", "transpose.int", "detach.default", "alias.default"}
    ins = [t.float().to(DEVICE) for t in inputs(2, 37, 6, 5)]
    dout = torch.ones(2, 37, 6, device=DEVICE)
    with _logging_ops(seen):
        _, _, kept = tt.forward(*ins, keep_starts=True, tiling=tiling)
        tt.backward(dout, *ins, starts=kept, tiling=tiling)
    assert set(seen) <= cheap, seen
    forward, backward = ["state_carry_kernel", "forward_kernel"], ["forward_kernel", "adjoint_carry_kernel", "backward_kernel"]
    assert launched == forward + backward + ["reduce_kernel"]  # the recompute starts from the forward's segment starts


def test_autograd_sees_one_op_each_way_and_makes_no_zeros(monkeypatch):
    """selective_scan is a custom op (ssmbench::selective_scan, its backward
    ssmbench::selective_scan_backward): torch sees those two and nothing else, so autograd makes
    no zeros for the gradients of the last state and the kept start states, which have none."""
    seen = []
    ins = [t.float().to(DEVICE).requires_grad_() for t in inputs(2, 13, 6, 5)]
    with _logging_ops(seen):
        out, _ = tt.selective_scan(*ins)
        torch.autograd.grad(out, ins, out.detach())
    assert seen == ["selective_scan.default", "detach.default", "selective_scan_backward.default"], seen


def test_torch_compile_traces_the_scan_as_one_op_without_graph_breaks():
    """torch.compile does not trace into the host code (plans, launches): the op and its fake
    implementation give one graph, and the compiled function's outputs and gradients are the
    eager ones."""
    import torch._dynamo

    ins = [t.float().to(DEVICE).requires_grad_() for t in inputs(2, 13, 6, 5, seed=4)]

    def loss(*a):
        out, last = tt.selective_scan(*a)
        return (out * out).sum() + last.sum()

    explained = torch._dynamo.explain(loss)(*ins)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    eager = torch.autograd.grad(loss(*ins), ins)
    compiled = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(*ins), ins)
    for name, a, b in zip(NAMES, eager, compiled):
        assert torch.equal(a, b), name


def test_the_forward_does_one_torch_op_before_the_carry_kernel(monkeypatch):
    """The carry kernel is the GPU's first scan work, so the forward does as little as it can
    before launching it: one allocation, the scratch that the carries (and A's tile) go to. Its
    own buffers (last state, out) come after: their host time then overlaps the kernel instead of
    delaying it, which at short L is the eager time. Kernels stubbed: this checks the order."""
    events = []  # torch ops and launches, in order
    monkeypatch.setattr(tt, "_launch", lambda kernel, grid, args, meta: events.append(kernel.fn.__name__))
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
    ins = [t.float().to(DEVICE) for t in inputs(2, 37, 6, 5)]
    with _logging_ops(events):
        tt.forward(*ins)
    carry, forward = events.index("state_carry_kernel"), events.index("forward_kernel")
    assert events[:carry] == ["empty.memory_format"], events  # the scratch
    assert [e for e in events[carry:forward] if "empty" in e] == ["empty.memory_format"] * 2, events  # last state, out


def _launch_log(monkeypatch, pdl: bool) -> list:
    """Stub the scan's launches, recording (kernel name, meta), with the GPU's launch chains on or
    off; plans made anew."""
    log = []
    monkeypatch.setattr(tt, "_launch", lambda kernel, grid, args, meta: log.append((kernel.fn.__name__, meta)))
    monkeypatch.setattr(tt, "_pdl", lambda device: pdl)
    monkeypatch.setattr(tt, "_plans", {})
    return log


@pytest.mark.parametrize("backward_segments", [True, False], ids=["adjoint carries", "one backward segment"])
@pytest.mark.parametrize("pdl", [True, False], ids=["sm_90", "older or interpreted"])
def test_each_kernel_after_a_pass_first_launches_as_its_dependent_where_the_gpu_can(pdl, backward_segments, monkeypatch):
    """On sm_90 a pass's kernels after its first launch as programmatic dependents of the one
    before (they start in its last wave's idle SMs, and wait where they need its writes). A pass's
    first kernel follows work that is not the scan's, so it never does: the carry kernel, the
    forward where there is no carry kernel, the backward's recompute from the forward's starts.
    Every scan kernel is compiled knowing whether the GPU has the instructions (PDL)."""
    log = _launch_log(monkeypatch, pdl)
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
    monkeypatch.setattr(tt, "BACKWARD", tt.Tiling(4, 4, 1, per_sm=12 if backward_segments else 0))
    ins = [t.float().to(DEVICE).requires_grad_() for t in inputs(2, 37, 6, 5)]
    out, _ = tt.selective_scan(*ins)
    torch.autograd.grad(out, ins, torch.ones_like(out))
    tt.forward(*[t.detach() for t in ins], tiling=tt.Tiling(4, 4, 1))  # one segment: no carry kernel
    names = [name for name, _ in log]
    middle = ["adjoint_carry_kernel"] if backward_segments else []
    backward = ["forward_kernel", *middle, "backward_kernel", "reduce_kernel"]
    assert names == ["state_carry_kernel", "forward_kernel", *backward, "forward_kernel"]
    firsts = [True, False, True, *[False] * len(middle), False, False, True]  # each pass's first, and the one-segment forward
    assert [meta.get("launch_pdl", False) for _, meta in log] == [pdl and not first for first in firsts]
    assert all(meta["PDL"] is pdl for _, meta in log)


@pytest.mark.parametrize("backward_segments", [True, False], ids=["adjoint carries", "one backward segment"])
def test_the_backward_holds_the_recompute_buffers_until_it_has_launched_the_rest(backward_segments, monkeypatch):
    """The kernels after the backward's recompute may run while it does (PDL), so none may be
    handed memory the recompute uses: the backward keeps the recompute's scratch and last state
    alive until it has launched them all (freed, the caching allocator could give either to the
    backward's own buffers at once, the scratch whole where the two passes' scratch sizes match)."""
    held, freed, later = [], [], []

    def stub(kernel, grid, args, meta):
        if meta.get("FROM_STARTS"):  # the recompute: (..., out, last, states, scratch, starts, ...)
            held[:] = [weakref.ref(args[9]), weakref.ref(args[11])]
        elif held:
            later.append(kernel.fn.__name__)
            freed.extend(kernel.fn.__name__ for ref in held if ref() is None)

    monkeypatch.setattr(tt, "_launch", stub)
    monkeypatch.setattr(tt, "_plans", {})
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
    monkeypatch.setattr(tt, "BACKWARD", tt.Tiling(4, 4, 1, per_sm=12 if backward_segments else 0))
    ins = [t.float().to(DEVICE).requires_grad_() for t in inputs(2, 36, 6, 5)]
    out, _ = tt.selective_scan(*ins)
    torch.autograd.grad(out, ins, torch.ones_like(out))
    assert later == (["adjoint_carry_kernel"] if backward_segments else []) + ["backward_kernel", "reduce_kernel"]
    assert freed == []


CHAINS = {  # (shape, dtype, forward tiling or None for the default)
    "issue shape, L=512 bf16": ((8, 512, 1536, 16), torch.bfloat16, None),
    # two programs a segment, 64 segments of 256 steps: every carry program starts at once, and the
    # forward's last segments fold their carries while the carry kernel still computes them
    "few long segments": ((1, 16383, 40, 13), torch.float32, None),
    # the same with one forward segment: the backward's recompute is one long program a channel
    # block, and its 64 short adjoint carry programs end long before it
    "one long recompute": ((1, 16383, 40, 13), torch.float32, tt.Tiling(32, 4, 1)),
}


@pytest.mark.gpu  # launch chains run on a GPU
@pytest.mark.parametrize("case", list(CHAINS))
def test_chained_launches_give_what_plain_launches_give_bit_for_bit(case, monkeypatch):
    """Launched as dependents (sm_90), the passes compute exactly what they compute launched one
    after another: every output and gradient bit for bit. The calls alternate between two inputs
    without synchronising, so a dependent that read what the kernel before it writes too early
    would read the other call's values (the scratch is the same memory from call to call). Each
    case makes one wait matter: without it the GPU reads early (each case fails where its wait
    is removed; measured on the H100 on 2026-11-24, in git history at fbf2d35)."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90")
    shape, dtype, forward_tiling = CHAINS[case]
    if forward_tiling is not None:
        monkeypatch.setattr(tt, "FORWARD", forward_tiling)
    runs = []
    for seed in (0, 1):
        ins = [t.to(DEVICE, dtype if i in (0, 1, 3, 4, 6) else torch.float32) for i, t in enumerate(inputs(*shape, seed=seed))]
        runs.append((ins, torch.randn(shape[:3], device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(seed)).to(dtype)))

    def both(ins, dout):
        out, last, kept = tt.forward(*ins, keep_starts=True)
        return out, last, *tt.backward(dout, *ins, starts=kept)

    monkeypatch.setattr(tt, "_plans", {})
    chained = [both(*runs[i % 2]) for i in range(4)]  # no synchronisation between calls
    assert tt._pdl(torch.device(DEVICE))
    monkeypatch.setattr(tt, "_pdl", lambda device: False)
    monkeypatch.setattr(tt, "_plans", {})
    plain = [both(*run) for run in runs]
    for i, got in enumerate(chained):
        for name, a, b in zip(("out", "last", *NAMES), got, plain[i % 2]):
            assert torch.equal(a, b), (i, name)


def test_the_scratch_holds_a_tile_of_A_and_the_carries_and_no_more():
    """The kernels address A's (NP, E) tile, then (B, S, NP + 1, E) carries. The scratch once
    allocated NP times the carries: 147 MB at mamba-130m's shape (B 8, S 11, E 1536) where the
    kernels use 9.3 MB, in every scan call of a layer's forward and backward."""
    assert tt._scratch_size(11, 8, 16, 1536) == (16 + 8 * 11 * 17) * 1536
    assert tt._scratch_size(1, 8, 16, 1536) == 16 * 1536  # one segment: no carries


def test_each_layout_gets_its_own_plan_and_stays_exact(monkeypatch):
    """A call's launch arithmetic is planned once per layout (strides, dtypes, shapes). The same
    shapes with x, dt, z as strided views, B and C along L (copied), and A transposed are other
    layouts: each plans anew, and every call is exact, also repeated (the plan reused)."""
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
    monkeypatch.setattr(tt, "_plans", {})
    Bt, L, E, N = 2, 21, 6, 5
    ins64 = inputs(Bt, L, E, N, seed=3)
    out64, last64 = reference(*ins64)
    x, dt, A, Bm, Cm, D, z, bias = (t.float().to(DEVICE) for t in ins64)
    wide = torch.zeros(Bt, L, 3 * E, device=DEVICE)  # x, dt, z side by side, as an in-projection's split
    wide[..., :E], wide[..., E : 2 * E], wide[..., 2 * E :] = x, dt, z
    along_L = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (Bm, Cm)]  # stride 1 along L
    A_t = A.t().contiguous().t()
    layouts = {
        "contiguous": (x, dt, A, Bm, Cm, D, z, bias),
        "strided views": (wide[..., :E], wide[..., E : 2 * E], A, Bm, Cm, D, wide[..., 2 * E :], bias),
        "B, C along L": (x, dt, A, *along_L, D, z, bias),
        "A transposed": (x, dt, A_t, Bm, Cm, D, z, bias),
    }
    planned = 0
    for name, ins in layouts.items():
        for _ in range(2):
            out, last, _ = tt.forward(*ins)
            assert rel(out, out64) < 1e-5 and rel(last, last64) < 1e-5, name
        assert len(tt._plans) > planned, name  # planned anew
        planned = len(tt._plans)


def test_states_only_recompute_keeps_chunk_end_states_and_the_same_last_state(monkeypatch):
    ins = [t.float().to(DEVICE) for t in inputs(2, 13, 5, 3)]
    out, last = tt.selective_scan(*ins)
    none, last_g, states = tt.forward(*ins, states_only=True)
    assert none is None and rel(last, last_g) < 1e-6  # the tilings split L differently
    assert states.shape[1] == -(-13 // tt.BACKWARD.chunk)
    assert rel(states[:, -1, :3].transpose(1, 2), last) < 1e-6  # the last chunk ends at L
    out64, last64 = reference(*inputs(2, 13, 5, 3))
    assert rel(out, out64) < 1e-5 and rel(last, last64) < 1e-5


def test_bfloat16_inputs_give_bfloat16_out_and_grads_close_to_reference(monkeypatch):
    """bf16 activations, fp32 arithmetic and state: the error is bf16 rounding of the results."""
    (out, last, grads), (out64, last64, grads64) = run_both((2, 21, 8, 4), tt.Tiling(8, 4, 1), monkeypatch, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel(out, out64) < 1e-2 and rel(last, last64) < 1e-5  # the state is never rounded
    for name, g, g64 in zip(NAMES, grads, grads64):
        assert rel(g, g64) < 1e-2, name


def test_huge_and_tiny_steps_stay_finite_and_exact(monkeypatch):
    """softplus far into both tails (steps of ~1e-9 and ~30): exp(Δ A) underflows to 0 cleanly."""
    ins = inputs(1, 24, 6, 4, seed=3)
    ins[1] = ins[1] * 12.0  # dt in about [-50, 30]
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(8, 4, 1))
    out64, _ = reference(*ins)
    out, _ = tt.selective_scan(*[t.float().to(DEVICE) for t in ins])
    assert torch.isfinite(out).all() and rel(out, out64) < 1e-5
