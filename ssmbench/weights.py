"""Weights: seeded initialisation (the same float32 arrays on every backend), file loading, and
inferring a config from weight shapes (so a real mamba-ssm checkpoint loads as it is).

Each architecture's names and initialisation are its module's in ssmbench.archs (Mamba's follow
mamba-ssm's state dict, SPEC "The model").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import archs

Weights = dict  # name -> numpy array (float32 unless loaded otherwise)
LM_HEAD = "lm_head.weight"  # an untied LM head (V, D); a model without one multiplies by its embedding


def init_weights(arch: str, cfg, seed: int = 0, jitter: bool = False) -> Weights:
    """Seeded float32 weights of architecture ``arch`` (its module's ``init``)."""
    return archs.get(arch).init(cfg, seed, jitter)


def count_params(weights: Weights) -> int:
    """Distinct parameters: a tied ``lm_head.weight`` (a copy of the embedding) is not counted twice."""
    return sum(int(np.prod(v.shape)) for v in drop_tied_head(dict(weights)).values())


# ---------------------------------------------------------------------------- loading
def load_weights(path) -> Weights:
    """Read .safetensors, .npz or .pt/.bin (a torch state dict) into NumPy arrays.

    Half-precision tensors (fp16, and bf16 whether NumPy knows it through ml_dtypes or not)
    become float32; a tied ``lm_head.weight`` is dropped when it equals the
    embedding (mamba-ssm saves both)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if suffix == ".safetensors":
        w = _load_safetensors(path)
    elif suffix == ".npz":
        with np.load(path) as z:
            w = {k: z[k] for k in z.files}
    elif suffix in (".pt", ".bin", ".pth"):
        w = _load_torch(path)
    else:
        raise ValueError(f"unknown weights format {suffix!r} for {path}; allowed: .safetensors, .npz, .pt, .bin")
    w = {k: v if v.dtype in (np.float32, np.float64) or np.issubdtype(v.dtype, np.integer) else v.astype(np.float32) for k, v in w.items()}
    return drop_tied_head(w)


def drop_tied_head(w: Weights) -> Weights:
    """``w`` without ``lm_head.weight`` where it is a copy of the embedding (a tied head saved
    twice, as mamba-ssm and transformers may); an untied head stays."""
    head, emb = w.get(LM_HEAD), w.get("backbone.embedding.weight")
    if head is not None and emb is not None and head.shape == emb.shape and np.array_equal(head, emb):
        del w[LM_HEAD]
    return w


def _load_safetensors(path: Path) -> Weights:
    try:
        from safetensors.numpy import load_file

        return load_file(str(path))
    except (TypeError, ValueError):  # bf16 has no NumPy dtype: go through torch
        from safetensors.torch import load_file as load_torch

        return {k: v.float().numpy() for k, v in load_torch(str(path)).items()}


def _load_torch(path: Path) -> Weights:
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()}


def infer_config(weights: Weights, ngroups: int | None = None):
    """(arch, config) from the weight names and shapes alone (Mamba-2's ngroups: 1 unless given)."""
    return archs.infer(weights, ngroups)
