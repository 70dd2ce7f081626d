"""Choose the Triton scan's tilings on a CUDA GPU (the result is backends/torch/triton/scan.py's
FORWARD and BACKWARD): every candidate is timed at the issue's shape (batch 8, d_inner 1536,
d_state 16) for fp32 and bf16 inputs, and the best pair is checked against the float64 reference.

    python tools/tune_triton_scan.py [--lengths 512,2048,8192] [--quick | --defaults] [--profile]

Prints one line per (direction, dtype, L, tiling) with the median ms over CUDA events (and in
brackets the GPU alone, calls replayed from a CUDA graph) and the
multiple of the memory floor (the bytes the op must move / 3.0 TB/s, the H100's measured copy
bandwidth), then the best tiling per direction by the GPU-alone time (a model's train step
runs as one CUDA graph; at short L the eager time is mostly the host's, and noisy).
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
from ssmbench.backends.torch.triton import scan as tt

BATCH, E, N = 8, 1536, 16
COPY_BW = 3.0e12  # bytes/s, the lent H100's device-to-device copy (both directions counted)


def inputs(Bt, L, E, N, dtype, device="cuda", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift).to(device)

    x, dt, z = r(Bt, L, E), r(Bt, L, E, scale=0.5, shift=-1.0), r(Bt, L, E)
    A = -torch.exp(r(E, N, scale=0.5))
    Bm, Cm, D, bias = r(Bt, L, N), r(Bt, L, N), r(E), r(E, scale=0.5)
    lo = lambda t: t.to(dtype)  # noqa: E731
    return lo(x), lo(dt), A.float(), lo(Bm), lo(Cm), D.float(), lo(z), bias.float()


def reference(x, dt, A, Bm, Cm, D, z, bias):
    """float64, sequential, with autograd."""
    delta = torch.nn.functional.softplus(dt + bias)
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append(torch.einsum("ben,bn->be", h, Cm[:, t]))
    return (torch.stack(ys, 1) + D * x) * torch.nn.functional.silu(z)


def rel(a, b):
    return float((a.double() - b).norm() / b.norm())


def check(tiling_f, tiling_b, shape=(2, 67, 40, 16)):
    """Worst relative error of out and every gradient vs float64, fp32 inputs."""
    ins64 = [t.double().cpu().requires_grad_() for t in inputs(*shape, torch.float64, device="cpu", seed=1)]
    w = torch.randn(shape[0], shape[1], shape[2], dtype=torch.float64)
    out64 = reference(*ins64)
    (out64 * w).sum().backward()
    ins = [t.detach().float().cuda() for t in ins64]
    out_inf, _, _ = tt.forward(*ins, tiling=tiling_f)
    out, _, kept = tt.forward(*ins, keep_starts=True)  # what autograd runs, as op() times it
    grads = tt.backward((w.float().cuda()), *ins, starts=kept, tiling=tiling_b)
    errs = [rel(out.cpu(), out64.detach()), rel(out_inf.cpu(), out64.detach())]
    errs += [rel(gr.cpu(), t.grad) for gr, t in zip(grads, ins64)]
    return max(errs)


def median_ms(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def graph_ms(fn, reps=20):
    """GPU time alone: ``reps`` calls captured in one CUDA graph, median of 10 replays / reps.
    Against median_ms (eager), the difference is what the host adds (Python, launches)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return median_ms(graph.replay, reps=10, warmup=2) / reps


