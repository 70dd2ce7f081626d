"""The architecture registry (ssmbench/archs): every architecture module defines what the harness
reads of it, every framework folder builds every architecture, and the shared pieces (parameter
formulas, config from weights, the chunked scans' budget) hold."""

import importlib

import numpy as np
import pytest

from ssmbench import archs
from ssmbench.weights import count_params, infer_config, init_weights

CONTRACT = (
    "NAME", "Config", "config_for", "params", "init", "owns", "infer_config", "logits", "decode_logits",
    "FIXED_SCAN", "DECODE_SCAN", "STATE_GROWS", "label", "flops_per_token", "layer_bytes_per_token",
    "OP", "OP_ARGS", "OP_FP32", "op_shape", "op_inputs", "op_min_bytes",
)  # fmt: skip
FRAMEWORK_CONTRACT = {  # what each framework's backend calls of an architecture's module there
    "torch": ("build", "op", "op_graph_refusal"),
    "jax": ("EMBEDDING", "hidden", "forward", "init_state", "prefill", "step", "op"),
    "tf": ("Model", "op"),
}
FRAMEWORK_IMPORT = {"torch": "torch", "jax": "jax", "tf": "tensorflow"}
ODD = archs.mamba.Config(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)
ODD_SETTINGS = {"mamba2": dict(d_state=6, headdim=10, ngroups=2, chunk_size=16)}  # 8 heads of 10 in 2 groups
NOT_IN_WEIGHTS = {  # config fields a state dict cannot tell: given to infer_config, or its defaults
    "transformer": {"matched_mamba_layers": 0},  # the Mamba depth it was matched to
    "mamba2": {"chunk_size": 256},  # a compute choice; ngroups is passed (the shapes do not separate it from N)
}


@pytest.mark.parametrize("name", archs.names())
def test_every_architecture_defines_the_contract(name):
    arch = archs.get(name)
    missing = [a for a in CONTRACT if not hasattr(arch, a)]
    assert not missing, missing
    assert arch.NAME == name and set(arch.OP_FP32) <= set(arch.OP_ARGS)


@pytest.mark.parametrize("framework", list(FRAMEWORK_CONTRACT))
@pytest.mark.parametrize("name", archs.names())
def test_every_framework_builds_every_architecture(name, framework):
    pytest.importorskip(FRAMEWORK_IMPORT[framework])
    module = archs.framework_module(name, framework)
    assert module.__name__ == f"ssmbench.backends.{framework}.{name}"
    missing = [a for a in FRAMEWORK_CONTRACT[framework] if not hasattr(module, a)]
    assert not missing, missing


def test_unknown_architectures_are_named_with_the_allowed_ones():
    with pytest.raises(ValueError, match="'mamba3'.*mamba, mamba2, transformer"):
        archs.get("mamba3")


@pytest.mark.parametrize("name", archs.names())
def test_params_formula_counts_the_initialised_weights_and_config_round_trips(name):
    cfg = archs.get(name).config_for(ODD, **ODD_SETTINGS.get(name, {}))
    w = init_weights(name, cfg, seed=3)
    assert count_params(w) == archs.get(name).params(cfg)
    arch, inferred = infer_config(w, ngroups=2) if name == "mamba2" else infer_config(w)
    assert arch == name
    assert inferred.to_dict() == {**cfg.to_dict(), **NOT_IN_WEIGHTS.get(name, {})}
    assert archs.config(name, cfg.to_dict()) == cfg


def test_mamba_130m_has_its_published_parameter_count():
    assert archs.mamba.params(archs.mamba.Config(vocab=50280, d_model=768, n_layers=24)) == 129_135_360


def test_mamba2_130m_has_its_published_parameter_count_and_defaults():
    c = archs.mamba2.config_for(archs.mamba.Config(vocab=50288, d_model=768, n_layers=24))
    assert (c.d_state, c.headdim, c.ngroups, c.chunk_size, c.nheads) == (128, 64, 1, 256, 24)
    assert archs.mamba2.params(c) == 128_989_632


