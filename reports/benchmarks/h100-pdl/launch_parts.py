"""Host µs of the scan forward's first launch and its parts, on the device's host (no profiler).
usage: launch_parts.py PKGROOT"""

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
run, function, metadata, tail, tensors, key = signed
grid = (*p.carry[0], 1, 1)[:3]
bare = list(carry_args)
for i in tensors:
    bare[i] = carry_args[i].data_ptr()
stream = torch._C._cuda_getCurrentRawStream(0)
c_launch = run.launch  # the compiled C function CudaLauncher.__call__ calls


def per_call_us(fn, n=400, batch=10):
    ts = []
    for _ in range(n // batch):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        ts.append((time.perf_counter_ns() - t) / batch / 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


cases = {
    "forward() (two launches)": lambda: tt.forward(*ins),
    "_layout()": lambda: tt._layout(*ins),
    "_prepared()": lambda: tt._prepared(*ins),
    "torch.empty(scratch)": lambda: torch.empty(p.scratch, device="cuda"),
    "launch_now(carry, sig)": lambda: tl.launch_now(sk._state_carry_kernel, p.carry[0], carry_args, p.meta, p),
    "Launcher.launch(carry, sig)": lambda: lr.launch(grid, carry_args, p.meta, p),
    "CudaLauncher.__call__": lambda: run(*grid, stream, function, metadata, None, None, None, *bare, *tail),
    "C launch()": lambda: c_launch(
        *grid, stream, function, run.launch_cooperative_grid, run.launch_pdl, None, None, metadata, None, None, None, *bare, *tail
    ),
    "torch x.add_(0) (reference)": lambda: ws.add_(0),
    "torch.cuda.current_device()": lambda: torch.cuda.current_device(),
}
print(torch.cuda.get_device_name(), "launch_pdl of the carry kernel:", run.launch_pdl, flush=True)
for name, fn in cases.items():
    print(f"{name:32s} {per_call_us(fn):7.2f} us", flush=True)
