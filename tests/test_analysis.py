"""What sweeps mean: fits, efficiencies, crossovers, the memory model, presets with published
figures, and the HTML report (rendered in a real headless Chromium)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ssmbench import analysis as an
from ssmbench import memory_model
from ssmbench.archs.mamba import Config as MambaConfig
from ssmbench.archs.mamba import params as mamba_params
from ssmbench.archs.transformer import matched as matched_transformer
from ssmbench.plan import Point
from ssmbench.presets import PRESETS
from ssmbench.results import make_record

ENV = {"host": "box", "accelerators": {"devices": []}}
CFG = MambaConfig(vocab=65, d_model=64, n_layers=2, d_state=8)


def rec(
    suite, arch="mamba", mode="train", ms=10.0, status="ok", batch=2, seq_len=64, cfg=CFG, axis=None, preset=None, peak=None, scan=None, t=0
):
    config = cfg.to_dict() if arch == "mamba" else matched_transformer(cfg).to_dict()
    scan = scan or ("chunked" if arch == "mamba" else "attention")
    p = Point(suite, "torch-cpu", arch, mode, scan, "float32", config, batch, seq_len, preset=preset, axis=axis)
    metrics = {}
    if status == "ok":
        tokens = batch * (1 if mode == "decode" else seq_len)
        metrics = {"step_ms": {"median": ms, "iqr": 0.0}, "tokens_per_s": tokens / (ms / 1e3), "peak_mem_bytes": peak}
    r = make_record(p, "run1", ENV, status=status, device="Test CPU", params=mamba_params(cfg), metrics=metrics)
    r["started_at"] = f"2026-01-01T00:00:{t:02d}"
    return r


# ---------------------------------------------------------------------------- fits
def test_linear_fit_recovers_a_line_and_its_r2():
    f = an.linear_fit([1, 2, 4, 8], [12, 17, 27, 47])  # 7 + 5 L
    assert f.slope == pytest.approx(5) and f.intercept == pytest.approx(7) and f.r2 == pytest.approx(1)
    noisy = an.linear_fit([1, 2, 3, 4], [1, 3, 2, 4])
    assert 0 < noisy.r2 < 1 and noisy.r2 == pytest.approx(0.64)
    assert an.linear_fit([1, 2], [3, 5]).r2 is None  # two points always fit
    assert an.linear_fit([4], [1]) is None and an.linear_fit([2, 2], [1, 3]) is None


@pytest.mark.parametrize("power", [0.0, 1.0, 1.5, 2.0])
def test_loglog_slope_is_the_exponent(power):
    L = np.array([256, 512, 1024, 2048])
    assert an.loglog_fit(L, 0.3 * L**power).slope == pytest.approx(power, abs=1e-9)


# ---------------------------------------------------------------------------- depth
def depth_records(preset=None):
    cost = {1: 7 + 5, 2: 7 + 10, 4: 7 + 20, 8: 7 + 40}
    return [
        rec("depth-scaling", ms=ms, cfg=CFG.with_(n_layers=n), axis="n_layers", preset=preset, t=i)
        for i, (n, ms) in enumerate(cost.items())
    ]


def test_depth_scaling_fit_and_both_efficiencies():
    (s,) = an.depth_scaling(depth_records())
    assert s.fit.slope == pytest.approx(5) and s.fit.intercept == pytest.approx(7) and s.fit.r2 == pytest.approx(1)
    by = {r.layers: r for r in s.rows}
    assert by[1].scaling_eff == pytest.approx(1) and by[1].linear_eff == pytest.approx(1)
    assert by[8].scaling_eff == pytest.approx(12 / 47)  # tokens/s ratio = inverse time ratio
    assert by[8].linear_eff == pytest.approx(12 * 8 / 47)  # (t(1) * 8/1) / t(8): the fixed 7 ms amortised
    assert by[2].params == mamba_params(CFG.with_(n_layers=2))


def test_depth_scaling_prints_seed_000s_published_efficiency():
    recs = [
        rec("depth-scaling", ms=580, batch=32, seq_len=128, cfg=MambaConfig(n_layers=4), axis="n_layers", preset="tinyshakespeare-m2"),
        rec(
            "depth-scaling", ms=1160, batch=32, seq_len=128, cfg=MambaConfig(n_layers=8), axis="n_layers", preset="tinyshakespeare-m2", t=1
        ),
    ]
    (s,) = an.depth_scaling(recs)
    ((a, b, eff, got),) = s.published
    assert (a, b, eff) == (4, 8, 0.505) and got == pytest.approx(0.5)
    from ssmbench.sections import depth_md

    assert "4 → 8 layers scaling efficiency 50.5%; measured here: 50.0%" in "\n".join(depth_md(recs, None))


def test_series_stay_apart_by_mode_and_arch_and_join_across_lengths():
    recs = [
        rec("seqlen", arch=a, mode=m, seq_len=L, axis="seq_len")
        for a in ("mamba", "transformer")
        for m in ("train", "decode")
        for L in (64, 128)
    ]
    ss = an.series(recs, "seqlen")
    assert len(ss) == 4 and all([v for v, _ in pts] == [64, 128] for pts in ss.values())


# ---------------------------------------------------------------------------- crossover
def length_pair(mamba_ms, trans_ms, lengths=(256, 512, 1024, 2048)):
    recs = [rec("seqlen", "mamba", "forward", ms, seq_len=L, axis="seq_len") for L, ms in zip(lengths, mamba_ms)]
    recs += [rec("seqlen", "transformer", "forward", ms, seq_len=L, axis="seq_len") for L, ms in zip(lengths, trans_ms)]
    return an.seqlen(recs)


def test_crossover_between_the_bracketing_lengths():
    # Mamba linear (4 ms per 256 tokens), attention quadratic: equal where 4 L/256 = (L/256)^2, at L = 1024
    Ls = (256, 512, 2048, 4096)
    series, (c,) = length_pair([4 * L / 256 for L in Ls], [(L / 256) ** 2 for L in Ls], Ls)
    slopes = {s.head["arch"]: s.fit.slope for s in series}
    assert slopes["mamba"] == pytest.approx(1) and slopes["transformer"] == pytest.approx(2)
    assert c.length == pytest.approx(1024) and "between 512 and 2048" in c.verdict


def test_crossover_none_and_always():
    _, (never,) = length_pair([2, 4, 8, 16], [1, 2, 4, 8])
    assert never.length is None and never.verdict.startswith("no crossover up to 2048")
    _, (always,) = length_pair([1, 2, 3, 4], [2, 4, 8, 16])
    assert always.length is None and "faster at every length" in always.verdict
    _, (late,) = length_pair([1, 9, 3, 4], [2, 4, 8, 16])  # faster, slower, then faster for good
    assert late.verdict.startswith("mamba chunked is faster from 1024 on")


def test_oom_points_drop_out_of_fits_and_the_series_records_why():
    recs = [rec("seqlen", ms=L / 64, seq_len=L, axis="seq_len", t=i) for i, L in enumerate((64, 128, 256))]
    recs.append(rec("seqlen", status="oom", seq_len=512, axis="seq_len", t=3))
    (s,), _ = an.seqlen(recs)
    assert s.fit.n == 3 and s.fit.slope == pytest.approx(1)
    from ssmbench.sections import seqlen_md

    assert "oom at 512" in "\n".join(seqlen_md(recs, None))


# ---------------------------------------------------------------------------- memory model
def test_memory_model_reproduces_seed_004s_scan_estimate():
    """5 tensors x 64 batch x 2048 L x 384 d_inner x 16 N x 4 B x 4 layers = 64 GB."""
    cfg = {"vocab": 256, "d_model": 192, "n_layers": 4, "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 12}
    chunked = memory_model.estimate("mamba", cfg, 0, 64, 2048, scan="chunked", dtype="float32")
    seq = memory_model.estimate("mamba", cfg, 0, 64, 2048, scan="sequential", dtype="float32")
    scan_part = chunked.activation_bytes - seq.activation_bytes  # 5 - 3 = 2 (B, L, E, N) tensors
    assert scan_part == 2 * 64 * 2048 * 384 * 16 * 4 * 4
    assert chunked.activation_bytes > 5 * 64 * 2048 * 384 * 16 * 4 * 4 > 64e9


def test_memory_model_counts_torchs_fused_head_once_not_per_token():
    """torch's train step never holds (tokens, vocab) logits: its head term stops growing with
    the batch once a chunk is full, unlike the unfused frameworks' 3V floats a token."""
    cfg = {"vocab": 50280, "d_model": 768, "n_layers": 24, "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 48}
    est = {
        (fw, b): memory_model.estimate("mamba", cfg, 129_135_360, b, 2048, scan="triton", dtype="bfloat16", framework=fw)
        for fw in ("torch", "jax") for b in (8, 16)
    }  # fmt: skip
    jax_head = est[("jax", 16)].total_bytes - est[("jax", 8)].total_bytes
    torch_head = est[("torch", 16)].total_bytes - est[("torch", 8)].total_bytes
    assert jax_head - torch_head == 8 * 2048 * (3 * 50280 * 4 - 768 * 2)  # 3V fp32 against 2D bf16 a token
    chunk = (2**28 // 50280) * 50280 * (2 + 4) + 50280 * 768 * (4 + 2)  # one chunk of logits + dW, fixed
    assert est[("torch", 8)].fixed_bytes - est[("jax", 8)].fixed_bytes == chunk


@pytest.mark.parametrize("arch,within", [("mamba", 0.06), ("transformer", 0.12)])  # mamba: the triton kind's count
def test_memory_model_predicts_the_committed_h100_peaks(arch, within):
    """130M, bf16, batch 8 x 2048 on torch-cuda: the prediction against the peak measured on the
    lent H100 (10.85 GiB Mamba, 9.03 GiB GPT); counting the unfused layer, Mamba's was 46% over."""
    path = Path(__file__).resolve().parents[1] / "reports" / "h100-2026-11-23" / "throughput-130m.jsonl"
    (r,) = [r for r in map(json.loads, path.read_text().splitlines()) if r["mode"] == "train" and r["arch"] == arch]
    est = memory_model.estimate(
        arch, r["config"], r["params"], r["batch"], r["seq_len"], scan=r["scan"], dtype=r["dtype"], framework=r["framework"]
    )  # fmt: skip
    assert abs(est.total_bytes / r["metrics"]["peak_mem_bytes"] - 1) < within


def test_predicted_ceiling_is_the_largest_value_that_fits():
    cfg = CFG.to_dict()
    p = mamba_params(CFG)
    limit = 200 * 2**20
    for axis in ("batch", "seq_len"):
        c = memory_model.predicted_ceiling("mamba", cfg, p, 4, 64, limit, axis=axis, scan="chunked", dtype="float32")

        def total(v, axis=axis):
            b, n = (v, 64) if axis == "batch" else (4, v)
            return memory_model.estimate("mamba", cfg, p, b, n, scan="chunked", dtype="float32").total_bytes

        assert total(c) <= limit < total(c + 1)
    assert memory_model.predicted_ceiling("mamba", cfg, p, 4, 64, 1000, axis="batch", scan="chunked", dtype="float32") == 0


# ---------------------------------------------------------------------------- presets
def test_presets_carry_their_studies_and_figures():
    assert mamba_params(PRESETS["mamba-130m"].model) == 129_135_360
    ts = PRESETS["tinyshakespeare-m2"]
    assert (ts.model.vocab, ts.model.d_model, ts.model.n_layers, ts.run["default_batch"], ts.run["seq_len"]) == (65, 256, 4, 32, 128)
    figs = {f.what: f.value for f in ts.published}
    assert figs["train tokens/s, 4 layers"] == 7063.58 and figs["train ms/step, 8 layers"] == 1147.24
    assert figs["params, 4 layers"] == 1_851_201 and ts.scaling_efficiency == {(4, 8): 0.505}
    mb = PRESETS["mambabyte"]
    assert (mb.model.vocab, mb.model.d_model, mb.model.n_layers, mb.run["default_batch"], mb.run["seq_len"]) == (256, 192, 4, 16, 1024)
    s140 = PRESETS["sentiment140-tf"]
    assert (s140.model.vocab, s140.model.n_layers, s140.run["seq_len"]) == (30522, 2, 64) and "assumed" in s140.note
    for p in PRESETS.values():
        assert p.source and all(f.hardware for f in p.published)


def test_published_figures_sit_beside_the_measured_ones(run_cli, tmp_path):
    r = rec("throughput", ms=500.0, batch=32, seq_len=128, cfg=MambaConfig(n_layers=4), preset="tinyshakespeare-m2")
    rows = {row.figure.what: row for row in an.published([r])}
    (g, got, v) = rows["train tokens/s, 4 layers"].measured[0]
    assert v == pytest.approx(32 * 128 / 0.5) and rows["train tokens/s, 8 layers"].measured == []
    assert rows["params, 4 layers"].measured[0][2] == mamba_params(MambaConfig(n_layers=4))
    from ssmbench.sections import published_md

    md = "\n".join(published_md([r]))
    assert "| tinyshakespeare-m2 | train tokens/s, 4 layers | 7,063.58 |" in md and "1.16×" in md


def test_presets_command_lists_every_preset(run_cli):
    rc, out, _ = run_cli("presets")
    assert rc == 0 and all(name in out for name in PRESETS) and "129,135,360" in out


# ---------------------------------------------------------------------------- HTML
def all_suite_records():
    recs = depth_records()
    Ls = (64, 128, 256, 512)
    for i, L in enumerate(Ls):
        recs.append(rec("seqlen", "mamba", "forward", L / 32, seq_len=L, axis="seq_len", peak=L * 2**20, t=i))
        recs.append(rec("seqlen", "transformer", "forward", (L / 64) ** 2 / 2, seq_len=L, axis="seq_len", peak=L * L * 2**10, t=i))
    for i, (b, st) in enumerate([(1, "ok"), (2, "ok"), (4, "ok"), (8, "oom"), (6, "ok"), (7, "oom")]):
        r = rec("memory-ceiling", batch=b, status=st, axis="batch", peak=b * 2**24 if st == "ok" else None, t=i)
        r["settings"]["memory_limit"] = 7 * 2**24
        recs.append(r)
    recs += [rec("sweep-dstate", ms=n, cfg=CFG.with_(d_state=n), axis="d_state", t=n) for n in (4, 8, 16)]
    return recs


def test_html_report_is_one_self_contained_page_with_plots():
    from ssmbench.report import html_text

    page = html_text(all_suite_records(), ["x.jsonl"])
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in ("depth", "seqlen-forward", "seqlen-memory", "memory-0", "sweep-dstate"):
        assert f'<figure id="{name}"><svg' in page
    assert "SSMBENCHFIGURE" not in page and "<script" not in page and "src=" not in page
    assert page.count("<table>") >= 8 and "crossover lies between 256 and 512" in page
    assert "| 6 | 7 |" not in page and "<td>6</td><td>7</td>" in page.replace("\n", "")


def test_markdown_report_writes_its_plots_beside_it(run_cli, tmp_path):
    import json

    res = tmp_path / "res"
    res.mkdir()
    (res / "all.jsonl").write_text("\n".join(json.dumps(r) for r in all_suite_records()) + "\n")
    rc, _, err = run_cli("report", res, "--output", tmp_path / "out" / "report.md")
    assert rc == 0, err
    md = (tmp_path / "out" / "report.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "out" / "report_files").iterdir())
    assert "depth.png" in pngs and "memory-0.png" in pngs
    for name in pngs:
        assert f"](report_files/{name})" in md
        assert (tmp_path / "out" / "report_files" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("SSMBENCH_REQUIRE_BROWSER"), reason="no Chromium (make test installs Debian's)"
)
def test_html_report_renders_in_headless_chromium(tmp_path):
    """A real browser lays the page out and paints it: the screenshot is not blank, and the
    plots' region holds drawn pixels (lines, markers) as well as text."""
    from matplotlib.image import imread

    from ssmbench.report import html_text

    page = tmp_path / "report.html"
    page.write_text(html_text(all_suite_records(), ["x.jsonl"]))
    shot = tmp_path / "shot.png"
    assert chromium(), "SSMBENCH_REQUIRE_BROWSER is set but no Chromium is installed"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,4000",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    img = imread(shot)[..., :3]
    assert img.shape[0] == 4000 and img.shape[1] == 1200
    ink = (img.mean(axis=2) < 0.9).mean()  # share of non-white pixels
    assert 0.01 < ink < 0.9, f"screenshot looks blank or solid: {ink:.3f} of it is ink"
    colours = {tuple((px * 8).astype(int)) for px in img.reshape(-1, 3)[::97]}
    assert len(colours) > 20, "no plot colours painted"  # text alone is black on white
    assert not math.isnan(float(img.mean()))


PROBE = """<script>
const wide = [...document.querySelectorAll('*')]
  .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible');
const f = document.querySelector('figure');
document.body.setAttribute('data-probe', JSON.stringify({page: document.documentElement.scrollWidth, view: innerWidth,
  scrolling: wide.length, figure: f ? f.getBoundingClientRect().bottom : null, fold: innerHeight,
  closed: [...document.querySelectorAll('details')].filter(d => !d.open).length, tables: document.querySelectorAll('table').length}));
</script></body>"""


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("SSMBENCH_REQUIRE_BROWSER"), reason="no Chromium (make test installs Debian's)"
)
def test_html_report_puts_plots_above_the_fold_and_fits_1400_px_for_two_backends(tmp_path):
    """At 1400 x 900 a report of two backends needs no sideways scrolling (the page and every
    element) and its first plot is whole above the fold; the full tables are there, folded. The
    layout is measured by Chromium itself (a probe script in a copy of the page; the report has none)."""
    import json

    from ssmbench.report import html_text

    recs = all_suite_records()
    recs += [{**r, "backend": "jax-cpu", "framework": "jax", "run_id": "run2"} for r in recs]  # the same points on a second backend
    page = tmp_path / "report.html"
    page.write_text(html_text(recs, ["x.jsonl"]).replace("</body>", PROBE))
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    got = json.loads(re.search(r'data-probe="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert got["page"] <= got["view"] and got["scrolling"] == 0, got
    assert got["figure"] is not None and got["figure"] <= got["fold"], got
    assert got["closed"] >= 4 and got["tables"] >= 8, got


def test_the_report_keeps_failed_and_skipped_sweep_points(run_cli, tmp_path):
    recs = [rec("seqlen", ms=1, seq_len=64, axis="seq_len"), rec("seqlen", status="timeout", seq_len=128, axis="seq_len", t=1)]
    skipped = replace(Point("seqlen", "torch-cpu", "mamba", "train", "chunked", "float32", CFG.to_dict(), 2, 256, axis="seq_len"))
    recs.append(make_record(skipped, "run1", ENV, status="skipped", error="not run: seq_len 128 already ended timeout"))
    from ssmbench.report import markdown

    md = markdown(recs)
    assert "timeout at 128" in md and "not run: seq_len 128 already ended timeout" in md


def test_the_report_leads_each_suite_with_what_it_found():
    """Parity says how many checks passed and names each failure; throughput names the fastest
    backend or implementation at each point and the others' multiples of its time; then the full
    tables, folded."""
    from ssmbench.report import markdown

    ok = rec("parity", mode="forward", scan="chunked")
    bad = {**rec("parity", mode="decode", scan="recurrent", status="error"), "error": "relative error 4.1e-01 >= tolerance 3e-02"}
    fast = rec("throughput", ms=10.0)
    hf = {**rec("throughput", ms=25.0, scan="hf"), "impl": "hf"}
    md = markdown([ok, bad, fast, hf])
    assert "**1 of 2 checks passed**" in md and "Test CPU · mamba · decode · float32: error, relative error 4.1e-01" in md
    assert "| torch-cpu · Test CPU chunked |" in md and "torch-cpu · Test CPU hf 2.50×" in md
    for suite in ("parity", "throughput"):
        section = md.split(f"## {suite}\n")[1].split("\n## ")[0]
        assert section.index("<details><summary>All ") > section.index("**"), suite  # what it found, then the table
