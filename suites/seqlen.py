"""Sequence-length sweep: Mamba against the Transformer baseline as the length grows.

Modes: forward and train at each length L (batch 8, or --batch), and decode at context L: the
latency of one more token after a prefix of L (Mamba carries an O(1) conv + SSM state, the
Transformer a KV cache of L), at batch 1 unless --batch is given. Lengths double from 256 up to
--max-len (default 8192; --quick: 64 .. 1024). Within each backend/arch/mode series, a length
that runs out of memory or time ends the series: the longer ones are recorded as skipped.

The report fits log(ms) = a + s log(L) per arch and mode (s about 1 for Mamba, up to 2 for
attention, near 0 for Mamba decode) and finds the crossover length where Mamba becomes faster.
"""

from ssmbench.plan import Plan, RunOptions, doubling_lengths, sweep_plan

NAME = "seqlen"
DESCRIPTION = "latency and memory vs sequence length, Mamba vs the Transformer baseline"
DEFAULT_MODES = ["forward", "train", "decode"]
DEFAULT_ARCHS = ["mamba", "transformer"]
DEFAULT_MAX_LEN, QUICK_MAX_LEN = 8192, 1024
FIRST_LEN, QUICK_FIRST_LEN = 256, 64
TRAIN_BATCH = 8  # forward/train batch when --batch is not given (smaller where --quick/--preset says so)
default_values = doubling_lengths(FIRST_LEN, DEFAULT_MAX_LEN, QUICK_FIRST_LEN, QUICK_MAX_LEN)


def plan(opts: RunOptions) -> Plan:
    values = opts.values or default_values(False)
    train_batch = min(opts.default_batch, TRAIN_BATCH)
    return sweep_plan(NAME, opts, "seq_len", values, opts.modes or DEFAULT_MODES, lambda mode: 1 if mode == "decode" else train_batch)
