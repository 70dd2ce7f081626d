"""Named model/run configurations taken from the seed studies (../shared/seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .archs.mamba import Config as MambaConfig


@dataclass(frozen=True)
class Published:
    """One figure a study published, printed beside the measured one by reports."""

    what: str  # e.g. "train tokens/s"
    value: float | str
    metric: str | None  # record field compared: "tokens_per_s", "step_ms", "params"; None: context only
    where: dict = field(default_factory=dict)  # which records it matches: arch, mode, n_layers, batch, seq_len
    hardware: str = ""  # where it was measured
    note: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    model: MambaConfig
    run: dict = field(default_factory=dict)  # batch, seq_len, ... (RunOptions fields)
    source: str = ""  # where the configuration comes from
    note: str = ""
    published: tuple = ()  # Published figures
    scaling_efficiency: dict = field(default_factory=dict)  # {(L0, L): published scaling efficiency}
    arch: str = "mamba"  # the architecture it describes: a suite's default "mamba" becomes this one
    settings: dict = field(default_factory=dict)  # that architecture's own settings (RunOptions.settings[arch])


M2 = "Apple M2 Pro 16 GB, 16-core GPU, JAX + jax-metal"
_TS = dict(arch="mamba", mode="train", batch=32, seq_len=128)


PRESETS = {
    p.name: p
    for p in (
        Preset(
            "tinyshakespeare-m2",
            MambaConfig(vocab=65, d_model=256, n_layers=4, d_state=16, d_conv=4, expand=2),
            {"default_batch": 32, "seq_len": 128},
            "seed 000: char-level Mamba on TinyShakespeare, JAX on Apple M2 Pro (jax-metal)",
            "the study used 8 layers for its depth comparison",
            (
                Published("train tokens/s, 4 layers", 7063.58, "tokens_per_s", {**_TS, "n_layers": 4}, M2),
                Published("train ms/step, 4 layers", 579.88, "step_ms", {**_TS, "n_layers": 4}, M2),
                Published("train tokens/s, 8 layers", 3570.30, "tokens_per_s", {**_TS, "n_layers": 8}, M2),
                Published("train ms/step, 8 layers", 1147.24, "step_ms", {**_TS, "n_layers": 8}, M2),
                Published(
                    "params, 4 layers", 1851201, "params", {"arch": "mamba", "n_layers": 4}, M2, "from an unpublished variant of the model"
                ),
                Published(
                    "params, 8 layers", 3668801, "params", {"arch": "mamba", "n_layers": 8}, M2, "from an unpublished variant of the model"
                ),
                Published("memory ceiling", "kept under 12.7 GB of 16 GB (the 'Simple Allocator' threshold)", None, {}, M2),
                Published("compile", "30-60 s memory-pressure spike during XLA compilation", None, {}, M2),
            ),
            {(4, 8): 0.505},
        ),
        Preset(
            "mambabyte",
            MambaConfig(vocab=256, d_model=192, n_layers=4, d_state=16, d_conv=4, expand=2),
            {"default_batch": 16, "seq_len": 1024},
            "seed 004: pure-PyTorch MambaByte on byte-level WikiText-103",
            "",
            (
                Published("params", "about 1.06M", None, {}, "NVIDIA A100-40GB, PyTorch bf16 autocast"),
                Published(
                    "memory",
                    "out of memory at context 2048 x batch 64: 5 x B x L x d_inner x N x 4 B x 4 layers = 64 GB of scan activations",
                    None,
                    {},
                    "NVIDIA A100-40GB, PyTorch bf16 autocast",
                ),
                Published("energy", "about 10-25 kJ for 4,000 training steps", None, {}, "NVIDIA A100-40GB"),
            ),
        ),
        Preset(
            "sentiment140-tf",
            MambaConfig(vocab=30522, d_model=128, n_layers=2, d_state=16, d_conv=4, expand=2),
            {"default_batch": 32, "seq_len": 64},
            "seed 003: Mamba in TensorFlow for Sentiment140 (BERT vocab, max length 64, 2 layers)",
            "d_model 128 is assumed: the study does not state its width",
            (
                Published("inference s/batch, Mamba (mean over lengths)", 0.02704, None, {}, "not stated"),
                Published("inference s/batch, Transformer (mean over lengths)", 0.00767, None, {}, "not stated"),
            ),
        ),
        Preset(
            "mamba-130m",
            MambaConfig(vocab=50280, d_model=768, n_layers=24, d_state=16, d_conv=4, expand=2),
            {"default_batch": 8, "seq_len": 2048},
            "mamba-ssm's state-spaces/mamba-130m (129,135,360 parameters)",
            "",
            (Published("params", 129135360, "params", {"arch": "mamba"}, "state-spaces/mamba-130m checkpoint"),),
        ),
        Preset(
            "mamba2-130m",
            MambaConfig(vocab=50288, d_model=768, n_layers=24, d_conv=4, expand=2),
            {"default_batch": 8, "seq_len": 2048},
            "mamba-ssm's state-spaces/mamba2-130m (128,989,632 parameters)",
            "vocab 50,280 padded to a multiple of 16, as the checkpoint",
            (Published("params", 128989632, "params", {"arch": "mamba2"}, "state-spaces/mamba2-130m checkpoint"),),
            arch="mamba2",
            settings={"d_state": 128, "headdim": 64, "ngroups": 1, "chunk_size": 256},
        ),
        Preset(
            "mamba2-tiny",
            MambaConfig(vocab=65, d_model=256, n_layers=4, d_conv=4, expand=2),
            {"default_batch": 32, "seq_len": 128},
            "Mamba-2 at seed 000's char-level width (vocab 65, D 256, 4 layers, batch 32 x 128)",
            "Mamba-2's defaults otherwise: d_state 128, 8 heads of 64",
            arch="mamba2",
            settings={"d_state": 128, "headdim": 64, "ngroups": 1, "chunk_size": 256},
        ),
    )
}