def profile(ins, dout, tiling):
    """Each kernel's share of one forward + backward (torch.profiler, CUDA time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    fn = op("fwd+bwd", ins, dout, tiling)
    fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14))


def op(direction, ins, dout, tiling):
    """The timed call: the forward alone, or what autograd runs: the forward (FORWARD's tiling,
    keeping its segments' start states) + the backward, which recomputes the chunk states at its
    own tiling."""
    if direction == "fwd":
        return lambda: tt.forward(*ins, tiling=tiling)
    if direction == "autograd":  # as a user calls it: selective_scan, then autograd's backward
        leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in ins]

        def through_autograd():
            torch.autograd.grad(tt.selective_scan(*leaves)[0], leaves, dout)

        return through_autograd

    def fwd_bwd():
        kept = tt.forward(*ins, keep_starts=True)[2]
        tt.backward(dout, *ins, starts=kept, tiling=tiling)

    return fwd_bwd


def floor_ms(L, dtype, direction):
    es = torch.empty((), dtype=dtype).element_size()
    ble, bln = BATCH * L * E, BATCH * L * N
    elems = 4 * ble + 2 * bln if direction == "fwd" else 11 * ble + 6 * bln
    return elems * es / COPY_BW * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="2048")
    ap.add_argument("--quick", action="store_true", help="a handful of tilings")
    ap.add_argument("--tune-at", type=int, default=2048)
    ap.add_argument("--defaults", action="store_true", help="time scan.py's FORWARD and BACKWARD only")
    ap.add_argument("--profile", action="store_true", help="each kernel's CUDA time at --tune-at")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, "triton", tt.triton.__version__)
    grids = {  # (block_e, chunk, warps, per_sm): per_sm 0 runs one program per (sequence, channel block)
        "fwd": [
            tt.Tiling(*c)
            for c in (
                (32, 8, 1, 0),
                (32, 8, 1, 16),
                (32, 8, 1, 32),
                (32, 8, 1, 64),
                (32, 4, 1, 32),
                (32, 4, 1, 64),
                (64, 8, 1, 16),
                (64, 8, 1, 32),
                (64, 8, 1, 64),
                (64, 4, 1, 32),
                (64, 4, 1, 64),
                (64, 8, 2, 32),
            )
        ],
        "fwd+bwd": [
            tt.Tiling(*c)
            for c in (
                (32, 4, 1, 0),
                (32, 4, 1, 32),
                (32, 4, 1, 64),
                (32, 2, 1, 32),
                (32, 2, 1, 64),
                (64, 2, 1, 32),
                (64, 2, 1, 64),
                (64, 4, 1, 32),
            )
        ],
    }
    if args.quick:
        grids = {k: v[:2] for k, v in grids.items()}
    if args.defaults:
        grids = {"fwd": [tt.FORWARD], "fwd+bwd": [tt.BACKWARD]}
    best = {}
    for direction, dtype in itertools.product(("fwd", "fwd+bwd"), (torch.float32, torch.bfloat16)):
        L = args.tune_at
        ins = inputs(BATCH, L, E, N, dtype)
        dout = torch.randn_like(ins[0])
        results = []
        for tiling in grids[direction]:
            try:
                fn = op(direction, ins, dout, tiling)
                ms, gpu = median_ms(fn), graph_ms(fn)
            except Exception as exc:  # a tiling that does not compile (registers, shared memory)
                print(f"{direction:8s} {str(dtype)[6:]:9s} L={L:5d} {tiling} failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            results.append((gpu, tiling))  # ranked by the GPU alone: at short L eager is mostly host noise
            mult = ms / floor_ms(L, dtype, direction)
            print(f"{direction:8s} {str(dtype)[6:]:9s} L={L:5d} {tiling}  {ms:8.3f} ms  {mult:5.1f}x floor  [{gpu:7.3f}]", flush=True)
        results.sort(key=lambda r: r[0])
        best[(direction, dtype)] = results[0][1]
    print("\nbest:")
    for (direction, dtype), tiling in best.items():
        print(f"  {direction:8s} {str(dtype)[6:]:9s} {tiling}")
    tf, tb = best[("fwd", torch.float32)], best[("fwd+bwd", torch.float32)]
    print(f"max relative error vs float64 (fp32, best tilings): {check(tf, tb):.2e}")
    if args.profile:
        for dtype in (torch.float32, torch.bfloat16):
            ins = inputs(BATCH, args.tune_at, E, N, dtype)
            print(f"profile, {str(dtype)[6:]}, L={args.tune_at}")
            profile(ins, torch.randn_like(ins[0]), best[("fwd+bwd", dtype)])
    print("\nL, dtype, fwd ms, fwd+bwd ms (eager, CUDA events), floor multiples; [GPU alone, in a CUDA graph];")
    print("then fwd+bwd through autograd (selective_scan and torch.autograd.grad, as a user calls it), eager")
    for L in [int(v) for v in args.lengths.split(",")]:
        for dtype in (torch.float32, torch.bfloat16):
            ins = inputs(BATCH, L, E, N, dtype)
            dout = torch.randn_like(ins[0])
            fwd, fb = op("fwd", ins, dout, best[("fwd", dtype)]), op("fwd+bwd", ins, dout, best[("fwd+bwd", dtype)])
            f, b = median_ms(fwd), median_ms(fb)
            name = str(dtype)[6:]
            print(f"L={L:5d} {name:9s} fwd {f:7.3f} ms ({f / floor_ms(L, dtype, 'fwd'):4.1f}x) [{graph_ms(fwd):7.3f}]", end="")
            print(f"  fwd+bwd {b:7.3f} ms ({b / floor_ms(L, dtype, 'fwd+bwd'):4.1f}x) [{graph_ms(fb):7.3f}]", end="")
            print(f"  autograd {median_ms(op('autograd', ins, dout, None)):7.3f} ms", flush=True)


if __name__ == "__main__":
    main()
