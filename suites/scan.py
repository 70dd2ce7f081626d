"""Scan: the selective scan alone, per backend and scan kind, next to causal attention at the
same length (seed 002's kernel benchmark).

Every scan the backend offers (or --scan) runs mamba-ssm's selective_scan_fn semantics (softplus
with dt_bias, D skip, silu(z) gate) on seeded inputs of shape batch x L x d_inner, d_state N;
attention runs the Transformer baseline's heads (SDPA / flash on torch-cuda) on the same batch
and L. Modes: forward, and train (forward + backward for every input). Lengths double from 512
to --max-len (default 8192; --quick: 64 .. 256); batch 8 unless --batch.

Each record adds the op's memory floor (the bytes it must move / the measured copy
bandwidth), its achieved bandwidth and its time as a multiple of that floor. A length that runs
out of memory or time ends its series. `--preset mamba-130m` gives issue 5's shape
(batch 8, d_inner 1536, N 16, 12 heads of 64).
"""

from dataclasses import replace

from ssmbench.plan import Plan, RunOptions, doubling_lengths, sweep_plan

NAME = "scan"
DESCRIPTION = "the selective scan alone per scan kind, vs causal attention at the same length"
DEFAULT_MODES = ["forward", "train"]
DEFAULT_ARCHS = ["mamba", "transformer"]
DEFAULT_MAX_LEN, QUICK_MAX_LEN = 8192, 256
FIRST_LEN, QUICK_FIRST_LEN = 512, 64
BATCH = 8
default_values = doubling_lengths(FIRST_LEN, DEFAULT_MAX_LEN, QUICK_FIRST_LEN, QUICK_MAX_LEN)


def plan(opts: RunOptions) -> Plan:
    opts = replace(opts, scans=opts.scans or ["all"])
    values = opts.values or default_values(opts.quick)
    p = sweep_plan(NAME, opts, "seq_len", values, opts.modes or DEFAULT_MODES, lambda mode: min(opts.default_batch, BATCH))
    grid = [replace(x, op=True) for x in p.grid]
    inner = p.steps

    def steps():
        rec = None
        while True:
            try:
                point = inner.send(rec)
            except StopIteration:
                return
            rec = yield replace(point, op=True)

    return Plan(grid, steps(), total=p.total)
