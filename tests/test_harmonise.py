"""Harmonisation onto each domain's metric, checked by hand-computed values on the mini evidence base."""

import math
from pathlib import Path

import pandas as pd
import pytest

from metaeval.consistency import check_consistency
from metaeval.harmonise import harmonise, load_evidence

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
        (dict(mean_treatment=12.3), "no effect size: the source gives neither an estimate nor the two group levels, and no direction"),
        (dict(outcome_type="process", estimate=3, se=1), "process measure"),
        (dict(significant=True), "no figure and no direction reported"),
        (dict(metric="hours", estimate=5, se=1), "cannot be converted"),
        (dict(mean_treatment=0, mean_control=10, n_treatment=55, n_control=83, rob_confounding="critical",
              rob_estimate="confounding critical: the groups differ at baseline"), "risk of bias critical (confounding)"),
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


# --- figures without a standard error: one rule for nulls and positives (data/README.md) ----------------


@pytest.mark.parametrize(
    "fields, direction, whence",
    [
        (dict(mean_treatment=18, mean_control=18, direction="none"), "none", "as the source states it"),  # CFBU, 'samme resultater'
        (dict(mean_treatment=18, mean_control=18), "none", "from the levels"),
        (dict(mean_treatment=12.3, mean_control=10.3), "increase", "from the levels"),
        (dict(mean_treatment=10.3, mean_control=12.3), "decrease", "from the levels"),
        (dict(mean_treatment=1, direction="none"), "none", "as the source states it"),  # Mploy, 'svarer til niveauet'
        (dict(direction="increase"), "increase", "as the source states it"),
        (dict(direction="none"), "none", "as the source states it"),
        (dict(estimand="vs_target", mean_treatment=29, target=20), "increase", "realised − target"),
        (dict(estimate=28353, metric="dkk"), "increase", "from the printed estimate"),
    ],
)
def test_a_figure_without_se_enters_as_direction_only_whatever_its_direction(fields, direction, whence):
    row = harmonise(_one(**fields), _domain()).iloc[0]
    assert row.poolable and row.direction_only and math.isnan(row.yi)
    assert row.direction_counted == direction
    assert whence in row.harmonisation and "significance not reported" in row.harmonisation


def test_null_and_positive_findings_get_the_same_treatment():
    null = harmonise(_one(mean_treatment=18, mean_control=18), _domain()).iloc[0]
    positive = harmonise(_one(mean_treatment=20, mean_control=18), _domain()).iloc[0]
    flags = ["poolable", "direction_only", "exclusion_reason"]
    assert null[flags].tolist() == positive[flags].tolist() == [True, True, None]


def test_direction_only_finding_is_flipped_into_the_domain_direction():
    row = harmonise(_one(mean_treatment=49, mean_control=63, beneficial="decrease", benefit_basis="domain"), _domain()).iloc[0]
    assert row.direction_only and row.direction_counted == "increase" and pd.isna(row.get("direction"))  # fewer on transfers: an increase in the domain's terms


def test_direction_only_keeps_the_significance_the_source_reports():
    row = harmonise(_one(direction="increase", significant=True), _domain()).iloc[0]
    assert row.significant and "significant" in row.harmonisation and "not reported" not in row.harmonisation


# --- sparse cells ----------------------------------------------------------------------------------


def test_a_zero_cell_gets_the_agresti_caffo_se_not_the_one_sided_wald_se():
    # DRC's permanent transfers as printed: 0% of 55 vs 10% of 83. Wald would use only the controls' variance.
    row = harmonise(_one(mean_treatment=0, mean_control=10, n_treatment=55, n_control=83), _domain()).iloc[0]
    t1, t2 = 1 / 57, (8.3 + 1) / 85  # (x + 1) / (n + 2)
    assert row.yi == pytest.approx(-10.0)
    assert row.sei == pytest.approx(100 * math.sqrt(t1 * (1 - t1) / 57 + t2 * (1 - t2) / 85))
    assert "Agresti–Caffo" in row.harmonisation
    assert row.sei > 100 * math.sqrt(0.1 * 0.9 / 83)  # wider than the Wald SE, which ignores the empty group


def test_a_zero_cell_into_an_smd_domain_gets_half_a_count_in_each_cell():
    row = harmonise(_one(mean_treatment=0, mean_control=10, n_treatment=50, n_control=100), _domain("smd")).iloc[0]
    a, b, c, d = 0.5, 50.5, 10.5, 90.5
    assert row.yi == pytest.approx(math.log(a * d / (b * c)) * math.sqrt(3) / math.pi)
    assert row.sei == pytest.approx(math.sqrt(1 / a + 1 / b + 1 / c + 1 / d) * math.sqrt(3) / math.pi)
    assert "0.5 added to each cell" in row.harmonisation


# --- participation effects (estimand = tot) ---------------------------------------------------------


def _itt_and_tot(**tot_fields):
    itt = dict(estimate_id="p:x_itt", record="estimate 'x_itt'", project_id="p", domain="d", estimand="itt", metric="hours",
               estimate=20.0, ci_low=-10.0, ci_high=50.0, mean_treatment=120.0, sd_treatment=100.0, mean_control=100.0,
               sd_control=100.0, n_treatment=100, n_control=100, curated_poolable=True, assumed={}, file="f.yaml")
    tot = dict(estimate_id="p:x_tot", record="estimate 'x_tot'", project_id="p", domain="d", estimand="tot", tot_of="x_itt",
               metric="hours", estimate=40.0, ci_low=-20.0, ci_high=100.0, curated_poolable=True, assumed={}, file="f.yaml",
               take_up=0.5, **tot_fields)
    return pd.DataFrame([itt, tot])


def test_tot_is_standardised_with_its_itt_rows_sds_so_the_smds_keep_the_take_up_ratio():
    table = harmonise(_itt_and_tot(), _domain("smd"), estimand="tot").set_index("estimate_id")
    j = 1 - 3 / (4 * 198 - 1)
    assert table.loc["p:x_tot", "yi"] == pytest.approx(j * 40 / 100)
    assert table.loc["p:x_tot", "sei"] == pytest.approx(j * 120 / (2 * 1.959964) / 100, rel=1e-6)
    assert "ITT row" in table.loc["p:x_tot", "harmonisation"]
    assert not table.loc["p:x_itt", "poolable"] and "pooled in its place" in table.loc["p:x_itt", "exclusion_reason"]


def test_an_unconvertible_tot_leaves_its_outcome_out_rather_than_falling_back_to_the_itt():
    # a share: the ITT converts through the log odds ratio of its group shares; its TOT has no shares of its own
    raw = _itt_and_tot()
    raw.loc[:, "metric"] = "pp"
    raw.loc[0, ["estimate", "ci_low", "ci_high", "mean_treatment", "mean_control", "sd_treatment", "sd_control"]] = [18, 5, 31, 35, 17, None, None]
    raw.loc[1, ["estimate", "ci_low", "ci_high"]] = [36, 10, 62]
    table = harmonise(raw, _domain("smd"), estimand="tot").set_index("estimate_id")
    assert harmonise(raw, _domain("smd")).set_index("estimate_id").loc["p:x_itt", "poolable"]  # the ITT on its own converts
    assert not table.loc["p:x_tot", "poolable"] and "no group shares of its own" in table.loc["p:x_tot", "exclusion_reason"]
    itt = table.loc["p:x_itt"]
    assert not itt.poolable and "does not stand in" in itt.exclusion_reason and "no group shares of its own" in itt.exclusion_reason
