"""Parity: does a backend compute the float64 reference's function?

A check is one (arch, path, scan, dtype): the parallel path's logits (``forward``) or the
token-by-token recurrent path (``decode``), on random weights (every weight perturbed, so
norms, D and biases all matter) at deliberately odd shapes, compared by relative error
||out - ref|| / ||ref||. Tolerances: fp32 1e-4; half precision as mamba-ssm's own tests allow
for its kernels (bf16 3e-2, fp16 5e-3), since the matmuls round to 8 or 11 mantissa bits.

The parity suite runs every check; the timing suites run (or reuse) the checks their points
need and refuse to time a backend/scan/dtype that fails, so a fast-but-wrong number never
reaches a report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import archs
from .archs.mamba import Config as MambaConfig
from .interface import BackendUnavailable

MODEL = MambaConfig(vocab=23, d_model=40, n_layers=2, d_state=5, d_conv=3, expand=2)  # odd on purpose
SETTINGS = {"mamba2": dict(d_state=6, headdim=10, ngroups=2, chunk_size=16)}  # 8 heads of 10 in 2 groups; 37 tokens = 2 chunks + 5
BATCH, SEQ_LEN = 2, 37
CONV_MULTIPLE = 8  # causal-conv1d's kernels, which mamba-ssm's and transformers' Mamba-2 take when built, need conv channels in 8s
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}


@dataclass(frozen=True)
class Check:
    arch: str  # a registry name: mamba | mamba2 | transformer
    mode: str  # forward (parallel path) | decode (recurrent path)
    scan: str  # the Mamba scan; "recurrent" for decode, "attention" for the Transformer
    dtype: str
    impl: str = "ssmbench"  # whose implementation (--impl): another's is checked as ssmbench's own is
    ngroups: int | None = None  # another implementation's Mamba-2 is checked at the timed model's groups (None: SETTINGS')

    def to_dict(self) -> dict:
        return asdict(self)


def check_for(arch: str, mode: str, scan: str, dtype: str, impl: str = "ssmbench", ngroups: int | None = None) -> Check:
    """The check that covers a timed point: train and forward share the parallel path. ssmbench's
    own Mamba-2 is checked at 2 groups, which covers every count; another implementation at the
    point's own (``ngroups``), so one that is right for 1-group models only (transformers' norm
    was per model, not per group, until a fix) can still be timed on them, and is refused on others."""
    groups = None
    if impl != "ssmbench" and arch == "mamba2":
        heads = MODEL.expand * MODEL.d_model // SETTINGS["mamba2"]["headdim"]
        groups = ngroups if ngroups and heads % ngroups == 0 else SETTINGS["mamba2"]["ngroups"]  # else the default's 2
    return Check(arch, "decode" if mode == "decode" else "forward", scan, dtype, impl, groups)


def checks_for(cls, names, dtypes=None, scans=None, impls=("ssmbench",)) -> list[Check]:
    """Every check of one backend class over the architectures ``names``, its dtypes and its scans;
    and each other implementation asked for (``impls``) that the backend runs, on Mamba's archs."""
    out = []
    for dtype in [d for d in cls.dtypes if dtypes is None or d in dtypes]:
        for impl in (i for i in impls if i != "ssmbench" and i in cls.impls):
            out += [check_for(arch, mode, impl if mode == "forward" else archs.get(arch).DECODE_SCAN, dtype, impl) for arch in names
                    if not archs.is_attention(arch) for mode in ("forward", "decode")]  # fmt: skip
        if "ssmbench" not in impls:
            continue
        for arch in names:
            a = archs.get(arch)
            if a.FIXED_SCAN:
                out += [Check(arch, "forward", a.FIXED_SCAN, dtype), Check(arch, "decode", a.DECODE_SCAN, dtype)]
                continue
            out += [Check(arch, "forward", s, dtype) for s in cls.scans.get(arch, ()) if scans is None or s in scans]
            out.append(Check(arch, "decode", a.DECODE_SCAN, dtype))
    return out


def point(backend: str, checks: list[Check], *, seed: int = 0, timeout: float = 900.0):
    """The Point that runs ``checks`` for one backend in one worker process."""
    from .plan import Point

    return Point(
        suite="parity",
        backend=backend,
        arch="*",
        mode="parity",
        scan="*",
        dtype="*",
        config=MODEL.to_dict(),
        batch=BATCH,
        seq_len=SEQ_LEN,
        seed=seed,
        timeout=timeout,
        checks=[c.to_dict() for c in checks],
    )


