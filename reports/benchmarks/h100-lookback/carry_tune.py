"""GPU-alone times of the scan forward's two kernels, each alone, under launch variants (chunk T, maxnreg).
usage: carry_tune.py PKGROOT LENGTHS"""

import functools
import importlib
import math
import statistics
import sys

import torch

sys.path.insert(0, sys.argv[1])
tt = importlib.import_module("v_head.torch_triton")
sk = importlib.import_module("v_head.torch_scan_kernels")
launch = tt.launch
B, E, N = 8, 1536, 16


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


def gpu_ms(fn, k=20, reps=15):
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


F = tt.FORWARD
for L in [int(v) for v in sys.argv[2].split(",")]:
    for dtype in (torch.bfloat16, torch.float32):
        ins = inputs(L, dtype)
        x, dt, A, Bm, Cm, D, z, bias = ins
        NP, n_eb = 16, E // F.block_e
        n_chunks = math.ceil(L / F.chunk)
        S, SC = tt.segments(n_chunks, n_eb * B, F, x.device)
        ws = tt._scratch(S, B, NP, E, x.device)
        ref_ws = None
        line = [f"L={L:5d} {str(dtype)[6:]:8s} S={S} SC={SC}: forward() {gpu_ms(functools.partial(tt.forward, *ins)):.1f} us"]
        for T, reg in ((4, None), (4, 80), (4, 64), (2, None), (2, 64), (8, None), (8, 96)):
            if (SC * F.chunk) % T:
                continue
            meta = {"BLOCK_E": F.block_e, "NP": NP, "T": T, "EVEN": True, "num_warps": 1}
            if reg:
                meta["maxnreg"] = reg
            fn = functools.partial(
                launch(sk._state_carry_kernel, (n_eb, B, S - 1)),
                x, dt, Bm, A, bias, ws, L, E, N, SC * F.chunk // T, S, *A.stride(), *tt._bl(x), *tt._bl(dt), *tt._bl(Bm), **meta,
            )  # fmt: skip
            try:
                us = gpu_ms(fn)
                torch.cuda.synchronize()
                if ref_ws is None:
                    ref_ws = ws.clone()
                err = float((ws - ref_ws).abs().max())
                line.append(f"carry T{T} r{reg} {us:.1f} (diff {err:.0e})")
            except Exception as exc:
                line.append(f"carry T{T} r{reg} FAILED {type(exc).__name__}")
        last = torch.empty(B, N, E, device="cuda")
        out = torch.empty_like(x)
        for reg in (None, 96, 80):
            meta = {**tt._meta(F, L, E, N)}
            if reg:
                meta["maxnreg"] = reg
            fn = functools.partial(
                launch(sk._forward_kernel, (n_eb, B, S)),
                x, dt, z, Bm, Cm, A, D, bias, out, last, last, ws, last, L, E, N, SC, S, *A.stride(),
                *tt._bl(x), *tt._bl(dt), *tt._bl(z), *tt._bl(Bm), *tt._bl(Cm), *tt._bl(out),
                STATES_ONLY=False, KEEP_STARTS=False, FROM_STARTS=False, **meta,
            )  # fmt: skip
            try:
                line.append(f"fwd r{reg} {gpu_ms(fn):.1f}")
            except Exception as exc:
                line.append(f"fwd r{reg} FAILED {type(exc).__name__}")
        print(" | ".join(line), flush=True)
