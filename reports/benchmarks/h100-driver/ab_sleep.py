"""Where the warm 512 forward's time goes: each call timed alone (warm), after the GPU has been
held busy for a while by torch.cuda._sleep, so the host's work before the first kernel is hidden
once the sleep outlasts it.  usage: ab_sleep.py PKGROOT REPS"""

# ruff: noqa: B023, E501  (closures called within their loop iteration; report lines kept whole)

import importlib
import statistics
import sys
import time

import torch

root, reps = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, root)
versions = {n[2:]: importlib.import_module(f"{n}.torch_triton") for n in ("v_new", "v_head")}
import selective_scan_cuda as ssc  # noqa: E402

B, L, E, N = 8, 512, 1536, 16
ns = time.perf_counter_ns
stamps = []
for tt in versions.values():
    real = tt.launch_now

    def stamped(*a, _real=real, **k):
        _real(*a, **k)
        stamps.append(ns())

    tt.launch_now = stamped


def inputs(dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()  # noqa: E731
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


hz = torch.cuda.get_device_properties(0).clock_rate * 1e3 if hasattr(torch.cuda.get_device_properties(0), "clock_rate") else 1.98e9
print(torch.cuda.get_device_name(), "clock", hz / 1e9, "GHz", flush=True)
for dtype in (torch.bfloat16, torch.float32):
    ins = inputs(dtype)
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, z))
    BB, CC = (t.transpose(1, 2).contiguous()[:, None] for t in (Bm, Cm))
    fns = {n: (lambda tt=tt: tt.forward(*ins)) for n, tt in versions.items()}
    fns["mamba-ssm"] = lambda: ssc.fwd(u, delta, A, BB, CC, D, zz, bias, True)
    fns["sleep only"] = lambda: None
    for fn in fns.values():
        for _ in range(5):
            fn()
    torch.cuda.synchronize()
    for sleep_us in (0, 10, 20, 30, 45, 60):
        cycles = int(sleep_us * hz / 1e6)
        res = {k: [] for k in fns}
        host = {k: [] for k in fns}
        names = list(fns)
        for i in range(reps):
            for k in names[i % len(names) :] + names[: i % len(names)]:
                fns[k]()
                torch.cuda.synchronize()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                stamps.clear()
                a.record()
                if cycles:
                    torch.cuda._sleep(cycles)
                t0 = ns()
                fns[k]()
                t1 = ns()
                b.record()
                b.synchronize()
                res[k].append(a.elapsed_time(b) * 1e3)
                host[k].append(((stamps[0] - t0) / 1e3 if stamps else (t1 - t0) / 1e3, (stamps[1] - t0) / 1e3 if len(stamps) > 1 else 0.0))
        base = statistics.median(res["sleep only"])
        line = f"{str(dtype)[6:]:8s} sleep {sleep_us:3d} us (alone {base:6.1f}):"
        for k in names[:-1]:
            first, second = (statistics.median(c) for c in zip(*host[k]))
            line += f"  {k} {statistics.median(res[k]):6.1f} (-sleep {statistics.median(res[k]) - base:6.1f}; host to launch 1 {first:5.1f}, 2 {second:5.1f})"
        print(line, flush=True)
