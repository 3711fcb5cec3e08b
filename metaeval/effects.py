"""Effect-size conversions: the textbook formulas harmonisation is built from.

Each function is pure (floats in, floats out) and refuses input it cannot use
with a ``ValueError``. References: Borenstein, Hedges, Higgins & Rothstein (2009)
*Introduction to Meta-Analysis* (ch. 4–7); Cochrane Handbook v6.4 §6.3;
Agresti (2007) *An Introduction to Categorical Data Analysis* §8.1; Agresti & Caffo (2000)
Am Stat 54:280; Chinn (2000) Stat Med 19:3127; Bloom (1984) Eval Rev 8:225.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()  # the standard normal; stdlib, so importing this module stays cheap


def _positive(name: str, value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _share(name: str, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a proportion in [0, 1], got {value!r}")
    return value


def z_crit(level: float = 0.95) -> float:
    """Two-sided standard-normal critical value for a confidence level (1.96 for 95%)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    return _NORMAL.inv_cdf(0.5 + level / 2)


def se_from_ci(ci_low: float, ci_high: float, level: float = 0.95) -> float:
    """SE from a symmetric normal-theory CI: width / (2 z)  (Cochrane Handbook §6.3.1)."""
    width = ci_high - ci_low
    return _positive("CI width", width) / (2 * z_crit(level))


def se_from_bound(estimate: float, bound: float, level: float = 0.95) -> float:
    """SE from one CI bound when the other is unreadable: |bound − estimate| / z."""
    return _positive("distance from estimate to CI bound", abs(bound - estimate)) / z_crit(level)


def se_from_p(estimate: float, p_value: float) -> float:
    """SE from a two-sided p-value: |estimate| / z(1 − p/2)  (Cochrane Handbook §6.3.2)."""
    if not 0 < p_value < 1:
        raise ValueError(f"p-value must be strictly between 0 and 1 to recover an SE, got {p_value!r}")
    _positive("|estimate|", abs(estimate))
    return abs(estimate) / -_NORMAL.inv_cdf(p_value / 2)


def p_from_z(z: float) -> float:
    """Two-sided p-value of a z statistic."""
    return math.erfc(abs(z) / math.sqrt(2))


def risk_difference(p1: float, n1: float, p2: float, n2: float) -> tuple[float, float]:
    """Risk difference p1 − p2 and its SE √(p1q1/n1 + p2q2/n2)  (Borenstein et al. 2009, ch. 5)."""
    _share("p1", p1), _share("p2", p2), _positive("n1", n1), _positive("n2", n2)
    var = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    return p1 - p2, math.sqrt(_positive("variance of the risk difference (both shares are 0 or 1)", var))


def agresti_caffo_se(p1: float, n1: float, p2: float, n2: float) -> float:
    """SE of a risk difference after adding one success and one failure to each group (Agresti & Caffo 2000).

    √(p̃1q̃1/(n1+2) + p̃2q̃2/(n2+2)) with p̃ = (np + 1)/(n + 2). The Wald SE of a difference with a group at
    0% or 100% counts only the other group's variance (0 when both are); the adjusted one gives
    intervals of near-nominal coverage down to empty cells.
    """
    _share("p1", p1), _share("p2", p2), _positive("n1", n1), _positive("n2", n2)
    t1, t2 = (p1 * n1 + 1) / (n1 + 2), (p2 * n2 + 1) / (n2 + 2)
    return math.sqrt(t1 * (1 - t1) / (n1 + 2) + t2 * (1 - t2) / (n2 + 2))


def paired_risk_difference(p_improved: float, p_worsened: float, n: float) -> tuple[float, float]:
    """Change in a share measured twice on the same n people, from the discordant shares.

    Difference = p_improved − p_worsened; Var = [p_i + p_w − (p_i − p_w)²] / n, the
    McNemar-type variance of dependent proportions (Agresti 2007, §8.1).
    """
    _share("p_improved", p_improved), _share("p_worsened", p_worsened), _positive("n", n)
    if p_improved + p_worsened > 1 + 1e-9:
        raise ValueError("discordant shares add up to more than 1")
    diff = p_improved - p_worsened
    var = (p_improved + p_worsened - diff**2) / n
    return diff, math.sqrt(_positive("variance of the paired difference (no discordant pairs)", var))


