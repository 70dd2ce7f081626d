"""Depth scaling: how the cost of a step grows with the number of layers.

Every depth in --layers-list (default 1,2,4,8,16) for train and forward at the run's batch and
length. The report fits ms/step = intercept + slope * layers (slope: the marginal cost of one
layer; intercept: embedding, head and loss) with its R^2, and gives two efficiencies:

- scaling efficiency (seed 000's): tokens/s at depth L / tokens/s at the first depth; halving
  when the depth doubles is "50.5%" in that study, i.e. what linear cost predicts;
- linear-scaling efficiency: (t(L0) * L / L0) / t(L); 100% means cost exactly proportional to
  depth, above 100% that the fixed cost is being amortised.

A depth that runs out of memory or time ends its series; deeper ones are recorded as skipped.
"""

from ssmbench.plan import Plan, RunOptions, sweep_plan

NAME = "depth-scaling"
DESCRIPTION = "ms/step, tokens/s and params per depth, with a linear fit"
DEFAULT_MODES = ["train", "forward"]
DEFAULT_LAYERS, QUICK_LAYERS = [1, 2, 4, 8, 16], [1, 2, 4]


def plan(opts: RunOptions) -> Plan:
    return sweep_plan(NAME, opts, "n_layers", opts.values or DEFAULT_LAYERS, opts.modes or DEFAULT_MODES)