def decode_all(b, model, tokens) -> np.ndarray:
    """Feed tokens (B, L) one at a time through the recurrent step: logits (B, L, V)."""
    state = b.init_state(model, tokens.shape[0], tokens.shape[1])
    steps = []
    for t in range(tokens.shape[1]):
        lg, state = b.decode_step(model, b.tokens(tokens[:, t]), state)
        steps.append(b.to_numpy(lg))
    return np.stack(steps, axis=1)


def model_config(arch: str, ngroups: int | None = None):
    """The odd-shaped model a check runs (``ngroups``: Mamba-2's groups, where not SETTINGS': another
    implementation's check). There the state size is the first from SETTINGS' that is not a power
    of two and makes the conv channels (E + 2GN) a multiple of CONV_MULTIPLE."""
    settings = {**SETTINGS.get(arch, {}), **({"ngroups": ngroups} if ngroups else {})}
    if ngroups and arch == "mamba2":
        n, inner = settings["d_state"], MODEL.expand * MODEL.d_model
        while (inner + 2 * ngroups * n) % CONV_MULTIPLE or n & (n - 1) == 0:
            n += 1
        settings["d_state"] = n
    return archs.get(arch).config_for(MODEL, **settings)


def run_checks(backend, checks: list[Check], seed: int = 0) -> list[dict]:
    """Run checks in this process; each result is the check plus rel_err, tolerance, passed, error."""
    from .weights import init_weights

    rng = np.random.default_rng(seed + 2)
    tokens = rng.integers(0, MODEL.vocab, (BATCH, SEQ_LEN))
    refs, weights = {}, {}
    out = []
    for c in checks:
        cfg, key = model_config(c.arch, c.ngroups), (c.arch, c.ngroups)
        if key not in refs:
            weights[key] = init_weights(c.arch, cfg, seed=seed + 1, jitter=True)
            refs[key] = archs.get(c.arch).logits(weights[key], tokens, cfg)
        res = {**c.to_dict(), "tolerance": TOLERANCE[c.dtype], "rel_err": None, "passed": False, "error": None}
        try:
            got, how = _logits(backend, c, weights[key], cfg, tokens)
            res.update(how)  # another implementation's version and code path (--impl), failed or not
            err = float(np.linalg.norm(got.astype(np.float64) - refs[key]) / np.linalg.norm(refs[key]))
            res["rel_err"] = err if np.isfinite(err) else None
            res["passed"] = bool(np.isfinite(err) and err < res["tolerance"])
            if not np.isfinite(err):
                res["error"] = "non-finite output"
        except BackendUnavailable as e:  # an implementation that cannot run here (--impl)
            res["error"], res["unavailable"] = str(e), True
        except Exception as e:  # noqa: BLE001 - a failing check is a result
            res["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        out.append(res)
    return out


def build_model(b, arch: str, weights, cfg, *, mode: str, scan: str, dtype: str, impl: str = "ssmbench"):
    """The model a timed point or a check runs: ssmbench's under ``scan`` (none where the arch fixes
    it or decode runs the recurrent step), or another implementation on its own scan (--impl;
    BackendUnavailable where it cannot run here)."""
    if impl != "ssmbench":
        return b.build(arch, weights, cfg, scan=None, dtype=dtype, impl=impl)
    own = scan if not archs.get(arch).FIXED_SCAN and mode != "decode" else None
    return b.build(arch, weights, cfg, scan=own, dtype=dtype)


def _logits(b, c: Check, weights, cfg, tokens) -> tuple[np.ndarray, dict]:
    """The check's logits, and (for another implementation) its version and code path."""
    model = build_model(b, c.arch, weights, cfg, mode=c.mode, scan=c.scan, dtype=c.dtype, impl=c.impl)
    if c.mode == "forward":
        out = b.forward(model, b.tokens(tokens))
        b.synchronize(out)
        out = b.to_numpy(out)
    else:
        out = decode_all(b, model, tokens)
    return out, (b.execution(model) if c.impl != "ssmbench" else {})


def describe(res: dict) -> str:
    """One line for a failed check, naming the figure."""
    impl = f" ({res['impl']})" if res.get("impl", "ssmbench") != "ssmbench" else ""
    what = f"{res['arch']}{impl} {res['mode']} scan {res['scan']} {res['dtype']}"
    if res.get("error"):
        return f"parity check failed ({what}): {res['error']}"
    return f"parity check failed ({what}): relative error {res['rel_err']:.2e} >= tolerance {res['tolerance']:.0e}"
