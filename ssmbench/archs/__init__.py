"""The architecture registry: ``--arch`` name -> the module that defines the architecture.

Each module here (``mamba``, ``mamba2``, ``transformer``) is one architecture, and defines:

    NAME                       the --arch name, and the records' ``arch``
    Config                     its config dataclass (to_dict / from_dict; vocab, d_model, n_layers)
    config_for(model, **settings)  its config for a run whose shared sizes are ``model`` (a Mamba
                               config; the baseline is matched to it in parameters) and whose
                               own settings (SETTINGS, e.g. mamba2's headdim) are ``settings``
    params(cfg)                the parameter count (SPEC's formula)
    init(cfg, seed, jitter)    seeded float32 weights under its state-dict names
    owns(weights)              whether a state dict is this architecture's; infer_config(weights)
    logits, decode_logits      the float64 NumPy reference: (weights, tokens (B, L), cfg) -> (B, L, V)
    FIXED_SCAN, DECODE_SCAN    the scan a point records (None: the backend's --scan applies)
    STATE_GROWS                whether its decode state grows with the context (a KV cache)
    label(config dict)         a short model label for tables
    flops_per_token            model FLOPs (ssmbench.flops), layer_bytes_per_token (memory_model)
    OP, OP_ARGS, OP_FP32,      the op the scan suite times alone for it (ssmbench.ops): its
    op_shape, op_inputs,       inputs' names in call order, which stay float32, their shapes,
    op_min_bytes               seeded values, and the memory floor's bytes

and each framework builds it from its own module of the same name,
``ssmbench.backends.<framework>.<NAME>`` (``framework_module``). A new architecture is a module
here, one per framework folder, and its name in ARCHS.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from . import mamba, mamba2, transformer

ARCHS: dict[str, ModuleType] = {m.NAME: m for m in (mamba, mamba2, transformer)}


def names() -> list[str]:
    return list(ARCHS)


def get(name: str) -> ModuleType:
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(ARCHS)}") from None


def is_attention(name: str) -> bool:
    """Whether ``name`` is the attention baseline the SSMs are compared with (crossovers, plots)."""
    return get(name).OP == "attention"


def config(name: str, d: dict):
    """A record's or point's config dict -> the architecture's Config."""
    return get(name).Config.from_dict(d)


def infer(weights: dict, ngroups: int | None = None):
    """(arch name, config) from a state dict's names and shapes. ``ngroups`` (Mamba-2's groups of
    heads sharing B and C, which the shapes do not separate from d_state) is 1 unless given."""
    for arch in ARCHS.values():
        if arch.owns(weights):
            if ngroups is None:
                return arch.NAME, arch.infer_config(weights)
            if "ngroups" not in getattr(arch, "SETTINGS", ()):
                raise ValueError(f"ngroups applies to Mamba-2 weights only; these are {arch.NAME}'s")
            return arch.NAME, arch.infer_config(weights, ngroups=ngroups)
    raise ValueError("weights are none of: " + ", ".join(f"{a.NAME}" for a in ARCHS.values()) + " (by their state-dict names)")


def framework_module(name: str, framework: str) -> ModuleType:
    """The module that builds architecture ``name`` in ``framework`` (torch, jax, tf)."""
    return importlib.import_module(f"ssmbench.backends.{framework}.{get(name).NAME}")
