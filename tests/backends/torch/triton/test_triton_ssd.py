"""The fused Triton SSD (Mamba-2's chunked scan) against the float64 references: y and the final
state against archs/mamba2.py's recurrence, and every gradient against torch autograd through a
sequential float64 recurrence, at odd shapes (P, N not powers of two, L not a multiple of the
chunk), over the tiling paths (several step tiles a chunk, inner tiles smaller than a program's,
split state tiles, head runs summed); its op (one each way, torch.compile). Without a GPU the
kernels run under Triton's interpreter (the triton package sets TRITON_INTERPRET=1 where CUDA is
absent), so shapes stay tiny; the tests marked gpu check full tiles and CUDA-graph capture."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
ts = pytest.importorskip("ssmbench.backends.torch.triton.ssd")

from ssmbench.archs.mamba2 import ssd_recurrence  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("x", "dt", "A", "Bm", "Cm", "D", "dt_bias", "initial_state")


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def inputs(Bt, L, H, P, G, N, dtype=torch.float32, init=False, seed=0):
    """The SSD's inputs as the model hands them over: x, Bm, Cm views of one conv output
    (Bt, L, HP + 2GN) and dt a view of the in_proj output's tail, in ``dtype``; A, D, dt_bias
    (and the initial state) fp32, in mamba-ssm's ranges (a step of ~0.3, A = -exp(...) < 0)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0, shift=0.0):
        return torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift

    xBC = r(Bt, L, H * P + 2 * G * N).to(dtype).to(DEVICE)
    x = xBC[..., : H * P].unflatten(-1, (H, P))
    Bm = xBC[..., H * P : H * P + G * N].unflatten(-1, (G, N))
    Cm = xBC[..., H * P + G * N :].unflatten(-1, (G, N))
    dt = r(Bt, L, H + 3, scale=0.5, shift=-1.0).to(dtype).to(DEVICE)[..., 3:]
    params = [-torch.exp(r(H, scale=0.5)), r(H), r(H, scale=0.5)] + ([r(Bt, H, P, N)] if init else [])
    A, D, dt_bias, *s0 = [t.float().to(DEVICE) for t in params]
    return [x, dt, A, Bm, Cm, D, dt_bias, *s0]


