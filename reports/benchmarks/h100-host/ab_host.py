"""In-process, interleaved A/B of the selective scan as users call it: ssmbench's public
`selective_scan` with the compiled host path (torch_host) and with the Python path
(torch_host.ENABLED off for the call), against mamba-ssm's `selective_scan_fn` (its autograd
Function, imported from a checkout of state-spaces/mamba) and its raw op (selective_scan_cuda).

usage: ab_host.py MAMBA_PY LENGTHS REPS
fwd: the call on inputs that need no gradient; fwd+bwd: the call on inputs that do, then
torch.autograd.grad of out. mamba-ssm gets the (B, E, L) layout its module passes, made once
outside the timing. Timings as h100-driver/ab_public.py: warm (the same call just before,
synchronized), cold (L2 flushed), back to back (20 calls between two events), and host: the host
time of a call, 30 calls queued behind a 100 ms GPU sleep (so the GPU never waits for the host)."""

# ruff: noqa: B023, E501  (closures called within their loop iteration; report lines kept whole)

import statistics
import sys
import time
import types

import torch
from ssmbench.backends import torch_host
from ssmbench.backends import torch_triton as tt

mamba_py, lengths, reps = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], int(sys.argv[3])
pkg = types.ModuleType("mamba_ssm")  # the package without its __init__ (models, transformers)
pkg.__path__ = [f"{mamba_py}/mamba_ssm"]
sys.modules["mamba_ssm"] = pkg
import selective_scan_cuda as ssc  # noqa: E402
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: E402

B, E, N = 8, 1536, 16
t0 = time.perf_counter()
assert torch_host.available()
print(f"torch_host available after {time.perf_counter() - t0:.1f} s (built or loaded)", flush=True)
HOST_CALLS = {"n": 0}
_real = tt._host_scan


def _counting(*a):
    HOST_CALLS["n"] += 1
    return _real(*a)


tt._host_scan = _counting


def inputs(L, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()  # noqa: E731
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return [lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias]


def contenders(ins, dout, direction):
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, BB, CC, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, Bm, Cm, z))
    do = dout.transpose(1, 2).contiguous()
    grad = direction == "fwd+bwd"
    ours = [t.detach().clone().requires_grad_(grad) for t in ins]
    theirs = [t.detach().clone().requires_grad_(grad) for t in (u, delta, A, BB, CC, D, zz, bias)]

    def ours_host():
        out, _ = tt.selective_scan(*ours)
        if grad:
            torch.autograd.grad(out, ours, dout)
        return out

    def ours_python():
        torch_host.ENABLED = False
        try:
            return ours_host()
        finally:
            torch_host.ENABLED = True

    def mamba_public():
        uu, dd, AA, b3, c3, DD, z3, bb = theirs
        out, _ = selective_scan_fn(uu, dd, AA, b3, c3, DD, z3, bb, delta_softplus=True, return_last_state=True)
        if grad:
            torch.autograd.grad(out, theirs, do)
        return out

    b4, c4 = BB[:, None], CC[:, None]

    def mamba_raw():
        out, xs, out_z = ssc.fwd(u, delta, A, b4, c4, D, zz, bias, True)
        if grad:
            ssc.bwd(u, delta, A, b4, c4, D, zz, bias, do, xs, out, None, True, False)
        return out_z

    return {"ours host": ours_host, "ours python": ours_python, "mamba-ssm": mamba_public, "mamba raw": mamba_raw}


FLUSH = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")


def sync_ms(fn):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def warm_ms(fn):
    fn()
    torch.cuda.synchronize()
    return sync_ms(fn)


def cold_ms(fn):
    FLUSH.zero_()
    torch.cuda.synchronize()
    return sync_ms(fn)


def b2b_ms(fn, k=20):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(k):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / k


def host_us(fn, k=30):
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # about 100 ms at the H100's clock: the queue never drains
    t = time.perf_counter()
    for _ in range(k):
        fn()
    spent = time.perf_counter() - t
    torch.cuda.synchronize()
    return spent / k * 1e6


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]


print(torch.cuda.get_device_name(), torch.__version__, flush=True)
for L in lengths:
    for dtype in (torch.float32, torch.bfloat16):
        ins = inputs(L, dtype)
        dout = torch.randn(B, L, E, device="cuda").to(dtype)
        for direction in ("fwd", "fwd+bwd"):
            fns = contenders(ins, dout, direction)
            for fn in fns.values():
                for _ in range(6):  # compiled, learnt: the host path from the fifth call
                    fn()
            before = HOST_CALLS["n"]
            fns["ours host"]()
            assert HOST_CALLS["n"] == before + 1, "the host path did not run"
            if direction == "fwd":
                mine, py, theirs = fns["ours host"]().float(), fns["ours python"]().float(), fns["mamba-ssm"]().transpose(1, 2).float()
                print(
                    f"L={L} {dtype}: host == python bit for bit: {torch.equal(mine, py)}; |selective_scan_fn - ours| / |ours| = {float((theirs - mine).norm() / mine.norm()):.2e}"
                )
            torch.cuda.synchronize()
            n = reps if L <= 1024 else max(30, reps // 8)
            res = {k: ([], [], [], []) for k in fns}
            names = list(fns)
            for i in range(n):
                order = names[i % len(names) :] + names[: i % len(names)]
                for k in order:
                    res[k][0].append(warm_ms(fns[k]))
                for k in order:
                    res[k][1].append(cold_ms(fns[k]))
                if i % 5 == 0:
                    for k in order:
                        res[k][2].append(b2b_ms(fns[k]))
                if i % 10 == 0 and L <= 2048:
                    for k in order:
                        res[k][3].append(host_us(fns[k]))
            for k, (w, c, bb, h) in res.items():
                spread = lambda v: f"{statistics.median(v):.4f} [{q(v, 0.25):.4f}, {q(v, 0.75):.4f}]"  # noqa: E731
                host = f"   host {statistics.median(h):6.1f} us" if h else ""
                print(
                    f"L={L:5d} {str(dtype)[6:]:8s} {direction:7s} {k:11s} warm {spread(w)} cold {spread(c)} ms   back-to-back {statistics.median(bb):.4f} ms{host}",
                    flush=True,
                )
