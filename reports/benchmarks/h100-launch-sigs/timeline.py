"""CUPTI timeline of synchronized scan calls, versions side by side (and mamba-ssm's kernel where
selective_scan_cuda imports): when each launch happens in the call, when the GPU's first kernel
starts, kernel times and the gaps between them, and the host's own µs per call unsynchronized.

usage: timeline.py PKGROOT LENGTHS [VERSIONS]   (PKGROOT holds packages v_<version>: copies of
backends/; VERSIONS defaults to head,new). bf16, B 8, E 1536, N 16; forward and forward+backward
called directly (no autograd), as ../h100-scan-strides/ab_inproc.py calls them.
"""

import functools
import importlib
import json
import statistics
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, sys.argv[1])
names = sys.argv[3].split(",") if len(sys.argv) > 3 else ["head", "new"]
versions = {n: importlib.import_module(f"v_{n}.torch_triton") for n in names}
try:
    import selective_scan_cuda as ssc
except ImportError:
    ssc = None
B, E, N = 8, 1536, 16


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=g) * scale + shift).cuda()

    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    return x.to(dtype), dt.to(dtype), A, Bm.to(dtype), Cm.to(dtype), D, z.to(dtype), bias


def ours(tt, ins, dout, direction):
    if direction == "fwd":
        return functools.partial(tt.forward, *ins)

    def fwd_bwd():
        kept = tt.forward(*ins, keep_starts=True)[2]
        tt.backward(dout, *ins, starts=kept)

    return fwd_bwd


def mamba(ins, dout, direction):
    """mamba-ssm's calls in its (B, E, L) layout, inputs made contiguous once, outside the timing."""
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, z))
    BB, CC = (t.transpose(1, 2).contiguous()[:, None] for t in (Bm, Cm))
    do = dout.transpose(1, 2).contiguous()
    fwd = functools.partial(ssc.fwd, u, delta, A, BB, CC, D, zz, bias, True)
    if direction == "fwd":
        return fwd

    def fwd_bwd():
        out, xs, _ = fwd()
        ssc.bwd(u, delta, A, BB, CC, D, zz, bias, do, xs, out, None, True, False)

    return fwd_bwd


def med(v):
    return statistics.median(v) if v else float("nan")


def host_us(fn, n=100):
    """Host µs per call, n calls back to back without synchronizing."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    spent = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return spent


def trace_of(fn, calls=30):
    """(CUDA-event ms of each synchronized call, the profiler's trace events)."""
    evs = []
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            with record_function(f"call{i}"):
                fn()
            b.record()
            b.synchronize()
            evs.append((a, b))
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        with open(f.name) as fh:
            trace = json.load(fh)["traceEvents"]
    return [a.elapsed_time(b) for a, b in evs], trace


def report(name, direction, L, hu, ev_ms, trace):
    def by_ts(pred):
        return sorted((e for e in trace if pred(e)), key=lambda e: e["ts"])

    calls = by_ts(lambda e: e.get("name", "").startswith("call") and e.get("cat") == "user_annotation")
    kernels = by_ts(lambda e: e.get("cat") == "kernel")
    launches = by_ts(lambda e: e.get("cat") in ("cuda_runtime", "cuda_driver") and "aunch" in e.get("name", ""))
    first, last, durs, gaps, host, at, each = [], [], {}, [], [], [], []
    for ci, c in enumerate(calls[5:], 5):  # the first five are warm-ups
        t0, t1 = c["ts"], (calls[ci + 1]["ts"] if ci + 1 < len(calls) else 1e30)
        ks = [k for k in kernels if t0 <= k["ts"] < t1]
        ls = [ev for ev in launches if t0 <= ev["ts"] < t0 + c["dur"]]
        if not ks:
            continue
        first.append(ks[0]["ts"] - t0)
        last.append(ks[-1]["ts"] + ks[-1]["dur"] - t0)
        host.append(c["dur"])
        at.append([round(ev["ts"] - t0, 1) for ev in ls])
        each.append([round(ev["dur"], 1) for ev in ls])
        for k in ks:
            durs.setdefault(k["name"][:30], []).append(k["dur"])
        gaps.append([round(ks[j + 1]["ts"] - (ks[j]["ts"] + ks[j]["dur"]), 1) for j in range(len(ks) - 1)])
    m = len(at) // 2  # one call's launches and gaps, the middle one
    kd = "  ".join(f"{n} {med(v):.1f}" for n, v in durs.items())
    unsynced = ", ".join(f"{h:.1f}" for h in hu)
    print(
        f"L={L:5d} bf16 {direction:7s} {name:9s}: sync events median {med(ev_ms[5:]) * 1e3:.1f} us "
        f"(unprofiled host/call no sync: {unsynced} us)\n"
        f"    profiled: host call {med(host):.1f} | launches at {at[m] if at else []} (each {each[m] if each else []}) "
        f"| first kernel at {med(first):.1f}, last ends {med(last):.1f}\n"
        f"    gaps {gaps[m] if gaps else []} | kernels {kd}",
        flush=True,
    )


for L in [int(v) for v in sys.argv[2].split(",")]:
    ins = inputs(L, torch.bfloat16)
    dout = torch.randn(B, L, E, device="cuda").to(torch.bfloat16)
    for direction in ("fwd", "fwd+bwd"):
        fns = {n: ours(tt, ins, dout, direction) for n, tt in versions.items()}
        if ssc is not None:
            fns["mamba-ssm"] = mamba(ins, dout, direction)
        for name, fn in fns.items():
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            hu = [host_us(fn) for _ in range(3)]
            report(name, direction, L, hu, *trace_of(fn))
