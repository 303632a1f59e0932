"""The statistics behind the results: a confidence interval for a conversion rate, and whether a
variant's rate differs from the control's by more than chance would explain.

- Interval: Wilson score interval (good at small counts and near 0 % or 100 %, where the normal
  approximation is not).
- Test: two-sided two-proportion z-test with the pooled rate; when any expected cell of the 2×2
  table is below 5, Fisher's exact test (two-sided: the sum of the probabilities of every table
  with the same margins no more likely than the one observed) instead. Significant: p < 0.05.
- Many comparisons (every pair of variants, each against the holdout): p-values adjusted by
  Holm's step-down method (Holm 1979, "A simple sequentially rejective multiple test procedure",
  Scand. J. Statistics 6:65-70), which holds the family-wise error rate at 0.05.
- Looking every day: the mixture sequential probability ratio test (mSPRT) of Johari, Koomen,
  Pekelis and Walsh ("Always valid inference: continuous monitoring of A/B tests", Operations
  Research 70(3), 2022), for the difference of two rates with a normal mixture N(0, τ²) over it:
  its p-value stays valid however often it is looked at (the fixed-horizon p does not).
- Sample ratio mismatch: Pearson's chi-square goodness-of-fit test of the exposures per variant
  against the weights; p < 0.001 means the split itself is off (a bug in who gets what), and no
  result of the test should be believed.

Pure functions, standard library only.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the normal quantile for a 95 % two-sided interval
ALPHA = 0.05
SRM_ALPHA = 0.001  # a split this unlikely under the weights is a mismatch
MIN_EXPOSURES = 100  # per variant, before any verdict
TAU = 0.05  # the mSPRT's mixture: differences of rates of the order of 5 points


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``successes / trials``; (0, 0) for no trials."""
    if trials <= 0:
        return (0.0, 0.0)
    p = successes / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    denominator = 1 + z2 / trials
    return (max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator))


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Two-sided two-proportion z-test of x1/n1 against x2/n2 (pooled): (z, p-value)."""
    if n1 <= 0 or n2 <= 0:
        return (0.0, 1.0)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return (0.0, 1.0)
    z = (x1 / n1 - x2 / n2) / se
    return (z, math.erfc(abs(z) / math.sqrt(2)))


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2×2 table [[x1, n1-x1], [x2, n2-x2]]."""
    successes, total = x1 + x2, n1 + n2
    if n1 <= 0 or n2 <= 0 or successes in (0, total):
        return 1.0
    log_all = _log_choose(total, successes)

    def probability(k: int) -> float:
        return math.exp(_log_choose(n1, k) + _log_choose(n2, successes - k) - log_all)

    observed = probability(x1)
    low, high = max(0, successes - n2), min(n1, successes)
    p = sum(q for k in range(low, high + 1) if (q := probability(k)) <= observed * (1 + 1e-7))
    return min(1.0, p)


def difference_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``x1/n1 - x2/n2`` (from the two Wilson intervals):
    sound at small counts and near 0 % or 100 %, where the Wald interval is not. (0, 0) when an
    arm has no trials."""
    if n1 <= 0 or n2 <= 0:
        return (0.0, 0.0)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def compare(x1: int, n1: int, x2: int, n2: int) -> dict:
    """Variant (x1 of n1 converted) against control (x2 of n2): the test used, its p-value,
    the relative lift, and whether the difference is significant at ``ALPHA``."""
    total, successes = n1 + n2, x1 + x2
    small = total == 0 or min(n1, n2) * min(successes, total - successes) / total < 5
    if small:
        test, p = "fisher_exact", fisher_exact(x1, n1, x2, n2)
    else:
        test, p = "two_proportion_z", z_test(x1, n1, x2, n2)[1]
    rate1 = x1 / n1 if n1 else 0.0
    rate2 = x2 / n2 if n2 else 0.0
    low, high = difference_interval(x1, n1, x2, n2)
    measured = n1 > 0 and n2 > 0  # a difference needs a rate on both sides
    return {
        "test": test,
        "p_value": _figures(p),
        "difference": round(rate1 - rate2, 6) if measured else None,
        "difference_ci95": [round(low, 6), round(high, 6)] if measured else None,
        "lift": round((rate1 - rate2) / rate2, 6) if rate2 else None,
        "significant": p < ALPHA,
        "better": p < ALPHA and rate1 > rate2,
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest is multiplied by
    (m - i), made monotone, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def msprt(x1: int, n1: int, x2: int, n2: int, tau: float = TAU) -> float:
    """The always-valid p-value of the mSPRT for x1/n1 against x2/n2: 1/Λ (capped at 1), where Λ
    is the likelihood ratio of the difference θ̂ = p1 - p2 (normal, variance V estimated from the
    rates) mixed over θ ~ N(0, τ²) against θ = 0:
    Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2 = x1 / n1, x2 / n2
    variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    if variance <= 0:
        return 1.0
    t2 = tau * tau
    log_ratio = 0.5 * math.log(variance / (variance + t2)) + (p1 - p2) ** 2 * t2 / (2 * variance * (variance + t2))
    return 1.0 if log_ratio <= 0 else min(1.0, math.exp(-log_ratio))


def chi_square_sf(x: float, df: int) -> float:
    """P(χ² with ``df`` degrees of freedom ≥ x): the regularized upper incomplete gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z < a + 1:  # the series for P, then Q = 1 - P
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-15:
            k += 1
            term *= z / k
            total += term
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # Lentz's continued fraction for Q
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - math.lgamma(a)) * h)


def sample_ratio(observed: dict[str, int], weights: dict[str, float]) -> dict | None:
    """Pearson's chi-square test of the exposures per variant against the split the weights
    ask for; None with fewer than two variants or no exposures."""
    total = sum(observed.get(v, 0) for v in weights)
    weight = sum(weights.values())
    if len(weights) < 2 or total == 0 or weight <= 0:
        return None
    expected = {v: total * w / weight for v, w in weights.items()}
    statistic = sum((observed.get(v, 0) - e) ** 2 / e for v, e in expected.items() if e > 0)
    p = chi_square_sf(statistic, len(weights) - 1)
    return {
        "test": "chi_square", "chi_square": round(statistic, 6), "p_value": _figures(p),
        "mismatch": p < SRM_ALPHA,
        "expected": {v: round(e, 2) for v, e in expected.items()},
        "observed": {v: observed.get(v, 0) for v in weights},
    }


def _figures(p: float) -> float:
    """Six significant figures: a p of 2e-6 stays 2.43e-6, not 0 or 2e-06."""
    return float(f"{p:.6g}")
