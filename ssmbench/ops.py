"""The ops the `scan` suite times alone: each architecture's core op (its module's ``OP``), at
the shapes its config gives. For Mamba the selective scan, and for the Transformer causal
attention at the same length, the baseline it replaces (seed 002: "benchmark the raw speed of
our selective scan kernel against optimized attention").

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

from . import archs

ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def shape_of(point) -> dict:
    return archs.get(point.arch).op_shape(point.config, point.batch, point.seq_len)


def inputs_for(point) -> dict:
    """The seeded NumPy inputs of an op point (a plan.Point with op=True)."""
    return archs.get(point.arch).op_inputs(shape_of(point), point.seed)


def min_bytes(arch: str, mode: str, s: dict, dtype: str) -> int:
    """The memory floor's bytes of ``arch``'s op in ``mode`` at shape ``s``."""
    return archs.get(arch).op_min_bytes(mode, s, ELEMENT_BYTES[dtype])


def op_metrics(point, median_ms: float, copy_bytes_per_s: float | None) -> dict:
    """The op's shape, achieved bandwidth and multiple of the memory floor."""
    s = shape_of(point)
    nbytes = min_bytes(point.arch, point.mode, s, point.dtype)
    out = {"op_shape": s, "op_min_bytes": nbytes, "achieved_bytes_per_s": nbytes / (median_ms / 1e3) if median_ms > 0 else None}
    if copy_bytes_per_s:
        floor_ms = nbytes / copy_bytes_per_s * 1e3
        out |= {"copy_bytes_per_s": copy_bytes_per_s, "floor_ms": floor_ms, "floor_multiple": median_ms / floor_ms}
    return out
