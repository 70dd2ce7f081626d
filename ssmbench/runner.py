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
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import backends as registry
from . import parity
from .plan import Plan, Point
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


def measure_point(point: Point, run_id: str, env: dict, parity_result: dict | None = None) -> dict:
    """Everything that can happen to a point becomes one record. ``parity_result`` is the
    parity record covering this point: a failed one stops the point before it is timed."""
    started, t0 = now_iso(), time.perf_counter()

    def record(**kw):
        return make_record(point, run_id, env, started_at=started, duration_s=time.perf_counter() - t0, **kw)

    if point.skip_reason:
        return record(status="skipped", error=point.skip_reason)
    av = registry.availability(point.backend)
    if not av.available:
        return record(status="unavailable", error=f"{av.reason}; install: {av.install}")
    if parity_result is not None and parity_result["status"] != "ok":
        return record(
            status="unavailable" if parity_result["status"] == "unavailable" else "error",
            error=parity_result.get("error") or "parity check did not pass",
            device=parity_result.get("device"),
            metrics={"parity": parity_result.get("metrics") or {}},
        )
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
    metrics = metrics_from(parts, point)
    if parity_result is not None:
        metrics["parity"] = parity_result["metrics"]
    versions = parts[0].get("versions", {})
    impl = {k: versions[k] for k in ("impl_version", "impl_path") if k in versions}  # --impl: whose code, which of its paths
    return record(status="ok", device=parts[0].get("device"), params=parts[0].get("params"), metrics=metrics, env_backend=versions, **impl)


def measure_checks(point: Point, run_id: str, env: dict) -> list[dict]:
    """A parity point: one worker runs every check; one record per check."""
    started, t0 = now_iso(), time.perf_counter()
    av = registry.availability(point.backend)
    if not av.available:
        return [make_record(point, run_id, env, status="unavailable", error=f"{av.reason}; install: {av.install}", started_at=started)]
    res = run_worker(point).result
    by_check = {_check_of(r): r for r in res.get("checks") or []}
    duration = (time.perf_counter() - t0) / max(1, len(point.checks))
    out = []
    for c in map(lambda d: parity.Check(**d), point.checks):
        cfg = parity.model_config(c.arch, c.ngroups).to_dict()
        cp = replace(point, arch=c.arch, mode=c.mode, scan=c.scan, dtype=c.dtype, config=cfg, checks=None, impl=c.impl)
        r = by_check.get(c)
        kw = dict(device=res.get("device"), env_backend=res.get("versions", {}), started_at=started, duration_s=duration)
        if r is None:
            why = res.get("error") or "the parity worker returned no result for this check"
            out.append(make_record(cp, run_id, env, status=res["status"] if res["status"] != "ok" else "error", error=why, **kw))
            continue
        metrics = {"rel_err": r["rel_err"], "tolerance": r["tolerance"], "passed": r["passed"]}
        if r.get("unavailable"):  # an implementation (--impl) that cannot run here: said as a backend's would be
            out.append(make_record(cp, run_id, env, status="unavailable", error=r["error"], **kw))
            continue
        kw |= {k: r[k] for k in ("impl_version", "impl_path") if k in r}
        out.append(
            make_record(
                cp,
                run_id,
                env,
                status="ok" if r["passed"] else "error",
                error=None if r["passed"] else parity.describe(r),
                metrics=metrics,
                **kw,
            )
        )
    return out