def log_odds_ratio(p1: float, n1: float, p2: float, n2: float, continuity: float = 0.0) -> tuple[float, float]:
    """Log odds ratio of two shares and its Woolf SE √(1/a + 1/b + 1/c + 1/d)  (Borenstein ch. 5).

    Cell counts are n × share, plus ``continuity`` in every cell (0.5 is the Haldane–Anscombe
    correction the Cochrane Handbook, §10.4.4.2, applies to a table with an empty cell). Without
    it, a share of exactly 0 or 1 leaves an empty cell and is refused.
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0 < _share(name, p) < 1 and continuity <= 0:
            raise ValueError(f"{name} = {p} leaves an empty cell: the log odds ratio is infinite")
    _positive("n1", n1), _positive("n2", n2)
    a, b, c, d = (x + continuity for x in (p1 * n1, (1 - p1) * n1, p2 * n2, (1 - p2) * n2))
    return math.log(a * d / (b * c)), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)


_LOGIT_SD = math.pi / math.sqrt(3)  # SD of the standard logistic distribution


def log_or_to_smd(log_or: float, se: float) -> tuple[float, float]:
    """Chinn (2000): d = ln(OR) · √3/π, and the same factor for the SE."""
    return log_or / _LOGIT_SD, _positive("se", se) / _LOGIT_SD


def smd_to_log_or(d: float, se: float) -> tuple[float, float]:
    """Inverse of :func:`log_or_to_smd`."""
    return d * _LOGIT_SD, _positive("se", se) * _LOGIT_SD


def pooled_sd(sd1: float, n1: float, sd2: float, n2: float) -> float:
    """Within-groups SD √{[(n1−1)s1² + (n2−1)s2²] / (n1+n2−2)}  (Borenstein eq. 4.19)."""
    _positive("sd1", sd1), _positive("sd2", sd2)
    if n1 + n2 <= 2:
        raise ValueError("pooled SD needs more than two observations in all")
    return math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / (n1 + n2 - 2))


def hedges_j(df: float) -> float:
    """Hedges' small-sample correction J = 1 − 3 / (4 df − 1)  (Borenstein eq. 4.22)."""
    return 1 - 3 / (4 * _positive("degrees of freedom", df) - 1)


def hedges_g(m1: float, sd1: float, n1: float, m2: float, sd2: float, n2: float) -> tuple[float, float]:
    """Hedges' g from group means and SDs, with SE √(J² · V_d)  (Borenstein eqs. 4.18–4.24)."""
    s = pooled_sd(sd1, n1, sd2, n2)
    d = (m1 - m2) / s
    var_d = (n1 + n2) / (n1 * n2) + d**2 / (2 * (n1 + n2))
    j = hedges_j(n1 + n2 - 2)
    return j * d, j * math.sqrt(var_d)


def smd_from_effect(effect: float, se: float, sd1: float, n1: float, sd2: float, n2: float) -> tuple[float, float]:
    """Standardise an (e.g. regression-adjusted) mean difference by the pooled SD, with Hedges' J.

    The SE is the reported SE divided by the same SD, so covariate adjustment keeps its precision.
    """
    s = pooled_sd(sd1, n1, sd2, n2)
    j = hedges_j(n1 + n2 - 2)
    return j * effect / s, j * _positive("se", se) / s


def mean_difference(m1: float, sd1: float, n1: float, m2: float, sd2: float, n2: float) -> tuple[float, float]:
    """Raw mean difference and its SE √(s1²/n1 + s2²/n2)  (Borenstein eq. 4.3)."""
    _positive("sd1", sd1), _positive("sd2", sd2), _positive("n1", n1), _positive("n2", n2)
    return m1 - m2, math.sqrt(sd1**2 / n1 + sd2**2 / n2)


def bloom_tot(itt: float, se_itt: float, take_up: float) -> tuple[float, float]:
    """Bloom (1984) no-show correction: effect on participants = ITT / take-up (and its SE)."""
    if not 0 < take_up <= 1:
        raise ValueError(f"take-up must be in (0, 1], got {take_up!r}")
    return itt / take_up, _positive("se", se_itt) / take_up
