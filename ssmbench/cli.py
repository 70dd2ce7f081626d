"""The ssmbench command line (SPEC "CLI").

Every argument is checked before anything runs or is written; a bad one ends the command
with one line on stderr naming the value and what is allowed, and exit status 2.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import typing
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.exceptions import Abort, Exit, TyperException

from . import backends as registry
from . import suites as suite_registry
from .console import add_row, parity_table, results_table
from .options import BadInput, build_options, check_choice, fail, int_list, positive, writable_dir, writable_file
from .suites.sweep import AXES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark Mamba selective state-space models the same way on every framework and device.",
)
_WIDTH = None if sys.stdout.isatty() else 200  # pipes and CI logs get the whole table, not 80 columns
out = Console(width=_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def say(label: str, style: str, msg: str, console: Console | None = None) -> None:
    """One unwrapped line on stderr; ``msg`` is shown verbatim (never parsed as markup)."""
    (console or err).print(Text.assemble((label, style), " ", str(msg)), soft_wrap=True, highlight=False)


# ---------------------------------------------------------------------------- options
BackendOpt = Annotated[list[str] | None, typer.Option("--backend", "-b", help="Backend name, comma list, 'all' or 'auto' (repeatable).")]
PresetOpt = Annotated[str | None, typer.Option(help="Named config (see `ssmbench presets`).")]
IntOpt = int | None


# ---------------------------------------------------------------------------- commands
@app.command()
def backends(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """List every backend with whether it runs here, why (not), and how to install it."""
    rows = []
    for name in registry.names():
        a = registry.availability(name)
        cls = registry.classes().get(name)
        rows.append(
            {
                "name": name,
                "available": a.available,
                "reason": a.reason,
                "install": a.install,
                "scans": {arch: list(s) for arch, s in cls.scans.items()} if cls else {},
                "default_scan": dict(cls.default_scan) if cls else {},
            }
        )
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    t = Table("backend", "available", "reason", "install", "scans")
    for r in rows:
        add_row(
            t,
            r["name"],
            Text("yes", style="green") if r["available"] else Text("no", style="red"),
            r["reason"],
            "" if r["available"] else r["install"],
            "; ".join(f"{arch}: {', '.join(s)}" for arch, s in r["scans"].items()),
        )
    out.print(t)


@app.command()
def env(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Print the environment fingerprint stored with every result."""
    from .envinfo import fingerprint

    fp = fingerprint()
    if as_json:
        print(json.dumps(fp, indent=1))
        return
    t = Table("field", "value", show_header=False)
    for k, v in fp.items():
        add_row(t, k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    out.print(t)


@app.command()
def presets():
    """List the named configurations --preset accepts."""
    from . import archs
    from .presets import PRESETS

    t = Table("preset", "arch", "vocab", "d_model", "layers", "d_state", "batch", "seq", "params", "source")
    for p in PRESETS.values():
        a = archs.get(p.arch)
        m = a.config_for(p.model, **p.settings)
        add_row(
            t,
            p.name,
            p.arch,
            str(m.vocab),
            str(m.d_model),
            str(m.n_layers),
            str(m.d_state),
            str(p.run.get("default_batch", "")),
            str(p.run.get("seq_len", "")),
            f"{a.params(m):,}",
            p.source + (f" ({p.note})" if p.note else ""),
        )
    out.print(t)


@app.command()
def run(
    suite: Annotated[str, typer.Argument(help="throughput | latency | depth-scaling | memory-ceiling | seqlen | scan | parity")],
    backend: BackendOpt = None,
    arch: Annotated[
        str | None,
        typer.Option(help="mamba | mamba2 | transformer, comma list; both = mamba,transformer; all (default: mamba; seqlen, scan: both)"),
    ] = None,
    preset: PresetOpt = None,
    model_path: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A checkpoint folder (mamba-ssm's or Hugging Face's: config.json and weights) or a weights file; "
            "it fixes the model, the other flags choose the workload.",
        ),
    ] = None,
    impl: Annotated[
        list[str] | None,
        typer.Option(
            help="Whose implementation runs the model, comma list: ssmbench (default), hf (transformers), mamba-ssm (CUDA); "
            "same weights, parity gate and timing loop."
        ),
    ] = None,
    d_model: Annotated[IntOpt, typer.Option(help="Model width D.")] = None,
    layers: Annotated[IntOpt, typer.Option(help="Mamba layers (the Transformer is matched in parameters).")] = None,
    d_state: Annotated[IntOpt, typer.Option(help="SSM state size N (default: mamba 16, mamba2 128).")] = None,
    d_conv: Annotated[IntOpt, typer.Option(help="Causal conv width K.")] = None,
    expand: Annotated[IntOpt, typer.Option(help="Inner width E = expand * D.")] = None,
    vocab: Annotated[IntOpt, typer.Option(help="Vocabulary size.")] = None,
    headdim: Annotated[IntOpt, typer.Option(help="mamba2: channels per head P; it divides expand x d_model (default 64).")] = None,
    ngroups: Annotated[IntOpt, typer.Option(help="mamba2: groups of heads sharing B and C; it divides the heads (default 1).")] = None,
    chunk_size: Annotated[IntOpt, typer.Option(help="mamba2: the SSD chunk (default 256).")] = None,
    batch: Annotated[IntOpt, typer.Option(help="Batch size (default 32; decode runs at 1, seqlen at 8).")] = None,
    seq_len: Annotated[IntOpt, typer.Option(help="Sequence length (decode: context length).")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float32 | bfloat16 | float16, half precision through autocast (default float32; parity: all).")
    ] = None,
    scan: Annotated[
        list[str] | None,
        typer.Option(help="Scan(s), comma list, or 'all' (default: the backend's; `ssmbench backends` lists them per arch)."),
    ] = None,
    mode: Annotated[list[str] | None, typer.Option(help="train | forward | decode, comma list (default: the suite's).")] = None,
    warmup: Annotated[IntOpt, typer.Option(help="Untimed steps after the first call (default 2).")] = None,
    min_iters: Annotated[IntOpt, typer.Option(help="At least this many timed steps (default 10).")] = None,
    min_time: Annotated[float | None, typer.Option(help="And at least this many seconds of timed steps (default 1).")] = None,
    repeats: Annotated[IntOpt, typer.Option(help="Fresh processes per point; samples pooled (default 1).")] = None,
    quick: Annotated[bool, typer.Option(help="Tiny sizes for smoke runs.")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for results (.jsonl).")] = Path("reports/results"),
    timeout: Annotated[float | None, typer.Option(help="Seconds per point before it is killed (default 900).")] = None,
    memory_limit: Annotated[str | None, typer.Option(help="Emulate a smaller device, e.g. 12.7GB, 16GiB.")] = None,
    resume: Annotated[bool, typer.Option(help="Append to the latest results file of this suite; skip points already recorded.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for weights and tokens.")] = 0,
    layers_list: Annotated[str | None, typer.Option(help="depth-scaling: depths, comma list (default 1,2,4,8,16; --quick 1,2,4).")] = None,
    search: Annotated[str | None, typer.Option(help="memory-ceiling: batch | seq-len, the axis searched (default batch).")] = None,
    max_len: Annotated[
        IntOpt,
        typer.Option(
            help="seqlen, scan: longest length; lengths double from 256 (scan: 512; --quick: 64) up to it "
            "(default 8192; --quick: 1024, scan 256)."
        ),
    ] = None,
):
    """Run a benchmark suite; each point in a fresh process, each result saved as it ends."""
    try:
        suite_mod = suite_registry.get(suite)
    except KeyError:
        fail(f"suite {suite!r} is not available; choose from: {', '.join(suite_registry.SUITES)}")
    given = {
        "--layers-list": (layers_list, ("depth-scaling",)),
        "--search": (search, ("memory-ceiling",)),
        "--max-len": (max_len, ("seqlen", "scan")),
    }
    for flag, (value, owners) in given.items():
        if value is not None and suite not in owners:
            fail(f"{flag} applies to `run {' | '.join(owners)}` only, not to {suite!r}")
    if search is not None:
        check_choice("--search", [search], ["batch", "seq-len"])
    axis = next((a for a in AXES.values() if a.suite == suite), None)
    values = int_list("--layers-list", layers_list)
    if suite in ("seqlen", "scan"):  # lengths doubling up to --max-len
        positive("--max-len", max_len)
        values = suite_mod.default_values(quick, max_len)
    _plan_and_execute(
        suite_mod.plan,
        suite,
        axis,
        values,
        dict(locals_for_options(locals())),
        quick,
        out_dir,
        resume,
        search=(search or "batch").replace("-", "_"),
    )


