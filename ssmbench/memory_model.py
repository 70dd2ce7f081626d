"""An analytical memory model of one training step, and the memory ceiling it predicts.

    total(B, L) = fixed + B * L * per_token(L)
    fixed       = 4P (fp32 weights) + 4P (gradients) + 8P (AdamW m and v)
                  [+ 2P bf16/fp16 weight copies under autocast]
    per_token   = layers * (elementwise activations + scan states) + head

What autograd keeps per token and layer (elements):
  Mamba:       in_proj out (2E), conv out and silu(conv) (2E), x_proj out (R + 2N), dt_proj out
               and softplus(dt) (2E), y, silu(z), y * silu(z) (3E), norm in/out and residual
               (3D): about 9E + 3D + R + 2N, at the activation dtype's width;
               plus archs.mamba.SCAN_STATES[scan] fp32 (E, N) tensors: the scan's (B, L, E, N)
               intermediates. Seed 004 counted 5 for its chunked scan ("5 x B x L x d_inner x N
               x 4 bytes per layer").
  Mamba, fused (the triton kind: torch-cuda's add + norm, conv + silu and scan + gate kernels,
               each keeping only its inputs): the fp32 residual (4 bytes x D), in_proj's input
               (D) and output (2E: x for the conv, z for the gate), the conv's output (E),
               x_proj's (R + 2N), dt_proj's (E) and the gated y (E): 4D bytes + D + 5E + R + 2N
               elements. The scan's per-segment start states are a few MB a layer. At
               mamba-130m, bf16, batch 8 x 2048 this predicts 11.3 GiB against 10.85 measured on
               the H100 (the unfused count gave 15.8).
  Transformer: qkv (3D), attention out and proj (2D), two LayerNorms (4D), MLP (2H + D),
               residuals (2D): about 12D + 2H; plus the attention matrix and its softmax
               (2 * n_head * L, fp32) where it is materialised (JAX and TF here; torch's SDPA
               kernels do not keep it, so the model overestimates torch's long sequences).
  Head:        logits, their softmax and the logits' gradient: 3V fp32. torch's train step
               fuses the head with the loss (backends/torch/head.py): x and its gradient (2D)
               per token, and one chunk of about HEAD_CHUNK logits (plus an fp32 temporary)
               and dW at any batch.

Forward (inference) keeps no activations across layers: per_token is one layer's worth.
It is a model, not a measurement: the memory-ceiling report prints its prediction beside the
measured ceiling, with the error, so a user can see how far to trust it on their backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import archs

HEAD_CHUNK = 1 << 28  # logits per chunk of torch's fused head + loss (backends/torch/head.py's CHUNK_ELEMENTS)
HALF = ("bfloat16", "float16")


@dataclass
class Estimate:
    fixed_bytes: int  # weights, gradients, optimizer state
    per_token_bytes: float  # activations per token (at this length)
    batch: int
    seq_len: int

    @property
    def activation_bytes(self) -> int:
        return int(self.per_token_bytes * self.batch * self.seq_len)

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.activation_bytes


def estimate(
    arch: str, config: dict, params: int, batch: int, seq_len: int, *, scan: str, dtype: str, mode: str = "train", framework: str = ""
) -> Estimate:
    act = 2 if dtype in HALF else 4
    D, V, layers = config["d_model"], config["vocab"], config["n_layers"]
    per_layer = archs.get(arch).layer_bytes_per_token(config, scan=scan, act=act, seq_len=seq_len, framework=framework)
    head = 3 * V * 4 + D * act
    if mode == "train":
        fixed = 16 * params + (2 * params if dtype in HALF else 0)
        if framework == "torch":
            head = 2 * D * act
            fixed += min(batch * seq_len, max(1, HEAD_CHUNK // V)) * V * (act + 4) + V * D * (4 + act)
        per_token = layers * per_layer + head
    else:
        fixed = 4 * params
        per_token = per_layer + head
    return Estimate(int(fixed), float(per_token), batch, seq_len)


def predicted_ceiling(
    arch: str,
    config: dict,
    params: int,
    batch: int,
    seq_len: int,
    limit: int,
    *,
    axis: str,
    scan: str,
    dtype: str,
    mode: str = "train",
    framework: str = "",
) -> int:
    """The largest batch (axis "batch") or length (axis "seq_len") whose estimate fits ``limit``
    bytes; 0 when not even 1 fits."""

    def fits(v: int) -> bool:
        b, n = (v, seq_len) if axis == "batch" else (batch, v)
        return estimate(arch, config, params, b, n, scan=scan, dtype=dtype, mode=mode, framework=framework).total_bytes <= limit

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 2**40:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
