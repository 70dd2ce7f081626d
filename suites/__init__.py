"""Suites: small modules that each describe a plan of points for the runner.

A suite module defines ``NAME``, ``DESCRIPTION`` and ``plan(opts)``, which returns a list of
Points or an adaptive ``Plan`` (sweeps that stop at an OOM, the memory-ceiling search).
``sweep.AXES`` maps `ssmbench sweep PARAM` to the axis each sweep varies.
"""

from __future__ import annotations

import importlib

SUITES = {
    "throughput": "throughput",
    "latency": "latency",
    "depth-scaling": "depth_scaling",
    "memory-ceiling": "memory_ceiling",
    "seqlen": "seqlen",
    "scan": "scan",
    "parity": "parity",
}


def get(name: str):
    if name not in SUITES:
        raise KeyError(name)
    return importlib.import_module(f"ssmbench.suites.{SUITES[name]}")