@app.command()
def sweep(
    param: Annotated[str, typer.Argument(help="seqlen | depth | batch | dstate")],
    values: Annotated[
        str | None,
        typer.Option(
            help="Comma list (default: seqlen 256..8192 doubling, depth 1,2,4,8,16, batch 1..64, dstate 4..256; fewer with --quick)."
        ),
    ] = None,
    max_len: Annotated[IntOpt, typer.Option(help="seqlen: longest length when --values is not given.")] = None,
    **common,
):
    """Sweep one axis (sequence length, depth, batch, state size) with the usual options; a value
    that runs out of memory or time ends its series and the larger ones are recorded as skipped."""
    check_choice("PARAM", [param], list(AXES))
    axis = AXES[param]
    if max_len is not None and param != "seqlen":
        fail(f"--max-len applies to `sweep seqlen` only, not to {param!r}")
    vals = int_list("--values", values)
    if vals is None:
        vals = _seqlen_values(max_len, common["quick"]) if param == "seqlen" else list(axis.quick if common["quick"] else axis.default)
    _plan_and_execute(axis.plan, axis.suite, axis, vals, locals_for_options(common), common["quick"], common["out_dir"], common["resume"])


def _share_options(cmd, source, names):
    """Give ``cmd`` (declared with **kwargs) the options ``names`` of ``source``, so `sweep`
    takes exactly `run`'s common options, declared once."""
    hints = typing.get_type_hints(source, include_extras=True)
    own = [p for p in inspect.signature(cmd).parameters.values() if p.kind != p.VAR_KEYWORD]
    own_hints = typing.get_type_hints(cmd, include_extras=True)
    src = inspect.signature(source).parameters
    cmd.__signature__ = inspect.Signature(
        [p.replace(annotation=own_hints[p.name]) for p in own] + [src[n].replace(annotation=hints[n]) for n in names]
    )


