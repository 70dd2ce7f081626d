"""torch_launch.Launcher: the first launch with a key goes through Triton, later ones with the same
key straight to the compiled kernel's launcher, and anything Triton specializes on (a dtype, a
tensor's alignment, an integer, a constexpr) makes a new key. On CPU against a fake kernel; on a
GPU with real kernels, the fused scan included."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
tt = pytest.importorskip("ssmbench.backends.torch_triton")  # sets up the interpreter on CPU first
from ssmbench.backends import torch_launch  # noqa: E402
from ssmbench.backends import torch_scan_kernels as sk  # noqa: E402

CUDA = torch.cuda.is_available()


class FakeCompiled:
    """Triton 3.6's CompiledKernel as far as a launch goes: ``run`` (a property over ``_run``) is
    the C launcher, here one that records each launch's arguments."""

    def __init__(self, launches):
        self.function, self.packed_metadata = object(), object()
        self._run = lambda *a: launches.append(a)

    @property
    def run(self):
        return self._run


class FakeKernel:
    """kernel(a, b, n, BLOCK: constexpr, FLAG: constexpr = 7), launched as Triton 3.6 does: one
    compiled kernel per specialization, whose launcher gets the grid, the stream, its handles,
    launch metadata, the two hooks, then every parameter in order."""

    def __init__(self, convert=lambda args: args, during=None):
        self.fn, self.calls, self.launches, self.compiled = self.__init__, 0, [], {}
        self.pre_run_hooks = []
        self.convert = convert  # what this Triton does to the arguments on their way
        self.during = during  # called inside each launch (another thread's launch, interleaved)

    def __getitem__(self, grid):
        def launch(a, b, n, BLOCK, FLAG=7, num_warps=4):
            self.calls += 1
            # integers specialised as Triton does: by == 1 and divisibility by 16, not by value
            ns = (type(n), n == 1, n % 16 == 0) if type(n) is int else type(n)
            spec = (a.dtype, b.dtype, a.data_ptr() % 16, ns, BLOCK, FLAG, num_warps)
            k = self.compiled.setdefault(spec, FakeCompiled(self.launches))
            if self.during:
                self.during()
            k.run(*grid, 1234, k.function, k.packed_metadata, "launch metadata", "enter", "exit", *self.convert((a, b, n, BLOCK, FLAG)))
            return k

        return launch


@pytest.fixture
def cuda_faked(monkeypatch):
    """The interpreter off, no hooks, and a CUDA device and stream faked."""
    monkeypatch.setattr(torch_launch.triton.knobs.runtime, "interpret", False)
    monkeypatch.setattr(torch_launch, "DIRECT", True)
    monkeypatch.setattr(torch_launch, "DIRECT_KINDS", (FakeKernel,))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 1234, raising=False)


def test_third_launch_goes_direct_with_what_triton_passed(cuda_faked):
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a, b = torch.zeros(8), torch.zeros(8)
    for grid in [(3, 2, 1), (3, 2, 1), (4, 1, 1), (5, 1, 1)]:
        launcher[grid](a, b, 5, BLOCK=32, num_warps=1)
    assert kernel.calls == 2  # compiled, then watched
    assert len(kernel.launches) == 4  # every call launched once
    k = next(iter(kernel.compiled.values()))
    assert kernel.launches[2] == (4, 1, 1, 1234, k.function, k.packed_metadata, None, None, None, a, b, 5, 32, 7)


def test_whatever_triton_specializes_on_makes_a_new_key(cuda_faked):
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a, b = torch.zeros(8), torch.zeros(8)
    variants = [
        ((a, b, 5), {"BLOCK": 32}),
        ((a, b, 6), {"BLOCK": 32}),  # an integer's value
        ((a.double(), b, 5), {"BLOCK": 32}),  # a dtype
        ((torch.zeros(9)[1:], b, 5), {"BLOCK": 32}),  # an address 4 bytes past 16-byte alignment
        ((a, b, 5), {"BLOCK": 64}),  # a constexpr
        ((a, b, 5), {"BLOCK": 32, "num_warps": 1}),  # an option
    ]
    for _ in range(2):
        for args, meta in variants:
            launcher[(1, 1, 1)](*args, **meta)
    assert kernel.calls == 2 * len(variants)  # none direct yet
    launcher[(1, 1, 1)](torch.ones(8), b, 5, BLOCK=32)  # other data, same dtype and alignment
    assert kernel.calls == 2 * len(variants) and len(kernel.launches) == 2 * len(variants) + 1


