"""Real models on disk (ssmbench.checkpoints, ``--model``): tiny checkpoints of both formats are
built on the fly, in mamba-ssm's layout (config.json with d_model, n_layer, ssm_cfg; our names)
and in Hugging Face's (config.json with model_type; ``backbone.embeddings``; sharded or not), and
read back as the weights they were made from; a bad one is refused naming the file and the
problem, and the CLI turns that into exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssmbench import archs, load_weights
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.mamba2 import Config as Mamba2Config
from ssmbench.checkpoints import CheckpointError, checkpoint_weights, open_checkpoint
from ssmbench.weights import init_weights

safetensors = pytest.importorskip("safetensors.numpy")

M1 = MambaConfig(vocab=24, d_model=16, n_layers=2, d_state=5, d_conv=3, expand=2)
M2 = Mamba2Config(vocab=24, d_model=16, n_layers=2, d_state=6, d_conv=3, expand=2, headdim=8, ngroups=2, chunk_size=16)


def mamba_ssm_config(arch, cfg) -> dict:
    ssm = {"d_state": cfg.d_state, "d_conv": cfg.d_conv, "expand": cfg.expand}
    if arch == "mamba2":
        ssm |= {"layer": "Mamba2", "headdim": cfg.headdim, "ngroups": cfg.ngroups, "chunk_size": cfg.chunk_size}
    # vocab_size unpadded: mamba-ssm pads it up to pad_vocab_size_multiple (24 from 21 here)
    return {"d_model": cfg.d_model, "n_layer": cfg.n_layers, "vocab_size": cfg.vocab - 3, "pad_vocab_size_multiple": 8, "ssm_cfg": ssm}


def hf_config(arch, cfg) -> dict:
    c = {"model_type": arch, "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers, "vocab_size": cfg.vocab}
    c |= {"state_size": cfg.d_state, "conv_kernel": cfg.d_conv, "expand": cfg.expand, "use_bias": False, "use_conv_bias": True}
    if arch == "mamba2":
        return c | {"head_dim": cfg.headdim, "num_heads": cfg.nheads, "n_groups": cfg.ngroups, "chunk_size": cfg.chunk_size}
    return c | {"time_step_rank": "auto"}


def write_checkpoint(folder, fmt, arch, cfg, *, shards=1, seed=1):
    """A checkpoint of ``arch`` at ``cfg`` in ``fmt`` (mamba-ssm or hf) under folder; its weights."""
    folder.mkdir(parents=True, exist_ok=True)
    w = init_weights(arch, cfg, seed, jitter=True)
    stored = {("backbone.embeddings.weight" if fmt == "hf" and k == "backbone.embedding.weight" else k): v for k, v in w.items()}
    if fmt == "hf":
        stored["lm_head.weight"] = stored["backbone.embeddings.weight"]  # tied, saved as transformers may
    (folder / "config.json").write_text(json.dumps(mamba_ssm_config(arch, cfg) if fmt == "mamba-ssm" else hf_config(arch, cfg)))
    if shards == 1:
        safetensors.save_file(stored, str(folder / "model.safetensors"))
        return w
    names = sorted(stored)
    weight_map = {}
    for i in range(shards):
        part = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        own = names[i::shards]
        safetensors.save_file({k: stored[k] for k in own}, str(folder / part))
        weight_map |= dict.fromkeys(own, part)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return w


@pytest.mark.parametrize("fmt,shards", [("mamba-ssm", 1), ("hf", 1), ("hf", 2)])
@pytest.mark.parametrize("arch,cfg", [("mamba", M1), ("mamba2", M2)], ids=["mamba", "mamba2"])
def test_checkpoint_folders_read_back_as_the_weights_and_config_they_were_made_from(tmp_path, fmt, shards, arch, cfg):
    w = write_checkpoint(tmp_path / "ck", fmt, arch, cfg, shards=shards)
    ck = open_checkpoint(tmp_path / "ck")
    assert (ck.format, ck.arch, ck.config) == (fmt, arch, cfg.to_dict())
    assert len(ck.files) == shards and len(ck.sha256) == 64
    loaded = ck.load()
    assert sorted(loaded) == sorted(w)
    for k in w:
        np.testing.assert_array_equal(loaded[k], w[k], err_msg=k)
    # the Python API reads the same folder, and a point's worker gets the same weights back
    assert sorted(load_weights(tmp_path / "ck")) == sorted(w)
    assert sorted(checkpoint_weights(ck.source())) == sorted(w)


def test_half_precision_storage_and_a_bare_weights_file(tmp_path):
    w = init_weights("mamba", M1, 2)
    safetensors.save_file({k: v.astype(np.float16) for k, v in w.items()}, str(tmp_path / "w.safetensors"))
    ck = open_checkpoint(tmp_path / "w.safetensors")
    assert (ck.format, ck.arch, ck.config) == ("weights", "mamba", M1.to_dict())
    loaded = ck.load()
    assert all(v.dtype == np.float32 for v in loaded.values())
    np.testing.assert_array_equal(loaded["backbone.embedding.weight"], w["backbone.embedding.weight"].astype(np.float16).astype(np.float32))


def test_a_mamba_ssm_folder_with_a_bf16_pytorch_model_bin(tmp_path):
    """mamba-ssm's own files: config.json and torch.save's state dict, here in bf16 with the tied
    head saved too (as mamba-ssm saves it)."""
    torch = pytest.importorskip("torch")
    w = write_checkpoint(tmp_path / "ck", "mamba-ssm", "mamba2", M2)
    (tmp_path / "ck" / "model.safetensors").unlink()
    sd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in w.items()}
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    torch.save(sd, tmp_path / "ck" / "pytorch_model.bin")
    ck = open_checkpoint(tmp_path / "ck")
    assert (ck.format, ck.arch, ck.config, ck.files) == ("mamba-ssm", "mamba2", M2.to_dict(), (str(tmp_path / "ck" / "pytorch_model.bin"),))
    loaded = ck.load()
    assert sorted(loaded) == sorted(w)  # the tied head dropped
    np.testing.assert_array_equal(
        loaded["backbone.layers.1.mixer.in_proj.weight"], sd["backbone.layers.1.mixer.in_proj.weight"].float().numpy()
    )


def test_the_checkpoints_logits_are_the_references_through_the_python_api(tmp_path):
    """ssmbench.logits on a Hugging Face Mamba-2 folder (2 groups) equals the float64 reference on
    the weights it was made from: given the folder, its config.json tells the groups; given the
    weights alone, the caller does."""
    import ssmbench

    torch = pytest.importorskip("torch")  # noqa: F841 - the backend's framework
    w = write_checkpoint(tmp_path / "ck", "hf", "mamba2", M2)
    tokens = np.random.default_rng(0).integers(0, M2.vocab, (2, 19))
    want = archs.mamba2.logits({k: v.astype(np.float64) for k, v in w.items()}, tokens, M2)
    for got in (
        ssmbench.logits("torch-cpu", tmp_path / "ck", tokens),
        ssmbench.logits("torch-cpu", load_weights(tmp_path / "ck"), tokens, ngroups=2),
    ):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    one_group = ssmbench.logits("torch-cpu", load_weights(tmp_path / "ck"), tokens)  # the shapes alone: 1 group, another model
    assert np.linalg.norm(one_group - want) / np.linalg.norm(want) > 1e-2


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_transformers_save_pretrained_folders_give_transformers_own_logits(tmp_path, arch):
    """Folders written by transformers itself (MambaForCausalLM / Mamba2ForCausalLM's
    save_pretrained) read back as the model transformers runs: the float64 reference on the loaded
    weights gives its logits. Mamba-2 with 2 groups, told as the Python API is."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "mamba":
        cfg = tf.MambaConfig(vocab_size=48, hidden_size=16, num_hidden_layers=2, state_size=5, conv_kernel=3, expand=2)
        model, groups = tf.MambaForCausalLM(cfg), None
    else:
        sizes = dict(vocab_size=48, hidden_size=16, num_hidden_layers=2, state_size=6, conv_kernel=3, expand=2, head_dim=8, num_heads=4)
        cfg = tf.Mamba2Config(**sizes, n_groups=2, chunk_size=16, tie_word_embeddings=True)
        model, groups = tf.Mamba2ForCausalLM(cfg), 2
    model.eval().save_pretrained(tmp_path / "ck")
    ck = open_checkpoint(tmp_path / "ck")
    assert (ck.format, ck.arch, ck.config["d_model"], ck.config["n_layers"]) == ("hf", arch, 16, 2)
    tokens = torch.randint(0, 48, (2, 11))
    with torch.no_grad():
        want = model(tokens).logits.double().numpy()
    got = archs.get(arch).logits(load_weights(tmp_path / "ck"), tokens.numpy(), archs.config(arch, ck.config))
    assert groups is None or ck.config["ngroups"] == groups
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_an_untied_head_is_read_and_multiplied_by(tmp_path, arch):
    """transformers' Mamba2Config leaves the head untied by default (and MambaConfig can): such a
    model's own lm_head.weight is read and counted, and every backend here gives transformers'
    logits with it."""
    import ssmbench
    from ssmbench import backends as registry
    from ssmbench.weights import count_params

    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    sizes = dict(vocab_size=48, hidden_size=16, num_hidden_layers=1, state_size=6, conv_kernel=3, expand=2)
    if arch == "mamba":
        model = tf.MambaForCausalLM(tf.MambaConfig(**sizes, tie_word_embeddings=False))
    else:
        model = tf.Mamba2ForCausalLM(tf.Mamba2Config(**sizes, head_dim=8, num_heads=4, n_groups=1, chunk_size=16))
    assert not model.config.tie_word_embeddings
    model.eval().save_pretrained(tmp_path / "ck")
    w = load_weights(tmp_path / "ck")
    assert "lm_head.weight" in w and not np.array_equal(w["lm_head.weight"], w["backbone.embedding.weight"])
    assert count_params(w) == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 48, (2, 11))
    with torch.no_grad():
        want = model(tokens).logits.double().numpy()
    for backend in ("reference", "torch-cpu", "jax-cpu", "tf-cpu"):
        if backend != "reference" and not registry.availability(backend).available:
            continue
        got = ssmbench.logits(backend, tmp_path / "ck", tokens.numpy())
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, backend


