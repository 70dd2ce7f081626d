"""Run options from command-line values: every flag checked before anything runs or is written.

A bad value raises BadInput with one line naming the value and what is allowed; the CLI prints
it and exits 2. Precedence: defaults < --quick < --preset < explicit flags.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tempfile
from pathlib import Path

from . import archs as arch_registry
from . import backends as registry
from .archs.mamba import Config as MambaConfig
from .interface import DTYPES, IMPLS, MODES
from .plan import QUICK_MODEL, QUICK_RUN, QUICK_SETTINGS, RunOptions, arch_config

# Sizes and counts index int32 arrays somewhere (JAX's int32 token arrays, the Triton kernels'
# offsets): a larger value passes no backend, so it is bad input, not an error record per point.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**63 - 1  # numpy's default_rng takes more, but the seed is stored as a JSON integer


class BadInput(Exception):
    """Bad usage or input: one line, exit 2, nothing written."""


def fail(msg: str):
    raise BadInput(msg)


# ---------------------------------------------------------------------------- parsing helpers
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """'12.7GB' (1e9), '16GiB' (2**30), '512MiB', '1e9' -> bytes."""
    m = _SIZE.match(text or "")
    if not m:
        fail(f"--memory-limit {text!r} is not a size; use a number with an optional unit, e.g. 12.7GB, 16GiB, 512MiB")
    n = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if n <= 0:
        fail(f"--memory-limit {text!r} must be positive")
    if not math.isfinite(n):  # '1e999' parses as infinity, which no int holds
        fail(f"--memory-limit {text!r} is too large; use a finite size, e.g. 12.7GB")
    return int(n)


def split_list(values) -> list[str]:
    out_ = []
    for v in values or []:
        out_ += [p.strip() for p in str(v).split(",") if p.strip()]
    return out_


def check_choice(flag: str, values: list[str], allowed) -> list[str]:
    for v in values:
        if v not in allowed:
            fail(f"{flag} {v!r} is not allowed; choose from: {', '.join(allowed)}")
    return values


def positive(flag: str, value, minimum=1, maximum=INT32_MAX):
    """A whole number in [minimum, maximum]. Typer hands on any size of int, so the upper bound
    is checked here, before a backend meets a value it cannot address."""
    if value is not None and value < minimum:
        fail(f"{flag} {value} must be >= {minimum}")
    if value is not None and value > maximum:
        fail(f"{flag} {value} must be <= {maximum}")
    return value


def int_list(flag: str, text: str | None) -> list[int] | None:
    """'1,2,4' -> [1, 2, 4]: positive integers, no repeats."""
    if text is None:
        return None
    parts = split_list([text])
    try:
        values = [int(p) for p in parts]
    except ValueError:
        fail(f"{flag} {text!r} is not a comma list of whole numbers, e.g. 1,2,4,8")
    if not values:
        fail(f"{flag} {text!r} names no values; give a comma list such as 1,2,4,8")
    for v in values:
        positive(flag, v)
    if len(set(values)) != len(values):
        fail(f"{flag} {text!r} repeats a value")
    return sorted(values)


def writable_dir(flag: str, path: Path, value=None) -> Path:
    """Make the directory ``path`` (with its parents) if needed and create and remove a file in
    it, so an output that cannot be written is bad input before anything runs, not a traceback
    at the first write minutes later. ``value`` is what the user gave (a file in ``path``), for
    the message. Directories made here are removed again when the test fails."""
    path = Path(path)
    value = path if value is None else Path(value)
    what = f"{flag} {str(value)!r}" + ("" if value == path else f": its directory {str(path)!r}")
    if _is_file(path):
        fail(f"{what} exists and is not a directory")
    made = [p for p in (path, *path.parents) if _stat(p) is None]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_dirs(made)
        fail(f"{what} cannot be created ({_os_reason(e, path)})")
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".ssmbench-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        _remove_dirs(made)
        fail(f"{what} is not writable ({_os_reason(e, path)})")
    return path


def writable_file(flag: str, path: Path) -> Path:
    """A file that can be (over)written: not a directory, and its directory as writable_dir."""
    path = Path(path)
    if _stat(path) is not None and not _is_file(path):
        fail(f"{flag} {str(path)!r} is a directory; name a file")
    if _is_file(path):
        try:
            open(path, "a").close()  # opening to append changes nothing in the file
        except OSError as e:
            fail(f"{flag} {str(path)!r} is not writable ({_os_reason(e, path)})")
    writable_dir(flag, path.parent, path)
    return path


def _os_reason(e: OSError, path: Path) -> str:
    """The OS's reason; for 'not a directory', the ancestor that is a file."""
    blocker = next((p for p in path.parents if _is_file(p)), None)
    return f"{blocker} is not a directory" if blocker is not None else e.strerror or str(e)


