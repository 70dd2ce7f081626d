"""float64 NumPy building blocks every architecture's reference uses."""

from __future__ import annotations

import numpy as np

EPS_RMS = 1e-5
EPS_LN = 1e-5


def f64(weights: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float = EPS_RMS) -> np.ndarray:
    """x (..., D), w (D,) -> x / sqrt(mean(x^2) + eps) * w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = EPS_LN) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-token cross-entropy. logits (Bt, L, V), targets (Bt, L)."""
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return float((lse - picked).mean())


def n_layers(weights: dict, prefix: str) -> int:
    """Layers in a state dict whose layer i's names start with ``prefix`` + "i."."""
    idx = {int(k[len(prefix) :].split(".")[0]) for k in weights if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0
