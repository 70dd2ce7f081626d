"""What to measure: run options (validated CLI input) and the points a suite plans from them.

A Point is one measurement: one backend, model, mode, dtype, shape. It is self-contained and
JSON-serialisable so a fresh worker process can run it and --resume can recognise it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace

from . import archs
from .archs.mamba import Config as MambaConfig

QUICK_MODEL = dict(vocab=65, d_model=64, n_layers=2, d_state=8, d_conv=4, expand=2)
QUICK_SETTINGS = {"mamba2": dict(d_state=16, headdim=16, chunk_size=32)}  # 8 heads; --quick's 64 tokens span two chunks
QUICK_RUN = dict(default_batch=2, seq_len=64, warmup=1, min_iters=5, min_time=0.1)


@dataclass
class RunOptions:
    """Everything a suite needs to plan; built and validated by the CLI."""

    backends: list  # resolved backend names, in order
    archs: list = field(default_factory=lambda: ["mamba"])  # names in the architecture registry
    model: MambaConfig = field(default_factory=MambaConfig)  # the shared sizes (a Mamba config); the baseline is matched to it
    settings: dict = field(default_factory=dict)  # arch -> its own settings (mamba2: d_state, headdim, ngroups, chunk_size)
    dtype: str = "float32"
    scans: list | None = None  # None: each backend's default; ["all"]: every scan it offers
    modes: list | None = None  # None: the suite's default modes
    batch: int | None = None  # an explicit --batch for every point; None lets the suite choose
    default_batch: int = 32  # the batch from --preset / --quick / the default, where a suite has no own
    seq_len: int = 128
    warmup: int = 2
    min_iters: int = 10
    min_time: float = 1.0
    repeats: int = 1  # fresh processes per point, samples pooled
    timeout: float = 900.0  # seconds per point (each repeat)
    memory_limit: int | None = None  # bytes; emulates a smaller device
    seed: int = 0
    preset: str | None = None
    values: list | None = None  # the swept axis' values (sweeps: --values, --layers-list, --max-len)
    search: str = "batch"  # memory-ceiling: the axis searched, batch or seq_len
    dtypes: list | None = None  # parity: the dtypes to check (None: every dtype the backend runs)
    quick: bool = False  # --quick: tiny sizes, and a short memory-ceiling search
    checkpoint: dict | None = None  # --model: the checkpoint's model_source {path, format, sha256}, arch and config
    impls: list = field(default_factory=lambda: ["ssmbench"])  # --impl: whose implementations run the model


@dataclass
class Point:
    suite: str
    backend: str
    arch: str
    mode: str
    scan: str
    dtype: str
    config: dict  # the model's own config (a TransformerConfig dict for the baseline)
    batch: int
    seq_len: int
    seed: int = 0
    warmup: int = 2
    min_iters: int = 10
    min_time: float = 1.0
    repeats: int = 1
    timeout: float = 900.0
    memory_limit: int | None = None
    skip_reason: str | None = None  # planned as skipped (e.g. a scan the backend lacks)
    checks: list | None = None  # parity checks (parity.Check dicts) run by one worker instead of timing
    preset: str | None = None  # the --preset the point was planned from (reports print its published figures)
    axis: str | None = None  # the axis a sweep or search varies (seq_len, batch, n_layers, d_state)
    op: bool = False  # time the op alone (ssmbench.ops: the scan, or attention), not the model
    model_source: dict | None = None  # --model: {path, format, sha256} of the checkpoint whose weights it runs
    impl: str = "ssmbench"  # whose implementation runs the model (--impl); its scan is its own, named so

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Point:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def key(self) -> tuple:
        """Identity of a measurement, for --resume and for report rows (measurement settings
        such as warm-up or min-time are not part of it)."""
        args = (self.suite, self.backend, self.arch, self.mode, self.scan, self.dtype, self.config, self.batch, self.seq_len)
        return point_key(*args, source=self.model_source, impl=self.impl)

    def label(self) -> str:
        return f"{self.backend} {self.arch} {self.mode} {self.scan} {self.dtype} B{self.batch} L{self.seq_len}"


def point_key(suite, backend, arch, mode, scan, dtype, config, batch, seq_len, source=None, impl=None) -> tuple:
    """A measurement's identity; ``source`` (a record's model_source) tells two checkpoints of the
    same config apart, by their weights' hash, and ``impl`` two implementations of one model
    (records from before --impl are ssmbench's)."""
    cfg = tuple(sorted((k, v) for k, v in (config or {}).items() if not isinstance(v, (dict, list))))
    return (suite, backend, arch, mode, scan, dtype, cfg, int(batch), int(seq_len), (source or {}).get("sha256"), impl or "ssmbench")


def expand_points(suite: str, opts: RunOptions, modes: list, batch_for=None) -> list[Point]:
    """The cross product backends x archs x modes x scans, with scans resolved per backend.

    ``batch_for(mode)`` lets a suite choose a per-mode batch (or None) when --batch is not given."""
    from ssmbench import backends as registry

    classes = registry.classes()
    configs = {arch: arch_config(opts, arch).to_dict() for arch in opts.archs}
    source = _source(opts)
    points = []
    for backend in opts.backends:
        cls = classes.get(backend)
        for arch in opts.archs:
            cfg = configs[arch]
            for mode in modes:
                suite_batch = batch_for(mode) if batch_for else None
                batch = opts.batch if opts.batch is not None else (suite_batch or opts.default_batch)
                for impl, scan, skip in _impl_scans(cls, backend, arch, mode, opts):
                    points.append(
                        Point(
                            suite=suite,
                            backend=backend,
                            arch=arch,
                            mode=mode,
                            scan=scan,
                            dtype=opts.dtype,
                            config=cfg,
                            batch=batch,
                            seq_len=opts.seq_len,
                            seed=opts.seed,
                            warmup=opts.warmup,
                            min_iters=opts.min_iters,
                            min_time=opts.min_time,
                            repeats=opts.repeats,
                            timeout=opts.timeout,
                            memory_limit=opts.memory_limit,
                            skip_reason=skip,
                            preset=opts.preset,
                            model_source=source,
                            impl=impl,
                        )
                    )
    return points


def arch_config(opts: RunOptions, arch: str):
    """The config ``arch`` runs at: the shared sizes and its own settings, or (--model) the
    checkpoint's config, whose compute-only settings (mamba2's chunk_size) a flag may still set."""
    if opts.checkpoint:
        own = {k: v for k, v in opts.settings.get(arch, {}).items() if k == "chunk_size"}
        return archs.config(arch, {**opts.checkpoint["config"], **own})
    return archs.get(arch).config_for(opts.model, **opts.settings.get(arch, {}))


def _source(opts: RunOptions) -> dict | None:
    """What a point's record carries of --model's checkpoint."""
    return {k: opts.checkpoint[k] for k in ("path", "format", "sha256")} if opts.checkpoint else None


def _impl_scans(cls, backend: str, arch: str, mode: str, opts: RunOptions):
    """[(impl, scan, skip reason or None)]: ssmbench's own model under each scan asked for, and each
    other implementation once, under its own scan (its name; decode's is the recurrent step)."""
    out = []
    for impl in opts.impls:
        if impl == "ssmbench":
            out += [(impl, scan, skip) for scan, skip in _scans_for(cls, arch, mode, opts.scans)]
            continue
        skip = None
        if cls is not None and impl not in cls.impls:
            skip = f"{backend} runs {', '.join(cls.impls)}; not {impl}"
        elif archs.is_attention(arch):
            skip = f"{impl} is timed on mamba and mamba2; the Transformer baseline is ssmbench's own"
        out.append((impl, archs.get(arch).DECODE_SCAN if mode == "decode" else impl, skip))
    return out


def _scans_for(cls, arch: str, mode: str, scans: list | None):
    """[(scan name, skip reason or None)] for one backend/arch/mode."""
    a = archs.get(arch)
    if a.FIXED_SCAN:
        return [(a.FIXED_SCAN, None)]
    if mode == "decode":
        return [(a.DECODE_SCAN, None)]
    if cls is None:  # backend not implemented here: one point, recorded unavailable
        return [((scans or ["default"])[0] if scans != ["all"] else "default", None)]
    offered = cls.scans.get(arch, ())
    if not scans:
        return [(cls.default_scan[arch], None)]
    if scans == ["all"]:
        return [(s, None) for s in offered]
    return [(s, None if s in offered else f"{cls.name} has no {s!r} scan for {arch} (it has: {', '.join(offered)})") for s in scans]


# ---------------------------------------------------------------------------- adaptive plans
@dataclass
class Plan:
    """What a suite measures. ``grid``: every point as first planned (the parity gate reads it to
    check each backend once, up front; a static plan runs exactly these). ``steps``: an adaptive
    plan, a generator that yields points and is sent each one's record, so it can skip longer
    lengths after an OOM or bisect towards a memory ceiling; None runs the grid in order."""

    grid: list
    steps: Generator | None = None
    total: int | None = None  # points expected, for progress (None: unknown)

    def run(self) -> Generator:
        if self.steps is not None:
            return self.steps
        return (p for p in self.grid)


STOPS_SERIES = ("oom", "timeout")  # a point ending so makes every larger one pointless


def sweep_plan(suite: str, opts: RunOptions, axis: str, values: list, modes: list, batch_for=None) -> Plan:
    """One series per backend x arch x mode x scan, ``values`` ascending along ``axis``
    (seq_len, batch, n_layers or d_state). Within a series, once a point runs out of memory or
    time, the larger values are recorded as skipped rather than run."""
    per_value = [expand_points(suite, with_axis(opts, axis, v), modes, batch_for) for v in sorted(values)]
    series = [[replace(p, axis=axis) for p in s] for s in zip(*per_value)]
    grid = [p for s in series for p in s]

    def steps():
        for s in series:
            stop = None
            for p in s:
                if stop and not p.skip_reason:
                    p = replace(p, skip_reason=stop)
                rec = yield p
                if stop is None and rec is not None and rec["status"] in STOPS_SERIES:
                    stop = f"not run: {axis} {axis_value(p, axis)} already ended {rec['status']}"

    return Plan(grid, steps(), total=len(grid))


def doubling(first: int, top: int) -> list[int]:
    """first, 2 first, 4 first, ... up to top (top alone when first > top)."""
    out, n = [], first
    while n <= top:
        out.append(n)
        n *= 2
    return out or [top]


def doubling_lengths(first: int, top: int, quick_first: int, quick_top: int):
    """A length sweep's ``default_values(quick, max_len=None)``: lengths doubling from first (quick_first
    under --quick) up to --max-len, or else top (quick_top)."""

    def default_values(quick: bool, max_len: int | None = None) -> list[int]:
        return doubling(quick_first if quick else first, max_len or (quick_top if quick else top))

    return default_values


def with_axis(opts: RunOptions, axis: str, value: int) -> RunOptions:
    """``opts`` with one axis set: a run field (seq_len, batch) or a model field (n_layers, d_state),
    which an architecture with a setting of that name (mamba2's d_state) follows too."""
    if axis in ("seq_len", "batch"):
        return replace(opts, **{axis: value})
    settings = {a: {**opts.settings.get(a, {}), axis: value} for a in opts.archs if axis in getattr(archs.get(a), "SETTINGS", ())}
    return replace(opts, model=opts.model.with_(**{axis: value}), settings={**opts.settings, **settings})


def axis_value(p: Point, axis: str) -> int:
    if axis in ("seq_len", "batch"):
        return getattr(p, axis)
    if axis == "n_layers":  # a matched baseline's point is at the Mamba depth it matches
        return p.config.get("matched_mamba_layers") or p.config["n_layers"]
    return p.config.get(axis)