def _stat(path: Path) -> os.stat_result | None:
    """os.stat, or None where there is nothing or nothing can be seen (a directory we may not
    search raises PermissionError, which Path.exists lets through)."""
    try:
        return path.stat()
    except OSError:
        return None


def _is_file(path: Path) -> bool:
    """Something that is there and is not a directory."""
    st = _stat(path)
    return st is not None and not stat.S_ISDIR(st.st_mode)


def _remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


ARCH_GROUPS = {"both": ["mamba", "transformer"], "all": arch_registry.names()}


def arch_list(text: str | None, default) -> list[str]:
    """--arch: a comma list of architectures, 'both' (mamba, transformer) or 'all'."""
    if text is None:
        return list(default)
    out = []
    for part in split_list([text]):
        if part not in ARCH_GROUPS and part not in arch_registry.ARCHS:
            fail(f"--arch {part!r} is not allowed; choose from: {', '.join([*arch_registry.ARCHS, *ARCH_GROUPS])}")
        out += ARCH_GROUPS.get(part, [part])
    if not out:
        fail(f"--arch {text!r} names no architecture; choose from: {', '.join([*arch_registry.ARCHS, *ARCH_GROUPS])}")
    return list(dict.fromkeys(out))


def all_scans() -> list[str]:
    names = []
    for cls in registry.classes().values():
        names += [s for arch_scans in cls.scans.values() for s in arch_scans if s not in names]
    return names