def test_mamba2_weights_are_told_apart_and_their_groups_taken_as_given():
    cfg = archs.mamba2.config_for(ODD, **ODD_SETTINGS["mamba2"])
    w = init_weights("mamba2", cfg, seed=1)
    arch, one_group = infer_config(w)
    assert arch == "mamba2" and (one_group.ngroups, one_group.d_state) == (1, 12)  # 2 groups of N 6 read as 1 of 12
    assert infer_config(w, ngroups=2)[1] == cfg.with_(chunk_size=256)
    with pytest.raises(ValueError, match="do not fit ngroups 8"):
        infer_config(w, ngroups=8)  # 24 B and C channels (2GN) are not 8 groups of a whole N
    with pytest.raises(ValueError, match="Mamba-2 weights only"):
        infer_config(init_weights("mamba", ODD), ngroups=2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(headdim=48), "headdim 48 does not divide d_inner 80"),
        (dict(headdim=10, ngroups=3), "ngroups 3 does not divide the 8 heads"),
        (dict(headdim=10, chunk_size=0), "chunk_size 0 must be >= 1"),
    ],
)
def test_a_mamba2_config_that_is_no_model_says_which_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        archs.mamba2.config_for(ODD, **bad)


def test_mamba2_reference_chunked_and_recurrent_forms_agree_at_odd_shapes():
    """The chunked SSD (what the fast scans compute) against the recurrence, at lengths below,
    at and past a chunk, and the token-by-token decode against the parallel path."""
    cfg = archs.mamba2.config_for(ODD, **ODD_SETTINGS["mamba2"])
    w = init_weights("mamba2", cfg, seed=5, jitter=True)
    toks = np.random.default_rng(0).integers(0, cfg.vocab, (2, 37))
    ref = archs.mamba2.logits(w, toks, cfg)
    for T in (1, 5, 16, 37, 64):
        assert np.abs(archs.mamba2.logits(w, toks, cfg, chunk=T) - ref).max() < 1e-10 * np.abs(ref).max(), T
    assert np.abs(archs.mamba2.decode_logits(w, toks, cfg) - ref).max() < 1e-10 * np.abs(ref).max()
    one_group = archs.mamba2.logits(w, toks, cfg.with_(ngroups=1, d_state=12))
    assert np.abs(one_group - ref).max() > 1e-3 * np.abs(ref).max()  # ngroups changes the function: it is not ignored


def test_weights_of_no_known_architecture_are_refused():
    with pytest.raises(ValueError, match="none of: mamba, mamba2, transformer"):
        archs.infer({"encoder.weight": np.zeros((2, 2))})


def test_the_chunked_scans_budget_keeps_each_chunk_inside_float32():
    chunk = archs.mamba.chunk_length
    assert chunk(0.0, 100) == 100
    assert chunk(1.0, 100) == 40  # 40 steps of |Δ A| = 1: exp(±40) stays far inside fp32
    assert chunk(1000.0, 100) == 1  # a single huge step: clamped per step, a chunk of 1
    with pytest.raises(FloatingPointError):
        chunk(float("nan"), 10)
    s = archs.mamba.op_shape(ODD.to_dict(), 2, 50)
    ins = archs.mamba.op_inputs(s, seed=1)
    T = archs.mamba.op_chunk(ins)
    step = float(np.logaddexp(0.0, ins["dt"] + ins["dt_bias"]).max() * (-ins["A"]).max())
    assert 1 <= T <= 50 and T * step <= archs.mamba.CHUNK_LOG_BUDGET


def test_the_registry_imports_no_framework():
    """The core names architectures without importing torch, jax or tensorflow: a framework module
    is imported only when a backend builds from it."""
    import subprocess
    import sys

    code = "import sys, ssmbench.archs, ssmbench.weights; print(sorted(m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert importlib.import_module("ssmbench.archs").names() == ["mamba", "mamba2", "transformer"]
