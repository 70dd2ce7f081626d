"""A/B of the scan suite's ops between two installs of ssmbench, eager and replayed from a CUDA
graph, on a CUDA GPU. It uses only what every version has (the registry's torch-cuda backend and
its ``op_step``), so it times an old commit and the current one alike:

    PYTHONPATH=/tmp/base python tools/scan_ab.py --label base >> ab.jsonl
    PYTHONPATH=/tmp/new  python tools/scan_ab.py --label new  >> ab.jsonl   (alternate, twice)
    python tools/scan_ab.py --compare ab.jsonl

Each point is the scan suite's: the op alone at mamba-130m's shape (batch 8, d_inner 1536,
d_state 16; attention 12 heads of 64) for each length, forward and train (forward + backward),
fp32 and bf16. Eager: every call synchronised, as the suite times it (the host's launch costs
included). Graph: one call captured in a CUDA graph and replayed, each replay synchronised (the
GPU's time alone). Medians over at least MIN_CALLS calls and MIN_TIME seconds. Attention's code
is the same in both, so its ratio shows what the machine and the process add by themselves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

LENGTHS = (512, 1024, 2048, 4096, 8192)
BATCH, E, N, HEADS, HD = 8, 1536, 16, 12, 64
MIN_CALLS, MIN_TIME = 30, 0.3


def scan_inputs(L: int, seed: int = 0) -> dict:
    """The scan suite's inputs (ssmbench.archs.mamba.op_inputs' distributions)."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape, dtype=np.float32) * scale + shift).astype(np.float32)

    x, dt = r(BATCH, L, E), r(BATCH, L, E, scale=0.5, shift=-1.0)
    A, Bm, Cm, D, z, bias = -np.exp(r(E, N, scale=0.5)), r(BATCH, L, N), r(BATCH, L, N), r(E), r(BATCH, L, E), r(E, scale=0.5)
    return {"x": x, "dt": dt, "A": A, "Bm": Bm, "Cm": Cm, "D": D, "z": z, "dt_bias": bias, "dout": r(BATCH, L, E)}


def attention_inputs(L: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((BATCH, HEADS, L, HD), dtype=np.float32) for k in ("q", "k", "v", "dout")}


def median_ms(fn, sync, min_time: float = MIN_TIME) -> float:
    for _ in range(3):
        fn()
    sync()
    samples, start = [], time.perf_counter()
    while len(samples) < MIN_CALLS or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def back_to_back_ms(replay, calls: int = 200) -> float:
    """The GPU's time per replay with ``calls`` replays queued back to back between two CUDA
    events (no host synchronisation between them): the kernels' time alone."""
    import torch

    replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def graphed(fn):
    """``fn`` captured once in a CUDA graph (after warm-up on a side stream): its replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure(label: str, min_time: float = MIN_TIME, dtypes=("float32", "bfloat16"), lengths=LENGTHS, ops=("triton", "attention")) -> None:
    import torch

    import ssmbench
    from ssmbench import backends

    be = backends.get("torch-cuda")
    sync = torch.cuda.synchronize
    for dtype in dtypes:
        for L in lengths:
            for arch, scan, ins in (("mamba", "triton", scan_inputs(L)), ("transformer", "attention", attention_inputs(L))):
                if scan not in ops:
                    continue
                for mode in ("forward", "train"):
                    step = be.op_step(arch, scan, ins, dtype, mode)
                    eager = median_ms(step, sync, min_time)
                    replay = graphed(step)
                    graph = median_ms(replay, sync, min_time)
                    row = {"label": label, "version": getattr(ssmbench, "__version__", "?"), "arch": arch, "op": scan}
                    row |= {"mode": mode, "dtype": dtype, "L": L, "eager_ms": eager, "graph_ms": graph, "b2b_ms": back_to_back_ms(replay)}
                    print(json.dumps(row), flush=True)
                    del step
                    torch.cuda.empty_cache()


def compare(path: str, base: str = "base", new: str = "new") -> None:
    """Per point: the median over rounds of each label's medians, and new / base."""
    rows = [json.loads(ln) for ln in open(path) if ln.startswith("{")]
    by: dict = {}
    for r in rows:
        key = (r["dtype"], r["op"], r["mode"], r["L"])
        by.setdefault(key, {}).setdefault(r["label"], []).append(r)
    head = f"{'dtype':9s} {'op':9s} {'mode':7s} {'L':>5s}  eager {base} / {new} (ratio)      graph {base} / {new} (ratio)"
    print(head + "      back to back     rounds")
    for key in sorted(by):
        b, n = by[key].get(base, []), by[key].get(new, [])
        if not b or not n:
            continue
        cols = []
        for field in ("eager_ms", "graph_ms", "b2b_ms"):
            if not all(field in r for r in b + n):
                cols.append(" " * 30)
                continue
            mb, mn = statistics.median(r[field] for r in b), statistics.median(r[field] for r in n)
            cols.append(f"{mb:8.3f} / {mn:8.3f} ({mn / mb:5.3f})")
        print(f"{key[0]:9s} {key[1]:9s} {key[2]:7s} {key[3]:5d}  {cols[0]}   {cols[1]}   {cols[2]}   {len(b)}/{len(n)}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", help="measure with the installed ssmbench, rows tagged with this label")
    ap.add_argument("--compare", metavar="JSONL", help="compare the rows of a file by label (base, new)")
    ap.add_argument("--min-time", type=float, default=MIN_TIME, help="seconds of calls per point and way (at least MIN_CALLS calls)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--ops", default="triton,attention", help="triton and/or attention")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare)
    elif args.label:
        lengths = tuple(int(v) for v in args.lengths.split(","))
        measure(args.label, args.min_time, tuple(args.dtypes.split(",")), lengths, tuple(args.ops.split(",")))
    else:
        ap.error("give --label or --compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
