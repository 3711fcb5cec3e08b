"""Harmonisation onto each domain's metric, checked by hand-computed values on the mini evidence base."""

import math
from pathlib import Path

import pandas as pd
import pytest

from metaeval.harmonise import check_consistency, harmonise, load_evidence

MINI = Path(__file__).parent / "fixtures" / "mini"


@pytest.fixture(scope="module")
def mini():
    return load_evidence(MINI).set_index("estimate_id")


def test_hours_become_hedges_g_from_the_adjusted_effect(mini):
    row = mini.loc["demo:hours_itt"]
    # effect 20 hours, 95% CI (−10, 50) → SE 60/3.92; pooled SD of 100 and 100 = 100; J = 1 − 3/(4·198 − 1).
    j = 1 - 3 / (4 * 198 - 1)
    assert row.yi == pytest.approx(j * 20 / 100, rel=1e-9)
    assert row.sei == pytest.approx(j * (60 / (2 * 1.959964)) / 100, rel=1e-6)
    assert row.poolable and not row.direction_only


def test_share_difference_in_pp_with_binomial_se(mini):
    row = mini.loc["demo:self_support"]
    assert row.yi == pytest.approx(10.0)
    assert row.sei == pytest.approx(100 * math.sqrt(0.3 * 0.7 / 100 + 0.2 * 0.8 / 100))


def test_participation_effect_never_pooled_with_its_itt(mini):
    tot = mini.loc["demo:hours_tot"]
    assert not tot.poolable and "count the same evidence twice" in tot.exclusion_reason
    assert mini.loc["demo:hours_itt"].poolable


def test_direction_only_finding_kept_for_the_censored_likelihood(mini):
    row = mini.loc["demo:wellbeing_direction"]
    assert row.poolable and row.direction_only and math.isnan(row.yi)
    assert row.direction == "increase" and row.significant


def _one(**fields):
    base = dict(estimate_id="p:x", record="estimate 'x'", project_id="p", domain="d", estimand="difference",
                metric="pp", curated_poolable=True, curated_reason=None, assumed={}, file="f.yaml")
    return pd.DataFrame([{**base, **fields}])


def _domain(metric="pp", beneficial="increase"):
    return {"d": dict(label="D", metric=metric, beneficial=beneficial, mid=5.0, scale=10.0)}


def test_lower_is_better_outcome_is_flipped_into_the_domain_direction():
    raw = _one(metric="pp", estimate=-1.1, ci_low=-2.5, ci_high=0.3, beneficial="decrease", direction="decrease")
    row = harmonise(raw, _domain("pp", "increase")).iloc[0]
    assert row.yi == pytest.approx(1.1)
    assert row.direction == "decrease"  # as the source reported it
    assert row.direction_counted == "increase"  # as the domain's scale counts it, like yi
    assert "sign flipped" in row.harmonisation


def test_paired_before_after_uses_discordant_shares():
    # 29% → 40% of N = 45; 13% improved, 84% unchanged → 3% worsened (Agresti's dependent-proportions variance).
    raw = _one(estimand="pre_post", mean_treatment=40, mean_control=29, n_treatment=45, share_improved=13, share_unchanged=84)
    row = harmonise(raw, _domain()).iloc[0]
    assert row.yi == pytest.approx(11)
    assert row.sei == pytest.approx(100 * math.sqrt((0.13 + 0.03 - 0.10**2) / 45))


def test_assumption_fills_a_missing_group_size_and_stays_visible():
    raw = _one(mean_treatment=35, mean_control=17, n_treatment=56, n_control=None, assumed={"n_control": 56},
               assumptions="n_control = 56 (assumed equal to the participant group)")
    row = harmonise(raw, _domain()).iloc[0]
    assert row.sei == pytest.approx(100 * math.sqrt(0.35 * 0.65 / 56 + 0.17 * 0.83 / 56))
    assert pd.isna(row.n_control)  # the source's missing value stays missing
    assert "assumed" in row.assumptions


def test_binary_into_an_smd_domain_goes_through_the_log_odds_ratio():
    raw = _one(mean_treatment=35, mean_control=17, n_treatment=100, n_control=100)
    row = harmonise(raw, _domain("smd")).iloc[0]
    a, b, c, d = 35, 65, 17, 83
    assert row.yi == pytest.approx(math.log(a * d / (b * c)) * math.sqrt(3) / math.pi)
    assert row.sei == pytest.approx(math.sqrt(1 / a + 1 / b + 1 / c + 1 / d) * math.sqrt(3) / math.pi)


@pytest.mark.parametrize(
    "fields, reason",
    [
        (dict(estimand="single_arm", mean_treatment=36), "single-arm"),
        (dict(mean_treatment=12.3, mean_control=10.3), "no standard error"),
        (dict(estimand="vs_target", mean_treatment=29, target=20), "no standard error"),
        (dict(outcome_type="process", estimate=3, se=1), "process measure"),
        (dict(direction="increase"), "without saying whether it is statistically significant"),
        (dict(metric="hours", estimate=5, se=1), "cannot be converted"),
        (dict(curated_poolable=False, curated_reason="subset of total hours", estimate=1, se=1), "subset of total hours"),
    ],
)
def test_unpoolable_estimates_say_why(fields, reason):
    row = harmonise(_one(**fields), _domain()).iloc[0]
    assert not row.poolable
    assert reason in row.exclusion_reason


def test_p_value_check_allows_printed_rounding():
    # OtO school absence as printed: −1.1 (−2.5 to 0.3), p = 0.13 — consistent once rounding is allowed for.
    ok = harmonise(_one(estimate=-1.1, ci_low=-2.5, ci_high=0.3, p_value=0.13), _domain())
    assert not check_consistency(ok)
    bad = harmonise(_one(estimate=-1.1, ci_low=-2.5, ci_high=0.3, p_value=0.03), _domain())
    assert [f.check for f in check_consistency(bad)] == ["p_value_vs_ci"]
