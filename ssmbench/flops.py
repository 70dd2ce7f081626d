"""Model FLOPs per step, for MFU (model FLOPs utilisation = these FLOPs / step time / the
device's measured matmul rate at the run's dtype).

Counted per token (a multiply-add is 2 FLOPs), as in the Mamba and GPT papers' accounting, by
each architecture's ``flops_per_token(config, ctx)`` (ssmbench.archs): its matmul-shaped work
and the tied head. ctx is the average number of keys a query sees: (L + 1) / 2 for a causal
pass over L tokens, and L + 1 for one decode token at context L (only attention depends on it).
``train`` counts forward + backward as 3x the forward (the backward does two matmuls per
forward one); the optimiser step is left out. Norms, the softmax and elementwise work are left
out, as usual: MFU measures matmul-shaped work.
"""

from __future__ import annotations

from . import archs


def step_flops(arch: str, config: dict, batch: int, seq_len: int, mode: str) -> float:
    """FLOPs of one timed step of ``mode`` (train: forward + backward; decode: one token per
    stream at context seq_len)."""
    per_token = archs.get(arch).flops_per_token
    if mode == "decode":
        return per_token(config, seq_len + 1) * batch
    return per_token(config, (seq_len + 1) / 2) * batch * seq_len * (3 if mode == "train" else 1)


def mfu(arch: str, config: dict, batch: int, seq_len: int, mode: str, dtype: str, median_ms: float, matmul_flops: dict) -> dict:
    """{"model_flops_per_step", "achieved_flops", "mfu"} against the measured matmul rate at
    the run's dtype (float16 runs use the bfloat16 figure); {} without a measured rate."""
    peak = (matmul_flops or {}).get("float32" if dtype == "float32" else "bfloat16")
    if not peak or median_ms <= 0:
        return {}
    f = step_flops(arch, config, batch, seq_len, mode)
    achieved = f / (median_ms / 1e3)
    return {"model_flops_per_step": f, "achieved_flops": achieved, "mfu": achieved / peak}
