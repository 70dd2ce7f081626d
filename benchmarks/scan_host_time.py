"""Where the Triton scan's host time goes at short lengths, with Triton's launch and with
torch_launch's direct one side by side (CUDA; --stub-kernels anywhere).

At L=512 the GPU finishes the scan's kernels sooner than Python launches them, so an eager call
runs at the host's speed. For each call this prints two figures per launch path:
  host   wall time per call with no synchronisation inside the loop: what the host spends
         (when it exceeds the GPU's time, it is the eager time)
  eager  median of CUDA-event timings around single calls (tune_triton_scan.median_ms)
for the forward, the backward, both called directly, both through autograd (as a user calls
the op, then with the backward on the calling thread instead of autograd's device thread), and
an autograd Function with the scan's eight inputs that does no work (the engine's own cost);
then when each launch happens within a call (host µs from the call: what precedes the first
launch delays the GPU's first work), a cProfile of the autograd call and torch.profiler's
CPU-side op table, and what single launches and allocations cost.

    python benchmarks/scan_host_time.py [--lengths 512,2048] [--no-profile]

--stub-kernels runs anywhere, a CPU included: every launch of the scan is replaced by a no-op, and
for each call it prints the host µs (best of 5 runs, one thread), the kernels it would launch and
the torch ops it dispatches, with the segments a GPU of --sms SMs would get (132: the H100). It
counts what the host does besides launching; it says nothing of the GPU, and the µs are this
machine's, not a GPU host's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
import triton
import triton.language as tl
from ssmbench.backends import torch_launch
from ssmbench.backends import torch_triton as tt
from tune_triton_scan import BATCH, E, N, inputs, median_ms


def host_us(fn, n=200) -> float:
    for _ in range(20):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    spent = (time.perf_counter() - t) / n * 1e6
    sync()
    return spent


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Idle(torch.autograd.Function):
    """The scan's inputs in, one output, empty gradients out: autograd's cost without the op's."""

    @staticmethod
    def forward(ctx, *ins):
        ctx.save_for_backward(*ins)
        return torch.empty_like(ins[0])

    @staticmethod
    def backward(ctx, g):
        return tuple(torch.empty_like(t) for t in ctx.saved_tensors)


def calls(L: int, dtype, device="cuda") -> dict:
    ins = inputs(BATCH, L, E, N, dtype, device=device)
    dout = torch.randn_like(ins[0])
    leaves = [t.detach().clone().requires_grad_() for t in ins]
    kept = tt.forward(*ins, keep_starts=True)[2]

    def direct():
        tt.backward(dout, *ins, starts=tt.forward(*ins, keep_starts=True)[2])

    def autograd():
        torch.autograd.grad(tt.selective_scan(*leaves)[0], leaves, dout)

    def one_thread():  # CUDA backwards run on autograd's device thread: what does the hand-over cost?
        with torch.autograd.set_multithreading_enabled(False):
            autograd()

    return {
        "forward()": lambda: tt.forward(*ins),
        "backward(starts)": lambda: tt.backward(dout, *ins, starts=kept),
        "forward + backward": direct,
        "autograd fwd+bwd": autograd,
        "autograd, one thread": one_thread,
        "autograd, idle Function": lambda: torch.autograd.grad(Idle.apply(*leaves), leaves, dout),
    }


def timeline(fn, n=500) -> str:
    """Host µs from the call to each of its launches, and to its return: medians of n calls, each
    followed by a synchronize (so the figures run higher than back to back)."""
    real, stamps = tt.launch_now, []

    def marked(kernel, grid, args, meta, sig=None):
        stamps.append((kernel.fn.__name__.strip("_").removesuffix("_kernel"), time.perf_counter()))
        real(kernel, grid, args, meta, sig)

    tt.launch_now = marked
    try:
        for _ in range(20):
            fn()
        sync()
        rows = []
        for _ in range(n):
            stamps.clear()
            t = time.perf_counter()
            fn()
            done = time.perf_counter()
            sync()
            rows.append([at - t for _, at in stamps] + [done - t])
        names = [name for name, _ in stamps] + ["return"]
    finally:
        tt.launch_now = real
    return ", ".join(f"{name} {statistics.median(r[i] for r in rows) * 1e6:.1f}" for i, name in enumerate(names))