def build_options(
    *,
    backend,
    arch,
    preset,
    d_model,
    layers,
    d_state,
    d_conv,
    expand,
    vocab,
    batch,
    seq_len,
    dtype,
    scan,
    mode,
    warmup,
    min_iters,
    min_time,
    repeats,
    quick,
    timeout,
    memory_limit,
    seed,
    headdim=None,
    ngroups=None,
    chunk_size=None,
    default_archs=("mamba",),
    values=None,
    search="batch",
    model_path=None,
    impl=None,
) -> RunOptions:
    """Validate every flag and combine defaults < --quick < --preset < explicit flags; --model
    (``model_path``) fixes the model (architecture and sizes) instead."""
    from .presets import PRESETS

    try:
        backends = registry.resolve(backend or ["auto"])
    except ValueError as e:
        fail(str(e))
    if not backends:
        fail("no backend is available on this machine; see `ssmbench backends` for what is missing and how to install it")
    archs = arch_list(arch, default_archs)
    dtypes = [dtype] if dtype is not None else None  # parity checks every dtype unless one is named
    dtype = dtype or "float32"
    check_choice("--dtype", [dtype], DTYPES)
    scans = split_list(scan) or None
    if scans and scans != ["all"]:
        check_choice("--scan", scans, all_scans() + ["all"])
        if "all" in scans:
            fail("--scan 'all' cannot be combined with other scan names")
    modes = split_list(mode) or None
    if modes:
        check_choice("--mode", modes, MODES)
    impls = split_list(impl) or ["ssmbench"]
    check_choice("--impl", impls, IMPLS)
    for flag, v in (
        ("--d-model", d_model),
        ("--layers", layers),
        ("--d-state", d_state),
        ("--d-conv", d_conv),
        ("--expand", expand),
        ("--vocab", vocab),
        ("--headdim", headdim),
        ("--ngroups", ngroups),
        ("--chunk-size", chunk_size),
        ("--batch", batch),
        ("--seq-len", seq_len),
        ("--min-iters", min_iters),
        ("--repeats", repeats),
    ):
        positive(flag, v)
    positive("--warmup", warmup, 0)
    positive("--seed", seed, 0, SEED_MAX)
    if min_time is not None and min_time < 0:
        fail(f"--min-time {min_time} must be >= 0 seconds")
    if timeout is not None and timeout <= 0:
        fail(f"--timeout {timeout} must be > 0 seconds")
    mem = parse_size(memory_limit) if memory_limit is not None else None
    sizes = {"--d-model": d_model, "--layers": layers, "--d-state": d_state, "--d-conv": d_conv, "--expand": expand, "--vocab": vocab}
    sizes |= {"--headdim": headdim, "--ngroups": ngroups}

    model, run, settings = MambaConfig(), {}, {}
    checkpoint = _checkpoint(model_path, arch, archs, preset=preset, **sizes) if model_path is not None else None
    if checkpoint:
        archs = [checkpoint["arch"]]
    if quick:
        model, run = MambaConfig(**QUICK_MODEL), dict(QUICK_RUN)
        settings = dict(QUICK_SETTINGS) if not checkpoint else {}
    if preset is not None:
        if preset not in PRESETS:
            fail(f"--preset {preset!r} is unknown; choose from: {', '.join(PRESETS)}")
        p = PRESETS[preset]
        model, run = p.model, {**run, **p.run}
        if p.settings:
            settings = {**settings, p.arch: p.settings}
        if arch is None:  # the suite's default architecture is the one the preset describes
            archs = list(dict.fromkeys(p.arch if a == "mamba" else a for a in archs))
    model = model.with_(vocab=vocab, d_model=d_model, n_layers=layers, d_state=d_state, d_conv=d_conv, expand=expand)
    own = {"d_state": d_state, "headdim": headdim, "ngroups": ngroups, "chunk_size": chunk_size}
    own = {k: v for k, v in own.items() if v is not None}
    for a in arch_registry.names():  # an explicit flag wins over --quick and --preset for every architecture that has it
        given = {k: v for k, v in own.items() if k in getattr(arch_registry.get(a), "SETTINGS", ())}
        if given:
            settings[a] = {**settings.get(a, {}), **given}
    unused = [
        f"--{k.replace('_', '-')}"
        for k in own
        if k != "d_state" and not any(k in getattr(arch_registry.get(a), "SETTINGS", ()) for a in archs)
    ]
    if unused:
        fail(f"{', '.join(unused)} applies to --arch mamba2 only, not to {', '.join(archs)}")
    explicit = dict(batch=batch, seq_len=seq_len, warmup=warmup, min_iters=min_iters, min_time=min_time, repeats=repeats, timeout=timeout)
    run.update({k: v for k, v in explicit.items() if v is not None})
    opts = RunOptions(
        backends=backends,
        archs=archs,
        model=model,
        settings=settings,
        dtype=dtype,
        scans=scans,
        modes=modes,
        memory_limit=mem,
        seed=seed,
        preset=preset,
        values=values,
        search=search,
        dtypes=dtypes,
        quick=quick,
        checkpoint=checkpoint,
        impls=list(dict.fromkeys(impls)),
        **run,
    )
    for a in archs:
        try:
            arch_config(opts, a)
        except ValueError as e:  # e.g. a headdim that does not divide d_inner: name the flag
            fail(f"--arch {a}: {e}; set --headdim, --ngroups or --d-model so it does")
    return opts


def _checkpoint(path, arch_flag, archs: list, *, preset, **sizes) -> dict:
    """--model: the checkpoint read and checked (exit 2 naming the file and what is wrong), as
    RunOptions.checkpoint. It fixes the model, so flags that size one are refused with it."""
    from .checkpoints import CheckpointError, open_checkpoint

    given = [flag for flag, v in {"--preset": preset, **sizes}.items() if v is not None]
    if given:
        fail(f"--model {path} fixes the model's sizes; drop {', '.join(given)}")
    try:
        ck = open_checkpoint(path)
    except CheckpointError as e:
        fail(str(e))
    if arch_flag is not None and archs != [ck.arch]:
        fail(f"--arch {arch_flag}: --model {path} is a {ck.arch} model")
    return {**ck.source(), "arch": ck.arch, "config": ck.config}
