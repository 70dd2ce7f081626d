"""torch_host: the scan's planned passes run from C++. On CPU (the library is built here too),
passes that torch_triton planned run through a fake cuLaunchKernelEx that reads what the real one
would: every launch's function, grid, block and PDL attribute, its integers, and each tensor's
address as the table then holds it; the scan op's autograd node hands the backward pass the saved
inputs, the forward's start states and a contiguous dout. On a GPU: the host path against the
Python path, bit for bit, eager, in a side stream and in a CUDA graph."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
tt = pytest.importorskip("ssmbench.backends.torch_triton")  # sets up the interpreter on CPU first
import test_torch_driver  # noqa: E402  (its fake cuLaunchKernelEx)
from ssmbench.backends import torch_driver, torch_host  # noqa: E402
from test_triton_scan import NAMES, inputs  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_library = pytest.mark.skipif(not torch_host.available(), reason="torch_host.cpp could not be built here")


class FakeLaunches(test_torch_driver.FakeLaunches):
    """test_torch_driver's fake cuLaunchKernelEx, with DriverLaunches for a pass's launches."""

    def drivers(self, p, first_function: int) -> list:
        """A DriverLaunch for each of the pass's launches, as torch_launch would learn it: pointers
        for the tensors, i32 for the integers, a made-up function, 2 warps, 96 bytes of shared memory."""
        out = []
        for k, launch in enumerate(p.launches):
            tensors = tuple(i for i, _ in launch.refs)
            types = tuple("*fp32" if i in tensors else "i32" for i in range(len(launch.template)))
            packed = torch_driver.pack(types, launch.template, tensors)
            self.slots[first_function + k] = len(packed[0])
            out.append(torch_driver.DriverLaunch(first_function + k, packed, 2, 96, launch.meta.get("launch_pdl", False), None))
        return out


def planned(Bt=2, L=37, E=6, N=5, dtype=torch.float32):
    """(inputs, the autograd forward's pass, the backward's pass for a contiguous dout) at a shape
    the tilings split into segments, with PDL's dependents on."""
    ins = [t.to(dtype if i in (0, 1, 3, 4, 6) else torch.float32) for i, t in enumerate(inputs(Bt, L, E, N))]
    layout = tt._layout(*ins)
    fp = tt._forward_pass(ins, layout, False, True, None, tt.FORWARD)
    bp = tt._backward_pass(ins, layout, ((L * E, E), dtype, -1), tt._kept_given(fp, -1), tt.BACKWARD)
    return ins, fp, bp


@pytest.fixture
def small_tilings(monkeypatch):
    """Tilings that split the test shape into segments (carry kernels), launched as dependents."""
    monkeypatch.setattr(tt, "FORWARD", tt.Tiling(4, 4, 1, per_sm=12))
    monkeypatch.setattr(tt, "BACKWARD", tt.Tiling(4, 4, 1, per_sm=12))
    monkeypatch.setattr(tt, "_pdl", lambda device: True)
    monkeypatch.setattr(tt, "_plans", {})


def expected_params(launch, driver_slots, table):
    """The slots a launch should be handed: the template's integers, each tensor's address."""
    slots = list(driver_slots)
    where = dict(launch.refs)
    k = 0
    for i, value in enumerate(launch.template):
        slots[k] = table[where[i]].data_ptr() if i in where else value & (2**64 - 1)
        k += 1
    return slots