class ParityGate:
    """Runs (or reuses) the parity checks a timing run needs, one worker per backend, before
    that backend's first timed point; their records go to parity-RUNID.jsonl beside the results.

    Checks recorded earlier in the same directory are reused when they were made by the same
    clean ssmbench commit with the same library versions."""

    def __init__(self, points: list[Point], out_dir: Path, run_id: str, env: dict, on_start=None):
        self.out_dir, self.run_id, self.env, self.on_start = Path(out_dir), run_id, env, on_start
        self.needed: dict[str, set] = {}
        self.timeout = {}
        for p in points:
            if p.checks is None and not p.skip_reason:
                self.needed.setdefault(p.backend, set()).add(_check_for(p))
                self.timeout[p.backend] = p.timeout
        self.results: dict[tuple, dict] = {}
        self.done: set[str] = set()

    def result(self, p: Point) -> dict | None:
        cls = registry.classes().get(p.backend)
        if p.checks is not None or p.skip_reason or cls is None or not cls.parity_checked:
            return None
        if not registry.availability(p.backend).available:
            return None
        if p.backend not in self.done:
            self._run(p.backend)
        return self.results.get((p.backend, _check_for(p)))

    def _reusable(self, backend: str) -> dict:
        git = (self.env.get("ssmbench") or {}).get("git")
        if not git or git.endswith("+dirty"):
            return {}
        found = {}
        for f in sorted(self.out_dir.glob("parity-*.jsonl")):
            for r in read_records(f):
                e = r.get("env") or {}
                if (
                    r["backend"] == backend
                    and (e.get("ssmbench") or {}).get("git") == git
                    and e.get("versions") == self.env.get("versions")
                ):
                    if r["status"] in ("ok", "error") and "rel_err" in (r.get("metrics") or {}):
                        found[(backend, _check_of(r))] = r
        return found

    def _run(self, backend: str) -> None:
        self.done.add(backend)
        self.results.update(self._reusable(backend))
        missing = sorted(
            (c for c in self.needed.get(backend, ()) if (backend, c) not in self.results), key=lambda c: tuple(c.to_dict().values())
        )
        if not missing:
            return
        point = parity.point(backend, missing, timeout=self.timeout.get(backend, 900.0))
        if self.on_start:
            self.on_start(point)
        writer = ResultWriter(self.out_dir / f"parity-{self.run_id}.jsonl")
        for rec in measure_checks(point, self.run_id, self.env):
            writer.write(rec)
            self.results[(backend, _check_of(rec))] = rec


def _check_for(p: Point) -> parity.Check:
    return parity.check_for(p.arch, p.mode, p.scan, p.dtype, p.impl, (p.config or {}).get("ngroups"))


def _check_of(rec: dict) -> parity.Check:
    """The check a parity record (or a worker's check result) holds; those from before --impl are ssmbench's."""
    groups = rec["ngroups"] if "ngroups" in rec else (rec.get("config") or {}).get("ngroups")
    return parity.check_for(rec["arch"], rec["mode"], rec["scan"], rec["dtype"], rec.get("impl", "ssmbench"), groups)


@dataclass
class RunSummary:
    records: list = field(default_factory=list)
    skipped_existing: int = 0

    @property
    def failed(self) -> bool:
        return any(r["status"] in FAILED for r in self.records)


def run_points(
    plan: Plan | list[Point],
    out_file: Path,
    run_id: str,
    env: dict,
    *,
    resume: bool = False,
    on_start: Callable[[Point], None] | None = None,
    on_done: Callable[[Point, dict], None] | None = None,
) -> RunSummary:
    """Measure a plan's points in order, appending each record to ``out_file`` as it ends. An
    adaptive plan is sent each point's record (with --resume, the one recorded earlier)."""
    plan = plan if isinstance(plan, Plan) else Plan(list(plan))
    writer = ResultWriter(out_file)
    gate = ParityGate(plan.grid, Path(out_file).parent, run_id, env, on_start)
    done = {}
    if resume and Path(out_file).exists():
        done = {record_key(r): r for r in read_records(out_file) if r["status"] in RESUMABLE}
    summary = RunSummary()
    steps = plan.run()
    rec = None
    while True:
        try:
            p = steps.send(rec) if rec is not None else next(steps)
        except StopIteration:
            break
        if p.key() in done:
            summary.skipped_existing += 1
            rec = done[p.key()]
            if on_done:
                on_done(p, None)
            continue
        if p.checks is not None:  # the parity suite: several records from one worker
            if on_start:
                on_start(p)
            recs = measure_checks(p, run_id, env)
        else:
            gate_result = gate.result(p)
            if on_start:
                on_start(p)
            recs = [measure_point(p, run_id, env, gate_result)]
        for r in recs:
            writer.write(r)
            summary.records.append(r)
        rec = recs[-1] if len(recs) == 1 else _worst(recs)
        if on_done:
            on_done(p, rec)
    return summary


def _worst(records: list[dict]) -> dict:
    """The record to report for a multi-record point: its first failure, else its first."""
    return next((r for r in records if r["status"] != "ok"), records[0])
