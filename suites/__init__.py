"""Suites: small modules that each describe a plan of points for the runner.

A suite module defines ``NAME``, ``DESCRIPTION`` and ``plan(opts) -> list[Point]``.
"""

from __future__ import annotations

import importlib

SUITES = {"throughput": "throughput", "latency": "latency", "parity": "parity"}
PLANNED = ("depth-scaling", "memory-ceiling", "seqlen")  # SPEC names arriving in later versions


def get(name: str):
    if name not in SUITES:
        raise KeyError(name)
    return importlib.import_module(f"ssmbench.suites.{SUITES[name]}")