@needs_library
@pytest.mark.parametrize("which", ["forward", "backward"])
def test_a_planned_pass_runs_from_cpp_as_planned(which, small_tilings):
    ins, fp, bp = planned()
    p = fp if which == "forward" else bp
    fake = FakeLaunches()
    drivers = fake.drivers(p, 100)
    pid = torch_host.register(p, drivers, tt.INPUTS, launch_fn=fake.address)
    given = [*ins, None, None]
    if which == "backward":
        given[tt.STARTS] = torch.zeros(fp.buffers[fp.outputs[2] - tt.INPUTS][0])
        given[tt.DOUT] = torch.zeros(ins[0].shape)
    table = torch.ops.ssmbench_host.run(pid, given)
    assert len(table) == tt.INPUTS + len(p.buffers)
    for t, (shape, dtype, _) in zip(table[tt.INPUTS :], p.buffers):
        assert tuple(t.shape) == shape and t.dtype == dtype and t.is_contiguous()
    names = [launch.kernel.fn.__name__ for launch in p.launches]
    backward = ["_forward_kernel", "_adjoint_carry_kernel", "_backward_kernel", "_reduce_kernel"]  # from the starts: no carry kernel
    want = ["_state_carry_kernel", "_forward_kernel"] if which == "forward" else backward
    assert names == want and len(fake.seen) == len(want)
    for k, (launch, driver, seen) in enumerate(zip(p.launches, drivers, fake.seen)):
        assert seen["function"] == 100 + k and seen["grid"] == (*launch.grid, 1, 1)[:3]
        assert seen["block"] == (64, 1, 1) and seen["shared"] == 96 and seen["stream"] == 0 and seen["extra"] is None
        assert seen["attrs"] == ([(6, 1)] if launch.meta.get("launch_pdl") else [])  # each after the pass's first
        assert seen["params"] == expected_params(launch, driver.spec()[4], table), launch.kernel.fn.__name__
    assert [s["attrs"] != [] for s in fake.seen] == [False] + [True] * (len(want) - 1)


@needs_library
def test_the_scan_op_hands_its_backward_the_saved_inputs_starts_and_a_contiguous_dout(small_tilings):
    ins, fp, bp = planned()
    fake = FakeLaunches()
    fid = torch_host.register(fp, fake.drivers(fp, 200), tt.INPUTS, launch_fn=fake.address)
    bid = torch_host.register(bp, fake.drivers(bp, 300), tt.INPUTS, launch_fn=fake.address)
    leaves = [t.clone().requires_grad_() for t in ins]
    out, last = torch.ops.ssmbench_host.scan(fid, bid, *leaves)
    Bt, L, E = ins[0].shape
    assert out.shape == (Bt, L, E) and out.dtype == ins[0].dtype and out.requires_grad
    assert last.shape == (Bt, E, ins[2].shape[1]) and not last.requires_grad  # (B, N, E) turned
    carry, forward = fake.seen
    forward_args = dict(fp.launches[1].refs)  # position -> place; the forward's starts are its 13th argument
    starts_address = forward["params"][12]
    assert forward_args[12] == fp.outputs[2] and forward["params"][8] == out.data_ptr()
    dout = torch.randn(Bt, E, L).transpose(1, 2)  # not contiguous: the op copies it
    grads = torch.autograd.grad(out, leaves, dout)
    recompute, adjoint, backward, reduce = fake.seen[2:]
    assert recompute["params"][12] == starts_address  # FROM_STARTS: the forward's kept start states
    assert recompute["params"][0] == leaves[0].data_ptr() and backward["params"][0] == leaves[0].data_ptr()  # saved, not copied
    assert backward["params"][8] not in (0, dout.data_ptr()) and adjoint["params"][5] == backward["params"][8]  # one contiguous copy
    for name, g, t in zip(NAMES, grads, leaves):
        assert g.shape == t.shape and g.dtype == t.dtype, name
    assert reduce["params"][4] == grads[2].data_ptr() and backward["params"][11] == grads[0].data_ptr()  # dA; dx


@needs_library
def test_a_refused_launch_raises_naming_its_status(small_tilings):
    ins, fp, _ = planned()
    fake = FakeLaunches()
    pid = torch_host.register(fp, fake.drivers(fp, 400), tt.INPUTS, launch_fn=fake.address)
    fake.rc = 700
    with pytest.raises(RuntimeError, match=r"cuLaunchKernelEx failed: .*\b700\b"):
        torch.ops.ssmbench_host.run(pid, [*ins, None, None])


@needs_library
@pytest.mark.parametrize("cut", ["truncated", "a place before its buffer"])
def test_a_malformed_pass_is_refused(cut, small_tilings):
    ins, fp, _ = planned()
    fake = FakeLaunches()
    blob = torch_host.encode(fp, fake.drivers(fp, 500), tt.INPUTS, fake.address, 0)
    if cut == "truncated":
        blob, match = blob[:-1], "ends early"
    else:  # the carry kernel (the first launch, one buffer made before it) given the last buffer
        n_slots = 4 + sum(2 + len(shape) for shape, _, _ in fp.buffers) + 1 + 8  # after the buffers, the count, 8 fields
        first_place = n_slots + blob[n_slots] + 3  # after the slots, the count of refs, the first ref's slot
        blob[first_place] = tt.INPUTS + len(fp.buffers) - 1
        match = "before it exists"
    with pytest.raises(RuntimeError, match=match):
        torch.ops.ssmbench_host.add_pass(blob)