def print_timelines(L: int, device: str) -> None:
    print(f"\nL={L} bfloat16: host µs from the call to each launch ({'direct launches' if device == 'cuda' else 'stubbed'})")
    for name, fn in calls(L, torch.bfloat16, device=device).items():
        if name in ("forward()", "autograd fwd+bwd"):
            print(f"{name:26s} {timeline(fn)}", flush=True)


def profile(fn) -> None:
    pr = cProfile.Profile()
    torch.autograd.set_multithreading_enabled(False)  # the backward on this thread, where cProfile sees it
    pr.enable()
    for _ in range(100):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    torch.autograd.set_multithreading_enabled(True)
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(30)
    print(out.getvalue()[:8000])
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


@triton.jit
def _copy30(
    src, dst, p2, p3, p4, p5, p6, p7, p8, p9, i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, j0, j1, j2, j3, j4, j5, j6, j7, j8, j9,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """30 arguments, as many as the scan's backward kernel takes; copies BLOCK floats."""
    i = tl.arange(0, BLOCK)
    tl.store(dst + i, tl.load(src + i))


def singles() -> None:
    a, b = torch.zeros(64, device="cuda"), torch.zeros(64, device="cuda")
    args = [a, b] + [a] * 8 + [3] * 20
    rows = {
        "launch, 30 args, Triton": lambda: _copy30[(1,)](*args, BLOCK=32),
        "launch, 30 args, direct": lambda: torch_launch.launch(_copy30, (1,))(*args, BLOCK=32),
        "torch.empty": lambda: torch.empty(8, 512, 1536, device=a.device),
        "A.t().contiguous()": lambda: torch.empty(1536, 16, device=a.device).t().contiguous(),
    }
    for name, fn in rows.items():
        print(f"{name:28s} {host_us(fn, 2000):7.1f} us host")


def stubbed(lengths: list[int], sms: int) -> None:
    """--stub-kernels: the host's own work per call, kernels not run (see the module docstring)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops[func.__name__] = ops.get(func.__name__, 0) + 1
            return func(*args, **(kwargs or {}))

    torch.set_num_threads(1)
    launched: list[str] = []
    tt.launch_now = lambda kernel, grid, args, meta, sig=None: launched.append(kernel.fn.__name__)
    tt._sm_count = lambda device: sms
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, kernels stubbed, segments as on {sms} SMs; host us on this machine")
    for L in lengths:
        print(f"\nL={L} bfloat16: host us | kernels launched | torch ops dispatched")
        for name, fn in calls(L, torch.bfloat16, device=device).items():
            us = min(host_us(fn, 300) for _ in range(5))
            launched.clear()
            ops: dict[str, int] = {}
            with Ops():
                fn()
            table = ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))
            print(f"{name:26s} {us:7.1f} | {len(launched)} | {sum(ops.values())}: {table}", flush=True)
    print_timelines(lengths[0], device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="512,2048")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--stub-kernels", action="store_true", help="no GPU needed: count the host's work, kernels not run")
    ap.add_argument("--sms", type=int, default=132, help="with --stub-kernels: the GPU whose segments to plan")
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    if args.stub_kernels:
        return stubbed(lengths, args.sms)
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton", triton.__version__)
    for L in lengths:
        for dtype in (torch.bfloat16, torch.float32):
            print(f"\nL={L} {str(dtype)[6:]}: host us / eager us, Triton's launch | direct launch")
            for name, fn in calls(L, dtype).items():
                line = f"{name:26s}"
                for direct in (False, True):
                    torch_launch.DIRECT = direct
                    line += f"  {host_us(fn):7.1f} / {median_ms(fn, reps=50) * 1e3:7.1f}"
                print(line, flush=True)
    torch_launch.DIRECT = True
    print_timelines(lengths[0], "cuda")
    if not args.no_profile:
        L = lengths[0]
        print(f"\nprofile: autograd fwd+bwd, L={L} bf16, direct launch")
        profile(calls(L, torch.bfloat16)["autograd fwd+bwd"])
    print()
    singles()


if __name__ == "__main__":
    main()
