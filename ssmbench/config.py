"""Model configuration shared by every backend, and the parameter-count formulas.

One framework-neutral dataclass describes a model; backends build from it (or from weights,
whose shapes determine it). The Transformer baseline is sized from the Mamba config so the two
have about the same number of parameters, as in the Mamba paper's comparisons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

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
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **kw) -> "ModelConfig":
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
    """GPT-2 style baseline: pre-LayerNorm, causal MHA, 4x GELU MLP, tied embeddings,
    fixed sinusoidal positions (no position parameters, so any length runs)."""

    vocab: int = 65  # V
    d_model: int = 256  # D
    n_layers: int = 2  # Transformer blocks
    n_head: int = 4  # attention heads; head size D / n_head
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio * D
    matched_mamba_layers: int = 0  # the Mamba depth whose parameter count this one matches
    extra: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        names = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names})


def transformer_layer_params(D: int, mlp_ratio: int = 4) -> int:
    """qkv (3D*D + 3D) + proj (D*D + D) + fc (rD*D + rD) + fc2 (D*rD + D) + 2 LayerNorms (4D)."""
    H = mlp_ratio * D
    return 4 * D * D + 2 * D * H + 3 * D + D + H + D + 4 * D


def transformer_params(t: TransformerConfig) -> int:
    return t.vocab * t.d_model + t.n_layers * transformer_layer_params(t.d_model, t.mlp_ratio) + 2 * t.d_model


def default_heads(d_model: int) -> int:
    """Head size 64 where it divides D, else the largest head count whose size is >= 32, else 1."""
    if d_model % 64 == 0:
        return d_model // 64
    for h in range(d_model // 32, 0, -1):
        if d_model % h == 0:
            return h
    return 1


def matched_transformer(c: ModelConfig) -> TransformerConfig:
    """The baseline at the same width with the depth whose parameter count is closest to Mamba's."""
    target = mamba_params(c)
    fixed = c.vocab * c.d_model + 2 * c.d_model
    per = transformer_layer_params(c.d_model)
    n = max(1, round((target - fixed) / per))
    best = min({max(1, n - 1), n, n + 1}, key=lambda k: abs(fixed + k * per - target))
    return TransformerConfig(
        vocab=c.vocab,
        d_model=c.d_model,
        n_layers=best,
        n_head=default_heads(c.d_model),
        matched_mamba_layers=c.n_layers,
    )
