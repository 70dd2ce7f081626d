"""Host µs of the scan forward's launches and their parts, driver launch on and off (device host).
usage: parts.py PKGROOT"""

import statistics
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
from v_new import torch_launch as tl  # noqa: E402
from v_new import torch_scan_kernels as sk  # noqa: E402
from v_new import torch_triton as tt  # noqa: E402

B, L, E, N = 8, 512, 1536, 16
g = torch.Generator(device="cpu").manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g).cuda()  # noqa: E731
x, dt, z = (r(B, L, E).bfloat16() for _ in range(3))
A = -torch.exp(r(E, N) * 0.5)
Bm, Cm = (r(B, L, N).bfloat16() for _ in range(2))
D, bias = r(E), r(E)
ins = (x, dt, A, Bm, Cm, D, z, bias)
for _ in range(5):
    tt.forward(*ins)
torch.cuda.synchronize()
p = next(v for k, v in tt._plans.items() if k[0] == "forward")
ws = torch.empty(p.scratch, device="cuda")
carry_args = (x, dt, Bm, A, bias, ws, *p.carry[1])
lr = tl._launchers[sk._state_carry_kernel]
((sig, signed),) = [(k, v) for k, v in lr._sigs.items() if k[0] is p]
run, function, metadata, tail, tensors, key, driver = signed
print("driver built:", driver is not None, "carry PDL:", run.launch_pdl, "types:", lr._keys[key][4][:8], flush=True)
grid = (*p.carry[0], 1, 1)[:3]
bare = list(carry_args)
for i in tensors:
    bare[i] = carry_args[i].data_ptr()
stream = torch._C._cuda_getCurrentRawStream(0)
c_launch = run.launch
driver.load(carry_args)

# correctness: the carry kernel's scratch through the driver equals Triton's
ws.zero_()
run(*grid, stream, function, metadata, None, None, None, *bare, *tail)
torch.cuda.synchronize()
a = ws.clone()
ws.zero_()
assert driver.launch(grid, stream) == 0
torch.cuda.synchronize()
print("driver launch == Triton launch:", torch.equal(a, ws), "nonzero:", bool(a.any()), flush=True)


def per_call_us(fn, n=600, batch=10):
    ts = []
    for _ in range(n // batch):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        ts.append((time.perf_counter_ns() - t) / batch / 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


def no_driver():
    for launcher in tl._launchers.values():
        for s, v in list(launcher._sigs.items()):
            launcher._sigs[s] = (*v[:6], None)


f32 = {"device": x.device, "dtype": torch.float32}
dout = torch.randn_like(x)


def fb():
    kept = tt.forward(*ins, keep_starts=True)[2]
    tt.backward(dout, *ins, starts=kept)


for _ in range(5):
    fb()
cases = {
    "forward() driver": lambda: tt.forward(*ins),
    "forward+backward() driver": fb,
    "Launcher.launch(carry, sig) driver": lambda: lr.launch(grid, carry_args, p.meta, p),
    "driver.load+launch": lambda: (driver.load(carry_args), driver.launch(grid, stream)),
    "driver.launch": lambda: driver.launch(grid, stream),
    "CudaLauncher.__call__": lambda: run(*grid, stream, function, metadata, None, None, None, *bare, *tail),
    "C launch()": lambda: c_launch(
        *grid, stream, function, run.launch_cooperative_grid, run.launch_pdl, None, None, metadata, None, None, None, *bare, *tail
    ),
    "_layout()": lambda: tt._layout(*ins),
    "hash(_layout())": lambda: hash(tt._layout(*ins)),
    "_prepared()": lambda: tt._prepared(*ins),
    "torch.empty(n, device, dtype)": lambda: torch.empty(p.scratch, **f32),
    "x.new_empty((n,), dtype)": lambda: x.new_empty((p.scratch,), dtype=torch.float32),
    "torch.empty_like(x, contiguous)": lambda: torch.empty_like(x, memory_format=torch.contiguous_format),
    "torch.empty_like(x)": lambda: torch.empty_like(x),
    "torch.cuda.current_device()": lambda: torch.cuda.current_device(),
    "torch._C._cuda_getDevice()": lambda: torch._C._cuda_getDevice(),
    "getCurrentRawStream(0)": lambda: torch._C._cuda_getCurrentRawStream(0),
    "x.data_ptr()": lambda: x.data_ptr(),
    "ws.add_(0) (reference)": lambda: ws.add_(0),
}
print(torch.cuda.get_device_name(), flush=True)
for name, fn in cases.items():
    print(f"{name:38s} {per_call_us(fn):7.2f} us", flush=True)
no_driver()
for name in ("forward() driver", "forward+backward() driver", "Launcher.launch(carry, sig) driver"):
    print(f"{name.replace('driver', 'Triton launcher'):38s} {per_call_us(cases[name]):7.2f} us", flush=True)
