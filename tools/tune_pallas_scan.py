"""jax-cuda's fused Pallas scan (backends/jax/pallas_scan.py) under other tilings, at mamba-130m's
scan shape (batch 8, E 1536, N 16, fp32 inputs as the model passes them), forward and forward +
backward: the evidence for its TILING, as tools/peer_mamba2.py tune is for the SSD's.

    python tools/tune_pallas_scan.py [--lengths 2048] [--candidates default,be16,...]

One JSON line per (tiling, mode, length): the median of 20 jitted calls (each waited on), the first
call's time (compile included) and the bytes of states the forward keeps for the backward.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from ssmbench.backends.jax.pallas_scan import TILING, Tiling, scan_pallas

B, E, N = 8, 1536, 16
CANDIDATES = {  # overrides of TILING's (tc, be, warps)
    "default": {},
    "be16": {"be": 16},
    "be64": {"be": 64},
    "tc4": {"tc": 4},
    "tc16": {"tc": 16},
    "tc16_be16": {"tc": 16, "be": 16},
    "tc32_be16": {"tc": 32, "be": 16},
    "warps2": {"warps": 2},
    "warps8": {"warps": 8},
    "warps1": {"warps": 1},  # after the first search (reports/h100-2026-12-06-jax): fewer warps, wider tiles, shorter chunks each won alone
    "be64_warps2": {"be": 64, "warps": 2},
    "tc4_warps2": {"tc": 4, "warps": 2},
    "tc4_be64_warps2": {"tc": 4, "be": 64, "warps": 2},
    "be64_warps1": {"be": 64, "warps": 1},
    "be128_warps2": {"be": 128, "warps": 2},
    "be128_warps4": {"be": 128, "warps": 4},
    "tc4_be64": {"tc": 4, "be": 64},
    "be16_warps2": {"be": 16, "warps": 2},
    "tc16_warps2": {"tc": 16, "warps": 2},  # half the kept states (memory)
    "tc16_be64_warps2": {"tc": 16, "be": 64, "warps": 2},
}


def inputs(L: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, L, E), np.float32)
    dt = np.log1p(np.exp(rng.standard_normal((B, L, E), np.float32) - 2.0)).astype(np.float32)
    A = -np.exp(rng.uniform(0, 2, (E, N))).astype(np.float32)
    Bm, Cm = (rng.standard_normal((B, L, N), np.float32) for _ in range(2))
    return [jnp.asarray(v) for v in (x, dt, A, Bm, Cm)]


def timed(fn, args, n: int = 20) -> tuple[float, float]:
    """(first call's seconds, median ms of n more)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t) * 1e3)
    return first, float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="2048")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    a = ap.parse_args()
    for L in (int(v) for v in a.lengths.split(",")):
        args = inputs(L)
        dy = jnp.ones((B, L, E), jnp.float32)
        for name in a.candidates.split(","):
            t = Tiling(**{**TILING.__dict__, **CANDIDATES[name]})
            fwd = jax.jit(lambda *v, t=t: scan_pallas(*v, tiling=t)[0])
            grad = jax.jit(jax.grad(lambda *v, t=t, dy=dy: jnp.sum(scan_pallas(*v, tiling=t)[0] * dy), argnums=range(5)))
            kept = B * (-(-L // t.tc) + 1) * (-(-E // t.be) * t.be) * max(2, 1 << (N - 1).bit_length()) * 4
            for mode, fn in (("forward", fwd), ("forward+backward", grad)):
                try:
                    first, ms = timed(fn, args)
                    row = {"ms": ms, "first_call_s": first}
                except Exception as e:  # noqa: BLE001 - a tiling that does not compile is a finding, not the end
                    row = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
                print(json.dumps({"tiling": name, **t.__dict__, "mode": mode, "L": L, "kept_state_bytes": kept, **row}), flush=True)


if __name__ == "__main__":
    main()
