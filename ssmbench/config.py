"""Model configuration shared by every backend, and the parameter-count formulas.

One framework-neutral dataclass describes a model; backends build from it (or from weights,
whose shapes determine it). The Transformer baseline is sized from the Mamba config so the two
have about the same number of parameters, as in the Mamba paper's comparisons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

ARCHS = ("mamba", "transformer")


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 65  # V: vocabulary size (tied embedding / LM head)
    d_model: int = 256  # D: residual stream width
    n_layers: int = 4  # Mamba blocks (the Transformer baseline derives its own depth)
    d_state: int = 16  # N: SSM state size per channel
    d_conv: int = 4  # K: causal depthwise conv width
    expand: int = 2  # E = expand * D: inner (mixer) width
    dt_rank: int = 0  # R: rank of the dt projection; 0 means auto, ceil(D / 16)

    def __post_init__(self):
        if self.dt_rank == 0:
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16))

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **kw) -> ModelConfig:
        kw = {k: v for k, v in kw.items() if v is not None}
        if "d_model" in kw and "dt_rank" not in kw:
            kw["dt_rank"] = 0  # keep "auto" following the new width
        return replace(self, **kw)


def mamba_layer_params(c: ModelConfig) -> int:
    """SPEC: 3*D*E + E*(2R + 3N + K + 3) + D per layer."""
    D, E, R, N, K = c.d_model, c.d_inner, c.dt_rank, c.d_state, c.d_conv
    return 3 * D * E + E * (2 * R + 3 * N + K + 3) + D


def mamba_params(c: ModelConfig) -> int:
    """Embedding (tied head) + layers + final norm."""
    return c.vocab * c.d_model + c.n_layers * mamba_layer_params(c) + c.d_model


@dataclass(frozen=True)
class TransformerConfig:
    """GPT-2 style baseline: pre-LayerNorm, causal MHA, GELU MLP (4x unless matching the
    parameter count needs otherwise), tied embeddings, fixed sinusoidal positions (no position
    parameters, so any length runs)."""

    vocab: int = 65  # V
    d_model: int = 256  # D
    n_layers: int = 2  # Transformer blocks
    n_head: int = 4  # attention heads; head size D / n_head
    d_mlp: int = 0  # MLP hidden width; 0 means 4 * D
    matched_mamba_layers: int = 0  # the Mamba depth whose parameter count this one matches

    def __post_init__(self):
        if self.d_mlp == 0:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def transformer_layer_params(D: int, H: int) -> int:
    """qkv (3D*D + 3D) + proj (D*D + D) + fc (H*D + H) + fc2 (D*H + D) + 2 LayerNorms (4D)."""
    return 4 * D * D + 2 * D * H + 9 * D + H


def transformer_params(t: TransformerConfig) -> int:
    return t.vocab * t.d_model + t.n_layers * transformer_layer_params(t.d_model, t.d_mlp) + 2 * t.d_model


def default_heads(d_model: int) -> int:
    """Head size 64 where it divides D, else the largest head count whose size is >= 32, else 1."""
    if d_model % 64 == 0:
        return d_model // 64
    for h in range(d_model // 32, 0, -1):
        if d_model % h == 0:
            return h
    return 1


MATCH_TOLERANCE = 0.10  # the baseline's parameter count is within 10% of Mamba's


def matched_transformer(c: ModelConfig) -> TransformerConfig:
    """The baseline at the same width: the depth whose parameter count (with a 4x MLP) is closest
    to Mamba's. Whole layers move the count in steps of ~12 D^2, so where the closest depth is
    still more than 10% off, the MLP hidden width is set (a multiple of 8) to close the gap."""
    D = c.d_model
    target = mamba_params(c)
    fixed = c.vocab * D + 2 * D
    per = transformer_layer_params(D, 4 * D)
    n = max(1, round((target - fixed) / per))
    n = min({max(1, n - 1), n, n + 1}, key=lambda k: abs(fixed + k * per - target))
    H = 4 * D
    if abs((fixed + n * per) / target - 1) > MATCH_TOLERANCE:
        # per-layer count is 4D^2 + 9D + H (2D + 1): solve for H
        H = ((target - fixed) / n - 4 * D * D - 9 * D) / (2 * D + 1)
        H = max(8, int(round(H / 8)) * 8)
    return TransformerConfig(vocab=c.vocab, d_model=D, n_layers=n, n_head=default_heads(D), d_mlp=H, matched_mamba_layers=c.n_layers)
