"""The model builder: what enters, what is left out and why, dims, bias terms, likelihoods.

Likelihood terms are checked against scipy evaluated by hand at fixed points;
prior structure is checked by forward draws against the TOML values.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _model_fixtures import bundled_like, csv_like
from scipy import stats

from metaeval.errors import InputError
from metaeval.model import build_model, layout_of, prepare
from metaeval.priors import parse_prior
from metaeval.spec import load_spec

Z95 = stats.norm.ppf(0.975)


def _one_finding(direction, significant, design="unspecified", beneficial="increase", scale=1.0):
    table = csv_like([1.0], [0.5], studies=["trial"], domain="d")
    finding = table.iloc[[0]].copy()
    finding["estimate_id"] = "finding"
    finding["project_id"] = "register_study"
    finding["design"] = design
    finding["yi"] = math.nan
    finding["sei"] = math.nan
    finding["direction_only"] = True
    finding["direction"] = direction
    finding["significant"] = significant
    table = pd.concat([table, finding], ignore_index=True)
    table["domain_beneficial"] = beneficial
    table["domain_scale"] = scale
    return table


def test_rows_left_out_each_have_a_reason():
    layout = prepare(bundled_like(), load_spec("default"))
    reasons = {row["estimate_id"]: row["reason"] for row in layout.excluded}
    assert reasons == {"drc:who5": "described without numbers in the source"}
    rct = prepare(bundled_like(), load_spec("rct_only"))
    left_out = {row["estimate_id"]: row["reason"] for row in rct.excluded}
    assert "design 'before_after' is not among the designs model 'rct_only' admits" == left_out["assens:self_support"]
    assert {e["design"] for e in rct.estimates + rct.findings} == {"rct"}
    # domains without an RCT estimate drop out of an RCT-only model
    assert {d["id"] for d in rct.domains} == {"employment", "school_absence", "exam_grade", "child_welfare", "wellbeing"}


def test_direction_only_findings_enter_or_are_left_out_by_option(tmp_path):
    censored = prepare(bundled_like(), load_spec("default"))
    assert sorted(f["estimate_id"] for f in censored.findings) == ["vive:disability_pension", "vive:employment"]
    path = tmp_path / "exclude.toml"
    path.write_text('[direction_only]\nmode = "exclude"\n')
    excluded = prepare(bundled_like(), load_spec(path))
    assert excluded.findings == []
    reasons = {row["estimate_id"]: row["reason"] for row in excluded.excluded}
    assert "direction_only.mode = exclude" in reasons["vive:employment"]
    assert "disability_pension" not in {d["id"] for d in excluded.domains}


def test_a_row_without_yi_or_sei_is_left_out_with_a_reason():
    table = csv_like([1.0, 2.0], [0.5, math.nan])
    layout = prepare(table, load_spec("default"))
    assert [e["estimate_id"] for e in layout.estimates] == ["A"]
    assert "yi/sei missing" in layout.excluded[0]["reason"]


def test_row_order_does_not_matter():
    table = bundled_like()
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert prepare(table, load_spec("default")).to_dict() == prepare(shuffled, load_spec("default")).to_dict()


def test_omega_only_where_a_project_has_several_estimates_in_a_domain():
    layout = prepare(bundled_like(), load_spec("default"))
    assert layout.omega_domains == ["school_absence"]
    replicated = sorted(k["estimate_id"] for k in layout.estimates + layout.findings if k["replicate_index"] >= 0)
    assert replicated == ["oto:school_absence_children", "oto:school_absence_youth"]


def test_dims_are_named_for_the_domain():
    model = build_model(bundled_like(), load_spec("default"))
    dims = model.named_vars_to_dims
    assert dims["mu"] == ("domain",) and dims["tau"] == ("domain",)
    assert dims["theta_project"] == ("project",)
    assert dims["y"] == ("estimate",)
    assert dims["se_finding"] == ("finding",)
    assert dims["bias"] == ("bias_term",)
    assert dims["omega"] == ("omega_domain",)
    assert not any(d.startswith("dim_") for ds in dims.values() for d in ds)
    assert "employment/oto" in model.coords["project"]
    assert layout_of(model).domains[0]["id"] == "child_welfare"


def test_bias_terms_only_for_non_randomised_designs():
    layout = prepare(bundled_like(), load_spec("default"))
    assert {t["design"] for t in layout.bias_terms} == {"matched_register", "comparison_group", "area_comparison", "before_after"}
    for k in layout.estimates + layout.findings:
        assert (k["bias_index"] < 0) == (k["design"] == "rct")
    assert prepare(bundled_like(), load_spec("no_bias")).bias_terms == []
    assert prepare(csv_like([1.0, 2.0], [1.0, 1.0]), load_spec("default")).bias_terms == []


def test_bias_prior_is_scaled_and_points_in_the_beneficial_direction():
    import pymc as pm

    spec = load_spec("default")
    model = build_model(bundled_like(), spec)
    layout = layout_of(model)
    draws = pm.draw(model["bias"], draws=4000, random_seed=11)
    for j, term in enumerate(layout.bias_terms):
        domain = layout.domain(term["domain"])
        rel = spec.bias_designs[term["design"]]
        want_mean = domain["sign"] * rel.params[0] * domain["scale"]
        want_sd = rel.params[1] * domain["scale"]
        assert draws[:, j].std() == pytest.approx(want_sd, rel=0.06)
        assert abs(draws[:, j].mean() - want_mean) < 4 * want_sd / math.sqrt(4000)
    # a decrease-beneficial domain's bias is negative on the metric (it flatters the initiative)
    child = [j for j, t in enumerate(layout.bias_terms) if t["domain"] == "child_welfare"]
    assert child and draws[:, child[0]].mean() < 0


def test_domain_priors_follow_the_scale():
    import pymc as pm

    model = build_model(bundled_like(), load_spec("default", ["mu.wellbeing=normal(3, 0.5)"]))
    layout = layout_of(model)
    mu = pm.draw(model["mu"], draws=4000, random_seed=5)
    for i, d in enumerate(layout.domains):
        if d["id"] == "wellbeing":
            assert mu[:, i].mean() == pytest.approx(3, abs=0.05) and mu[:, i].std() == pytest.approx(0.5, rel=0.06)
        else:
            assert mu[:, i].std() == pytest.approx(d["scale"], rel=0.06)
    assert layout.priors["mu"]["wellbeing"] == "normal(3, 0.5)"


def _point_logp(model, term, values: dict):
    """Evaluate a model term at a point given on the natural scale (log-transformed for positives)."""
    point = model.initial_point()
    for name, value in values.items():
        key = name if name in point else f"{name}_log__"
        point[key] = np.log(value) if key.endswith("_log__") else value
    (term,) = model.replace_rvs_by_values([term])
    fn = model.compile_fn(term, inputs=model.value_vars, on_unused_input="ignore")
    return fn(point)


@pytest.mark.parametrize(
    "direction, significant, region",
    [
        ("increase", True, (Z95, math.inf)),
        ("decrease", True, (-math.inf, -Z95)),
        ("increase", False, (0.0, Z95)),
        ("decrease", False, (-Z95, 0.0)),
        ("none", False, (-Z95, Z95)),
        ("none", None, (-Z95, Z95)),
        ("increase", None, (0.0, math.inf)),
    ],
)
def test_censored_likelihood_is_the_probability_of_the_reported_region(direction, significant, region):
    model = build_model(_one_finding(direction, significant), load_spec("default"))
    (potential,) = model.potentials
    layout = layout_of(model)
    project = [p["project"] for p in layout.projects].index("register_study")
    for mu, se in [(0.3, 0.1), (-0.2, 0.15), (0.05, 0.4)]:
        z = np.zeros(len(layout.projects))
        got = _point_logp(model, potential, {"mu": np.array([mu]), "z_project": z, "se_finding": np.array([se])})
        x = mu / se
        want = math.log(stats.norm.cdf(region[1] - x) - stats.norm.cdf(region[0] - x))
        assert float(np.ravel(got)[0]) == pytest.approx(want, rel=1e-6, abs=1e-9), (mu, se, project)


def test_censored_likelihood_includes_the_design_bias():
    spec = load_spec("default")
    model = build_model(_one_finding("increase", True, design="matched_register", scale=2.0), spec)
    (potential,) = model.potentials
    layout = layout_of(model)
    mean = spec.bias_designs["matched_register"].params[0] * 2.0
    got = _point_logp(model, potential, {"mu": np.array([0.1]), "z_project": np.zeros(len(layout.projects)), "z_bias": np.zeros(1), "se_finding": np.array([0.2])})
    want = stats.norm.logcdf((0.1 + mean) / 0.2 - Z95)
    assert float(np.ravel(got)[0]) == pytest.approx(want, rel=1e-6)


def test_contradictory_or_directionless_findings_are_left_out():
    layout = prepare(_one_finding("none", True), load_spec("default"))
    assert layout.findings == [] and "contradictory" in layout.excluded[0]["reason"]
    layout = prepare(_one_finding(None, True), load_spec("default"))
    assert layout.findings == [] and "without a direction" in layout.excluded[0]["reason"]


def test_variance_inflation_divides_the_variance_by_the_design_weight():
    spec = load_spec("variance_inflation")
    table = csv_like([0.4], [0.2], studies=["ba"], domain="d")
    table["design"] = "before_after"
    model = build_model(table, spec)
    w = spec.bias_weights["before_after"]
    got = _point_logp(model, model.logp(vars=[model["y"]], sum=True), {"mu": np.array([0.1]), "z_project": np.zeros(1)})
    assert float(got) == pytest.approx(stats.norm.logpdf(0.4, 0.1, 0.2 / math.sqrt(w)), rel=1e-9)
    assert "bias" not in model.named_vars


def test_design_hierarchy_has_a_design_level():
    model = build_model(bundled_like(), load_spec("design_hierarchy"))
    dims = model.named_vars_to_dims
    assert dims["bias_design"] == ("design",)
    assert list(model.coords["design"]) == ["matched_register", "comparison_group", "area_comparison", "before_after"]
    for name in ("bias_mean", "bias_design_sd", "bias_project_sd"):
        assert name in model.named_vars


def test_input_problems_are_input_errors():
    table = bundled_like()
    with pytest.raises(InputError, match="required column"):
        prepare(table.drop(columns=["sei"]), load_spec("default"))
    bad = table.copy()
    bad.loc[0, "design"] = "cohort"
    with pytest.raises(InputError) as excinfo:
        prepare(bad, load_spec("default"))
    assert excinfo.value.problems[0].field == "design"
    dup = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    with pytest.raises(InputError, match="unique"):
        prepare(dup, load_spec("default"))
    with pytest.raises(InputError, match="no domain 'jobs'"):
        prepare(table, load_spec("default", ["tau.jobs=halfnormal(1)"]))
    nothing = table.assign(poolable=False, exclusion_reason="x")
    with pytest.raises(InputError, match="no estimate can enter"):
        prepare(nothing, load_spec("default"))


def test_raw_project_estimate_is_the_inverse_variance_combination():
    layout = prepare(bundled_like(), load_spec("default"))
    cell = next(p for p in layout.projects if p["label"] == "school_absence/oto")
    w = np.array([1 / 0.8**2, 1 / 0.9**2])
    assert cell["raw"] == pytest.approx(np.dot(w, [-1.2, -0.5]) / w.sum())
    assert cell["raw_se"] == pytest.approx(1 / math.sqrt(w.sum()))
    finding_only = next(p for p in layout.projects if p["label"] == "employment/vive_social_support")
    assert finding_only["raw"] is None and finding_only["n_findings"] == 1
    assert parse_prior(layout.priors["tau"]["employment"]) == load_spec("default").priors["tau"].scaled(10.0)
