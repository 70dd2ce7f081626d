"""GPU-alone (and synchronized) time of the triton scan against the segment count S, forward and backward apart.
usage: seg_sweep.py LENGTHS SYNC_REPS"""

import dataclasses
import functools
import math
import statistics
import sys

import torch
from ssmbench.backends import torch_triton as tt

B, E, N = 8, 1536, 16
lengths, sync_reps = [int(v) for v in sys.argv[1].split(",")], int(sys.argv[2])
orig = tt.segments
force = {}  # id(tiling) -> S


def seg(n_chunks, programs, tiling, device):
    S = force.get(id(tiling))
    if S is None:
        return orig(n_chunks, programs, tiling, device)
    per = math.ceil(n_chunks / min(S, n_chunks))
    return math.ceil(n_chunks / per), per


tt.segments = seg


def setS(fwd=None, bwd=None):
    force.clear()
    if fwd:
        force[id(tt.FORWARD)] = fwd
    if bwd:
        force[id(tt.BACKWARD)] = bwd
    tt._plans.clear()


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


def sync_us(fn):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3


def fb(ins, dout):
    kept = tt.forward(*ins, keep_starts=True)[2]
    tt.backward(dout, *ins, starts=kept)


print(torch.cuda.get_device_name(), flush=True)
CANDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 22, 26, 32, 43, 64]
for L in lengths:
    for dtype in (torch.bfloat16, torch.float32):
        ins = inputs(L, dtype)
        dout = torch.randn(B, L, E, device="cuda").to(dtype)
        setS()
        ref = tt.forward(*ins)[0].float()
        n_f, n_b = math.ceil(L / tt.FORWARD.chunk), math.ceil(L / tt.BACKWARD.chunk)
        line = []
        seen = set()
        for S in CANDS:
            setS(fwd=S)
            Sr, SC = tt.segments(n_f, 384, tt.FORWARD, ins[0].device)
            if Sr in seen:
                continue
            seen.add(Sr)
            err = float((tt.forward(*ins)[0].float() - ref).norm() / ref.norm())
            assert err < 1e-2, err
            line.append(f"{Sr}:{gpu_us(functools.partial(tt.forward, *ins)):.1f}")
        print(
            f"L={L:5d} {str(dtype)[6:]:8s} fwd  GPU-alone us by S_fwd (default {orig(n_f, 384, tt.FORWARD, ins[0].device)[0]}): "
            + " ".join(line),
            flush=True,
        )
        line, seen = [], set()
        for S in CANDS:
            setS(bwd=S)
            Sr, SC = tt.segments(n_b, 384, tt.BACKWARD, ins[0].device)
            if Sr in seen:
                continue
            seen.add(Sr)
            line.append(f"{Sr}:{gpu_us(functools.partial(fb, ins, dout)):.1f}")
        print(f"L={L:5d} {str(dtype)[6:]:8s} f+b  GPU-alone us by S_bwd (S_fwd default): " + " ".join(line), flush=True)
        if sync_reps and L <= 1024:
            picks = [4, 5, 6, 7, 8, 11]
            setS()
            tiles = {S: dataclasses.replace(tt.FORWARD) for S in picks}  # one plan each: keyed by the tiling's id
            for S, t in tiles.items():
                force[id(t)] = S
            fns = {S: functools.partial(tt.forward, *ins, tiling=t) for S, t in tiles.items()}
            res = {S: [] for S in picks}
            for fn in fns.values():
                for _ in range(5):
                    fn()
            for i in range(sync_reps):
                for S in picks[i % len(picks) :] + picks[: i % len(picks)]:
                    res[S].append(sync_us(fns[S]))
            print(
                f"L={L:5d} {str(dtype)[6:]:8s} fwd  sync median us by S_fwd: "
                + " ".join(f"{S}:{statistics.median(v):.1f}" for S, v in res.items()),
                flush=True,
            )
