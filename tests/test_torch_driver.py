"""torch_driver: signed launches made through cuLaunchKernelEx. On CPU, the parameters as packed,
the structs' layout, and what reaches a fake driver (a ctypes callback reading the very memory
the real one would); on a GPU, launches through the driver against Triton's, in a side stream
and a CUDA graph."""

import ctypes
import struct

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
tt = pytest.importorskip("ssmbench.backends.torch_triton")  # sets up the interpreter on CPU first
from ssmbench.backends import torch_driver, torch_launch  # noqa: E402
from test_torch_launch import FakeKernel, cuda_faked  # noqa: E402, F401  (its fake Triton kernel and the fixture faking CUDA)

CUDA = torch.cuda.is_available()
TYPES = ("*fp32", "*bf16", "i32", "i64", "i1", "fp32", "constexpr", "bf16", "u64", "*fp32")


def test_each_parameter_gets_the_bits_triton_s_launcher_passes():
    x, y = torch.zeros(4), torch.zeros(4)
    values = (x, y, -3, 2**40, True, 0.1, 64, 1.5, 2**64 - 1, None)
    slots, where = torch_driver.pack(TYPES, values, (0, 1))
    assert where == ((0, 0), (1, 1))  # the tensors' slots, written per launch
    assert slots == [
        0, 0,  # the tensors, filled in per launch
        2**64 - 3,  # an i32 two's complement: the driver reads its 4 low bytes
        2**40, 1,
        struct.unpack("<I", struct.pack("<f", 0.1))[0],  # fp32 bits
        # the constexpr takes no slot
        0x3FC0,  # bf16: fp32's upper half
        2**64 - 1,
        0,  # a null pointer
        0, 0,  # Triton's global and profile scratch pointers, null
    ]  # fmt: skip


@pytest.mark.parametrize(
    "types, values, tensors",
    [
        (("*fp32", "i32"), (None,), ()),  # not one value a type
        (("nvTmaDesc",), (object(),), ()),  # a TMA descriptor
        ((("i32", "i32"),), ((1, 2),), ()),  # a tuple argument
        (("constexpr",), (torch.zeros(1),), (0,)),  # a tensor Triton made a constant
        (("*fp32",), (object(),), ()),  # a pointer given as neither tensor nor address
        (("i32",), (1.5,), ()),  # a float for an integer
        (("fp32",), (1e300,), ()),  # a float beyond fp32's range
    ],
)
def test_what_it_cannot_pack_exactly_stays_with_triton(types, values, tensors):
    assert torch_driver.pack(types, values, tensors) is None


def test_structs_are_laid_out_as_cuda_h():
    """cuda.h 13.0's sizes and offsets (printed by gcc on the lent H100: reports/benchmarks/h100-driver)."""
    cfg, attr = torch_driver.LaunchConfig, torch_driver.LaunchAttribute
    assert ctypes.sizeof(cfg) == 56 and (cfg.hStream.offset, cfg.attrs.offset, cfg.numAttrs.offset) == (32, 40, 48)
    assert ctypes.sizeof(attr) == 72 and attr.value.offset == 8


class FakeLaunches:
    """A cuLaunchKernelEx (its address: ``address``; the callable: ``launch``) that records each
    launch as the driver would read it from the memory passed, and returns ``rc``. A launch's
    parameter count comes from ``slots`` by its function, else ``n``."""

    def __init__(self, n: int = 0):
        self.seen, self.slots, self.n, self.rc = [], {}, n, 0

        @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        def launch(config, function, params, extra):
            c = torch_driver.LaunchConfig.from_address(config)
            pointers = (ctypes.c_void_p * self.slots.get(function, self.n)).from_address(params)
            self.seen.append({
                "function": function, "grid": (c.gridDimX, c.gridDimY, c.gridDimZ), "block": (c.blockDimX, c.blockDimY, c.blockDimZ),
                "shared": c.sharedMemBytes, "stream": c.hStream or 0, "extra": extra,
                "attrs": [(c.attrs[i].id, c.attrs[i].value) for i in range(c.numAttrs)],
                "params": [ctypes.c_uint64.from_address(p).value for p in pointers],
            })  # fmt: skip
            return self.rc

        self.launch = launch  # kept alive: whoever holds its address calls it
        self.address = ctypes.cast(launch, ctypes.c_void_p).value


@pytest.fixture
def fake_driver(monkeypatch):
    """torch_driver's cuLaunchKernelEx replaced by a FakeLaunches of 5 parameters a launch."""
    fake = FakeLaunches(n=5)
    monkeypatch.setattr(torch_driver, "_launch_ex", fake.launch)
    return fake


class FakeRun:
    """Triton's CudaLauncher as far as DriverLaunch looks at it."""

    launch_cooperative_grid, global_scratch_size, profile_scratch_size = False, 0, 0

    def __init__(self, pdl):
        self.launch_pdl, self.calls = pdl, []

    def __call__(self, *a):
        self.calls.append(a)