def test_a_mamba_ssm_checkpoint_with_its_own_head(tmp_path):
    """mamba-ssm's tie_embeddings=False: the folder's lm_head.weight is read and the reference
    multiplies by it."""
    w = write_checkpoint(tmp_path / "ck", "mamba-ssm", "mamba", M1)
    head = np.random.default_rng(2).standard_normal(w["backbone.embedding.weight"].shape).astype(np.float32)
    safetensors.save_file(w | {"lm_head.weight": head}, str(tmp_path / "ck" / "model.safetensors"))
    _edit_config(tmp_path / "ck", tie_embeddings=False)
    loaded = open_checkpoint(tmp_path / "ck").load()
    np.testing.assert_array_equal(loaded["lm_head.weight"], head)
    tokens = np.random.default_rng(3).integers(0, M1.vocab, (1, 7))
    hidden = archs.mamba.logits(w | {"lm_head.weight": np.eye(M1.vocab, M1.d_model, dtype=np.float32)}, tokens)  # the final norm's output
    np.testing.assert_allclose(archs.mamba.logits(loaded, tokens), hidden[..., : M1.d_model] @ head.T.astype(np.float64), rtol=1e-9)


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


BAD = {  # what is done to a good checkpoint -> what the message must name
    "no config.json": (lambda f: (f / "config.json").unlink(), ["no config.json"]),
    "unknown model_type": (lambda f: _edit_config(f, model_type="jamba"), ["model_type 'jamba'", "mamba, mamba2"]),
    "projection biases": (lambda f: _edit_config(f, use_bias=True), ["use_bias"]),
    "a size missing from config.json": (
        lambda f: (f / "config.json").write_text(json.dumps({"model_type": "mamba", "vocab_size": 24})),
        ["config.json", "'hidden_size'"],
    ),
    "a size the weights do not have": (lambda f: _edit_config(f, state_size=8), ["d_state", "config.json says 8"]),
    "a truncated file": (
        lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-64]),
        ["model.safetensors", "truncated"],
    ),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), ["no weights", "model.safetensors"]),
    "a head of another shape": (
        lambda f: safetensors.save_file(
            {k: (v[:-1] if k == "lm_head.weight" else v) for k, v in safetensors.load_file(str(f / "model.safetensors")).items()},
            str(f / "model.safetensors"),
        ),
        ["lm_head.weight is [23, 16]", "embedding's [24, 16]"],
    ),
    "a weight missing": (
        lambda f: safetensors.save_file(
            {k: v for k, v in safetensors.load_file(str(f / "model.safetensors")).items() if "layers.1.mixer.D" not in k},
            str(f / "model.safetensors"),
        ),
        ["missing backbone.layers.1.mixer.D"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_checkpoint_is_refused_naming_the_file_and_the_problem(tmp_path, case):
    write_checkpoint(tmp_path / "ck", "hf", "mamba", M1)
    spoil, names = BAD[case]
    spoil(tmp_path / "ck")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(tmp_path / "ck")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "ck") in msg, msg
    for name in names:
        assert name in msg, msg


@pytest.mark.parametrize(
    "ssm_changes, names",
    [
        ({"attn_layer_idx": [1]}, ["attention layers"]),
        ({"d_intermediate": 64}, ["MLP blocks"]),
        ({"ssm_cfg": {"layer": "Mamba3"}}, ["'Mamba3'"]),
    ],
    ids=["hybrid", "mlp", "mamba3"],
)
def test_what_the_model_cannot_represent_yet_is_refused_by_name(tmp_path, ssm_changes, names):
    write_checkpoint(tmp_path / "ck", "mamba-ssm", "mamba", M1)
    _edit_config(tmp_path / "ck", **ssm_changes)
    with pytest.raises(CheckpointError, match="not supported yet") as e:
        open_checkpoint(tmp_path / "ck")
    for name in names:
        assert name in str(e.value)


def test_a_hub_name_is_not_fetched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="does not download models"):
        open_checkpoint("state-spaces/mamba-130m-hf")


