"""--impl: other people's implementations (transformers' Mamba and Mamba2 here) built from
ssmbench's weights, checked against the float64 reference as ssmbench's own model is, driven by
the same paths, and recorded as theirs."""

import json

import numpy as np
import pytest
from conftest import options

from ssmbench import archs, parity
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.mamba2 import Config as Mamba2Config
from ssmbench.interface import BackendUnavailable
from ssmbench.plan import expand_points
from ssmbench.weights import init_weights

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
tb = pytest.importorskip("ssmbench.backends.torch.backend")

CONFIGS = {  # odd on purpose: dt_rank 3, 8 heads of 10 in 2 groups, 37 tokens = 2 chunks + 5
    "mamba": MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2),
    "mamba2": Mamba2Config(vocab=23, d_model=40, n_layers=2, d_state=6, d_conv=3, expand=2, headdim=10, ngroups=2, chunk_size=16),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hf_passes_the_parity_checks_on_both_paths(dtype):
    checks = parity.checks_for(tb.TorchCPU, ["mamba", "mamba2", "transformer"], dtypes=[dtype], impls=["hf"])
    assert {(c.arch, c.mode, c.scan, c.impl) for c in checks} == {
        (a, m, "hf" if m == "forward" else "recurrent", "hf") for a in ("mamba", "mamba2") for m in ("forward", "decode")
    }  # the Transformer baseline is ssmbench's own
    for res in parity.run_checks(tb.TorchCPU(), checks):
        assert res["passed"] and res["rel_err"] < parity.TOLERANCE[dtype], res


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_hf_train_step_takes_the_same_loss_and_update_as_ssmbench(arch):
    """The same weights and tokens give the same loss, and one AdamW step the same weights."""
    b, cfg = tb.TorchCPU(), CONFIGS[arch]
    w = init_weights(arch, cfg, seed=3, jitter=True)
    toks = np.random.default_rng(0).integers(0, cfg.vocab, (2, 38))
    x, y = b.tokens(toks[:, :-1]), b.tokens(toks[:, 1:])
    ours, theirs = b.build(arch, w, cfg, dtype="float32"), b.build(arch, w, cfg, dtype="float32", impl="hf")
    assert abs(float(b.train_step(ours, x, y)) - float(b.train_step(theirs, x, y))) < 1e-5
    after = b.weights(ours)
    hf_after = {k.replace("embeddings", "embedding"): v for k, v in b.weights(theirs).items() if k != "lm_head.weight"}
    assert hf_after.keys() == after.keys()
    for k in after:
        np.testing.assert_allclose(hf_after[k], after[k], atol=2e-5, err_msg=k)
    assert not np.allclose(after["backbone.norm_f.weight"], w["backbone.norm_f.weight"])  # a step was taken


def test_hf_says_which_code_path_ran():
    b, cfg = tb.TorchCPU(), CONFIGS["mamba"]
    m = b.build("mamba", init_weights("mamba", cfg), cfg, dtype="float32", impl="hf")
    b.forward(m, b.tokens(np.zeros((1, 5), np.int64)))
    how = b.execution(m)
    assert how["impl_version"] == __import__("transformers").__version__
    assert how["impl_path"].startswith("torch") and "use_mambapy False" in how["impl_path"]


def test_mamba_ssm_and_the_transformer_are_unavailable_with_the_reason():
    b = tb.TorchCPU()
    cfg = CONFIGS["mamba2"]
    with pytest.raises(BackendUnavailable, match="CUDA only"):
        b.build("mamba2", init_weights("mamba2", cfg), cfg, dtype="float32", impl="mamba-ssm")
    t = archs.config("transformer", archs.get("transformer").config_for(CONFIGS["mamba"]).to_dict())
    with pytest.raises(BackendUnavailable, match="ssmbench's own"):
        b.build("transformer", init_weights("transformer", t), t, dtype="float32", impl="hf")


def test_hf_mamba_on_cuda_with_an_unbuilt_mamba_ssm_is_unavailable_with_the_fix(monkeypatch):
    """transformers takes mamba_ssm's selective scan wherever mamba_ssm imports; without its CUDA
    extension that raised inside transformers' forward on the H100 (reports/h100-2026-12-07). The
    point is refused before it builds, with what to do; a built one, or none, is not refused."""
    import importlib.machinery
    import sys
    import types

    from ssmbench.backends.torch import impls

    names = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface", "mamba_ssm.models")
    fake = {n: types.ModuleType(n) for n in (*names, "mamba_ssm.models.config_mamba", "mamba_ssm.models.mixer_seq_simple")}
    for name, mod in fake.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, mod)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(fake[parent], child, mod)
    fake["mamba_ssm.models.config_mamba"].MambaConfig = fake["mamba_ssm.models.mixer_seq_simple"].MambaLMHeadModel = None
    ssi = fake["mamba_ssm.ops.selective_scan_interface"]
    ssi.selective_scan_cuda = None
    cfg, cuda = CONFIGS["mamba"], torch.device("cuda")
    w = init_weights("mamba", cfg)
    with pytest.raises(BackendUnavailable, match="selective_scan_cuda.*uninstall mamba-ssm"):
        impls.build("hf", "mamba", w, cfg, cuda, None)
    with pytest.raises(BackendUnavailable, match="Mamba-1 needs its CUDA extension"):
        impls.build("mamba-ssm", "mamba", w, cfg, cuda, None)
    ssi.selective_scan_cuda = object()  # built: nothing refused (the builds then go on to the device)
    assert not impls._mamba_ssm_scan_unbuilt()
    impls.build("hf", "mamba", w, cfg, torch.device("cpu"), None)  # and on the CPU it is never consulted


