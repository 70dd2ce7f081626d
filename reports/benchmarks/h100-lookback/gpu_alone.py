"""GPU-alone (CUDA graph of 10 calls, 15 replays, median per call) fwd and fwd+bwd: v_new, v_head, mamba-ssm.
usage: gpu_alone.py PKGROOT LENGTHS"""

import functools
import importlib
import statistics
import sys

import torch

sys.path.insert(0, sys.argv[1])
V = {n[2:]: importlib.import_module(f"{n}.torch_triton") for n in ("v_new", "v_head")}
try:
    import selective_scan_cuda as ssc
except ImportError:
    ssc = None
B, E, N = 8, 1536, 16


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


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


def fwd_bwd(tt, ins, dout):
    kept = tt.forward(*ins, keep_starts=True)[2]
    tt.backward(dout, *ins, starts=kept)


def mamba_fns(ins, dout=None):
    """mamba-ssm's forward, and its fwd+bwd where dout is given, on ins in its (B, E, L) layout
    (made contiguous once, outside the timing)."""
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, z))
    BB, CC = (t.transpose(1, 2).contiguous()[:, None] for t in (Bm, Cm))
    fwd = functools.partial(ssc.fwd, u, delta, A, BB, CC, D, zz, bias, True)
    if dout is None:
        return fwd
    do = dout.transpose(1, 2).contiguous()

    def fwd_bwd():
        out, xs, out_z = fwd()
        ssc.bwd(u, delta, A, BB, CC, D, zz, bias, do, xs, out, None, True, False)

    return fwd, fwd_bwd


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


for L in [int(v) for v in sys.argv[2].split(",")]:
    for dtype in (torch.float32, torch.bfloat16):
        ins = inputs(L, dtype)
        dout = torch.randn(B, L, E, device="cuda").to(dtype)
        res = {}
        outs = {}
        for name, tt in V.items():
            o, last, kept = tt.forward(*ins, keep_starts=True)
            grads = tt.backward(dout, *ins, starts=kept)
            outs[name] = (o, last, *grads)
            res[name] = (gpu_ms(functools.partial(tt.forward, *ins)), gpu_ms(functools.partial(fwd_bwd, tt, ins, dout)))
        # determinism and agreement: the new kernels against HEAD's, and the new ones run twice
        again = V["new"].forward(*ins, keep_starts=True)
        again = (again[0], again[1], *V["new"].backward(dout, *ins, starts=again[2]))
        diff = max(rel(a, b) for a, b in zip(outs["new"], outs["head"]))
        same = all(torch.equal(a, b) for a, b in zip(outs["new"], again))
        if ssc is not None:
            res["mamba-ssm"] = tuple(gpu_ms(fn) for fn in mamba_fns(ins, dout))
        line = "  ".join(f"{k} {f:.4f}/{fb:.4f}" for k, (f, fb) in res.items())
        print(
            f"L={L:5d} {str(dtype)[6:]:8s} GPU-alone fwd/fwd+bwd ms: {line}   max rel new-head {diff:.1e}  rerun bitwise equal {same}",
            flush=True,
        )
