"""Model FLOPs per step, for MFU (model FLOPs utilisation = these FLOPs / step time / the
device's measured matmul rate at the run's dtype).

Counted per token (a multiply-add is 2 FLOPs), as in the Mamba and GPT papers' accounting:

    Mamba layer   2 (D·2E + E·(R + 2N) + R·E + E·D)   the five projections
                  + 2 E K                              the causal conv
                  + 9 E N                              the scan: Δ A and its exp, Δ B x, the update,
                                                       the C contraction (exp counted as one)
    Transformer   2 (3 D² + D² + 2 D·d_mlp)            q, k, v, out and the MLP
                  + 2 D · ctx                          q k^T and p v over ctx visible keys
    head          2 D V                                 tied embedding as the LM head

ctx is the average number of keys a query sees: (L + 1) / 2 for a causal pass over L tokens, and
L + 1 for one decode token at context L. ``train`` counts forward + backward as 3x the forward
(the backward does two matmuls per forward one); the optimiser step is left out. Norms, the
softmax and elementwise work are left out, as usual: MFU measures matmul-shaped work.
"""

from __future__ import annotations


def _mamba_token(c: dict) -> float:
    D, E, N, K, R = c["d_model"], c["expand"] * c["d_model"], c["d_state"], c["d_conv"], c["dt_rank"]
    proj = 2 * (D * 2 * E + E * (R + 2 * N) + R * E + E * D)
    return c["n_layers"] * (proj + 2 * E * K + 9 * E * N) + 2 * D * c["vocab"]


def _gpt_token(c: dict, ctx: float) -> float:
    D = c["d_model"]
    return c["n_layers"] * (2 * (4 * D * D + 2 * D * c["d_mlp"]) + 2 * 2 * D * ctx) + 2 * D * c["vocab"]


def step_flops(arch: str, config: dict, batch: int, seq_len: int, mode: str) -> float:
    """FLOPs of one timed step of ``mode`` (train: forward + backward; decode: one token per
    stream at context seq_len)."""
    if mode == "decode":
        per_token, tokens = (_mamba_token(config) if arch == "mamba" else _gpt_token(config, seq_len + 1)), batch
    else:
        per_token, tokens = (_mamba_token(config) if arch == "mamba" else _gpt_token(config, (seq_len + 1) / 2)), batch * seq_len
    return per_token * tokens * (3 if mode == "train" else 1)


def mfu(arch: str, config: dict, batch: int, seq_len: int, mode: str, dtype: str, median_ms: float, matmul_flops: dict) -> dict:
    """{"model_flops_per_step", "achieved_flops", "mfu"} against the measured matmul rate at
    the run's dtype (float16 runs use the bfloat16 figure); {} without a measured rate."""
    peak = (matmul_flops or {}).get("float32" if dtype == "float32" else "bfloat16")
    if not peak or median_ms <= 0:
        return {}
    f = step_flops(arch, config, batch, seq_len, mode)
    achieved = f / (median_ms / 1e3)
    return {"model_flops_per_step": f, "achieved_flops": achieved, "mfu": achieved / peak}