COMMON = [n for n in inspect.signature(run).parameters if n not in ("suite", "layers_list", "search", "max_len")]
_share_options(sweep, run, COMMON)


def locals_for_options(values: dict) -> dict:
    """The arguments of build_options among a command's parameters."""
    return {n: values[n] for n in COMMON if n not in ("quick", "out_dir", "resume")}


def _seqlen_values(max_len: int | None, quick: bool) -> list[int]:
    from .suites.seqlen import default_values

    positive("--max-len", max_len)
    return default_values(quick, max_len)


def _plan_and_execute(plan_fn, suite: str, axis, values, opts_kw: dict, quick: bool, out_dir: Path, resume: bool, search="batch"):
    suite_mod = suite_registry.get(suite) if suite in suite_registry.SUITES else None
    default_archs = getattr(suite_mod, "DEFAULT_ARCHS", ["mamba"])
    if axis is not None and values is None:
        values = list(axis.quick if quick else axis.default)
    opts = build_options(**opts_kw, quick=quick, default_archs=default_archs, values=values, search=search)
    varies = {"parity": "checks every backend at odd shapes of its own", "depth-scaling": "varies the layers"}
    if axis is not None and axis.field in ("n_layers", "d_state"):
        varies[axis.suite] = f"varies the {axis.what}"
    if opts.checkpoint and suite in varies:
        fail(
            f"--model fixes the model, and {suite} {varies[suite]}; "
            "use throughput, latency, memory-ceiling, seqlen, scan or sweep seqlen/batch"
        )
    if axis is not None and axis.ssm_only and "transformer" in opts.archs:
        fail(f"--arch {opts_kw['arch']!r}: the {axis.what} sweep varies an SSM setting the Transformer lacks; use --arch mamba, mamba2")
    writable_dir("--out", out_dir)  # the last check: it makes the directory
    raise Exit(execute(suite, plan_fn(opts), out_dir, resume))


