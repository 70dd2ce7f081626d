"""Result records: one JSON object per point, appended to a .jsonl file and flushed (and
fsynced) as soon as the point ends, so a crash loses at most the point in flight.

Reading is forgiving: a corrupt or foreign line is skipped with a warning naming file:line,
so results merged from many machines never fail as a whole for one bad line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .plan import Point, point_key

SCHEMA = "ssmbench/1"
STATUSES = ("ok", "oom", "timeout", "error", "crash", "skipped", "unavailable")
FAILED = ("error", "crash", "timeout")  # statuses that make a run exit 1


def new_run_id() -> str:
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{host}-{secrets.token_hex(2)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_record(
    point: Point,
    run_id: str,
    env: dict,
    *,
    status: str,
    error: str | None = None,
    framework: str | None = None,
    device: str | None = None,
    params: int | None = None,
    metrics: dict | None = None,
    started_at: str | None = None,
    duration_s: float = 0.0,
    **extra,
) -> dict:
    assert status in STATUSES, status
    rec = {
        "schema": SCHEMA,
        "run_id": run_id,
        "suite": point.suite,
        "backend": point.backend,
        "framework": framework or point.backend.split("-")[0],
        "device": device,
        "arch": point.arch,
        "scan": point.scan,
        "mode": point.mode,
        "dtype": point.dtype,
        "config": point.config,
        "batch": point.batch,
        "seq_len": point.seq_len,
        "params": params,
        "status": status,
        "error": error,
        "metrics": metrics or {},
        "env": env,
        "started_at": started_at or now_iso(),
        "duration_s": round(duration_s, 3),
        "settings": {k: getattr(point, k) for k in ("seed", "warmup", "min_iters", "min_time", "repeats", "timeout", "memory_limit")},
    }
    rec["impl"] = getattr(point, "impl", "ssmbench")
    for k in ("preset", "axis", "model_source"):
        if getattr(point, k, None):
            rec[k] = getattr(point, k)
    rec.update(extra)
    return rec


def record_key(rec: dict) -> tuple:
    args = (rec["suite"], rec["backend"], rec["arch"], rec["mode"], rec["scan"], rec["dtype"], rec["config"], rec["batch"], rec["seq_len"])
    return point_key(*args, source=rec.get("model_source"), impl=rec.get("impl"))


class ResultWriter:
    """Appends records to one .jsonl file, durable after each write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rec: dict) -> None:
        line = json.dumps(rec, separators=(",", ":"), allow_nan=False, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def result_path(out_dir: Path, suite: str, run_id: str) -> Path:
    return Path(out_dir) / f"{suite}-{run_id}.jsonl"


def latest_result_file(out_dir: Path, suite: str) -> Path | None:
    files = sorted(Path(out_dir).glob(f"{suite}-*.jsonl"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _valid(rec) -> str | None:
    if not isinstance(rec, dict):
        return "not a JSON object"
    if rec.get("schema") != SCHEMA:
        return f"foreign schema {rec.get('schema')!r} (expected {SCHEMA!r})"
    missing = [k for k in ("suite", "backend", "arch", "mode", "scan", "dtype", "config", "batch", "seq_len", "status") if k not in rec]
    return f"missing fields: {', '.join(missing)}" if missing else None


def read_records(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                warnings.warn(f"{path}:{n}: skipped corrupt line ({e.msg})", stacklevel=2)
                continue
            why = _valid(rec)
            if why:
                warnings.warn(f"{path}:{n}: skipped line: {why}", stacklevel=2)
                continue
            out.append(rec)
    return out


def collect_files(paths: list) -> list[Path]:
    """Files and directories (searched recursively for *.jsonl) -> result files."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(str(p))
    return files


def load_all(paths: list) -> list[dict]:
    recs = []
    for f in collect_files(paths):
        recs += read_records(f)
    return fill_devices(recs)


def elapsed_since(t0: float) -> float:
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- labels
def short_device(dev: str | None) -> str:
    if not dev:
        return "?"
    d = re.sub(r"\((R|TM|tm|r)\)", "", dev)
    d = re.sub(r"\s+CPU\s+@.*$", "", d)
    d = re.sub(r"\b(Intel|AMD|NVIDIA|Processor|Core)\b", "", d)
    return re.sub(r"\s+", " ", d).strip() or dev


def fill_devices(records: list[dict]) -> list[dict]:
    """Records of points that died before naming their device (a timeout, a crash) take the
    device of the same backend in the same run or, failing that, on the same host."""
    known = {}
    for r in records:
        if r.get("device"):
            known.setdefault((r.get("run_id"), r["backend"]), r["device"])
            known.setdefault(((r.get("env") or {}).get("host"), r["backend"]), r["device"])
    out = []
    for r in records:
        if not r.get("device"):
            dev = known.get((r.get("run_id"), r["backend"])) or known.get(((r.get("env") or {}).get("host"), r["backend"]))
            r = {**r, "device": dev} if dev else r
        out.append(r)
    return out


def group_of(rec: dict) -> str:
    return f"{rec['backend']} · {short_device(rec.get('device'))}"