def test_cli_model_runs_the_checkpoint_and_records_its_source(fake_backends, run_cli, tmp_path):
    write_checkpoint(tmp_path / "ck", "hf", "mamba2", M2)
    code, _, err = run_cli(
        "run", "throughput", "--backend", "fake-ok", "--model", tmp_path / "ck", "--quick", "--mode", "forward", "--out", tmp_path / "r"
    )
    assert code == 0, err
    (rec,) = [json.loads(line) for f in (tmp_path / "r").glob("throughput-*.jsonl") for line in f.read_text().splitlines()]
    assert rec["status"] == "ok" and rec["arch"] == "mamba2" and rec["config"] == M2.to_dict()
    assert rec["params"] == archs.mamba2.params(M2)
    assert rec["model_source"] == {k: v for k, v in open_checkpoint(tmp_path / "ck").source().items()}


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--d-model", "32"], ["--model", "drop --d-model"]),
        (["--arch", "mamba"], ["--arch mamba", "mamba2 model"]),
        (["--preset", "mamba-130m"], ["drop --preset"]),
    ],
    ids=["size flag", "other arch", "preset"],
)
def test_cli_model_with_flags_that_size_a_model_is_bad_usage(run_cli, tmp_path, extra, names):
    write_checkpoint(tmp_path / "ck", "hf", "mamba2", M2)
    code, out, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--model", tmp_path / "ck", *extra)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err


