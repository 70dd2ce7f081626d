"""The ops the `scan` suite times alone: the selective scan, and causal attention at the same
length as the baseline it replaces (seed 002: "benchmark the raw speed of our selective scan
kernel against optimized attention").

    scan       out = (scan(x, softplus(dt + dt_bias), A, B, C) + D x) * silu(z)   mamba-ssm's
               selective_scan_fn semantics; x, dt, z (B, L, E), B, C (B, L, N), A (E, N) < 0
    attention  o = softmax(q k^T / sqrt(hd) + causal mask) v;   q, k, v (B, H, L, hd)

``forward`` runs the op; ``train`` runs it and its backward for every input (the gradient of
sum(out * dout)). Inputs are seeded NumPy arrays, so every backend times the same numbers.

Memory floor: the fewest bytes an op must move (read its inputs, write its outputs, once),
divided by the device's measured copy bandwidth. A fused kernel's time is a small multiple of
it; an op that materialises (B, L, E, N) states is a large one. Activations count at the run's
dtype; A, D, dt_bias (tiny) are left out.
"""

from __future__ import annotations

import numpy as np

ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def scan_shape(cfg: dict, batch: int, seq_len: int) -> dict:
    """B, L, E, N of the scan op for a Mamba config dict."""
    return {"B": batch, "L": seq_len, "E": cfg["expand"] * cfg["d_model"], "N": cfg["d_state"]}


def attention_shape(cfg: dict, batch: int, seq_len: int) -> dict:
    """B, L, H, hd of the attention op for a Transformer config dict."""
    return {"B": batch, "L": seq_len, "H": cfg["n_head"], "hd": cfg["d_model"] // cfg["n_head"]}


def scan_inputs(s: dict, seed: int) -> dict:
    """x, dt, z (B, L, E); A (E, N); Bm, Cm (B, L, N); D, dt_bias (E,) and dout, float32."""
    rng = np.random.default_rng(seed)
    B, L, E, N = s["B"], s["L"], s["E"], s["N"]

    def r(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape, dtype=np.float32) * scale + shift).astype(np.float32)

    return {
        "x": r(B, L, E),
        "dt": r(B, L, E, scale=0.5, shift=-1.0),  # softplus(dt + dt_bias) about 0.3, as Mamba's init gives
        "A": -np.exp(r(E, N, scale=0.5)),
        "Bm": r(B, L, N),
        "Cm": r(B, L, N),
        "D": r(E),
        "z": r(B, L, E),
        "dt_bias": r(E, scale=0.5),
        "dout": r(B, L, E),
    }


def attention_inputs(s: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    shape = (s["B"], s["H"], s["L"], s["hd"])
    return {k: rng.standard_normal(shape, dtype=np.float32) for k in ("q", "k", "v", "dout")}


def min_bytes(arch: str, mode: str, s: dict, dtype: str) -> int:
    """The memory floor's bytes: forward reads x, dt, z, B, C and writes out; train also reads
    them again with dout and writes dx, ddt, dz, dB, dC. Attention reads q, k, v and writes o;
    its backward reads q, k, v, o, do and writes dq, dk, dv."""
    eb = ELEMENT_BYTES[dtype]
    if arch == "mamba":
        ble, bln = s["B"] * s["L"] * s["E"], s["B"] * s["L"] * s["N"]
        return eb * (4 * ble + 2 * bln if mode == "forward" else 11 * ble + 6 * bln)
    bld = s["B"] * s["L"] * s["H"] * s["hd"]
    return eb * bld * (4 if mode == "forward" else 12)


def shape_of(point) -> dict:
    if point.arch == "mamba":
        return scan_shape(point.config, point.batch, point.seq_len)
    return attention_shape(point.config, point.batch, point.seq_len)


def inputs_for(point) -> dict:
    """The seeded NumPy inputs of an op point (a plan.Point with op=True)."""
    s = shape_of(point)
    return scan_inputs(s, point.seed) if point.arch == "mamba" else attention_inputs(s, point.seed)


def op_metrics(point, median_ms: float, copy_bytes_per_s: float | None) -> dict:
    """The op's shape, achieved bandwidth and multiple of the memory floor."""
    s = shape_of(point)
    nbytes = min_bytes(point.arch, point.mode, s, point.dtype)
    out = {"op_shape": s, "op_min_bytes": nbytes, "achieved_bytes_per_s": nbytes / (median_ms / 1e3) if median_ms > 0 else None}
    if copy_bytes_per_s:
        floor_ms = nbytes / copy_bytes_per_s * 1e3
        out |= {"copy_bytes_per_s": copy_bytes_per_s, "floor_ms": floor_ms, "floor_multiple": median_ms / floor_ms}
    return out
