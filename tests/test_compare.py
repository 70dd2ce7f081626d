"""compare: a change is called only when the bootstrap interval excludes no change and it is
at least the threshold; noise is 'same'."""

import json

import numpy as np
import pytest

from ssmbench.compare import compare, comparison, process_ratio_ci, ratio_ci, t975
from ssmbench.plan import Point
from ssmbench.results import make_record
from ssmbench.stats import summarize


def _env(host="a1", torch="2.13.0", git="aaaa", device="NVIDIA H100 80GB HBM3"):
    """The parts of an env fingerprint compare reads, as envinfo.fingerprint() writes them."""
    return {
        "host": host,
        "python": "3.11.7",
        "cpu": {"model": "AMD EPYC", "logical": 2},
        "accelerators": {"count": 1, "devices": [{"name": device, "memory_bytes": 85e9}], "driver": "550.54"},
        "versions": {"numpy": "2.4.6", "torch": torch, "jax": "0.10.2"},
        "ssmbench": {"version": "0.1.0", "git": git},
    }


def _rec(samples_ms, *, backend="torch-cpu", mode="train", status="ok", started="2026-01-01T00:00:00", env=None, process_ms=None):
    p = Point(
        suite="throughput",
        backend=backend,
        arch="mamba",
        mode=mode,
        scan="chunked",
        dtype="float32",
        config={"d_model": 64, "n_layers": 2},
        batch=2,
        seq_len=64,
    )
    metrics = {"step_ms": summarize(np.asarray(samples_ms) / 1e3)} if status == "ok" else {}
    if process_ms is not None:  # --repeats: one median per fresh process, as worker.metrics_from writes them
        metrics["repeats"] = [{"median_ms": float(m), "compile_s": 0.1, "n": 10} for m in process_ms]
    env = env or {}
    device = (env.get("accelerators") or {"devices": [{}]})["devices"][0].get("name")
    return make_record(p, "r", env, status=status, metrics=metrics, started_at=started, device=device)


def _parity_rec(passed=True):
    """A parity-gate record as runner.measure_checks writes it beside every timing run."""
    p = Point(
        suite="parity", backend="torch-cpu", arch="mamba", mode="forward", scan="chunked", dtype="float32", config={}, batch=2, seq_len=37
    )
    metrics = {"rel_err": 3e-7 if passed else 0.5, "tolerance": 1e-4, "passed": passed}
    return make_record(p, "r", {}, status="ok" if passed else "error", metrics=metrics)


@pytest.fixture
def noise(rng):
    return lambda centre, n=40: centre * (1 + 0.02 * rng.standard_normal(n))


def test_ratio_ci_brackets_the_true_ratio(noise):
    r, lo, hi = ratio_ci(noise(10.0), noise(12.0))
    assert lo < 1.2 < hi and abs(r - 1.2) < 0.03


def test_verdicts(noise):
    base = [_rec(noise(10.0)), _rec(noise(10.0), mode="forward"), _rec(noise(10.0), backend="torch-cuda"), _rec(noise(5.0), mode="decode")]
    cand = [
        _rec(noise(12.0)),
        _rec(noise(8.0), mode="forward"),
        _rec(noise(10.05), backend="torch-cuda"),
        _rec([], mode="decode", status="oom"),
    ]
    verdicts = {(c.key["backend"], c.key["mode"]): c.verdict for c in compare(base, cand)}
    assert verdicts == {
        ("torch-cpu", "train"): "slower",
        ("torch-cpu", "forward"): "faster",
        ("torch-cuda", "train"): "same",
        ("torch-cpu", "decode"): "candidate oom",
    }


def test_small_significant_change_below_threshold_is_same(rng):
    base = [_rec(10.0 * (1 + 0.001 * rng.standard_normal(200)))]
    cand = [_rec(10.2 * (1 + 0.001 * rng.standard_normal(200)))]
    (c,) = compare(base, cand, threshold=0.05)
    assert c.low > 1 and c.verdict == "same"  # real 2% change, but under the 5% threshold
    (c,) = compare(base, cand, threshold=0.01)
    assert c.verdict == "slower"


