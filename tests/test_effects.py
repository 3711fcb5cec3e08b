"""Effect-size conversions against worked values from textbooks and published examples."""

import math

import numpy as np
import pytest

from metaeval import effects


def test_se_from_95_ci_is_width_over_3_92():
    # Cochrane Handbook v6.4 §6.3.1: for a 95% CI, SE = (upper − lower) / 3.92.
    assert effects.se_from_ci(-2.5, 0.3) == pytest.approx(2.8 / 3.92, rel=1e-3)


def test_se_from_90_ci_uses_3_29():
    # Cochrane Handbook §6.3.1: a 90% CI divides by 3.29 (2 × 1.645).
    assert effects.se_from_ci(1.0, 4.29, level=0.90) == pytest.approx(1.0, rel=1e-3)


def test_se_from_p_value():
    # Cochrane Handbook §6.3.2: P = 0.008 → Z = 2.652 (normal table); SE = |effect| / Z.
    assert effects.se_from_p(2.652, 0.008) == pytest.approx(1.0, rel=1e-3)
    # p = 0.05 ↔ z = 1.96 (normal table).
    assert effects.se_from_p(-1.96, 0.05) == pytest.approx(1.0, rel=1e-3)


def test_risk_difference_borenstein_ch5():
    # Borenstein et al. (2009), ch. 5 worked example: treated 5/100 events, control 10/100.
    rd, se = effects.risk_difference(0.05, 100, 0.10, 100)
    assert rd == pytest.approx(-0.05)
    assert se**2 == pytest.approx(0.001375, rel=1e-6)  # 0.05·0.95/100 + 0.10·0.90/100


def test_log_odds_ratio_borenstein_ch5():
    # Same example: OR = (5·90)/(95·10) = 0.4737, V = 1/5 + 1/95 + 1/10 + 1/90 = 0.3216.
    lor, se = effects.log_odds_ratio(0.05, 100, 0.10, 100)
    assert math.exp(lor) == pytest.approx(0.4737, abs=1e-4)
    assert se**2 == pytest.approx(0.3216, abs=1e-4)


def test_paired_proportions_agresti_prime_minister():
    # Agresti (2007) Table 8.1: approval of the Prime Minister, n = 1600, cells 794/150/86/570.
    # p1+ − p+1 = 0.59 − 0.55 = 0.04, SE = 0.0095 (Agresti §8.1.1).
    diff, se = effects.paired_risk_difference(150 / 1600, 86 / 1600, 1600)
    assert diff == pytest.approx(0.04)
    assert se == pytest.approx(0.0095, abs=5e-5)


def test_hedges_g_borenstein_ch4():
    # Borenstein et al. (2009), ch. 4: means 103 vs 100, SDs 5.5 and 4.5, n = 50 each:
    # S_within = 5.0249, d = 0.5970, J = 0.9923, g = 0.5924, V_g = 0.0411.
    assert effects.pooled_sd(5.5, 50, 4.5, 50) == pytest.approx(5.0249, abs=1e-4)
    assert effects.hedges_j(98) == pytest.approx(0.9923, abs=1e-4)
    g, se = effects.hedges_g(103, 5.5, 50, 100, 4.5, 50)
    assert g == pytest.approx(0.5924, abs=1e-4)
    assert se**2 == pytest.approx(0.0411, abs=1e-4)


def test_chinn_log_or_to_smd_round_trip():
    # Chinn (2000): d = ln(OR) / 1.81. Borenstein ch. 7 example: ln(OR) = 0.9069, V = 0.0676 → d = 0.5000.
    d, se = effects.log_or_to_smd(0.9069, math.sqrt(0.0676))
    assert d == pytest.approx(0.5000, abs=1e-3)
    assert d == pytest.approx(0.9069 / 1.81, rel=3e-3)  # 1.81 is π/√3 rounded
    assert se**2 == pytest.approx(0.0676 * 3 / math.pi**2, rel=1e-9)
    back, back_se = effects.smd_to_log_or(d, se)
    assert (back, back_se**2) == pytest.approx((0.9069, 0.0676))


