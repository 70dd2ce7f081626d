"""The warm 512 forward's host time before its first launch, in a real synchronized call (not a
hot loop): stamped steps of the current path, and a floor: the leanest Python forward (one layout
lookup, the plans' driver launches called straight, no hook or knob checks). usage: cold.py PKGROOT REPS"""

# ruff: noqa: B023, E501  (closures called within their loop iteration; report lines kept whole)

import statistics
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
reps = int(sys.argv[2])
import selective_scan_cuda as ssc  # noqa: E402
from v_new import torch_launch as tl  # noqa: E402
from v_new import torch_scan_kernels as sk  # noqa: E402
from v_new import torch_triton as tt  # noqa: E402

B, L, E, N = 8, 512, 1536, 16
ns = time.perf_counter_ns
S = []


def inputs(dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    r = lambda *s, scale=1.0, shift=0.0: (torch.randn(*s, generator=g) * scale + shift).cuda()  # noqa: E731
    x, dt, z = r(B, L, E), r(B, L, E, scale=0.5, shift=-1.0), r(B, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(B, L, N), r(B, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return lo(x), lo(dt), A, lo(Bm), lo(Cm), D, lo(z), bias


def stamped(x, dt, A, Bm, Cm, D, z, dt_bias):
    """tt.forward's steps to the carry kernel's launch, stamped (inference: no states kept)."""
    S.append(ns())
    ins, layout = tt._prepared(x, dt, A, Bm, Cm, D, z, dt_bias)
    S.append(ns())
    p = tt._plans.get(("forward", layout, id(tt.FORWARD), False, False, None))
    S.append(ns())
    ws = torch.empty(p.scratch, device=x.device, dtype=torch.float32)
    S.append(ns())
    launcher = tl._launchers[sk._state_carry_kernel]
    rt = tl.triton.knobs.runtime
    hooked = tl._hooked(rt.launch_enter_hook) or tl._hooked(rt.launch_exit_hook)
    assert not (not (tl.DIRECT and launcher.direct) or rt.interpret or hooked or launcher.kernel.pre_run_hooks)
    device = torch.cuda.current_device()
    sig = (p, device, rt.debug, tl.triton.knobs.compilation.instrumentation_mode)
    signed = launcher._sigs.get(sig)
    driver = signed[-1]
    S.append(ns())
    args = (x, dt, Bm, A, dt_bias, ws, *p.carry[1])
    with driver.lock:
        driver.load(args)
        stream = torch._C._cuda_getCurrentRawStream(device)
        S.append(ns())
        status = driver.launch((*p.carry[0], 1, 1)[:3], stream)
    S.append(ns())
    assert status == 0
    last = torch.empty(p.last, device=x.device, dtype=torch.float32)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    tl.launch_now(sk._forward_kernel, p.grid, (x, dt, z, Bm, Cm, A, D, dt_bias, out, last, last, ws, last, *p.ints), p.kw, p)
    S.append(ns())
    return out, last.transpose(1, 2), None


LEAN = {}


def lean(x, dt, A, Bm, Cm, D, z, dt_bias):
    """The floor: one layout lookup, the two driver launches called straight."""
    S.append(ns())
    p, cd, fd, cgrid, fgrid, cints, fints = LEAN[tt._layout(x, dt, A, Bm, Cm, D, z, dt_bias)]
    stream = torch._C._cuda_getCurrentRawStream(torch._C._cuda_getDevice())
    ws = torch.empty(p.scratch, device=x.device, dtype=torch.float32)
    cd.load((x, dt, Bm, A, dt_bias, ws))
    cd.launch(cgrid, stream)
    S.append(ns())
    last = torch.empty(p.last, device=x.device, dtype=torch.float32)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    fd.load((x, dt, z, Bm, Cm, A, D, dt_bias, out, last, last, ws, last))
    fd.launch(fgrid, stream)
    S.append(ns())
    return out, last.transpose(1, 2), None


print(torch.cuda.get_device_name(), flush=True)
for dtype in (torch.bfloat16, torch.float32):
    ins = inputs(dtype)
    for _ in range(5):
        tt.forward(*ins)
    torch.cuda.synchronize()
    p = next(v for k, v in tt._plans.items() if k[0] == "forward" and k[1][3] == dtype and not k[3] and not k[4])
    drv = lambda kernel: next(v for k, v in tl._launchers[kernel]._sigs.items() if k[0] is p)[-1]  # noqa: E731
    LEAN[tt._layout(*ins)] = (p, drv(sk._state_carry_kernel), drv(sk._forward_kernel), (*p.carry[0], 1, 1)[:3], p.grid, p.carry[1], p.ints)
    ref = tt.forward(*ins)[0]
    for f in (stamped, lean):
        assert torch.equal(f(*ins)[0], ref), f.__name__
    x, dt, A, Bm, Cm, D, z, bias = ins
    u, delta, zz = (t.transpose(1, 2).contiguous() for t in (x, dt, z))
    BB, CC = (t.transpose(1, 2).contiguous()[:, None] for t in (Bm, Cm))

    def mamba():
        S.append(ns())
        r = ssc.fwd(u, delta, A, BB, CC, D, zz, bias, True)
        S.append(ns())
        return r

    fns = {"forward": lambda: tt.forward(*ins), "stamped": lambda: stamped(*ins), "lean": lambda: lean(*ins), "mamba-ssm": mamba}
    res = {k: ([], []) for k in fns}
    names = list(fns)
    for i in range(reps):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            fns[k]()
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            S.clear()
            a.record()
            t0 = ns()
            fns[k]()
            b.record()
            b.synchronize()
            res[k][0].append(a.elapsed_time(b) * 1e3)
            res[k][1].append([(s - t0) / 1e3 for s in S])
    for k, (ev, st) in res.items():
        cols = [statistics.median(c) for c in zip(*st)] if st and st[0] else []
        print(
            f"{str(dtype)[6:]:8s} {k:10s} warm {statistics.median(ev):6.1f} us | host stamps from call "
            + " ".join(f"{c:5.1f}" for c in cols),
            flush=True,
        )
print("stamped: enter | _prepared | plan | empty(ws) | launch checks | load | driver launch | second launch done")
print("lean: enter | carry launched | forward launched;  mamba-ssm: enter | return")