def test_plan_runs_each_impl_once_on_its_own_scan_and_skips_what_cannot_run():
    opts = options(backend=["torch-cpu,jax-cpu"], arch="mamba,transformer", impl=["ssmbench,hf,mamba-ssm"], scan=["all"])
    got = {(p.backend, p.arch, p.impl, p.scan): p.skip_reason for p in expand_points("throughput", opts, ["forward"])}
    assert got[("torch-cpu", "mamba", "hf", "hf")] is None
    assert {s for (b, a, i, s) in got if (b, a, i) == ("torch-cpu", "mamba", "ssmbench")} == set(tb.TorchCPU.scans["mamba"])
    assert "not mamba-ssm" in got[("torch-cpu", "mamba", "mamba-ssm", "mamba-ssm")]
    assert "not hf" in got[("jax-cpu", "mamba", "hf", "hf")]
    assert "ssmbench's own" in got[("torch-cpu", "transformer", "hf", "hf")]
    decode = expand_points("throughput", opts, ["decode"])
    assert {(p.impl, p.scan) for p in decode if p.backend == "torch-cpu" and p.arch == "mamba"} == {
        ("ssmbench", "recurrent"),
        ("hf", "recurrent"),
        ("mamba-ssm", "recurrent"),
    }
    assert len({p.key() for p in decode}) == len(decode)  # the implementation is part of a point's identity


def test_cli_bad_impl_is_one_line_exit_2(run_cli):
    code, _, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--impl", "ssmbench,vllm")
    assert code == 2 and err.count("\n") == 1 and "'vllm'" in err and "hf" in err, err


def test_cli_records_carry_the_impl_its_version_and_path(run_cli, tmp_path):
    code, out, err = run_cli(
        "run", "throughput", "-b", "torch-cpu", "--impl", "ssmbench,hf", "--arch", "mamba2", "--quick", "--mode", "forward,decode",
        "--min-iters", "2", "--min-time", "0", "--out", tmp_path,
    )  # fmt: skip
    assert code == 0, err
    recs = [json.loads(line) for f in tmp_path.glob("throughput-*.jsonl") for line in f.read_text().splitlines()]
    assert sorted((r["impl"], r["mode"], r["scan"], r["status"]) for r in recs) == [
        ("hf", "decode", "recurrent", "ok"),
        ("hf", "forward", "hf", "ok"),
        ("ssmbench", "decode", "recurrent", "ok"),
        ("ssmbench", "forward", "ssd", "ok"),
    ]
    for r in recs:
        assert ("impl_path" in r) == (r["impl"] == "hf")
        assert r["metrics"]["parity"]["passed"]
    assert "recurrent (hf)" in out  # the table tells the two decode rows apart
    parity_recs = [json.loads(line) for f in tmp_path.glob("parity-*.jsonl") for line in f.read_text().splitlines()]
    assert {(r["impl"], r["mode"]) for r in parity_recs} >= {("hf", "forward"), ("hf", "decode")}
    assert all(r["impl_version"] and r["impl_path"] for r in parity_recs if r["impl"] == "hf")  # a failed check says whose code too


def test_another_implementations_mamba2_is_checked_at_the_timed_models_groups():
    """ssmbench's own Mamba-2 is checked at 2 groups (covering every count); another implementation
    at the point's own, so one right for 1-group models only is timed on those and refused on others."""
    from ssmbench.runner import ParityGate

    for groups in (1, 4):
        opts = options(backend=["torch-cpu"], arch="mamba2", impl=["ssmbench,hf"], ngroups=groups, headdim=16, d_model=32, layers=1)
        gate = ParityGate(expand_points("throughput", opts, ["forward"]), ".", "r", {})
        checks = {c.impl: c for c in gate.needed["torch-cpu"]}
        assert checks["hf"].ngroups == groups and checks["ssmbench"].ngroups is None
        assert parity.model_config("mamba2", checks["hf"].ngroups).ngroups == groups
    assert parity.check_for("mamba2", "forward", "hf", "float32", "hf", 3).ngroups == 2  # 3 does not divide the check's 8 heads
    res = parity.run_checks(tb.TorchCPU(), [parity.check_for("mamba2", "forward", "hf", "float32", "hf", 4)])
    assert res[0]["passed"] and res[0]["ngroups"] == 4, res


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_another_implementations_mamba2_check_fits_causal_conv1d(groups):
    """causal-conv1d's kernels (mamba-ssm's and transformers' Mamba-2 path where it is built) take
    conv channels in multiples of 8: at 1 group the check's default state (6) gave 92 and both
    implementations raised on the H100 before being timed. Another implementation's check keeps an
    odd state size (not a power of two) whose conv channels fit; ssmbench's own check is unchanged."""
    cfg = parity.model_config("mamba2", groups)
    assert cfg.ngroups == groups and cfg.conv_dim % 8 == 0, cfg
    assert cfg.d_state & (cfg.d_state - 1) != 0 and cfg.d_state >= parity.SETTINGS["mamba2"]["d_state"]
    assert parity.model_config("mamba2").d_state == parity.SETTINGS["mamba2"]["d_state"]
