"""Named model/run configurations taken from the seed studies (../shared/seeds)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ModelConfig


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelConfig
    run: dict = field(default_factory=dict)  # batch, seq_len, ... (RunOptions fields)
    source: str = ""  # where the configuration comes from
    note: str = ""


PRESETS = {
    p.name: p
    for p in (
        Preset(
            "tinyshakespeare-m2",
            ModelConfig(vocab=65, d_model=256, n_layers=4, d_state=16, d_conv=4, expand=2),
            {"default_batch": 32, "seq_len": 128},
            "seed 000: char-level Mamba on TinyShakespeare, JAX on Apple M2 Pro (jax-metal)",
            "the study used 8 layers for its depth comparison",
        ),
        Preset(
            "mambabyte",
            ModelConfig(vocab=256, d_model=192, n_layers=4, d_state=16, d_conv=4, expand=2),
            {"default_batch": 16, "seq_len": 1024},
            "seed 004: pure-PyTorch MambaByte on byte-level WikiText-103",
        ),
        Preset(
            "sentiment140-tf",
            ModelConfig(vocab=30522, d_model=128, n_layers=2, d_state=16, d_conv=4, expand=2),
            {"default_batch": 32, "seq_len": 64},
            "seed 003: Mamba in TensorFlow for Sentiment140 (BERT vocab, max length 64, 2 layers)",
            "d_model 128 is assumed: the study does not state its width",
        ),
        Preset(
            "mamba-130m",
            ModelConfig(vocab=50280, d_model=768, n_layers=24, d_state=16, d_conv=4, expand=2),
            {"default_batch": 8, "seq_len": 2048},
            "mamba-ssm's state-spaces/mamba-130m (129,135,360 parameters)",
        ),
    )
}
