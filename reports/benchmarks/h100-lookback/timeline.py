"""GPU timeline of sync-mode calls (torch.profiler / CUPTI): where the time between a call's start and its
last kernel's end goes, ours (v_head package) against mamba-ssm.  usage: timeline.py PKGROOT LENGTHS"""

import functools
import importlib
import json
import statistics
import sys
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, sys.argv[1])
tt = importlib.import_module("v_head.torch_triton")
import selective_scan_cuda as ssc  # noqa: E402

B, E, N = 8, 1536, 16


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


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


def med(v):
    return statistics.median(v) if v else float("nan")


for L in [int(v) for v in sys.argv[2].split(",")]:
    for dtype in (torch.bfloat16, torch.float32):
        ins = inputs(L, dtype)
        fns = {"ours": functools.partial(tt.forward, *ins), "mamba-ssm": mamba_fns(ins)}
        for name, fn in fns.items():
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            for mode in ("sync", "b2b"):
                evs = []
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for i in range(40):
                        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        a.record()
                        with record_function(f"call{i}"):
                            fn()
                        b.record()
                        if mode == "sync":
                            b.synchronize()
                        evs.append((a, b))
                    torch.cuda.synchronize()
                ev_ms = [a.elapsed_time(b) for a, b in evs]
                with tempfile.NamedTemporaryFile(suffix=".json") as f:
                    prof.export_chrome_trace(f.name)
                    trace = json.load(open(f.name))["traceEvents"]
                calls = sorted(
                    (e for e in trace if e.get("name", "").startswith("call") and e.get("cat") == "user_annotation"), key=lambda e: e["ts"]
                )
                kernels = sorted((e for e in trace if e.get("cat") == "kernel"), key=lambda e: e["ts"])
                launches = sorted(
                    (e for e in trace if e.get("cat") in ("cuda_runtime", "cuda_driver") and "aunch" in e.get("name", "")),
                    key=lambda e: e["ts"],
                )
                first, last, durs, gaps, host, lts = [], [], {}, [], [], []
                for ci, c in enumerate(calls[5:], 5):
                    t0, t1 = c["ts"], (calls[ci + 1]["ts"] if ci + 1 < len(calls) else 1e30)
                    ks = [k for k in kernels if t0 <= k["ts"] < t1 and "memset" not in k["name"].lower()]
                    ls = [ev for ev in launches if t0 <= ev["ts"] < t0 + c["dur"]]
                    if not ks:
                        continue
                    first.append(ks[0]["ts"] - t0)
                    last.append(ks[-1]["ts"] + ks[-1]["dur"] - t0)
                    host.append(c["dur"])
                    lts.append([round(ev["ts"] - t0, 1) for ev in ls])
                    for k in ks:
                        durs.setdefault(k["name"][:40], []).append(k["dur"])
                    gaps += [ks[j + 1]["ts"] - (ks[j]["ts"] + ks[j]["dur"]) for j in range(len(ks) - 1)]
                kd = "  ".join(f"{n} {med(v):.1f}" for n, v in durs.items())
                print(
                    f"L={L:5d} {str(dtype)[6:]:8s} {name:9s} {mode:4s}: events {med(ev_ms[5:]) * 1e3:.1f} us | host call {med(host):.1f} | "
                    f"launches at {lts[len(lts) // 2] if lts else []} | first kernel at {med(first):.1f}, last ends {med(last):.1f} | "
                    f"gaps {med(gaps):.1f} | kernels {kd}",
                    flush=True,
                )
