"""Unprofiled host stamps of synchronized forward calls, and GPU-alone (CUDA graph) times, per version.
usage: stamps.py PKGROOT LENGTHS VERSIONS REPS"""

import functools
import importlib
import statistics
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
lengths = [int(v) for v in sys.argv[2].split(",")]
names = sys.argv[3].split(",")
reps = int(sys.argv[4])
mods = {n: importlib.import_module(f"v_{n}.torch_triton") for n in names}
B, E, N = 8, 1536, 16
ns = time.perf_counter_ns
stamps = []


def wrap(tt):
    real = tt.launch_now

    def stamped(*a, **k):
        stamps.append(ns())
        real(*a, **k)
        stamps.append(ns())

    tt.launch_now = stamped


for tt in mods.values():
    wrap(tt)


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()  # noqa: E731
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


def gpu_us(fn, k=10, reps=15):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(k):
            fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / k * 1e3)
    return statistics.median(ts)


def fb(tt, ins, dout):
    kept = tt.forward(*ins, keep_starts=True)[2]
    tt.backward(dout, *ins, starts=kept)


print(torch.cuda.get_device_name(), flush=True)
for L in lengths:
    for dtype in (torch.bfloat16, torch.float32):
        ins = inputs(L, dtype)
        dout = torch.randn(B, L, E, device="cuda").to(dtype)
        outs = {n: tt.forward(*ins)[0].float() for n, tt in mods.items()}
        grads = {n: None for n in mods}
        ref = outs[names[0]]
        diffs = " ".join(f"{n} {float((o - ref).abs().max()):.1e}" for n, o in outs.items())
        line = [f"L={L:5d} {str(dtype)[6:]:8s} max|out - {names[0]}|: {diffs} | GPU-alone us fwd / f+b:"]
        for n, tt in mods.items():
            line.append(f"{n} {gpu_us(functools.partial(tt.forward, *ins)):.1f} / {gpu_us(functools.partial(fb, tt, ins, dout)):.1f}")
        print(" ".join(line), flush=True)
        if L > 1024:
            continue
        # unprofiled host stamps of synchronized forwards, interleaved
        res = {n: [] for n in mods}
        for i in range(reps):
            for n in names[i % len(names) :] + names[: i % len(names)]:
                tt = mods[n]
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                stamps.clear()
                a.record()
                t0 = ns()
                tt.forward(*ins)
                t1 = ns()
                b.record()
                b.synchronize()
                s = [(v - t0) / 1e3 for v in stamps]
                res[n].append((a.elapsed_time(b) * 1e3, *s, (t1 - t0) / 1e3))
        for n, rows in res.items():
            cols = list(zip(*rows))
            med = [statistics.median(c) for c in cols]
            print(
                f"L={L:5d} {str(dtype)[6:]:8s} sync fwd {n:5s}: events {med[0]:.1f} us | host µs from call: launches [begin, end] "
                + " ".join(f"[{med[i]:.1f}, {med[i + 1]:.1f}]" for i in range(1, len(med) - 1, 2))
                + f" | return {med[-1]:.1f}",
                flush=True,
            )
