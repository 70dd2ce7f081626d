"""mamba-ssm's Mamba-2 beside ssmbench's, in one process on a CUDA GPU (issue 23's comparison).

mamba-ssm's source is carried in an ignored folder (never committed) and imported from there;
its Mamba-2 path is pure Triton, so no extension is built (causal-conv1d absent, as the issue's
figures were taken):

    git -C MAMBA_CHECKOUT archive HEAD mamba_ssm | tar -x -C .peer
    PYTHONPATH=.peer:$PYTHONPATH python tools/peer_mamba2.py ssd         # the SSD op alone
    PYTHONPATH=.peer:$PYTHONPATH python tools/peer_mamba2.py lm          # mamba-ssm's Mamba2 130M LM
    python tools/peer_mamba2.py tune                                      # ssmbench's SSD under other tilings
    PYTHONPATH=.peer:$PYTHONPATH python tools/peer_mamba2.py profile     # both SSDs' kernels, forward + backward

``ssd``: ``mamba_chunk_scan_combined`` (dt_softplus, D per head, dt_bias, chunk 256) against
ssmbench's fused Triton SSD at batch 8, 24 heads of 64, N 128, bf16, forward and forward +
backward; GPU alone (CALLS calls captured in one CUDA graph, replayed, ÷ CALLS) and eager
(``triton.testing.do_bench``). The two are first checked to agree. ``lm``: mamba-ssm's
MambaLMHeadModel for mamba2-130m, train (batch 8 x 2048, bf16 autocast, fused AdamW: tokens/s,
peak memory) and decode with its CUDA graphs (ms a token at 1k and 16k of context). ssmbench's
own LM figures come from its CLI in the same device call (tools/device_run.sh mamba2).
One JSON line per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

B, H, P, G, N, T = 8, 24, 64, 1, 128, 256
CALLS = 20


def emit(**kw):
    print(json.dumps(kw), flush=True)


def ssd_inputs(L: int, grad: bool):
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*shape, scale=1.0, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dtype).requires_grad_(grad)

    dt0 = torch.exp(torch.rand(H, generator=g, device="cuda") * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))  # Mamba-2's dt init
    return {
        "x": r(B, L, H, P),
        "dt": r(B, L, H, scale=0.5),
        "A": (-(torch.rand(H, generator=g, device="cuda") * 15 + 1)).requires_grad_(grad),
        "B": r(B, L, G, N),
        "C": r(B, L, G, N),
        "D": r(H, dtype=torch.float32),
        "dt_bias": (dt0 + torch.log(-torch.expm1(-dt0))).requires_grad_(grad),
        "dout": r(B, L, H, P),
    }


def each_length(lengths):
    """(L, the SSD's inputs at L) for each length; the cache is emptied before the next are made, so
    a caller that drops its inputs (del) frees their memory first."""
    for L in lengths:
        yield L, ssd_inputs(L, grad=True)
        torch.cuda.empty_cache()


def theirs(i):
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(i["x"], i["dt"], i["A"], i["B"], i["C"], T, D=i["D"], dt_bias=i["dt_bias"], dt_softplus=True)


SSD_MODULE = "ssmbench.backends.torch.triton.ssd"  # --module: or a variant of it (same ``ssd``, ``TILINGS``)


def ours(i):
    import importlib

    ssd = importlib.import_module(SSD_MODULE).ssd
    return ssd(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["dt_bias"], T)


def step(fn, i, mode):
    args = [i[k] for k in ("x", "dt", "A", "B", "C", "D", "dt_bias")]
    if mode == "forward":
        return lambda: fn(i)
    return lambda: torch.autograd.grad(fn(i), args, i["dout"])


def gpu_alone_ms(call) -> float:
    """CALLS calls captured in one CUDA graph; the median replay ÷ CALLS. Everything here runs on
    one side stream (``__main__``), inputs included: a backward whose leaves were made on the
    legacy default stream cannot be captured on another."""
    stream = torch.cuda.current_stream()
    for _ in range(3):
        call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(CALLS):
            call()
    times = []
    for _ in range(15):
        torch.cuda.synchronize()
        t = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / CALLS * 1e3)
    return sorted(times)[len(times) // 2]


def run_ssd(lengths):
    import triton

    for L, i in each_length(lengths):
        a, b = theirs(i).float(), ours(i).float()
        emit(what="ssd agreement", L=L, rel_err=float((a - b).norm() / a.norm()))
        for mode in ("forward", "forward+backward"):
            for who, fn in (("mamba-ssm", theirs), ("ssmbench", ours)):
                call = step(fn, i, mode)
                with torch.no_grad() if mode == "forward" else torch.enable_grad():
                    eager = triton.testing.do_bench(call, warmup=25, rep=200)
                    alone = gpu_alone_ms(call)
                emit(what="ssd", who=who, mode=mode, L=L, gpu_alone_ms=alone, eager_ms=eager)
        del i


CANDIDATES = {  # tune: overrides of the bf16 Tiling, each beside the default (reports/h100-2026-12-06-mamba2)
    "default": {},
    "grad_t32": {"grad_t": 32},
    "grad_warps8": {"grad_warps": 8},
    "per_sm2": {"per_sm": 2},
    "per_sm8": {"per_sm": 8},
    "per_sm1": {"per_sm": 1},  # one head run a group: no partial dB, dC to sum
    "per_sm16": {"per_sm": 16},
    "per_sm6": {"per_sm": 6},
    "per_sm12": {"per_sm": 12},
    "c_k32": {"c_k": 32},  # chunk_grad_c alone: 255 registers and local-memory spills under ncu (reports/h100-2026-12-06-mamba2)
    "c_warps8": {"c_warps": 8},
    "c_k32_warps8": {"c_k": 32, "c_warps": 8},
    "c_stages2": {"c_stages": 2},
    "c_t32": {"c_t": 32},
    "c_t32_k32": {"c_t": 32, "c_k": 32},
    "per_sm12_c_t32": {"per_sm": 12, "c_t": 32},
    "per_sm16_c_k32": {"per_sm": 16, "c_k": 32},
    "per_sm24_c_k32": {"per_sm": 24, "c_k": 32},
    "per_sm12_c_k16": {"per_sm": 12, "c_k": 16},
    "per_sm12_c_k32_s2": {"per_sm": 12, "c_k": 32, "c_stages": 2},
    "per_sm8_c_k32": {"per_sm": 8, "c_k": 32},
    "per_sm8_c_warps8": {"per_sm": 8, "c_warps": 8},
    "per_sm12_c_k32": {"per_sm": 12, "c_k": 32},
    "per_sm12_c_warps8": {"per_sm": 12, "c_warps": 8},
    "stages2": {"stages": 2},
    "out_t64": {"out_t": 64},
    "out_k64": {"out_k": 64},
    "state_p32_n128": {"state_p": 32, "state_n": 128},
    "state_warps8": {"state_warps": 8},
    "c_stages4": {"c_stages": 4},
    "grad_warps8_c_warps4": {"grad_warps": 8, "c_warps": 4},  # chunk_grad_b / _x with 8 warps, chunk_grad_c with 4
    "stages4_c3": {"stages": 4, "c_stages": 3},
    "per_sm4": {"per_sm": 4},  # fewer, longer runs: more heads share each C·B tile
}


def run_tune(lengths, candidates=None):
    """The SSD's (SSD_MODULE's) GPU-alone time, forward and forward + backward, under each of
    CANDIDATES (or those named)."""
    import importlib
    from dataclasses import replace

    ssd_mod = importlib.import_module(SSD_MODULE)
    base = ssd_mod.TILINGS[torch.bfloat16]
    for L, i in each_length(lengths):
        for mode in ("forward", "forward+backward"):  # mamba-ssm's, in the same call, for the ratio
            with torch.no_grad() if mode == "forward" else torch.enable_grad():
                emit(what="tune", module="mamba_ssm", tiling="-", mode=mode, L=L, gpu_alone_ms=gpu_alone_ms(step(theirs, i, mode)))
        for name in candidates or CANDIDATES:
            ssd_mod.TILINGS[torch.bfloat16] = replace(base, **CANDIDATES[name])
            for mode in ("forward", "forward+backward"):
                with torch.no_grad() if mode == "forward" else torch.enable_grad():
                    alone = gpu_alone_ms(step(ours, i, mode))
                emit(what="tune", module=SSD_MODULE, tiling=name, mode=mode, L=L, gpu_alone_ms=alone)
        ssd_mod.TILINGS[torch.bfloat16] = base
        del i


def enqueue_us(call, n=50) -> float:
    """Host µs to enqueue one call with the GPU idle before it (nothing waits on it): the median of n."""
    times = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e6)
        torch.cuda.synchronize()
    return sorted(times)[n // 2]


def host_at(L: int, i: dict) -> None:
    """run_host at one length."""
    import cProfile
    import io
    import pstats

    from ssmbench.backends.torch.triton import ssd as m

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, dt, A, Bm, Cm, D, dt_bias):
            y, _, states, da = m.forward(x, dt, A, Bm, Cm, D, dt_bias, T)
            ctx.save_for_backward(x, dt, A, Bm, Cm, D, dt_bias, states, da)
            return y

        @staticmethod
        def backward(ctx, dy):
            x, dt, A, Bm, Cm, D, dt_bias, states, da = ctx.saved_tensors
            return m.backward(dy, None, x, dt, A, Bm, Cm, D, dt_bias, None, states, da, T)[:7]

    args = [i[k] for k in ("x", "dt", "A", "B", "C", "D", "dt_bias")]
    plain = [a.detach() for a in args]

    def direct():
        _, _, states, da = m.forward(*plain, T)
        m.backward(i["dout"], None, *plain, None, states, da, T)

    da = torch.empty((2, B, H, L), device="cuda")
    cumsum = (i["dt"], i["A"], i["dt_bias"], da, L, H, L // T, B * H * L, *i["dt"].stride())
    paths = {
        "op": step(ours, i, "forward+backward"),
        "function": lambda: torch.autograd.grad(Function.apply(*args), args, i["dout"]),
        "host code alone": direct,
        "forward alone": lambda: m.forward(*plain, T),
        "one launch (chunk_cumsum)": lambda: m._launch(m.chunk_cumsum_kernel, (3 * B * (L // T),), cumsum, {"T": T, "BH": 8}),
    }
    for name, call in paths.items():
        for _ in range(3):
            call()
        emit(what="host", L=L, path=name, enqueue_us=enqueue_us(call))
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    prof.enable()
    for _ in range(50):
        paths["op"]()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
    emit(what="host profile", L=L, calls=50, text=out.getvalue())


def run_host(lengths):
    """Where ssmbench's eager forward + backward spends host time: the time to enqueue one call
    through the op as autograd sees it, through a plain autograd.Function over the same host
    code, and through that host code alone; one kernel launch; and a cProfile of the op's calls,
    by own time."""
    for L, i in each_length(lengths):
        host_at(L, i)
        del i


def run_profile(lengths):
    """Each SSD's kernels in forward + backward, CALLS calls under torch.profiler: GPU ms a call per
    kernel, to see where one is slower than the other."""
    from torch.profiler import ProfilerActivity, profile

    for L, i in each_length(lengths):
        for who, fn in (("mamba-ssm", theirs), ("ssmbench", ours)):
            call = step(fn, i, "forward+backward")
            for _ in range(3):
                call()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(CALLS):
                    call()
                torch.cuda.synchronize()
            per_kernel = {}
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    n, us = per_kernel.get(e.name, (0, 0.0))
                    per_kernel[e.name] = (n + 1, us + e.time_range.elapsed_us())
            for name, (n, us) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
                emit(what="ssd kernel", who=who, L=L, kernel=name[:80], launches_per_call=n / CALLS, ms_per_call=us / CALLS / 1e3)
        del i


def lm_train(model):
    """Batch 8 x 2048, bf16 autocast, fused AdamW: tokens/s and peak memory (the optimiser is freed on return)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randint(0, 50280, (8, 2048), device="cuda")

    def train():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        train()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    n, t = 10, time.perf_counter()
    for _ in range(n):
        train()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / n
    emit(
        what="lm train",
        who="mamba-ssm",
        batch=8,
        seq_len=2048,
        ms=dt * 1e3,
        tokens_per_s=8 * 2048 / dt,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
    )