def test_unmatched_points_are_listed(noise):
    changes = compare([_rec(noise(1.0))], [_rec(noise(1.0), mode="forward")])
    assert sorted(c.verdict for c in changes) == ["only in baseline", "only in candidate"]


def test_latest_record_of_a_point_is_used(noise):
    base = [_rec(noise(10.0), started="2026-01-02"), _rec(noise(20.0), started="2026-01-01")]
    (c,) = compare(base, [_rec(noise(10.0))])
    assert c.verdict == "same" and abs(c.base_ms - 10.0) < 0.5


def test_cli_compare_fail_on_slower(tmp_path, noise):
    import json

    from ssmbench.cli import main

    for name, centre in (("a", 10.0), ("b", 15.0)):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(_rec(noise(centre))) + "\n")
    for args, code in (([], 0), (["--fail-on-slower"], 1), (["--threshold", "2"], 2)):
        with pytest.raises(SystemExit) as e:
            main(["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), *args])
        assert e.value.code == code


# ---------------------------------------------------------------------------- parity records
def test_parity_records_are_left_out_of_the_timing_comparison(noise):
    base = [_rec(noise(10.0)), _parity_rec(), _parity_rec(passed=False)]
    cand = [_rec(noise(12.0)), _parity_rec()]
    cmp = comparison(base, cand)
    assert [c.verdict for c in cmp.changes] == ["slower"] and cmp.left_out == 3
    assert [c.verdict for c in compare(base, cand)] == ["slower"]


def test_cli_compares_directories_holding_parity_records(run_cli, tmp_path, noise):
    """Every timing run writes parity-RUNID.jsonl beside its timings; comparing two such
    directories once ended in KeyError: 'step_ms'."""
    for side, centre in (("a", 10.0), ("b", 10.0)):
        d = tmp_path / side
        d.mkdir()
        (d / "throughput-r.jsonl").write_text(json.dumps(_rec(noise(centre))) + "\n")
        (d / "parity-r.jsonl").write_text(json.dumps(_parity_rec()) + "\n" + json.dumps(_parity_rec()) + "\n")
    code, out, err = run_cli("compare", tmp_path / "a", tmp_path / "b")
    assert code == 0 and "Traceback" not in out + err, err
    assert "4 record(s) left out" in out and "parity" in out
    assert "0 faster, 0 slower, 1 unchanged" in out


# ---------------------------------------------------------------------------- environments
def test_different_machines_mark_a_change_as_not_the_codes(noise):
    base = [_rec(noise(10.0), env=_env(host="a1")), _rec(noise(10.0), mode="forward", env=_env(host="a1"))]
    cand = [_rec(noise(12.0), env=_env(host="b2")), _rec(noise(10.0), mode="forward", env=_env(host="b2"))]
    cmp = comparison(base, cand)
    slower, same = cmp.changes
    assert slower.verdict == "slower (machines differ)" and slower.confounded
    assert same.verdict == "same" and not same.confounded  # no change is no change, whatever the machine
    assert cmp.env_diff == ["host a1 vs b2"]


def test_different_versions_mark_a_change_and_are_named(noise):
    base = [_rec(noise(10.0), env=_env(torch="2.11.0"))]
    cand = [_rec(noise(8.0), env=_env(torch="2.13.0", device="NVIDIA H200"))]
    cmp = comparison(base, cand)
    assert cmp.changes[0].verdict == "faster (machines differ)"
    assert cmp.env_diff == ["device NVIDIA H100 80GB HBM3 vs NVIDIA H200", "torch 2.11.0 vs 2.13.0"]
    (c,) = compare(base[:1], [_rec(noise(8.0), env=_env(torch="2.13.0"))])
    assert c.verdict == "faster (versions differ)" and c.env_diff == ("torch 2.11.0 vs 2.13.0",)


def test_the_ssmbench_commit_is_what_is_compared_not_an_environment_difference(noise):
    (c,) = compare([_rec(noise(10.0), env=_env(git="aaaa"))], [_rec(noise(12.0), env=_env(git="bbbb+dirty"))])
    assert c.verdict == "slower" and c.env_diff == ()


def test_libraries_of_another_framework_do_not_count(noise):
    """A jax upgrade in the same environment says nothing about a torch point."""
    other = _env()
    other["versions"] = {**other["versions"], "jax": "0.11.0"}
    (c,) = compare([_rec(noise(10.0), env=_env())], [_rec(noise(12.0), env=other)])
    assert c.verdict == "slower" and c.env_diff == ()


def test_cli_environment_difference_said_once_and_not_failed_on(run_cli, tmp_path, noise):
    for name, host, centre in (("a", "a1", 10.0), ("b", "b2", 15.0)):
        recs = [_rec(noise(centre), env=_env(host=host)), _rec(noise(centre), mode="forward", env=_env(host=host))]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    code, out, err = run_cli("compare", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--fail-on-slower")
    assert code == 0, err  # a slowdown across machines is not a regression of the code
    assert out.count("environments differ: host a1 vs b2") == 1
    assert out.count("slower (machines differ)") == 2
    assert "0 faster, 0 slower, 0 unchanged, 2 changed across different environments, not counted (threshold" in out


# ---------------------------------------------------------------------------- intervals
def test_t975_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 9, 17, 30, 31, 45, 80, 200, 5000):
        assert abs(t975(df) - stats.t.ppf(0.975, df)) < 2e-3 * stats.t.ppf(0.975, df), df


def test_process_ratio_ci_brackets_the_true_ratio(rng):
    hits = 0
    for _ in range(200):
        base, cand = 10.0 * np.exp(0.05 * rng.standard_normal(4)), 12.0 * np.exp(0.05 * rng.standard_normal(4))
        _, lo, hi = process_ratio_ci(base, cand)
        hits += lo < 1.2 < hi
    assert 0.9 <= hits / 200 <= 0.99  # a 95% interval covers about 95% of the time


def test_interval_comes_from_process_medians_where_there_are_repeats(rng):
    """Each process is steady (0.2% noise) but processes differ by ~8%: a 6% shift between two
    runs of the same code is what another process does, not a change."""
    base_proc, cand_proc = [9.4, 10.0, 10.7], [10.0, 10.6, 11.3]
    pool = lambda meds: np.concatenate([m * (1 + 0.002 * rng.standard_normal(20)) for m in meds])  # noqa: E731
    base, cand = pool(base_proc), pool(cand_proc)
    (c,) = compare([_rec(base, process_ms=base_proc)], [_rec(cand, process_ms=cand_proc)])
    assert c.interval == "between-process" and c.low < 1 < c.high and c.verdict == "same"
    (c,) = compare([_rec(base)], [_rec(cand)])  # the same samples, one process a side
    assert c.interval == "within-process" and c.low > 1 and c.verdict == "slower"


def test_one_process_a_side_keeps_the_bootstrap(noise):
    base, cand = _rec(noise(10.0), process_ms=[9.0, 11.0]), _rec(noise(12.0))
    (c,) = compare([base], [cand])
    samples = [np.asarray(r["metrics"]["step_ms"]["samples"]) for r in (base, cand)]
    assert c.interval == "within-process" and (c.ratio, c.low, c.high) == ratio_ci(*samples)


def test_cli_says_which_intervals_are_within_process(run_cli, tmp_path, noise):
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(_rec(noise(10.0))) + "\n")
    code, out, _ = run_cli("compare", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert code == 0 and "within-process only" in out and "--repeats" in out
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(_rec(noise(10.0), process_ms=[9.9, 10.0, 10.1])) + "\n")
    code, out, _ = run_cli("compare", tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert code == 0 and "within-process only" not in out
