"""Parity: every backend x scan x path (parallel logits, token-by-token decode) x dtype against
the float64 reference on random weights at odd shapes, with the tolerances stated in
ssmbench.parity. --dtype, --scan and --arch, when given, narrow the checks to theirs; --impl adds
(or, without ssmbench, checks only) other implementations' two paths on the backends that run them.
Exits 1 if any check fails. One worker process per backend runs its checks.
"""

from ssmbench import backends as registry
from ssmbench import parity
from ssmbench.plan import RunOptions

NAME = "parity"
DESCRIPTION = "every backend, scan, path and dtype against the float64 reference"


def plan(opts: RunOptions):
    points = []
    for backend in opts.backends:
        cls = registry.classes().get(backend)
        scans = None if not opts.scans or opts.scans == ["all"] else opts.scans
        checks = parity.checks_for(cls, opts.archs, dtypes=opts.dtypes, scans=scans, impls=opts.impls) if cls else []
        points.append(parity.point(backend, checks, seed=opts.seed, timeout=opts.timeout))
    return points