def test_floats_are_keyed_by_type_and_short_grids_padded(cuda_faked):
    """Triton compiles one kernel for every float value (a scale), so a new value is no new key."""
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a = torch.zeros(8)
    for scale in (0.5, 0.25, 0.125):
        launcher[(7,)](a, a, scale, BLOCK=32)
    assert kernel.calls == 2 and kernel.launches[2][:3] == (7, 1, 1) and kernel.launches[2][11] == 0.125
    assert len(launcher._keys) == 1


@pytest.mark.parametrize(
    "convert",
    [lambda args: tuple(float(v) if isinstance(v, int) else v for v in args), lambda args: args[:3]],
    ids=["converts integers", "passes no constexprs"],
)
def test_a_triton_launching_otherwise_keeps_every_launch(cuda_faked, convert):
    """Where what Triton hands its launcher is not ``args`` as given plus a tail, nothing goes
    direct; with the constexprs left out (older Triton), the empty tail is learnt."""
    kernel = FakeKernel(convert)
    launcher = torch_launch.Launcher(kernel)
    a = torch.zeros(8)
    for _ in range(4):
        launcher[(1, 1, 1)](a, a, 5, BLOCK=32)
    assert len(kernel.launches) == 4
    if convert((1, 2, 3, 4)) == (1, 2, 3):
        assert kernel.calls == 2 and kernel.launches[3][9:] == (a, a, 5)
    else:
        assert kernel.calls == 4


def test_interpreter_hooks_and_the_switch_keep_launches_with_triton(cuda_faked, monkeypatch):
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a = torch.zeros(8)
    hook = lambda *_: None  # noqa: E731
    torch_launch.triton.knobs.runtime.launch_enter_hook.add(hook)  # as proton does
    try:
        for _ in range(3):
            launcher[(1, 1, 1)](a, a, 5, BLOCK=32)
    finally:
        torch_launch.triton.knobs.runtime.launch_enter_hook.remove(hook)
    monkeypatch.setattr(torch_launch, "DIRECT", False)
    for _ in range(3):
        launcher[(1, 1, 1)](a, a, 5, BLOCK=32)
    monkeypatch.setattr(torch_launch, "DIRECT", True)
    monkeypatch.setattr(torch_launch, "DIRECT_KINDS", (FakeKernel,))
    monkeypatch.setattr(torch_launch.triton.knobs.runtime, "interpret", True)
    for _ in range(3):
        launcher[(1, 1, 1)](a, a, 5, BLOCK=32)
    assert kernel.calls == 9 and len(kernel.launches) == 9


def test_bools_tensors_by_name_and_the_debug_knob_key_apart(cuda_faked, monkeypatch):
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a = torch.zeros(8)
    for n in (True, 1, True, 1):  # equal and hashing alike, but Triton compiles each apart
        launcher[(1,)](a, a, n, BLOCK=32)
    assert kernel.calls == 4 and len(launcher._keys) == 2
    monkeypatch.setattr(torch_launch.triton.knobs.runtime, "debug", True)
    launcher[(1,)](a, a, 1, BLOCK=32)  # a new key: Triton compiles a debug kernel
    assert kernel.calls == 5
    for _ in range(3):  # a tensor passed by name would key by identity: never kept
        launcher[(1,)](a, a, 5, BLOCK=32, FLAG=torch.zeros(1))
    assert kernel.calls == 8 and len(launcher._keys) == 3


