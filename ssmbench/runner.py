"""The runner: each point in fresh worker processes, each record written as soon as it ends.

Isolation is per process: an out-of-memory, a segfault or a hang ends one worker, is recorded
as oom / crash / timeout, and the next point starts in a clean process (a process that hit
OOM is never reused). Points run one after another: concurrent points would time each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import backends as registry
from .plan import Point
from .results import FAILED, ResultWriter, make_record, now_iso, read_records, record_key
from .worker import metrics_from

RESUMABLE = ("ok", "oom", "skipped", "unavailable")  # --resume re-runs error/crash/timeout points
LOG_TAIL = 1500


@dataclass
class WorkerOutcome:
    result: dict  # the worker's JSON, or one the runner made for a crash/timeout
    log: str = ""


def _tail(text: str, n: int = LOG_TAIL) -> str:
    return text[-n:].strip()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def run_worker(point: Point) -> WorkerOutcome:
    """One fresh process for one repeat of one point, killed (with its children) at the timeout."""
    with tempfile.TemporaryDirectory(prefix="ssmbench-") as tmp:
        point_file, out_file, log_file = (Path(tmp) / n for n in ("point.json", "result.json", "worker.log"))
        point_file.write_text(json.dumps(point.to_dict()))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ssmbench.worker", str(point_file), str(out_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=point.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = proc.wait()
        log_text = log_file.read_text(errors="replace")
        if out_file.exists():  # the RSS watchdog can write an oom result and exit before a hang ends
            try:
                return WorkerOutcome(json.loads(out_file.read_text()), log_text)
            except json.JSONDecodeError:
                pass
        if timed_out:
            return WorkerOutcome({"status": "timeout", "error": f"no result within --timeout {point.timeout:g} s; worker killed"}, log_text)
        if rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            hint = " (possibly the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
            return WorkerOutcome({"status": "crash", "error": f"worker died with {sig}{hint}", "log_tail": _tail(log_text)}, log_text)
        last = _last_line(log_text)
        return WorkerOutcome(
            {
                "status": "crash",
                "error": f"worker exited with code {rc} and no result" + (f": {last}" if last else ""),
                "log_tail": _tail(log_text),
            },
            log_text,
        )


def measure_point(point: Point, run_id: str, env: dict) -> dict:
    """Everything that can happen to a point becomes one record."""
    started, t0 = now_iso(), time.perf_counter()

    def record(**kw):
        return make_record(point, run_id, env, started_at=started, duration_s=time.perf_counter() - t0, **kw)

    if point.skip_reason:
        return record(status="skipped", error=point.skip_reason)
    av = registry.availability(point.backend)
    if not av.available:
        return record(status="unavailable", error=f"{av.reason}; install: {av.install}")
    parts = []
    for _ in range(max(1, point.repeats)):
        res = run_worker(point).result
        if res["status"] != "ok":
            extra = {k: res[k] for k in ("traceback", "log_tail") if res.get(k)}
            return record(
                status=res["status"],
                error=res.get("error"),
                device=res.get("device"),
                params=res.get("params"),
                env_backend=res.get("versions", {}),
                **extra,
            )
        parts.append(res)
    return record(
        status="ok",
        device=parts[0].get("device"),
        params=parts[0].get("params"),
        metrics=metrics_from(parts, point),
        env_backend=parts[0].get("versions", {}),
    )


@dataclass
class RunSummary:
    records: list = field(default_factory=list)
    skipped_existing: int = 0

    @property
    def failed(self) -> bool:
        return any(r["status"] in FAILED for r in self.records)


def run_points(
    points: list[Point],
    out_file: Path,
    run_id: str,
    env: dict,
    *,
    resume: bool = False,
    on_start: Callable[[Point], None] | None = None,
    on_done: Callable[[Point, dict], None] | None = None,
) -> RunSummary:
    """Measure ``points`` in order, appending each record to ``out_file`` as it ends."""
    writer = ResultWriter(out_file)
    done = set()
    if resume and Path(out_file).exists():
        done = {record_key(r) for r in read_records(out_file) if r["status"] in RESUMABLE}
    summary = RunSummary()
    for p in points:
        if p.key() in done:
            summary.skipped_existing += 1
            if on_done:
                on_done(p, None)
            continue
        if on_start:
            on_start(p)
        rec = measure_point(p, run_id, env)
        writer.write(rec)
        summary.records.append(rec)
        if on_done:
            on_done(p, rec)
    return summary