@pytest.mark.parametrize("argv", [["run", "depth-scaling"], ["run", "parity"], ["sweep", "dstate"]], ids=["depth", "parity", "dstate"])
def test_cli_model_in_a_suite_that_varies_the_model_is_bad_usage(run_cli, tmp_path, argv):
    write_checkpoint(tmp_path / "ck", "mamba-ssm", "mamba", M1)
    code, _, err = run_cli(*argv, "--backend", "torch-cpu", "--model", tmp_path / "ck", "--quick")
    assert code == 2 and err.startswith("error: --model fixes the model") and err.count("\n") == 1, err


def test_cli_bad_checkpoint_is_one_line_exit_2(run_cli, tmp_path):
    write_checkpoint(tmp_path / "ck", "hf", "mamba", M1)
    _edit_config(tmp_path / "ck", model_type="falcon_mamba")
    code, _, err = run_cli("run", "throughput", "--backend", "torch-cpu", "--model", tmp_path / "ck")
    assert code == 2 and err.count("\n") == 1 and "falcon_mamba" in err and str(tmp_path / "ck") in err, err


def test_two_checkpoints_of_one_config_are_two_points_and_two_report_rows(tmp_path):
    """--resume and the report tell checkpoints apart by their weights' hash, not by their sizes
    alone, and the report's model column names the checkpoint."""
    from ssmbench.fmt import model_label
    from ssmbench.plan import Point
    from ssmbench.report import tables
    from ssmbench.results import make_record, record_key

    sources = []
    for seed in (1, 2):
        write_checkpoint(tmp_path / f"ck{seed}", "hf", "mamba", M1, seed=seed)
        sources.append(open_checkpoint(tmp_path / f"ck{seed}").source())
    pts = [
        Point("throughput", "torch-cpu", "mamba", "forward", "sequential", "float32", M1.to_dict(), 2, 64, model_source=s) for s in sources
    ]
    recs = [make_record(p, run_id="r", env={}, status="ok", framework="torch", device="cpu") for p in pts]
    assert pts[0].key() != pts[1].key() and [record_key(r) for r in recs] == [p.key() for p in pts]
    assert len(tables(recs)["throughput"]["rows"]) == 2
    assert model_label(recs[1]) == "ck2: " + model_label({**recs[1], "model_source": None})
