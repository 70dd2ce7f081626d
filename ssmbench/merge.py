"""Merging result records from any number of files and machines: where a point was measured more
than once for the same backend/device group, the latest record wins.

Shared by the report's tables (ssmbench.report), its analysis sections (ssmbench.sections) and
the analyses (ssmbench.analysis); it imports none of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .plan import point_key
from .results import group_of


def in_time_order(records: Iterable[dict]) -> list[dict]:
    """The records oldest first (by when they started; those without a time first), so that a
    dict filled from them keeps the latest record of each key."""
    return sorted(records, key=lambda r: r.get("started_at") or "")


def latest_by_point(records: list[dict]) -> OrderedDict[tuple, dict]:
    """(point key, group) -> the latest record, in first-seen order."""
    out: OrderedDict = OrderedDict()
    for r in in_time_order(records):
        point = (r["suite"], "*", r["arch"], r["mode"], r["scan"], r["dtype"], r["config"], r["batch"], r["seq_len"])
        k = (point_key(*point, source=r.get("model_source"), impl=r.get("impl")), group_of(r))
        out[k] = r
    return out