def test_bloom_matches_oto_published_participation_effect():
    # OtO (seed 000, Tabel 2): youth hours ITT 148 with take-up 62/132 is reported as 315 for participants.
    tot, _ = effects.bloom_tot(148, 72.2, 62 / 132)
    assert round(tot) == 315


def test_smd_from_adjusted_effect_keeps_its_precision():
    # A covariate-adjusted effect is standardised by the pooled SD; SE scales by the same factor.
    d, se = effects.smd_from_effect(3.0, 1.0, 5.5, 50, 4.5, 50)
    j = effects.hedges_j(98)
    assert d == pytest.approx(j * 3.0 / 5.0249, abs=1e-4)
    assert se == pytest.approx(j * 1.0 / 5.0249, abs=1e-4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: effects.se_from_ci(1.0, 1.0),
        lambda: effects.se_from_p(1.0, 0.0),
        lambda: effects.se_from_p(0.0, 0.5),
        lambda: effects.risk_difference(1.2, 10, 0.5, 10),
        lambda: effects.risk_difference(0.0, 10, 0.0, 10),
        lambda: effects.log_odds_ratio(0.0, 10, 0.5, 10),
        lambda: effects.paired_risk_difference(0.7, 0.6, 10),
        lambda: effects.hedges_g(1, -1, 10, 0, 1, 10),
        lambda: effects.bloom_tot(1.0, 1.0, 0.0),
        lambda: effects.z_crit(1.0),
    ],
)
def test_refuses_input_it_cannot_use(call):
    with pytest.raises(ValueError):
        call()


def test_agresti_caffo_adds_one_success_and_one_failure_to_each_group():
    # 0 of 55 vs 8.3 of 83 (DRC's 0% vs 10%): p~ = 1/57 and 9.3/85
    t1, t2 = 1 / 57, 9.3 / 85
    assert effects.agresti_caffo_se(0.0, 55, 0.1, 83) == pytest.approx(math.sqrt(t1 * (1 - t1) / 57 + t2 * (1 - t2) / 85))
    assert effects.agresti_caffo_se(0.0, 10, 0.0, 10) > 0  # where the Wald SE is 0


@pytest.mark.parametrize("p1, p2", [(0.005, 0.02), (0.02, 0.10)])
def test_agresti_caffo_se_covers_where_the_wald_se_of_an_empty_group_does_not(p1, p2):
    """Exact coverage of (observed difference ± 1.96 SE) given that the first group came out empty (x1 = 0),
    summed over the binomial distribution of the second: the situation harmonisation uses the AC SE for."""
    from scipy.stats import binom

    n1, n2, true = 55, 83, p1 - p2
    x2 = np.arange(n2 + 1)
    weight = binom.pmf(x2, n2, p2)
    d = 0.0 - x2 / n2
    wald = np.sqrt((x2 / n2) * (1 - x2 / n2) / n2)
    ac = np.array([effects.agresti_caffo_se(0.0, n1, x / n2, n2) for x in x2])
    covered = lambda se: float(np.sum(weight * (np.abs(d - true) <= 1.959964 * se)))  # noqa: E731
    assert covered(ac) >= 0.95
    assert covered(ac) > covered(wald)


def test_log_odds_ratio_with_a_continuity_correction_accepts_an_empty_cell():
    lor, se = effects.log_odds_ratio(0.0, 50, 0.1, 100, continuity=0.5)
    assert lor == pytest.approx(math.log(0.5 * 90.5 / (50.5 * 10.5)))
    assert se == pytest.approx(math.sqrt(1 / 0.5 + 1 / 50.5 + 1 / 10.5 + 1 / 90.5))
    with pytest.raises(ValueError, match="empty cell"):
        effects.log_odds_ratio(0.0, 50, 0.1, 100)
