"""The sweep axes: `ssmbench sweep seqlen|depth|batch|dstate [--values ...]`.

seqlen and depth run the seqlen and depth-scaling suites over the given values; batch and dstate
(the state-size ablation of the Mamba research plan, seed 002) time train and forward at each
value. Every sweep is one series per backend x arch x mode x scan with values ascending; a value
that runs out of memory or time ends its series, and the larger ones are recorded as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ssmbench.plan import Plan, RunOptions, sweep_plan

from . import depth_scaling, seqlen

DEFAULT_MODES = ["train", "forward"]


@dataclass(frozen=True)
class Axis:
    suite: str  # the suite name its records carry
    field: str  # the Point/ModelConfig field it varies
    default: tuple  # values without --values
    quick: tuple  # values with --quick
    what: str  # for help and errors
    plan_fn: Callable | None = None  # the suite's own plan; None: train and forward at each value
    ssm_only: bool = False  # a setting the Transformer baseline has not (d_state)

    def plan(self, opts: RunOptions) -> Plan:
        if self.plan_fn is not None:
            return self.plan_fn(opts)
        return sweep_plan(self.suite, opts, self.field, opts.values or list(self.default), opts.modes or DEFAULT_MODES)


AXES = {
    "seqlen": Axis(
        "seqlen", "seq_len", tuple(seqlen.default_values(False)), tuple(seqlen.default_values(True)), "sequence length", seqlen.plan
    ),
    "depth": Axis(
        "depth-scaling", "n_layers", tuple(depth_scaling.DEFAULT_LAYERS), tuple(depth_scaling.QUICK_LAYERS), "layers", depth_scaling.plan
    ),
    "batch": Axis("sweep-batch", "batch", (1, 2, 4, 8, 16, 32, 64), (1, 2, 4, 8), "batch size"),
    "dstate": Axis("sweep-dstate", "d_state", (4, 8, 16, 32, 64, 128, 256), (4, 8, 16), "SSM state size N", ssm_only=True),
}
BY_SUITE = {a.suite: a for a in AXES.values()}