def run_lm(contexts):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    mixer = {"layer": "Mamba2", "use_mem_eff_path": False}  # its fused path calls causal-conv1d's CUDA extension, not built here
    cfg = MambaConfig(
        d_model=768, n_layer=24, vocab_size=50280, ssm_cfg=mixer, rms_norm=True, residual_in_fp32=True,
        fused_add_norm=True, pad_vocab_size_multiple=16,
    )  # fmt: skip
    model = MambaLMHeadModel(cfg, device="cuda", dtype=torch.float32)
    emit(what="lm params", who="mamba-ssm", params=sum(p.numel() for p in model.parameters()))
    lm_train(model)
    model.to(torch.bfloat16).eval()
    for ctx in contexts:
        prompt = torch.randint(0, 50280, (1, ctx), device="cuda")
        times = {}
        for new in (1, 129):
            model.generate(prompt, max_length=ctx + new, cg=True, top_k=1)  # warm-up: compiles, captures the graph
            torch.cuda.synchronize()
            t = time.perf_counter()
            model.generate(prompt, max_length=ctx + new, cg=True, top_k=1)
            torch.cuda.synchronize()
            times[new] = time.perf_counter() - t
        emit(what="lm decode", who="mamba-ssm", context=ctx, ms_per_token=(times[129] - times[1]) / 128 * 1e3)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("ssd", "tune", "lm", "profile", "host"))
    ap.add_argument("--module", default=SSD_MODULE, help="ssmbench's SSD, or a variant of it importable from an ignored folder")
    ap.add_argument("--candidates", default="", help="tune: which of CANDIDATES, comma-separated (default all)")
    ap.add_argument("--lengths", default="512,2048,8192")
    ap.add_argument("--contexts", default="1024,16384")
    a = ap.parse_args()
    SSD_MODULE = a.module
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.cuda.set_stream(torch.cuda.Stream())  # see gpu_alone_ms
    lengths = [int(v) for v in a.lengths.split(",")]
    if a.what == "lm":
        run_lm([int(v) for v in a.contexts.split(",")])
    elif a.what == "tune":
        run_tune(lengths, [c for c in a.candidates.split(",") if c])
    else:
        {"ssd": run_ssd, "profile": run_profile, "host": run_host}[a.what](lengths)