def test_without_a_compiler_the_python_path_runs_with_one_warning(monkeypatch):
    import torch.utils.cpp_extension as ext

    monkeypatch.setattr(torch_host, "_state", {"loaded": None})
    monkeypatch.setattr(ext, "load", lambda **kw: (_ for _ in ()).throw(RuntimeError("Ninja is required to load C++ extensions")))
    with pytest.warns(UserWarning, match="compiled host path is off .Ninja is required"):
        assert torch_host.available() is False
    assert torch_host.available() is False  # tried once


# ---- on a GPU: the host path against the Python path ----

GPU_CASES = {  # (B, L, E, N), dtype
    "issue shape, L=512 bf16": ((8, 512, 1536, 16), torch.bfloat16),
    "odd, fp32": ((3, 37, 70, 5), torch.float32),
}


def _gpu_inputs(shape, dtype, seed):
    lowp = (0, 1, 3, 4, 6)  # x, dt, B, C, z in the compute dtype
    return [t.to(DEVICE, dtype if i in lowp else torch.float32).requires_grad_() for i, t in enumerate(inputs(*shape, seed=seed))]


def _calls(monkeypatch):
    counted = {"host": 0}
    real = tt._host_scan

    def counting(*a):
        counted["host"] += 1
        return real(*a)

    monkeypatch.setattr(tt, "_host_scan", counting)
    return counted


@pytest.mark.skipif(not CUDA, reason="launches compiled kernels: needs a CUDA GPU")
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_the_host_path_gives_what_the_python_path_gives_bit_for_bit(case, monkeypatch):
    """After a few calls (compiled, learnt) the scan runs from C++, with and without grad; every
    output and gradient equals the Python path's, bit for bit, the calls unsynchronised and
    alternating between two inputs."""
    shape, dtype = GPU_CASES[case]
    assert torch_host.available()
    counted = _calls(monkeypatch)
    runs = [(_gpu_inputs(shape, dtype, seed), torch.randn(shape[:3], device=DEVICE).to(dtype)) for seed in (0, 1)]

    def both(ins, dout):
        out, last = tt.selective_scan(*ins)
        with torch.no_grad():
            plain, plain_last = tt.selective_scan(*ins)
        return out, last, plain, plain_last, *torch.autograd.grad(out, ins, dout)

    got = [both(*runs[i % 2]) for i in range(8)]
    assert counted["host"] >= 4  # the last calls, with and without grad, went through C++
    monkeypatch.setattr(torch_host, "ENABLED", False)
    want = [both(*run) for run in runs]
    for i in range(4, 8):
        for name, a, b in zip(("out", "last", "out (no grad)", "last (no grad)", *NAMES), got[i], want[i % 2]):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (case, i, name)


@pytest.mark.skipif(not CUDA, reason="launches compiled kernels: needs a CUDA GPU")
def test_the_host_path_in_a_side_stream_and_a_cuda_graph(monkeypatch):
    """In a side stream and captured in a CUDA graph, the host path computes what the Python path
    does, bit for bit."""
    shape, dtype = GPU_CASES["odd, fp32"]
    ins, dout = _gpu_inputs(shape, dtype, 2), torch.randn(shape[:3], device=DEVICE)
    counted = _calls(monkeypatch)

    def step():
        out, last = tt.selective_scan(*ins)
        return out, last, *torch.autograd.grad(out, ins, dout)

    # a capture needs autograd warmed up only on a side stream (torch_graphs._record): warmed up on
    # the default stream first, the Python path's capture fails as the host path's does
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        in_side = [step() for _ in range(5)][-1]  # through C++ from the fifth call
        assert counted["host"] >= 1
        monkeypatch.setattr(torch_host, "ENABLED", False)
        want = step()  # the Python path
        monkeypatch.setattr(torch_host, "ENABLED", True)
    torch.cuda.current_stream().wait_stream(side)
    before = counted["host"]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for c in captured:
        c.zero_()  # the replay must write them again
    assert counted["host"] == before + 1  # the capture went through C++
    graph.replay()
    torch.cuda.synchronize()
    for name, w, s, c in zip(("out", "last", *NAMES), want, in_side, captured):
        assert torch.equal(w, s) and torch.equal(w, c), name
