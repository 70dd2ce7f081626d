"""Weights: seeded initialisation (the same float32 arrays on every backend), file loading, and
inferring a config from weight shapes (so a real mamba-ssm checkpoint loads as it is).

Mamba names follow mamba-ssm's state dict (SPEC "The model"); the Transformer baseline uses
GPT-2 names under ``transformer.`` with torch's Linear layout (out_features, in_features).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import ModelConfig, TransformerConfig, default_heads

Weights = dict  # name -> numpy array (float32 unless loaded otherwise)


def init_mamba(cfg: ModelConfig, seed: int = 0, jitter: bool = False) -> Weights:
    """mamba-ssm's initialisation: Linear U(+-1/sqrt(fan_in)), embedding N(0, 0.02), dt bias so
    softplus(bias) is log-uniform in [1e-3, 1e-1], A_log = log(1..N), D = 1, out_proj scaled by
    1/sqrt(n_layers). ``jitter`` also randomises norms, D and A so tests exercise every weight."""
    rng = np.random.default_rng(seed)
    D, E, N, K, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv, cfg.dt_rank

    def unif(shape, bound):
        return ((rng.random(shape, dtype=np.float32) * 2 - 1) * bound).astype(np.float32)

    w = {"backbone.embedding.weight": (rng.standard_normal((cfg.vocab, D), dtype=np.float32) * 0.02)}
    for i in range(cfg.n_layers):
        p = f"backbone.layers.{i}."
        dt = np.exp(rng.random(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        dt = np.maximum(dt, 1e-4)
        A = np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))
        if jitter:
            A = A * np.exp(rng.uniform(-0.5, 0.5, size=(E, N)))
        w.update(
            {
                p + "norm.weight": np.ones(D, np.float32),
                p + "mixer.in_proj.weight": unif((2 * E, D), 1 / math.sqrt(D)),
                p + "mixer.conv1d.weight": unif((E, 1, K), 1 / math.sqrt(K)),
                p + "mixer.conv1d.bias": unif((E,), 1 / math.sqrt(K)),
                p + "mixer.x_proj.weight": unif((R + 2 * N, E), 1 / math.sqrt(E)),
                p + "mixer.dt_proj.weight": unif((E, R), R**-0.5),
                p + "mixer.dt_proj.bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
                p + "mixer.A_log": np.log(A).astype(np.float32),
                p + "mixer.D": np.ones(E, np.float32),
                p + "mixer.out_proj.weight": unif((D, E), 1 / math.sqrt(E)) / math.sqrt(cfg.n_layers),
            }
        )
        if jitter:
            w[p + "norm.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32)
            w[p + "mixer.D"] = rng.standard_normal(E).astype(np.float32)
    w["backbone.norm_f.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32) if jitter else np.ones(D, np.float32)
    return w


def init_transformer(cfg: TransformerConfig, seed: int = 0, jitter: bool = False) -> Weights:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers)."""
    rng = np.random.default_rng(seed)
    D, H = cfg.d_model, cfg.d_mlp

    def normal(shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def ln(name):
        if jitter:
            return {name + ".weight": rng.uniform(0.5, 1.5, D).astype(np.float32), name + ".bias": normal(D, 0.1)}
        return {name + ".weight": np.ones(D, np.float32), name + ".bias": np.zeros(D, np.float32)}

    bias_std = 0.02 if jitter else 0.0
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layers)
    w = {"transformer.wte.weight": normal((cfg.vocab, D))}
    for i in range(cfg.n_layers):
        p = f"transformer.h.{i}."
        w.update(ln(p + "ln_1"))
        w.update(ln(p + "ln_2"))
        w[p + "attn.c_attn.weight"] = normal((3 * D, D), 0.1 if jitter else 0.02)
        w[p + "attn.c_attn.bias"] = normal(3 * D, bias_std)
        w[p + "attn.c_proj.weight"] = normal((D, D), proj_std)
        w[p + "attn.c_proj.bias"] = normal(D, bias_std)
        w[p + "mlp.c_fc.weight"] = normal((H, D))
        w[p + "mlp.c_fc.bias"] = normal(H, bias_std)
        w[p + "mlp.c_proj.weight"] = normal((D, H), proj_std)
        w[p + "mlp.c_proj.bias"] = normal(D, bias_std)
    w.update(ln("transformer.ln_f"))
    return w


def init_weights(arch: str, cfg, seed: int = 0, jitter: bool = False) -> Weights:
    return init_mamba(cfg, seed, jitter) if arch == "mamba" else init_transformer(cfg, seed, jitter)


def count_params(weights: Weights) -> int:
    """Distinct parameters: a tied ``lm_head.weight`` is not counted twice."""
    return sum(int(np.prod(v.shape)) for k, v in weights.items() if k != "lm_head.weight")


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
    head, emb = w.get("lm_head.weight"), w.get("backbone.embedding.weight")
    if head is not None and emb is not None and head.shape == emb.shape and np.array_equal(head, emb):
        del w["lm_head.weight"]
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


def infer_arch(weights: Weights) -> str:
    if "backbone.embedding.weight" in weights:
        return "mamba"
    if "transformer.wte.weight" in weights:
        return "transformer"
    raise ValueError("weights are neither mamba-ssm (backbone.embedding.weight) nor ssmbench transformer (transformer.wte.weight)")


def infer_config(weights: Weights):
    """(arch, config) from the weight shapes alone."""
    arch = infer_arch(weights)
    layer_ids = {int(k.split(".")[2]) for k in weights if k.startswith(("backbone.layers.", "transformer.h."))}
    n_layers = max(layer_ids) + 1 if layer_ids else 0
    if arch == "mamba":
        V, D = weights["backbone.embedding.weight"].shape
        p = "backbone.layers.0.mixer."
        E, N = weights[p + "A_log"].shape
        K = weights[p + "conv1d.weight"].shape[-1]
        R = weights[p + "dt_proj.weight"].shape[1]
        if E % D:
            raise ValueError(f"d_inner {E} is not a multiple of d_model {D}")
        return arch, ModelConfig(vocab=V, d_model=D, n_layers=n_layers, d_state=N, d_conv=K, expand=E // D, dt_rank=R)
    V, D = weights["transformer.wte.weight"].shape
    H = weights["transformer.h.0.mlp.c_fc.weight"].shape[0] if n_layers else 4 * D
    return arch, TransformerConfig(vocab=V, d_model=D, n_layers=n_layers, n_head=default_heads(D), d_mlp=H)
