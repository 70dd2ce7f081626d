"""ssmbench.stats.summarize: seconds in, milliseconds out, robust statistics (SPEC "Measurement rules").

Expected values are computed by hand with the linear-interpolation percentile (numpy's default,
position q * (n - 1) in the sorted samples).
"""

from __future__ import annotations

import math

import pytest

from ssmbench.stats import UNSTABLE_IQR_RATIO, rel_iqr, summarize

KEYS = {"median", "mean", "std", "iqr", "p10", "p90", "p99", "min", "max", "n", "unstable", "samples"}


def test_keys_match_the_record_format():
    assert set(summarize([0.001, 0.002])) == KEYS


def test_five_samples_hand_computed():
    # 1..5 ms given in seconds, out of order
    s = summarize([0.003, 0.001, 0.005, 0.002, 0.004])
    assert s["median"] == pytest.approx(3.0)
    assert s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(math.sqrt(2.5))  # sample std (ddof=1): sum of squares 10 / 4
    assert s["iqr"] == pytest.approx(2.0)  # p75 4 - p25 2
    assert s["p10"] == pytest.approx(1.4)  # position 0.4 between 1 and 2
    assert s["p90"] == pytest.approx(4.6)  # position 3.6 between 4 and 5
    assert s["p99"] == pytest.approx(4.96)  # position 3.96
    assert s["min"] == pytest.approx(1.0)
    assert s["max"] == pytest.approx(5.0)
    assert s["n"] == 5
    assert isinstance(s["n"], int)


def test_even_count_interpolates_median_and_quartiles():
    s = summarize([0.010, 0.020, 0.030, 0.040])
    assert s["median"] == pytest.approx(25.0)
    assert s["iqr"] == pytest.approx(15.0)  # p75 32.5 - p25 17.5
    assert s["p10"] == pytest.approx(13.0)  # position 0.3
    assert s["p90"] == pytest.approx(37.0)  # position 2.7
    assert s["p99"] == pytest.approx(39.7)  # position 2.97
    assert s["mean"] == pytest.approx(25.0)
    assert s["std"] == pytest.approx(math.sqrt(500 / 3))
    assert (s["min"], s["max"], s["n"]) == (pytest.approx(10.0), pytest.approx(40.0), 4)


def test_median_is_robust_to_one_outlier_mean_is_not():
    s = summarize([0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 1.0])
    assert s["median"] == pytest.approx(10.0)
    assert s["iqr"] == pytest.approx(0.0)
    assert s["mean"] == pytest.approx(109.0)
    assert s["max"] == pytest.approx(1000.0)
    assert s["unstable"] is False


def test_seconds_become_milliseconds():
    s = summarize([2.5])
    assert s["median"] == pytest.approx(2500.0)
    assert s["samples"] == [2500.0]


def test_every_sample_is_kept_in_order_and_in_ms():
    secs = [0.0031, 0.0012, 0.0055, 0.0020, 0.0047, 0.0012, 0.0099]
    s = summarize(secs)
    assert s["n"] == len(secs)
    assert s["samples"] == pytest.approx([3.1, 1.2, 5.5, 2.0, 4.7, 1.2, 9.9])  # input order, duplicates kept
    assert all(isinstance(x, float) for x in s["samples"])


def test_accepts_any_iterable():
    s = summarize(x / 1000 for x in (1, 2, 3))
    assert s["n"] == 3
    assert s["median"] == pytest.approx(2.0)


def test_single_sample():
    s = summarize([0.0042])
    assert s["std"] == 0.0
    assert s["iqr"] == 0.0
    assert s["n"] == 1
    for k in ("median", "mean", "p10", "p90", "p99", "min", "max"):
        assert s[k] == pytest.approx(4.2), k
    assert s["unstable"] is False
    assert s["samples"] == [4.2]


def test_empty_raises_value_error():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize(iter(()))


def test_threshold_is_ten_percent():
    assert UNSTABLE_IQR_RATIO == pytest.approx(0.10)


# 5 samples: p25, p50, p75 are exactly the 2nd, 3rd and 4th sorted samples.
@pytest.mark.parametrize(
    "secs, ratio, unstable",
    [
        # binary-exact values: IQR 62.5 ms, median 625 ms -> exactly 10%
        ([0.5, 0.59375, 0.625, 0.65625, 0.75], 0.10, True),
        # just below: IQR 61.5234375 ms / 625 ms
        ([0.5, 0.59375, 0.625, 0.6552734375, 0.75], 61.5234375 / 625, False),
        # the decimal case a user would write: 90, 95, 100, 105, 110 ms -> IQR 10 / median 100
        ([0.090, 0.095, 0.100, 0.105, 0.110], 0.10, True),
        # 9.9%: IQR 9.9 / median 100
        ([0.090, 0.0951, 0.100, 0.105, 0.110], 0.099, False),
        # far above
        ([0.5, 0.5625, 0.625, 0.6875, 0.75], 0.20, True),
        # perfectly stable
        ([0.002] * 5, 0.0, False),
    ],
)
def test_unstable_flag_at_the_threshold(secs, ratio, unstable):
    s = summarize(secs)
    assert s["iqr"] / s["median"] == pytest.approx(ratio)
    assert s["unstable"] is unstable


def test_all_zero_samples_are_not_unstable_and_do_not_divide_by_zero():
    s = summarize([0.0, 0.0, 0.0])
    assert s["median"] == 0.0
    assert s["unstable"] is False


def test_rel_iqr():
    assert rel_iqr(summarize([0.001, 0.002, 0.003, 0.004, 0.005])) == pytest.approx(2 / 3)
    assert math.isnan(rel_iqr({"median": 0.0, "iqr": 0.0}))
