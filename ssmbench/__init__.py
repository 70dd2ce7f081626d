"""ssmbench: benchmark Mamba selective state-space models the same way on every framework.

Public API (SPEC "Python API")::

    ssmbench.load_weights(path) -> dict[str, numpy.ndarray]
    ssmbench.logits(backend, weights, tokens, *, scan=None, dtype="float32", ngroups=None) -> numpy (B, L, V)
    ssmbench.decode_logits(backend, weights, tokens, *, dtype="float32", ngroups=None) -> numpy (B, L, V)

``weights`` is a dict of arrays (mamba-ssm names) or a path (a weights file, or a mamba-ssm or
Hugging Face checkpoint folder); the config is inferred from the shapes. ``backend`` is a name
such as "torch-cpu", or "reference" for the float64 NumPy model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

import numpy as np

from . import archs
from .checkpoints import load_any as load_weights
from .checkpoints import open_checkpoint
from .weights import infer_config

__all__ = ["__version__", "load_weights", "logits", "decode_logits"]


def _prepare(weights, tokens, ngroups):
    if not isinstance(weights, dict) and Path(weights).is_dir():  # a checkpoint folder: its config.json says ngroups
        ck = open_checkpoint(weights)
        weights, arch = ck.load(), ck.arch
        cfg = archs.config(arch, {**ck.config, **({"ngroups": ngroups} if ngroups and arch == "mamba2" else {})})
    else:
        weights = weights if isinstance(weights, dict) else load_weights(weights)
        arch, cfg = infer_config(weights, ngroups)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.vocab):
        raise ValueError(f"token ids must lie in [0, {cfg.vocab})")
    return weights, arch, cfg, tokens


def logits(backend: str, weights, tokens, *, scan: str | None = None, dtype: str = "float32", ngroups: int | None = None) -> np.ndarray:
    """Logits of the parallel (training / prefill) path. tokens (B, L) -> (B, L, V). ``ngroups``:
    Mamba-2's groups of heads sharing B and C, which its shapes do not tell (a checkpoint folder's
    config.json does; else 1 unless given)."""
    weights, arch, cfg, tokens = _prepare(weights, tokens, ngroups)
    if backend == "reference":
        return archs.get(arch).logits(weights, tokens, cfg)
    from . import backends as registry

    b = registry.get(backend)
    model = b.build(arch, weights, cfg, scan=scan, dtype=dtype)
    out = b.forward(model, b.tokens(tokens))
    b.synchronize(out)
    return b.to_numpy(out)


def decode_logits(backend: str, weights, tokens, *, dtype: str = "float32", ngroups: int | None = None) -> np.ndarray:
    """The same tokens fed one at a time through the recurrent step with its O(1) state
    (a KV cache for the Transformer). tokens (B, L) -> (B, L, V)."""
    weights, arch, cfg, tokens = _prepare(weights, tokens, ngroups)
    if backend == "reference":
        return archs.get(arch).decode_logits(weights, tokens, cfg)
    from . import backends as registry

    b = registry.get(backend)
    from .parity import decode_all

    return decode_all(b, b.build(arch, weights, cfg, scan=None, dtype=dtype), tokens)
