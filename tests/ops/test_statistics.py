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


def test_holm_against_the_textbook_example():
    # Holm (1979) step-down, the example of four hypotheses on Wikipedia's "Holm–Bonferroni
    # method": p = 0.01, 0.04, 0.03, 0.005 -> adjusted 0.03, 0.06, 0.06, 0.02 (H1 and H4 rejected).
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([]) == []
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8 × 2 capped at 1, and monotone


@pytest.mark.parametrize("counts, expected", [
    # 1/Λ with Λ integrated numerically over the N(0, 0.05²) mixture (scipy.integrate.quad on the
    # normal likelihood ratio), independently of the closed form in statistics.msprt.
    ((130, 1000, 100, 1000), 0.470032),
    ((300, 2000, 240, 2000), 0.118437),
    ((50, 500, 48, 500), 1.0),
])
def test_msprt_against_numerical_integration(counts, expected):
    assert stats.msprt(*counts) == pytest.approx(expected, abs=1e-5)


def test_the_sequential_p_is_more_cautious_than_the_fixed_horizon_one():
    fixed = stats.z_test(130, 1000, 100, 1000)[1]
    assert fixed < 0.05 < stats.msprt(130, 1000, 100, 1000)


@pytest.mark.parametrize("x, df, expected", [
    # scipy.stats.chi2.sf
    (3.841458820694124, 1, 0.05), (5.991464547107979, 2, 0.05), (7.814727903251178, 3, 0.05),
    (0.5, 1, 0.4795001221869534), (30, 4, 4.894437128029217e-06), (100, 10, 5.4497019829205215e-17),
])
def test_chi_square_survival_function(x, df, expected):
    assert stats.chi_square_sf(x, df) == pytest.approx(expected, rel=1e-9)


def test_sample_ratio_mismatch():
    # scipy.stats.chisquare([1000, 800], [900, 900]): statistic 22.22, p = 2.43e-06
    off = stats.sample_ratio({"a": 1000, "b": 800}, {"a": 1, "b": 1})
    assert off["chi_square"] == pytest.approx(22.222222, abs=1e-6) and off["p_value"] == pytest.approx(2.4e-06, abs=1e-7)
    assert off["mismatch"]
    # scipy.stats.chisquare([460, 440, 100], [450, 450, 100]): p = 0.8007
    fine = stats.sample_ratio({"a": 460, "b": 440, "off": 100}, {"a": 45, "b": 45, "off": 10})
    assert fine["p_value"] == pytest.approx(0.800737, abs=1e-6) and not fine["mismatch"]


def test_no_verdict_without_exposures_and_every_pair_compared():
    counts = {"cart": {
        "a": {"sent": 1000, "converted": 130},
        "b": {"sent": 1000, "converted": 100},
        "c": {},
        "off": {"suppressed:holdout": 250, "converted": 20},
    }}
    variants = (_Variant("a"), _Variant("b"), _Variant("c"), _Variant("off", holdout=True))
    out = report(counts, {"cart": _Campaign(*variants)})["cart"]
    pairs = [(c["variant"], c["control"]) for c in out["comparisons"]]
    assert pairs == [("a", "off"), ("b", "off"), ("c", "off"), ("a", "b"), ("a", "c"), ("b", "c")]
    by_pair = {(c["variant"], c["control"]): c for c in out["comparisons"]}
    for pair in [("c", "off"), ("a", "c"), ("b", "c")]:
        assert by_pair[pair]["verdict"] == "too_few_exposures" and by_pair[pair]["significant"] is None
    a_b = by_pair[("a", "b")]
    assert a_b["p_value"] == pytest.approx(stats.z_test(130, 1000, 100, 1000)[1], rel=1e-5)  # fixed-horizon
    assert a_b["p_adjusted"] > a_b["p_value"] and a_b["verdict"] == "no_difference"  # Holm over six
    assert out["sample_ratio"]["mismatch"]  # c got nothing of its quarter