def reference(x, dt, A, Bm, Cm, D, dt_bias, initial_state=None):
    """The recurrence, step by step, in whatever dtype it is given (float64 here): (y, final)."""
    Bt, L, H, P = x.shape
    Bh, Ch = (t.repeat_interleave(H // Bm.shape[2], dim=2) for t in (Bm, Cm))
    delta = torch.nn.functional.softplus(dt + dt_bias)
    S = x.new_zeros(Bt, H, P, Bm.shape[-1]) if initial_state is None else initial_state
    ys = []
    for t in range(L):
        S = torch.exp(delta[:, t] * A)[..., None, None] * S + torch.einsum("bh,bhp,bhn->bhpn", delta[:, t], x[:, t], Bh[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), S


def with_grads(ins):
    """Copies of ``ins`` that get gradients, views staying views: each view's base becomes a leaf
    and the view is taken again from it, its gradient kept (retain_grad)."""
    bases, out = {}, []
    for t in ins:
        if t._base is None:
            out.append(t.detach().clone().requires_grad_())
            continue
        base = bases.setdefault(id(t._base), t._base.detach().clone().requires_grad_())
        view = base.as_strided(t.shape, t.stride(), t.storage_offset())
        view.retain_grad()
        out.append(view)
    return out


def run_both(ins, T, seed=1):
    """(y, final, grads) from the kernels and from the float64 reference on the same (rounded)
    inputs, for the loss sum(y * wy) + sum(final * wf)."""
    leaves = with_grads(ins)
    assert not leaves[0].is_contiguous() and not leaves[1].is_contiguous()  # x and dt views, as in the model
    leaves64 = [t.detach().double().cpu().requires_grad_() for t in ins]
    init = leaves[7] if len(leaves) > 7 else None
    y, final = ts.ssd(*leaves[:7], T, initial_state=init, return_final_state=True)
    y64, final64 = reference(*leaves64)
    g = torch.Generator().manual_seed(seed)  # wy in y's dtype: dy reaches the kernels exactly
    wy = torch.randn(y64.shape, generator=g, dtype=torch.float64).to(y.dtype).double()
    wf = torch.randn(final64.shape, generator=g, dtype=torch.float64)
    ((y.double() * wy.to(DEVICE)).sum() + (final.double() * wf.to(DEVICE)).sum()).backward()
    ((y64 * wy).sum() + (final64 * wf).sum()).backward()
    return (y, final, [t.grad for t in leaves]), (y64, final64, [t.grad for t in leaves64])


CASES = {  # (Bt, L, H, P, G, N), T, initial state, tiling (None: fp32's default)
    "ragged last chunk, initial state, 2 groups": ((2, 37, 4, 6, 2, 5), 16, True, None),
    "2 step tiles a chunk (the 2nd past L; chunk_grad_c's one), split state tiles, a run a head": (
        (1, 40, 4, 20, 1, 5),
        32,
        False,
        ts.Tiling(out_t=16, out_k=16, grad_t=16, grad_k=16, state_p=16, state_k=16, per_sm=10**6, c_t=32),  # chunk_grad_c: its own grid
    ),
    "inner tiles smaller than a program's (chunk_grad_c's its own), whole chunks, a head a group": (
        (1, 64, 2, 6, 2, 18),
        32,
        True,
        ts.Tiling(out_t=32, out_k=16, grad_t=32, grad_k=32, state_n=16, c_k=16, c_warps=2, c_stages=1),
    ),
    "3 heads a run (chunk_grad_c's ρ rows padded to 4), ragged last chunk": (
        (1, 40, 6, 5, 1, 7),
        16,
        True,
        ts.Tiling(out_t=16, out_k=16, grad_t=16, grad_k=16, state_p=16, state_k=16, per_sm=4),
    ),
    "shorter than one chunk": ((2, 5, 4, 6, 2, 5), 16, False, None),
    "more chunks than grad_sums_kernel sums in one block of rows": ((2, 150, 2, 4, 1, 4), 16, False, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_y_final_state_and_every_gradient_match_the_float64_references(case, monkeypatch):
    shape, T, init, tiling = CASES[case]
    monkeypatch.setitem(ts.TILINGS, torch.float32, tiling or ts.TILINGS[torch.float32])
    ins = inputs(*shape, init=init)
    (y, final, grads), (y64, final64, grads64) = run_both(ins, T)
    assert y.dtype == torch.float32 and y.shape == y64.shape and final.dtype == torch.float32
    x, dt, A, Bm, Cm, D, dt_bias, *s0 = (t.double().cpu().numpy() for t in ins)
    delta = torch.nn.functional.softplus(torch.from_numpy(dt + dt_bias)).numpy()
    y_np, final_np = ssd_recurrence(x, delta, A, Bm, Cm, D, s0[0] if s0 else None)  # the project's statement of the math
    assert rel(y, torch.from_numpy(y_np)) < 1e-5
    assert rel(final, torch.from_numpy(final_np)) < 1e-5
    for name, g, g64 in zip(NAMES, grads, grads64):
        assert g.shape == g64.shape and g.dtype == torch.float32, name
        assert rel(g, g64) < 1e-4, name


def test_head_runs_split_as_the_gpu_needs_and_always_divide_the_group():
    cpu = torch.device("cpu")  # one SM under the interpreter
    assert ts._runs(24, 256, ts.Tiling(per_sm=4), cpu) == 1  # enough programs already
    assert ts._runs(24, 1, ts.Tiling(per_sm=10), cpu) == 12  # the least divisor of 24 giving 10
    assert ts._runs(6, 1, ts.Tiling(per_sm=10**6), cpu) == 6  # never more runs than heads


def test_bfloat16_inputs_give_bfloat16_y_and_grads_close_to_the_reference():
    """bf16 dot operands (rounded to nearest, as on the GPU, under the interpreter too) against
    the float64 recurrence on the same bf16 inputs. dA and ddt_bias, sums over (B, L) of terms
    that cancel, are as close as the rest (ssd_kernels: the terms are summed so as not to)."""
    ins = inputs(2, 37, 4, 6, 2, 5, dtype=torch.bfloat16, init=True)
    (y, final, grads), (y64, final64, grads64) = run_both(ins, 16)
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    assert rel(y, y64) < 1e-2 and rel(final, final64) < 1e-2
    for name, g, g64, t in zip(NAMES, grads, grads64, ins):
        assert g.dtype == t.dtype, name
        assert rel(g, g64) < 1e-2, name


def test_float16_forward_matches_the_recurrence():
    ins = inputs(2, 21, 4, 6, 2, 5, dtype=torch.float16)
    y = ts.ssd(*ins, 16)
    y64, _ = reference(*(t.double().cpu() for t in ins))
    assert y.dtype == torch.float16 and rel(y, y64) < 5e-3


def test_final_state_alone_gets_gradients():
    """Only the final state in the loss (y's gradient never made): the backward runs from its
    gradient alone."""
    ins = with_grads(inputs(1, 9, 2, 3, 1, 2, seed=3))
    ins64 = [t.detach().double().cpu().requires_grad_() for t in ins]
    _, final = ts.ssd(*ins, 16, return_final_state=True)
    final.sum().backward()
    reference(*ins64)[1].sum().backward()
    for name, t, t64 in zip(NAMES, ins, ins64):
        if name in ("Cm", "D"):  # the readout and the skip do not reach the state
            assert t64.grad is None and not t.grad.any(), name
        else:
            assert rel(t.grad, t64.grad) < 1e-4, name


def test_autograd_sees_one_op_each_way_and_torch_compile_traces_it_without_breaks():
    """ssd is a custom op (ssmbench::ssd, its backward ssmbench::ssd_backward): torch.compile does
    not trace into the host code, and the compiled function's y and gradients are the eager ones."""
    import torch._dynamo

    ins = with_grads(inputs(1, 9, 2, 3, 1, 2, seed=4))

    def loss(*a):
        return (ts.ssd(*a, 16) ** 2).sum()

    explained = torch._dynamo.explain(loss)(*ins)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    eager = torch.autograd.grad(loss(*ins), ins)
    compiled = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(*ins), ins)
    for name, a, b in zip(NAMES, eager, compiled):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(chunk_size=24), "power of two"),
        (dict(Bm=torch.zeros(1, 5, 4, 2), Cm=torch.zeros(1, 5, 4, 2)), "does not divide"),
        (dict(dt=torch.zeros(1, 4, 6)), "dt has shape"),
        (dict(x=torch.zeros(1, 5, 6, 3, dtype=torch.float64)), "torch.float64"),
    ],
    ids=["chunk size", "groups", "dt's shape", "dtype"],
)
def test_shapes_and_dtypes_it_does_not_take_are_named(change, message):
    x, dt, A, Bm, Cm, D, dt_bias = inputs(1, 5, 6, 3, 2, 2)
    args = dict(x=x, dt=dt, A=A, Bm=Bm, Cm=Cm, D=D, dt_bias=dt_bias, chunk_size=16)
    args.update({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in change.items()})
    with pytest.raises(ValueError, match=message):
        ts.ssd(**args)


# ---------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_full_tiles_at_a_model_shape_on_the_gpu(dtype, tol):
    """The default tiling, with full tiles and the compiled dots (wgmma on sm_90; IEEE fp32, not
    TF32, for fp32 inputs), at Mamba-2's head and state sizes and a ragged last chunk."""
    ins = inputs(2, 600, 8, 64, 2, 128, dtype=dtype, init=True)
    (y, final, grads), (y64, final64, grads64) = run_both(ins, 256)
    assert rel(y, y64) < tol and rel(final, final64) < tol
    for name, g, g64 in zip(NAMES, grads, grads64):
        assert rel(g, g64) < tol, name


@pytest.mark.gpu
def test_forward_and_backward_capture_in_a_cuda_graph():
    """No host syncs: a captured forward + backward replays to the eager results, bit for bit (no
    atomics: every sum has one order)."""
    ins = [t.detach().clone().requires_grad_() for t in inputs(2, 300, 4, 64, 1, 128, dtype=torch.bfloat16)]
    w = torch.randn(2, 300, 4, 64, device=DEVICE, dtype=torch.bfloat16)

    def step():
        for t in ins:
            t.grad = None
        (ts.ssd(*ins, 256) * w).sum().backward()

    step()
    eager = [t.grad.clone() for t in ins]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm up on a side stream, as capture needs
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    for name, a, t in zip(NAMES, eager, ins):
        assert torch.equal(a, t.grad), name
