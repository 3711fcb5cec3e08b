"""The certainty of a domain's result (GRADE-like) and the prior's influence, rule by rule."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from metaeval.certainty import PRIOR_DRIVEN, prior_influence, rate
from metaeval.priors import parse_prior
from metaeval.result import DomainResult, Posterior, ProjectEffect


def _post(mean, sd, *, p_beneficial=None, lo=None, hi=None) -> Posterior:
    return Posterior(mean=mean, sd=sd, hdi_low=mean - 1.96 * sd if lo is None else lo, hdi_high=mean + 1.96 * sd if hi is None else hi,
                     hdi_prob=0.95, p_beneficial=p_beneficial)


def _domain(mu=(0.3, 0.1), tau=(0.1, 0.05), new=(0.3, 0.15), *, projects=("a", "b"), mid=0.1, assumed=None,
            priors=None, p_beneficial=None) -> DomainResult:
    mu_post = _post(*mu, p_beneficial=p_beneficial if p_beneficial is not None else float(stats.norm.sf(0, *mu)))
    tau_post = _post(*tau)
    priors = priors or {"mu": "normal(0, 1)", "tau": "halfnormal(0.4)"}
    return DomainResult(
        id="jobs", label="Jobs", metric="smd", beneficial="increase", mid=mid, scale=1.0, assumed=assumed or {},
        n_projects=len(projects), n_estimates=len(projects), designs={}, mu=mu_post, tau=tau_post,
        theta_new=_post(*new, p_beneficial=float(stats.norm.sf(0, *new))),
        projects=tuple(ProjectEffect(project=p, design="rct", raw=0.3, raw_se=0.1, mean=0.3, sd=0.1, hdi_low=0.1, hdi_high=0.5)
                       for p in projects),
        pairwise={}, priors=priors, prior_influence=prior_influence(mu_post, tau_post, priors), notes=(),
    )


def _rows(*designs_risks_sei, direction_only=0):
    rows = [{"project_id": f"p{i}", "design": d, "risk_of_bias": r, "sei": s, "poolable": True, "direction_only": False}
            for i, (d, r, s) in enumerate(designs_risks_sei)]
    rows += [{"project_id": f"f{i}", "design": "matched_register", "risk_of_bias": "some", "sei": math.nan, "poolable": True,
              "direction_only": True} for i in range(direction_only)]
    return rows


# --- the prior's influence -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["normal(0, 2)", "halfnormal(0.4)", "halfstudentt(4, 2)", "exponential(2)", "lognormal(0.3, 0.5)",
                                  "uniform(1, 4)", "studentt(5, 0, 2)"])
def test_prior_sd_against_numerical_integration(text):
    prior = parse_prior(text)
    density = lambda x: math.exp(float(prior.logpdf(x)))  # noqa: E731
    lo = -math.inf if prior.support == "real" else prior.params[0] if prior.family == "uniform" else 0.0
    hi = prior.params[1] if prior.family == "uniform" else math.inf
    m1 = integrate.quad(lambda x: x * density(x), lo, hi, limit=200)[0]
    m2 = integrate.quad(lambda x: x * x * density(x), lo, hi, limit=200)[0]
    assert prior.sd == pytest.approx(math.sqrt(m2 - m1**2), rel=1e-6)


def test_priors_without_a_standard_deviation():
    for text in ("flat()", "halfcauchy(5)", "studentt(2, 0, 1)", "halfstudentt(1.5, 1)"):
        assert parse_prior(text).sd == math.inf


def test_prior_influence_is_posterior_sd_over_prior_sd():
    influence = prior_influence(_post(0.2, 0.6), _post(0.1, 0.05), {"mu": "normal(0, 1)", "tau": "halfnormal(0.4)"})
    assert influence.mu == pytest.approx(0.6)
    assert influence.tau == pytest.approx(0.05 / (0.4 * math.sqrt(1 - 2 / math.pi)), rel=1e-5)
    assert influence.driven == ("mu",) and influence.threshold == PRIOR_DRIVEN
    # a flat prior has no SD: the data decide everything
    assert prior_influence(_post(0.2, 0.6), _post(0.1, 0.05), {"mu": "flat()", "tau": "halfnormal(0.4)"}).mu == 0.0


# --- the rating -----------------------------------------------------------------------------------------


def test_precise_randomised_evidence_stays_high():
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1)), _rows(("rct", "low", 0.1), ("rct", "some", 0.1)))
    assert (c.level, c.start, c.downgrades) == ("high", "high", ())
    assert c.basis == "randomised estimates carry 100% of the weight" and c.effect_shown


def test_observational_evidence_starts_low():
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1)), _rows(("matched_register", "low", 0.1), ("comparison_group", "some", 0.1)))
    assert (c.start, c.level) == ("low", "low") and c.basis == "no randomised estimate carries weight"


def test_the_start_follows_the_statistical_weight():
    # one precise trial outweighs two noisy comparisons (weights 1/(sei^2 + tau^2), tau = 0.1)
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1), projects=("a", "b", "c")),
             _rows(("rct", "low", 0.05), ("comparison_group", "low", 0.5), ("comparison_group", "low", 0.5)))
    w = 1 / (0.05**2 + 0.1**2)
    v = 1 / (0.5**2 + 0.1**2)
    assert c.start == "high" and f"{100 * w / (w + 2 * v):.0f}%" in c.basis


@pytest.mark.parametrize(("mu", "mid", "levels"), [((0.3, 0.05), 0.1, 0), ((0.05, 0.1), 0.5, 1), ((0.05, 0.2), 0.1, 2)])
def test_imprecision_is_graded_as_grade_does(mu, mid, levels):
    c = rate(_domain(mu=mu, new=(mu[0], mu[1] * 1.2), mid=mid), _rows(("rct", "low", 0.1), ("rct", "low", 0.1)))
    got = sum(g.levels for g in c.downgrades if g.domain == "imprecision")
    assert got == levels


def test_one_project_is_imprecise_but_not_twice_so():
    one = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1), projects=("a",)), _rows(("rct", "low", 0.1)))
    assert [(g.domain, g.levels) for g in one.downgrades] == [("imprecision", 1)] and one.level == "moderate"
    wide = rate(_domain(mu=(0.05, 0.2), new=(0.05, 0.3), projects=("a",)), _rows(("rct", "low", 0.1)))
    assert sum(g.levels for g in wide.downgrades if g.domain == "imprecision") == 2  # capped at GRADE's "very serious"


def test_risk_of_bias_and_missing_comparison_groups():
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1)), _rows(("before_after", "high", 0.1), ("before_after", "high", 0.1)))
    reasons = [g.reason for g in c.downgrades if g.domain == "risk of bias"]
    assert any("high risk of bias" in r for r in reasons) and any("without a comparison group" in r for r in reasons)
    assert c.level == "very low"  # starts low, two levels off, floored


def test_risk_of_bias_is_weighed_per_estimate_not_per_project():
    """One project, three estimates: the one judged high (a survey with heavy non-response, say) carries a fifth
    of the weight, so the domain is not downgraded; judged high on the two precise ones, it is."""
    rows = _rows(("rct", "some", 0.1), ("rct", "some", 0.1), ("rct", "high", 0.2))
    for r in rows:
        r["project_id"] = "p"
    tau = 0.1  # the domain's tau mean: weights 1/(sei^2 + tau^2) = 50, 50, 20
    assert not [g for g in rate(_domain(tau=(tau, 0.05)), rows).downgrades if "high risk" in g.reason]
    for r, judgement in zip(rows, ("high", "high", "some")):
        r["risk_of_bias"] = judgement
    assert [g.reason for g in rate(_domain(tau=(tau, 0.05)), rows).downgrades if "high risk" in g.reason] == [
        "83% of the weight from estimates at high risk of bias"]


def test_direction_only_findings_that_make_up_half_of_what_entered():
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1)), _rows(("rct", "low", 0.1), direction_only=1))
    assert any("directions without a number" in g.reason for g in c.downgrades)
    only = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.1)), _rows(direction_only=2))
    assert only.effect_shown is False  # no number at all: the size is the priors'


def test_inconsistency_when_a_new_initiative_could_be_harmful():
    c = rate(_domain(mu=(0.3, 0.05), new=(0.3, 0.3)), _rows(("rct", "low", 0.1), ("rct", "low", 0.1)))
    assert [g.domain for g in c.downgrades] == ["inconsistency"] and c.level == "moderate"


def test_inconsistency_is_judged_alike_for_a_harmful_average_and_a_null_one():
    """The rule that downgrades a clear benefit whose new project could be harmful downgrades its mirror image, and a
    precise null whose projects could land importantly either way; a precise, consistent null is not downgraded."""
    rows = _rows(("rct", "low", 0.1), ("rct", "low", 0.1))
    harmful = rate(_domain(mu=(-0.3, 0.05), new=(-0.3, 0.3)), rows)
    assert [(g.domain, g.reason) for g in harmful.downgrades] == [
        ("inconsistency", "projects differ so much that a new one could be beneficial (the predictive interval reaches an important benefit)")]
    no_mid = rate(_domain(mu=(-0.3, 0.05), new=(-0.3, 0.4), mid=None), rows)
    assert [g.reason for g in no_mid.downgrades] == [
        "projects differ so much that a new one could be beneficial (the predictive interval reaches a benefit as large as the average harm)"]
    scattered = rate(_domain(mu=(0.0, 0.03), new=(0.0, 0.3)), rows)
    assert {g.domain for g in scattered.downgrades} == {"imprecision", "inconsistency"}
    assert "near no effect" in next(g.reason for g in scattered.downgrades if g.domain == "inconsistency")
    consistent = rate(_domain(mu=(0.0, 0.03), new=(0.0, 0.04)), rows)
    assert [g.domain for g in consistent.downgrades] == ["imprecision"]


def test_assumed_direction_prior_dominance_and_flips():
    dom = _domain(mu=(0.3, 0.6), new=(0.3, 0.7), assumed={"beneficial": "direction assumed"}, p_beneficial=0.7)
    c = rate(dom, _rows(("rct", "low", 1.0), ("rct", "low", 1.0)), flips=["no design-bias adjustment"])
    kinds = {g.domain: g.reason for g in c.downgrades}
    assert "indirectness" in kinds and "prior dominance" in kinds and kinds["robustness"] == "the direction flips under no design-bias adjustment"
    assert c.level == "very low"
