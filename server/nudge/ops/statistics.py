"""The statistics behind the results: a confidence interval for a conversion rate, and whether a
variant's rate differs from the control's by more than chance would explain.

- Interval: Wilson score interval (good at small counts and near 0 % or 100 %, where the normal
  approximation is not).
- Test: two-sided two-proportion z-test with the pooled rate; when any expected cell of the 2×2
  table is below 5, Fisher's exact test (two-sided: the sum of the probabilities of every table
  with the same margins no more likely than the one observed) instead. Significant: p < 0.05.

Pure functions, standard library only.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the normal quantile for a 95 % two-sided interval
ALPHA = 0.05


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
    return {
        "test": test,
        "p_value": round(p, 6),
        "difference": round(rate1 - rate2, 6),
        "difference_ci95": [round(low, 6), round(high, 6)],
        "lift": round((rate1 - rate2) / rate2, 6) if rate2 else None,
        "significant": p < ALPHA,
        "better": p < ALPHA and rate1 > rate2,
    }
