"""The statistics of the results report, against values published or computed elsewhere."""

from __future__ import annotations

import pytest
from nudge.ops import statistics as stats
from nudge.ops.results import report


def test_wilson_interval():
    low, high = stats.wilson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert stats.wilson(0, 0) == (0.0, 0.0)
    low, high = stats.wilson(0, 20)
    assert low == 0.0 and round(high, 4) == 0.1611


def test_two_proportion_z_test():
    z, p = stats.z_test(100, 1000, 130, 1000)
    assert round(z, 3) == -2.103 and round(p, 4) == 0.0355


def test_fisher_exact_two_sided():
    # The tea-tasting table [[1, 9], [11, 3]]: p = 0.002759 (R's fisher.test, scipy).
    assert stats.fisher_exact(1, 10, 11, 14) == pytest.approx(0.002759, abs=1e-6)
    assert stats.fisher_exact(3, 3, 0, 3) == pytest.approx(0.1, abs=1e-9)
    assert stats.fisher_exact(0, 5, 0, 5) == 1.0


def test_compare_picks_fisher_for_small_counts():
    assert stats.compare(3, 10, 1, 10)["test"] == "fisher_exact"
    big = stats.compare(130, 1000, 100, 1000)
    assert big["test"] == "two_proportion_z" and big["significant"] and big["better"]
    assert big["lift"] == pytest.approx(0.3)


class _Variant:
    def __init__(self, id, holdout=False):
        self.id, self.holdout = id, holdout


class _Campaign:
    def __init__(self, *variants):
        self.variants = variants


def test_report_against_the_holdout():
    counts = {"cart": {
        "a": {"sent": 1000, "converted": 130, "shown": 990, "clicked": 300, "suppressed:cap:per_day": 50, "suppressed:busy": 10},
        "off": {"suppressed:holdout": 1000, "converted": 100, "suppressed:audience": 7},
    }}
    out = report(counts, {"cart": _Campaign(_Variant("a"), _Variant("off", holdout=True))})["cart"]
    assert out["control"] == "off"
    a = out["variants"]["a"]
    assert a["triggered"] == 1060 and a["eligible"] == 1010 and a["exposed"] == 1000
    assert a["suppressed"] == {"cap:per_day": 50, "busy": 10}
    assert a["conversion_rate"] == 0.13 and a["ci95"][0] < 0.13 < a["ci95"][1]
    assert out["variants"]["off"]["exposed"] == 1000
    (comparison,) = out["comparisons"]
    assert comparison["variant"] == "a" and comparison["test"] == "two_proportion_z" and comparison["better"]
