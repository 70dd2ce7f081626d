"""On the GPU: the parts forward (forward_parts, from one of this folder's diffs) against the
segmented forward and mamba-ssm's selective_scan_cuda (where built and importable).

    GRID="BLOCK_E,P,Q,WARPS ..." python parts_bench.py PKGROOT LENGTHS REPS

PKGROOT holds v_new, a copy of backends/ with the diff applied, as a package.
1. GPU alone (a CUDA graph of 10 calls, replayed 15 times, median) for each tiling in GRID at each
   length, fp32 and bf16, with the relative error of out and the last state against the
   segmented forward.
2. Unless REPS is 0: in-process, interleaved sync-per-call and back-to-back times for the best
   tiling per (L, dtype), against the segmented forward and mamba-ssm (as ab_inproc.py in
   ../h100-scan-strides/)."""

import importlib
import os
import statistics
import sys

import torch

sys.path.insert(0, sys.argv[1])  # root holding v_new (copy of backends/)
tt = importlib.import_module("v_new.torch_triton")
try:
    import selective_scan_cuda as ssc
except ImportError:
    ssc = None
print("mamba-ssm:", ssc is not None, flush=True)
B, E, N = 8, 1536, 16
GRID = [tt.Parts(*map(int, t.split(","))) for t in os.environ["GRID"].split()]


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()  # noqa: E731
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


def mamba_fn(ins):
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, z))
    BB, CC = (t.transpose(1, 2).contiguous()[:, None] for t in (Bm, Cm))
    return lambda: ssc.fwd(u, delta, A, BB, CC, D, zz, bias, True)


def gpu_ms(fn, k=10, reps=15):
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
        ts.append(a.elapsed_time(b) / k)
    return statistics.median(ts)


def sync_ms(fn):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def b2b_ms(fn, k=20):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(k):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / k


lengths = [int(v) for v in sys.argv[2].split(",")]
best = {}
for L in lengths:
    for dtype in (torch.float32, torch.bfloat16):
        ins = inputs(L, dtype)
        ref = tt.forward(*ins)
        line = f"L={L:5d} {str(dtype)[6:]:8s} GPU-alone ms: segmented {gpu_ms(lambda ins=ins: tt.forward(*ins)):.4f}"
        if ssc is not None:
            line += f"  mamba-ssm {gpu_ms(mamba_fn(ins)):.4f}"
        print(line, flush=True)
        res = []
        for til in GRID:
            try:
                o, last, _ = tt.forward_parts(*ins, tiling=til)
                err = float((o.float() - ref[0].float()).norm() / ref[0].float().norm())
                errl = float((last - ref[1]).norm() / ref[1].norm())
                ms = gpu_ms(lambda ins=ins, til=til: tt.forward_parts(*ins, tiling=til))
                res.append((ms, til))
                print(f"   {til}  {ms:.4f} ms  rel err out {err:.1e} last {errl:.1e}", flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"   {til}  FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        best[(L, dtype)] = min(res, key=lambda r: r[0])[1]

reps = int(sys.argv[3])
if reps == 0:
    sys.exit(0)
for L in lengths:
    for dtype in (torch.float32, torch.bfloat16):
        ins = inputs(L, dtype)
        til = best[(L, dtype)]
        fns = {"segmented": lambda ins=ins: tt.forward(*ins), "parts": lambda ins=ins, til=til: tt.forward_parts(*ins, tiling=til)}
        if ssc is not None:
            fns["mamba-ssm"] = mamba_fn(ins)
        for fn in fns.values():
            for _ in range(5):
                fn()
        torch.cuda.synchronize()
        n = reps if L <= 1024 else max(30, reps // 8)
        res = {k: ([], []) for k in fns}
        names = list(fns)
        for i in range(n):
            order = names[i % len(names) :] + names[: i % len(names)]
            for k in order:
                res[k][0].append(sync_ms(fns[k]))
            if i % 5 == 0:
                for k in order:
                    res[k][1].append(b2b_ms(fns[k]))
        for k, (s, bb) in res.items():
            s = sorted(s)
            print(
                f"L={L:5d} {str(dtype)[6:]:8s} fwd {k:9s} sync median {statistics.median(s):.4f} [p25 {s[len(s) // 4]:.4f} "
                f"p75 {s[3 * len(s) // 4]:.4f}]  b2b median {statistics.median(bb):.4f} ms" + (f"  ({til})" if k == "parts" else ""),
                flush=True,
            )