def test_kernels_with_hooks_or_not_jitted_keep_every_launch(cuda_faked, monkeypatch):
    kernel = FakeKernel()
    kernel.pre_run_hooks.append(lambda *a, **k: None)
    launcher = torch_launch.Launcher(kernel)
    for _ in range(3):
        launcher[(1,)](torch.zeros(8), torch.zeros(8), 5, BLOCK=32)
    monkeypatch.setattr(torch_launch, "DIRECT_KINDS", ())  # e.g. an autotuned kernel
    other = FakeKernel()
    for _ in range(3):
        torch_launch.Launcher(other)[(1,)](torch.zeros(8), torch.zeros(8), 5, BLOCK=32)
    assert kernel.calls == 3 and other.calls == 3


def test_a_launch_watched_meanwhile_learns_nothing_from_the_watch(cuda_faked):
    """Two keys sharing one compiled kernel (integers Triton does not specialise on): while one is
    watched, the other's watched launch (another thread's, interleaved here) sees the watch in
    place of the launcher and must not learn it (every later launch's arguments would pile up
    in it); the watch saw two launches, so neither key learns and both stay with Triton."""
    a = torch.zeros(8)
    state = {"inside": False}

    def other_thread():
        if state["inside"]:
            state["inside"] = False
            launcher[(1,)](a, a, 6, BLOCK=32)  # key n=6, second launch: watched now

    kernel = FakeKernel(during=other_thread)
    launcher = torch_launch.Launcher(kernel)
    launcher[(1,)](a, a, 5, BLOCK=32)
    launcher[(1,)](a, a, 6, BLOCK=32)
    assert len(kernel.compiled) == 1  # one compiled kernel for both keys
    state["inside"] = True
    launcher[(1,)](a, a, 5, BLOCK=32)  # key n=5 watched, n=6 watched inside it
    assert list(launcher._keys.values()) == [None, None] and len(kernel.launches) == 4
    launcher[(1,)](a, a, 5, BLOCK=32)
    launcher[(1,)](a, a, 6, BLOCK=32)
    assert kernel.calls == 6 and len(kernel.launches) == 6  # each launched once, through Triton


