"""compare: a change is called only when the bootstrap interval excludes no change and it is
at least the threshold; noise is 'same'."""

import numpy as np
import pytest

from ssmbench.compare import compare, ratio_ci
from ssmbench.plan import Point
from ssmbench.results import make_record
from ssmbench.stats import summarize


def _rec(samples_ms, *, backend="torch-cpu", mode="train", status="ok", started="2026-01-01T00:00:00"):
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
    return make_record(p, "r", {}, status=status, metrics=metrics, started_at=started)


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