@pytest.mark.parametrize("pdl", [False, True])
def test_a_driver_launch_hands_over_the_config_and_parameters(fake_driver, pdl):
    seen = fake_driver.seen  # 5 parameters: x, y, 7, then the two scratch pointers
    x, y = torch.zeros(8), torch.zeros(8)
    run = FakeRun(pdl)
    d = torch_driver.DriverLaunch.build(run, 0xF00, (4, 1, 2048), TYPES[:3] + ("constexpr",), (x, y, 7, 32), (0, 1))
    d2 = torch_driver.DriverLaunch.build(run, 0xF00, (4, 2, 0), TYPES[:3], (x, y, 7), (0, 1))
    assert d2 is None  # two CTAs a program (a cluster): Triton's launcher
    assert d.load((x, y, 7, 32))
    assert d.launch((3, 2, 1), 0xABC) == 0 and d.launch((5, 1, 1), 0xDEF) == 0
    assert d.launch((0, 1, 1), 0xABC) == 0  # an empty grid launches nothing, as Triton's launcher
    first, second = seen
    assert first["grid"] == (3, 2, 1) and second["grid"] == (5, 1, 1) and second["stream"] == 0xDEF
    assert first["block"] == (128, 1, 1) and first["shared"] == 2048 and first["function"] == 0xF00
    assert first["params"] == [x.data_ptr(), y.data_ptr(), 7, 0, 0] and first["extra"] is None
    assert first["attrs"] == ([(6, 1)] if pdl else [])  # programmatic stream serialization
    assert not d.load((torch.zeros(9)[1:], y, 7, 32))  # 4 bytes off: another key


def test_a_launcher_signs_through_the_driver_and_falls_back_without_a_context(cuda_faked, fake_driver, monkeypatch):  # noqa: F811
    """Once a sig is learnt, its launches go to the driver with the tensors' addresses; a launch
    refused for want of a context (201, a fresh thread) goes through Triton's launcher, which
    makes the context current; any other refusal raises."""
    seen = fake_driver.seen
    monkeypatch.setattr(torch_launch, "DRIVER", True)
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", False)
    kernel = FakeKernel()
    launcher = torch_launch.Launcher(kernel)
    a, b = torch.zeros(8), torch.zeros(8)
    launcher.launch((2, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")  # compiled: give it what Triton 3.6's has
    (compiled,) = kernel.compiled.values()
    compiled.function, compiled.packed_metadata = 77, (2, 1, 0)
    compiled.src = type("Src", (), {"signature": {"a": "*fp32", "b": "*fp32", "n": "i32", "BLOCK": "constexpr", "FLAG": "constexpr"}})()
    compiled._run = FakeRun(False)
    for _ in range(4):
        launcher.launch((2, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")
    assert len(compiled._run.calls) == 2 and len(seen) == 2  # watched, keyed (learnt the sig), then the driver
    assert seen[-1]["params"] == [a.data_ptr(), b.data_ptr(), 5, 0, 0] and seen[-1]["stream"] == 1234
    fake_driver.rc = torch_driver.CUDA_ERROR_INVALID_CONTEXT
    launcher.launch((2, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")
    assert len(compiled._run.calls) == 3 and compiled._run.calls[-1][9:12] == (a.data_ptr(), b.data_ptr(), 5)
    fake_driver.rc = 700  # an illegal address, say
    with pytest.raises(RuntimeError, match=r"cuLaunchKernelEx failed: .*\b700\b"):
        launcher.launch((2, 1, 1), (a, b, 5), {"BLOCK": 32}, "plan")
    fake_driver.rc = 0
    monkeypatch.setattr(torch_launch, "CHECK_SIGS", True)
    with pytest.raises(RuntimeError, match="stands for another launch"):
        launcher.launch((2, 1, 1), (a, b, 6), {"BLOCK": 32}, "plan")


@pytest.mark.skipif(not CUDA, reason="launches compiled kernels: needs a CUDA GPU")
def test_cuda_driver_launches_match_triton_in_streams_and_graphs():
    import triton
    import triton.language as tl

    @triton.jit
    def axpb(x_ptr, y_ptr, n, a, b, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * a + b, mask=i < n)

    launcher = torch_launch.Launcher(axpb)
    x = torch.randn(1000, device="cuda")
    want = None  # Triton's own launch, the first: a fused multiply-add, not x * 2.5 - 3 rounded twice
    for _ in range(4):  # compiled, watched, keyed (the sig learnt), through the driver
        y = torch.full_like(x, -1.0)
        launcher.launch((63, 1, 1), (x, y, 1000, 2.5, -3), {"BLOCK": 16}, "axpb")
        want = y if want is None else want
        torch.testing.assert_close(y, want, rtol=0, atol=0)
    torch.testing.assert_close(want, x * 2.5 - 3.0)
    (signed,) = launcher._sigs.values()
    assert isinstance(signed[-1], torch_driver.DriverLaunch)
    side, y = torch.cuda.Stream(), torch.zeros_like(x)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        launcher.launch((63, 1, 1), (x, y, 1000, 2.5, -3), {"BLOCK": 16}, "axpb")
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    y.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launcher.launch((63, 1, 1), (x, y, 1000, 2.5, -3), {"BLOCK": 16}, "axpb")
    assert not y.any()  # recorded, not run
    graph.replay()
    torch.testing.assert_close(y, want, rtol=0, atol=0)