def test_a_sig_skips_the_key_only_where_every_tensor_is_aligned(cuda_faked, monkeypatch):
    """With a sig, the launch after the first direct one skips building the key; a tensor off
    16-byte alignment takes the keyed path (Triton specializes on alignment), and so does a
    changed knob (debug kernels are other kernels). The sig's launches pass the tensors as the
    addresses they read (Triton's launcher checks none of them again)."""
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", False)  # on in GPU runs: it keys every launch
    keyed = []
    real_key = torch_launch.Launcher._key
    monkeypatch.setattr(torch_launch.Launcher, "_key", staticmethod(lambda *a: keyed.append(1) or real_key(*a)))
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a, b = torch.zeros(8), torch.zeros(8)
    for _ in range(5):
        launcher[(1,)](a, b, 5, BLOCK=32)  # no sig: keyed every time
    assert len(keyed) == 5
    keyed.clear()
    for _ in range(5):
        launcher.launch((1, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")
    assert len(keyed) == 1 and kernel.calls == 2  # the first learnt the sig; the rest skipped the key
    assert len(kernel.launches) == 10
    assert kernel.launches[-5][9] is a and kernel.launches[-5][10] is b  # the keyed launch passed the tensors
    assert kernel.launches[-1][9:12] == (a.data_ptr(), b.data_ptr(), 5)  # the sig's, their addresses
    off = torch.zeros(9)[1:]
    launcher.launch((1, 1, 1), (off, b, 5), {"BLOCK": 32}, "plan")
    assert len(keyed) == 2 and kernel.calls == 3  # keyed: a new key, through Triton
    assert kernel.launches[-1][9] is off
    monkeypatch.setattr(torch_launch.triton.knobs.runtime, "debug", True)
    launcher.launch((1, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")
    assert len(keyed) == 3 and kernel.calls == 4


def test_a_sig_standing_for_other_arguments_is_caught_when_checked(cuda_faked, monkeypatch):
    """A sig is the caller's promise; CHECK_SIGS (the GPU tests) holds it to it: a launch with the
    sig of another launch's integers raises instead of running the wrong compiled kernel."""
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", False)
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)

    def go(*args, **meta):
        launcher.launch((1, 1, 1), args, meta, "plan")

    a = torch.zeros(8)
    for _ in range(3):
        go(a, a, 5, BLOCK=32)
    go(a, a, 6, BLOCK=32)  # unchecked: the sig's launch, with 6 passed as given
    assert kernel.launches[-1][11] == 6 and kernel.calls == 2
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", True)
    go(a, a, 5, BLOCK=32)
    with pytest.raises(RuntimeError, match="sig 'plan' stands for another launch"):
        go(a, a, 6, BLOCK=32)


@pytest.mark.skipif(not CUDA, reason="launches compiled kernels: needs a CUDA GPU")
def test_cuda_direct_launches_match_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def scale(x_ptr, y_ptr, n, s, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * s, mask=i < n)

    launcher = torch_launch.Launcher(scale)
    base = torch.arange(40, device="cuda", dtype=torch.float32)
    for x, n, s in [(base, 40, 2), (base, 40, 3), (base[1:], 39, 2), (base[1:], 39, 2), (base[1:], 39, 2), (base[:17], 17, 5)]:
        y = torch.full_like(x, -1.0)
        launcher[(triton.cdiv(n, 16), 1, 1)](x, y, n, s, BLOCK=16)
        torch.testing.assert_close(y, x * s, rtol=0, atol=0)
    assert len(launcher._keys) == 4 and sum(type(v) is tuple for v in launcher._keys.values()) == 1  # base[1:]: direct the third time
    x, y = base[1:], torch.zeros(39, device="cuda")
    side = torch.cuda.Stream()  # direct launches go to the current stream: a side stream's, a graph's
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        launcher[(3, 1, 1)](x, y, 39, 2, BLOCK=16)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(y, x * 2, rtol=0, atol=0)
    y.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launcher[(3, 1, 1)](x, y, 39, 2, BLOCK=16)
    assert not y.any()  # recorded, not run
    graph.replay()
    torch.testing.assert_close(y, x * 2, rtol=0, atol=0)


@pytest.mark.skipif(not CUDA, reason="launches compiled kernels: needs a CUDA GPU")
def test_cuda_scan_repeats_exactly_through_direct_launches(monkeypatch):
    """A forward + backward repeated (its launches direct the third time, by their plan's sig the
    fourth) gives the same bits, also on bf16 views 2 bytes off 16-byte alignment: the same plan
    and sigs, but the keyed path (new keys). Every sig is checked against the key."""
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", True)
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s):
        return torch.randn(*s, device="cuda", generator=g)

    Bt, L, E, N = 2, 67, 40, 16
    for off in (0, 1):
        x, dt, z = ((r(Bt, L, E + 1) + shift).to(torch.bfloat16)[..., off : off + E] for shift in (0.0, -1.0, 0.0))
        assert x.data_ptr() % 16 == 2 * off
        ins = [x, dt, -torch.exp(r(E, N)), r(Bt, L, N), r(Bt, L, N), r(E), z, r(E)]
        dout = r(Bt, L, E).to(torch.bfloat16)
        runs = []
        for _ in range(4):
            out, last, kept = tt.forward(*ins, keep_starts=True)
            runs.append([out, last, *tt.backward(dout, *ins, starts=kept)])
        for again in runs[1:]:
            for a, b in zip(runs[0], again):
                assert torch.equal(a, b)
    for kernel in (sk._state_carry_kernel, sk._forward_kernel, sk._adjoint_carry_kernel, sk._backward_kernel, sk._reduce_kernel):
        keys = torch_launch._launchers[kernel]._keys.values()  # each kernel launched directly by the third run
        assert any(type(v) is tuple for v in keys), kernel.fn.__name__
        assert torch_launch._launchers[kernel]._sigs, kernel.fn.__name__  # and by its sig the fourth
