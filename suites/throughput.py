"""Throughput: tokens per second for training and prefill at a fixed batch and length.

Default modes: train (forward + cross-entropy + backward + AdamW) and forward (prefill logits).
tokens/s = batch * seq_len / median step time.
"""

from ssmbench.plan import RunOptions, expand_points

NAME = "throughput"
DESCRIPTION = "tokens/s for train and forward at one batch and length"
DEFAULT_MODES = ["train", "forward"]


def plan(opts: RunOptions):
    return expand_points(NAME, opts, opts.modes or DEFAULT_MODES)
