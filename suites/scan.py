"""Scan: each architecture's core op alone, per backend and scan kind, at the same width and
length (seed 002's kernel benchmark; the Mamba-2 paper's Figure 10).

Mamba-1: every scan the backend offers (or --scan) runs mamba-ssm's selective_scan_fn semantics
(softplus with dt_bias, D skip, silu(z) gate) on seeded inputs of shape batch x L x d_inner,
d_state N. Mamba-2: its SSD (mamba_chunk_scan_combined's semantics) over d_inner / headdim heads,
at N = 16, 64 and 128 unless --d-state (or a preset) fixes N. Attention runs the Transformer
baseline's heads (SDPA / flash on torch-cuda) on the same batch and L. Modes: forward, and train
(forward + backward for every input). Lengths double from 512 to --max-len (default 8192;
--quick: 64 .. 256); batch 8 unless --batch.

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
DEFAULT_ARCHS = ["mamba", "mamba2", "transformer"]
SSD_STATES = (16, 64, 128)  # Mamba-2's N where the run does not fix it: the paper's Figure 10 compares state sizes
DEFAULT_MAX_LEN, QUICK_MAX_LEN = 8192, 256
FIRST_LEN, QUICK_FIRST_LEN = 512, 64
BATCH = 8
default_values = doubling_lengths(FIRST_LEN, DEFAULT_MAX_LEN, QUICK_FIRST_LEN, QUICK_MAX_LEN)


def plan(opts: RunOptions) -> Plan:
    opts = replace(opts, scans=opts.scans or ["all"])
    values = opts.values or default_values(opts.quick)
    variants = [opts]
    own = opts.settings.get("mamba2", {})
    if "mamba2" in opts.archs and "d_state" not in own:  # SSD at each of SSD_STATES
        rest = [a for a in opts.archs if a != "mamba2"]
        variants = [replace(opts, archs=rest)] if rest else []
        variants += [replace(opts, archs=["mamba2"], settings={**opts.settings, "mamba2": {**own, "d_state": n}}) for n in SSD_STATES]
    plans = [
        sweep_plan(NAME, v, "seq_len", values, opts.modes or DEFAULT_MODES, lambda mode: min(opts.default_batch, BATCH)) for v in variants
    ]

    def steps():
        for p in plans:
            rec, inner = None, p.steps
            while True:
                try:
                    point = inner.send(rec)
                except StopIteration:
                    break
                rec = yield replace(point, op=True)

    grid = [replace(x, op=True) for p in plans for x in p.grid]
    return Plan(grid, steps(), total=len(grid))
