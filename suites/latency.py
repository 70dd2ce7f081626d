"""Latency: the distribution of per-step times for a training step and a per-token decode step.

Default modes: train and decode. Decode is one token per stream through the recurrent path
after a prefix of seq_len tokens (Mamba: O(1) conv + SSM state; Transformer: a KV cache of
seq_len), at batch 1 unless --batch is given: single-stream serving latency.
"""

from ssmbench.plan import RunOptions, expand_points

NAME = "latency"
DESCRIPTION = "ms per training step and per decoded token (median, IQR, p99)"
DEFAULT_MODES = ["train", "decode"]


def plan(opts: RunOptions):
    return expand_points(NAME, opts, opts.modes or DEFAULT_MODES, batch_for=lambda mode: 1 if mode == "decode" else None)