def execute(suite: str, plan, out_dir: Path, resume: bool) -> int:
    """Run a plan (a list of points or an adaptive Plan) with a progress bar, print the table,
    return the exit status."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .envinfo import fingerprint
    from .results import latest_result_file, new_run_id, read_records, result_path
    from .runner import run_points

    path, run_id = None, new_run_id()
    if resume:
        path = latest_result_file(out_dir, suite)
        if path is not None:
            prior = read_records(path)
            run_id = prior[0]["run_id"] if prior else run_id
    path = path or result_path(out_dir, suite, run_id)
    env = fingerprint()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False
    ) as prog:
        task = prog.add_task(suite, total=len(plan) if isinstance(plan, list) else plan.total)

        def on_start(p):
            prog.update(task, description=f"{suite}: {p.label()}")

        def on_done(p, rec):
            prog.advance(task)
            if rec is not None and rec["status"] not in ("ok",):
                say(f"  {p.label()}: {rec['status']}", "yellow", rec.get("error") or "", prog.console)

        summary = run_points(plan, path, run_id, env, resume=resume, on_start=on_start, on_done=on_done)
        prog.update(task, description=f"{suite}: done")
    if summary.skipped_existing:
        say("resume:", "bold", f"{summary.skipped_existing} point(s) already recorded in {path}")
    if summary.records:
        out.print(parity_table(summary.records) if suite == "parity" else results_table(suite, summary.records))
    say("results:", "bold", path)
    unavailable = {r["backend"]: r["error"] for r in summary.records if r["status"] == "unavailable"}
    for b, why in unavailable.items():
        say(f"{b} is unavailable here:", "yellow", why)
    return 1 if summary.failed else 0


@app.command()
def report(
    paths: Annotated[list[Path] | None, typer.Argument(help="Result files or directories (default reports/results).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown | csv | json | html")] = "markdown",
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout (markdown: plots as PNGs beside it).")] = None,
):
    """Merge result files (from any machines) into side-by-side tables, with what each sweep
    means (fits, crossovers, ceilings) and plots (html: inline; markdown with --output: PNGs)."""
    from .report import FORMATS, render

    check_choice("--format", [fmt], list(FORMATS))
    paths = paths or [Path("reports/results")]
    records, files = _load_records(paths, "report")
    if output:
        writable_file("--output", output)  # before render, which writes the plots beside it
    text = render(records, fmt, [str(f) for f in files], output)
    if output:
        try:
            output.write_text(text)
        except OSError as e:  # the disk filled up, or the directory went away, while rendering
            fail(f"--output {str(output)!r} could not be written ({e.strerror or e})")
        say("report:", "bold", f"{output} ({len(records)} records from {len(files)} file(s))")
    else:
        print(text)


def _load_records(paths: list[Path], what: str) -> tuple[list[dict], list[Path]]:
    """Records from files/dirs; bad lines are warned about (file:line), missing paths are bad input."""
    from .results import collect_files, fill_devices, read_records

    try:
        files = collect_files(paths)
    except FileNotFoundError as e:
        fail(f"{what}: no such result file or directory: {e}")
    records = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for f in files:
            records += read_records(f)
    for w in caught:
        say("warning:", "yellow", w.message)
    if not records:
        fail(f"{what}: no ssmbench results found in {', '.join(map(str, paths))}")
    return fill_devices(records), files


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline result file or directory.")],
    candidate: Annotated[Path, typer.Argument(help="Candidate result file or directory.")],
    threshold: Annotated[float, typer.Option(help="Smallest change (fraction) called faster/slower.")] = 0.05,
    fail_slower: Annotated[bool, typer.Option("--fail-on-slower", help="Exit 1 if any point is significantly slower.")] = False,
):
    """Compare two sets of results point by point: change in median step time with a 95% CI.
    A change measured across different machines or library versions is shown, marked, and not
    counted by --fail-on-slower."""
    from .compare import comparison
    from .fmt import fmt_num, model_label

    if not 0 <= threshold < 1:
        fail(f"--threshold {threshold} must be in [0, 1)")
    cmp = comparison(_load_records([baseline], "baseline")[0], _load_records([candidate], "candidate")[0], threshold)
    changes = cmp.changes
    t = Table(title=Text(f"{candidate} vs {baseline}"))
    for col in ("suite", "backend", "model", "mode", "scan", "dtype", "B x L", "base ms", "cand ms", "change", "95% CI", "verdict"):
        t.add_column(col)
    colours = {"faster": "green", "slower": "red", "same": "white"}
    for c in changes:
        k = c.key
        change = f"{(c.ratio - 1) * 100:+.1f}%" if c.ratio is not None else "-"
        ci = f"{(c.low - 1) * 100:+.1f}% .. {(c.high - 1) * 100:+.1f}%" if c.low is not None else "-"
        add_row(
            t,
            k["suite"],
            k["backend"],
            f"{k['arch']} {model_label(k)}",
            k["mode"],
            k["scan"],
            k["dtype"],
            f"{k['batch']} x {k['seq_len']}",
            fmt_num(c.base_ms),
            fmt_num(c.cand_ms),
            change,
            ci,
            Text(c.verdict, style=colours.get(c.verdict, "yellow")),
        )
    out.print(t)
    _compare_notes(cmp)
    n = {v: sum(c.verdict == v for c in changes) for v in ("faster", "slower", "same")}
    confounded = sum(c.confounded for c in changes)
    elsewhere = f", {confounded} changed across different environments, not counted" if confounded else ""
    summary = f"{n['faster']} faster, {n['slower']} slower, {n['same']} unchanged{elsewhere}"
    out.print(f"{summary} (threshold {threshold:.0%}, {len(changes)} points)", soft_wrap=True)
    raise Exit(1 if fail_slower and n["slower"] else 0)


def _compare_notes(cmp) -> None:
    """What limits the verdicts above, each said once: records that are not timed points,
    environments that differ, intervals that miss process-to-process spread."""
    if cmp.left_out:
        say("note:", "bold", f"{cmp.left_out} record(s) left out: parity checks are not timed points", out)
    if cmp.env_diff:
        say(
            "environments differ:",
            "yellow",
            "; ".join(cmp.env_diff) + " (a faster/slower here may be the environment, not the code; --fail-on-slower ignores it)",
            out,
        )
    if cmp.within_process:
        say(
            "note:",
            "bold",
            f"the 95% intervals of {cmp.within_process} point(s) are within-process only (one process a side); "
            "run both sides with --repeats N (N >= 2) for process-to-process spread",
            out,
        )


# ---------------------------------------------------------------------------- entry point
def _with_value(msg: str, args: list[str]) -> str:
    """Typer's "Invalid value for '--batch': ..." does not quote the value; add it from argv."""
    m = re.match(r"Invalid value for '(--[\w-]+)'(?: / '[^']*')*: (.*)", msg)
    if not m:
        return msg
    flag, why = m.groups()
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return f"{flag} {args[i + 1]!r} is not valid: {why}"
        if a.startswith(flag + "="):
            return f"{flag} {a.split('=', 1)[1]!r} is not valid: {why}"
    return msg


def main(argv: list[str] | None = None) -> None:
    """Console entry: every usage error is one line on stderr and exit 2."""
    cmd = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = cmd.main(args, prog_name="ssmbench", standalone_mode=False)
    except BadInput as e:
        say("error:", "red", e)
        sys.exit(2)
    except TyperException as e:
        say("error:", "red", _with_value(e.format_message(), args))
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except Exit as e:
        sys.exit(e.exit_code)
    except (Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
