"""The worker: measures one point in a fresh process and writes its outcome as JSON.

    python -m ssmbench.worker POINT.json RESULT.json

Runs in its own process so that an out-of-memory, a segfault or a hang costs only this point;
the runner records whatever happened (oom / crash / timeout) and goes on. The worker never
raises: every failure it can see becomes a status in RESULT.json.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

import numpy as np

from . import archs, flops, ops
from .checkpoints import checkpoint_weights
from .envinfo import peak_rss_bytes
from .interface import BackendUnavailable
from .measure import time_steps
from .parity import build_model
from .plan import Point
from .stats import summarize
from .weights import count_params, init_weights


def make_step(backend, model, point: Point, vocab: int):
    """A zero-argument callable running one step of ``point.mode`` on seeded random tokens.

    train:   tokens (B, L) -> next-token cross-entropy, backward, AdamW update
    forward: tokens (B, L) -> logits (B, L, V) through the parallel path
    decode:  one token per stream after a prefix of L tokens (per-token latency at context L).
             The Transformer's every timed step starts from the same prefix KV cache, so each
             one costs exactly context L; Mamba's state is O(1) whatever the context, so each
             step feeds its state back (a backend may update it in place, as a CUDA graph does)
    """
    rng = np.random.default_rng(point.seed + 1)
    B, L = point.batch, point.seq_len
    if point.mode == "train":
        toks = rng.integers(0, vocab, (B, L + 1))
        x, y = backend.tokens(toks[:, :-1]), backend.tokens(toks[:, 1:])
        return lambda: backend.train_step(model, x, y)
    if point.mode == "forward":
        x = backend.tokens(rng.integers(0, vocab, (B, L)))
        return lambda: backend.forward(model, x)
    prompt = backend.tokens(rng.integers(0, vocab, (B, L)))
    state = backend.prefill(model, prompt, L + 1)
    tok = backend.tokens(rng.integers(0, vocab, (B,)))
    if archs.get(point.arch).STATE_GROWS:
        return lambda: backend.decode_step(model, tok, state)[0]
    carry = [state]

    def decode():
        logits, carry[0] = backend.decode_step(model, tok, carry[0])
        return logits

    return decode


def tokens_per_step(point: Point) -> int:
    return point.batch * (1 if point.mode == "decode" else point.seq_len)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class RssMonitor:
    """Resident memory, sampled every ``poll_s`` from when the framework has started: its peak
    (getrusage's ru_maxrss would report the import spike of the framework's libraries instead),
    and on CPU the emulated memory limit: the point ends as oom once resident memory has grown by
    more than ``limit`` over ``base`` (like device memory, the limit covers what the benchmark
    allocates, not the framework's own libraries)."""

    def __init__(self, limit: int | None, out_path: str | None, context: dict, poll_s: float = 0.01):
        self.base = self.peak = _rss()
        self.limit, self.out_path, self.context, self.poll_s = limit, out_path, context, poll_s
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            rss = _rss()
            self.peak = max(self.peak, rss)
            if self.limit and self.out_path and rss - self.base > self.limit:
                msg = f"resident memory grew by {rss - self.base} B, past --memory-limit {self.limit} B (RSS watchdog)"
                _write(self.out_path, {**self.context, "status": "oom", "error": msg})
                os._exit(0)
            time.sleep(self.poll_s)

    def sample(self) -> int:
        self.peak = max(self.peak, _rss())
        return self.peak


def measure(point: Point, out_path: str | None = None) -> dict:
    """Run one point in this process; returns the worker's part of the record."""
    from ssmbench import backends as registry

    try:
        cls = registry.get_class(point.backend)
        native_limit = cls.configure_process(point.memory_limit)  # before the framework starts
        backend = cls()
    except BackendUnavailable as e:
        return {"status": "unavailable", "error": str(e)}
    res = {"device": None, "versions": {}}
    try:
        res["device"] = backend.device_info().get("device")
        res["versions"] = backend.versions()
        if point.checks is not None:
            from .parity import Check, run_checks

            return {**res, "status": "ok", "checks": run_checks(backend, [Check(**c) for c in point.checks], point.seed)}
        if point.dtype not in backend.dtypes:
            return {
                **res,
                "status": "skipped",
                "error": f"{point.backend} does not run {point.dtype} (it runs: {', '.join(backend.dtypes)})",
            }
        try:  # what the device can do, for MFU and memory floors (GPU backends); before any model
            ceilings = backend.device_ceilings()
        except Exception as e:  # noqa: BLE001 - a ceiling that cannot be measured leaves MFU out
            ceilings = {"error": f"{type(e).__name__}: {e}"[:300]}
        if ceilings:
            res["versions"]["device_ceilings"] = ceilings
        watch = point.memory_limit and not native_limit
        rss = RssMonitor(point.memory_limit if watch else None, out_path, res) if watch or backend.host_memory else None
        if point.op:
            if not backend.ops_supported:
                return {**res, "status": "skipped", "error": f"{point.backend} does not run ops alone yet"}
            res["copy_bytes_per_s"] = (ceilings or {}).get("copy_bytes_per_s") or backend.copy_bandwidth()
            backend.reset_peak_memory()
            step = backend.op_step(point.arch, point.scan, ops.inputs_for(point), point.dtype, point.mode)
        else:
            cfg = archs.config(point.arch, point.config)
            weights = checkpoint_weights(point.model_source) if point.model_source else init_weights(point.arch, cfg, point.seed)
            res["params"] = count_params(weights)
            backend.reset_peak_memory()
            try:
                model = build_model(backend, point.arch, weights, cfg, mode=point.mode, scan=point.scan, dtype=point.dtype, impl=point.impl)
            except BackendUnavailable as e:  # another implementation (--impl) that cannot run here
                return {**res, "status": "unavailable", "error": str(e)}
            del weights
            step = make_step(backend, model, point, cfg.vocab)
        meter = backend.energy_joules if backend.energy_joules() is not None else None
        timing = dict(warmup=point.warmup, min_iters=point.min_iters, min_time=point.min_time)
        t = time_steps(step, backend.synchronize, **timing, meter=meter)
        if not point.op:
            res["versions"] |= backend.execution(model)
        if not backend.all_finite(t.first_output):
            return {**res, "status": "error", "error": "non-finite output (NaN or inf) on the first step"}
        peak, source = backend.peak_memory()
        from_rss = peak is None and rss is not None
        if from_rss:
            peak, source = rss.sample(), f"process RSS sampled every {rss.poll_s * 1e3:.0f} ms (peak; includes framework libraries)"
        elif peak is None:
            peak, source = peak_rss_bytes(), f"process peak RSS (getrusage; includes framework libraries; {source})"
        if point.op:  # the op replayed from a device graph too (after the peak: a graph keeps its own pool)
            res |= _graph_timing(backend, step, timing)
        return {
            **res,
            "status": "ok",
            "error": None,
            "compile_s": t.compile_s,
            "samples_s": t.samples_s,
            "energy_j": t.meter_delta,
            "peak_mem_bytes": peak,
            "mem_source": source,
            **({"mem_baseline_bytes": rss.base} if from_rss else {}),
        }
    except BaseException as e:  # noqa: BLE001 - every failure becomes a status
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = f"{type(e).__name__}: {e}".strip().splitlines()
        msg = msg[0][:500] if msg else type(e).__name__
        if backend.is_oom(e):
            return {**res, "status": "oom", "error": msg}
        return {**res, "status": "error", "error": msg, "traceback": traceback.format_exc()[-4000:]}


def _graph_timing(backend, step, timing: dict) -> dict:
    """The op's time replayed from a device graph through the same timing loop (the capture is
    its first call, so it lands in graph_compile_s), or why there is none."""
    try:
        replay, why = backend.graph_replay(step)
        if replay is None:
            return {"graph_note": why}
        g = time_steps(replay, backend.synchronize, **timing)
    except Exception as e:  # noqa: BLE001 - a capture that fails leaves the eager timing standing
        return {"graph_note": f"capture failed: {type(e).__name__}: {e}".splitlines()[0][:300]}
    return {"graph_note": "device graph replay", "graph_samples_s": g.samples_s, "graph_compile_s": g.compile_s}


def metrics_from(parts: list[dict], point: Point) -> dict:
    """Pool the samples of every repeat (fresh process) of a point into its metrics."""
    samples = [s for p in parts for s in p["samples_s"]]
    step = summarize(samples)
    m = {
        "step_ms": step,
        "tokens_per_step": tokens_per_step(point),
        "tokens_per_s": tokens_per_step(point) / (step["median"] / 1e3) if step["median"] > 0 else None,
        "compile_s": parts[0]["compile_s"],
        "peak_mem_bytes": max((p["peak_mem_bytes"] or 0) for p in parts) or None,
        "mem_source": parts[0]["mem_source"],
    }
    if point.op:
        m |= ops.op_metrics(point, step["median"], parts[0].get("copy_bytes_per_s"))
        m |= _graph_metrics(parts, point)
    else:
        ceilings = (parts[0].get("versions") or {}).get("device_ceilings") or {}
        m |= flops.mfu(
            point.arch, point.config, point.batch, point.seq_len, point.mode, point.dtype, step["median"], ceilings.get("matmul_flops")
        )
    if all(p.get("energy_j") is not None for p in parts):
        joules, n = sum(p["energy_j"] for p in parts), len(samples)
        timed_s = sum(samples)
        m |= {"energy_j_per_step": joules / n, "energy_j_per_token": joules / n / tokens_per_step(point), "power_w": joules / timed_s}
    if parts[0].get("mem_baseline_bytes"):
        m["mem_baseline_bytes"] = min(p["mem_baseline_bytes"] for p in parts)
    if len(parts) > 1:
        m["repeats"] = [
            {"median_ms": float(np.median(p["samples_s"])) * 1e3, "compile_s": p["compile_s"], "n": len(p["samples_s"])} for p in parts
        ]
    return m


def _graph_metrics(parts: list[dict], point: Point) -> dict:
    """graph_ms (the graph replays' distribution, step_ms's fields) and graph_floor_multiple,
    where every repeat replayed the op; else graph: why not."""
    if not all(p.get("graph_samples_s") for p in parts):
        return {"graph": parts[0].get("graph_note") or "not measured"}
    g = summarize([s for p in parts for s in p["graph_samples_s"]])
    m = {"graph": parts[0]["graph_note"], "graph_ms": g, "graph_compile_s": parts[0]["graph_compile_s"]}
    floor = ops.op_metrics(point, g["median"], parts[0].get("copy_bytes_per_s")).get("floor_multiple")
    return m | ({"graph_floor_multiple": floor} if floor else {})


def _write(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, default=str)
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    point_path, out_path = argv
    with open(point_path, encoding="utf-8") as f:
        point = Point.from_dict(json.load(f))
    _write(out_path, measure(point, out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
