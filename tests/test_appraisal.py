"""The appraisal rules of data/README.md on the bundled evidence, as the model sees them, and the
plain-data views a report shows (metaeval.appraisal). No sampling: everything here is the
evidence table and the model's Layout."""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from metaeval.appraisal import compare_fits, findings_without_numbers, risk_of_bias_rows
from metaeval.cli import main
from metaeval.harmonise import load_evidence
from metaeval.model import prepare
from metaeval.spec import load_spec

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def evidence():
    return load_evidence()


@pytest.fixture(scope="module")
def layout(evidence):
    return prepare(evidence, load_spec("default"))


def _findings(layout):
    return {f["estimate_id"]: f for f in layout.findings}


# --------------------------------------------------------------------------- symmetric inclusion


def test_null_comparisons_enter_the_default_model_beside_the_positive_direction_only_findings(layout):
    findings = _findings(layout)
    nulls = ["cph_cfbu_outreach:self_supported_12m", "cph_mploy_local:job_or_education", "vive_social_support:job_retention"]
    positives = ["vive_social_support:employment_transition", "cph_cfbu_outreach:firm_placement"]
    for eid in nulls:
        assert (findings[eid]["z_low"], findings[eid]["z_high"]) == pytest.approx((-1.959964, 1.959964)), eid
    assert findings["vive_social_support:employment_transition"]["z_low"] == pytest.approx(1.959964)
    assert findings["cph_cfbu_outreach:firm_placement"]["z_low"] == 0  # a direction with no reported test: its sign only
    assert all(eid in findings for eid in positives)


def test_no_figure_with_a_direction_is_left_out_for_lacking_an_se_or_a_test(evidence):
    """The rule that admits a positive finding admits a null one: a figure left out for want of an SE has no direction either."""
    reasons = evidence.loc[~evidence["poolable"], "exclusion_reason"].astype(str)
    no_se = reasons[reasons.str.contains("no standard error|statistically significant|no effect size")]
    assert no_se.str.endswith("and no direction is reported").all()
    assert evidence.loc[no_se.index, "direction"].isna().all()


# --------------------------------------------------------------------------- dependence


def test_the_drc_status_table_enters_through_one_record(evidence):
    drc = evidence[(evidence["project_id"] == "drc_sib") & (evidence["shared_sample"] == "status_2m")]
    assert drc.loc[drc["poolable"], "estimate_id"].tolist() == ["drc_sib:ordinary_employment"]
    education = drc.set_index("estimate_id").loc["drc_sib:status_education"]
    assert not education.poolable and "one record" in education.exclusion_reason


def test_validate_refuses_the_bundled_data_with_a_component_pooled_beside_its_total(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DATA, data, ignore=shutil.ignore_patterns("sources"))
    path = data / "projects" / "cph_cfbu_outreach.yaml"
    text = path.read_text()
    start = text.index("  - id: job_or_education_12m")
    block = text[start:text.index("  - id: firm_placement")]
    fixed = block.replace("    poolable: false\n", "").split("    exclusion_reason:")[0] + "    provenance:" + block.split("    provenance:")[1]
    path.write_text(text.replace(block, fixed))
    assert main(["validate", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "record estimate 'job_or_education_12m', field part_of: is part of 'cph_cfbu_outreach:self_supported_12m'" in err


# --------------------------------------------------------------------------- benefit and risk of bias in the model


def test_a_curator_inferred_benefit_enters_only_under_the_model_option(evidence, layout):
    inferred = {"vive_social_support:gp_use", "vive_social_support:hospital_contacts_schizophrenia"}
    left_out = {e["estimate_id"]: e["reason"] for e in layout.excluded}
    assert all("inferred by the curator" in left_out[eid] for eid in inferred)
    admitting = prepare(evidence, replace(load_spec("default"), inferred_benefit="include"))
    assert inferred <= set(_findings(admitting))


def test_oto_wellbeing_gets_a_wider_bias_prior_and_the_register_outcomes_none(evidence, layout):
    spec = load_spec("default")
    by_id = {e["estimate_id"]: e for e in layout.estimates}
    wellbeing = by_id["oto:wellbeing_itt"]
    term = layout.bias_terms[wellbeing["bias_index"]]
    scale = layout.domain("school")["scale"]
    assert (term["mean"], term["sd"]) == pytest.approx((0.0, spec.rob_sd * scale))
    assert term["risk_of_bias"] == ["attrition"]
    assert by_id["oto:school_absence_itt"]["bias_index"] == by_id["oto:exam_grade_itt"]["bias_index"] == -1
    excluding = prepare(evidence, replace(spec, rob_high="exclude"))
    assert "oto:wellbeing_itt" not in {e["estimate_id"] for e in excluding.estimates}
    ignoring = prepare(evidence, replace(spec, rob_high="ignore"))
    assert next(e for e in ignoring.estimates if e["estimate_id"] == "oto:wellbeing_itt")["bias_index"] == -1


def test_high_judgements_add_in_quadrature_to_the_design_prior(evidence, layout):
    spec = load_spec("default")
    term = next(t for t in layout.bias_terms if t["label"] == "progression/cph_mploy_local")
    design = spec.bias_designs["comparison_group"].params[1] * term["scale"]
    assert term["risk_of_bias"] == ["measurement"]
    assert term["sd"] == pytest.approx((design**2 + (spec.rob_sd * term["scale"]) ** 2) ** 0.5)


# --------------------------------------------------------------------------- participation effects


def test_tot_mode_pools_all_eleven_oto_rows_as_participation_effects():
    table = load_evidence(estimand="tot")
    oto = table[(table["project_id"] == "oto") & table["poolable"]]
    assert len(oto) == 11 and set(oto["estimand"]) == {"tot"}
    itt = load_evidence()
    j_ratio = (oto.set_index("tot_of")["yi"] / itt.set_index("estimate_id").loc[[f"oto:{i}" for i in oto["tot_of"]], "yi"].values)
    assert j_ratio.loc["school_absence_itt"] == pytest.approx(-2.3 / -1.1)  # same SD for both: the ratio of the printed effects


# --------------------------------------------------------------------------- the evidence table


def test_evidence_csv_shows_group_levels_and_the_derived_difference(capsys):
    assert main(["evidence", "--format", "csv"]) == 0
    rows = {r["estimate_id"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    for col in ("mean_treatment", "sd_treatment", "n_treatment", "mean_control", "sd_control", "n_control", "difference", "difference_basis"):
        assert col in next(iter(rows.values())), col
    expected = {"drc_sib:ordinary_employment": 18, "drc_sib:self_support_or_education": 14,
                "cph_cfbu_outreach:self_supported_12m": 0, "cph_cfbu_outreach:firm_placement": 2}
    for eid, diff in expected.items():
        assert float(rows[eid]["difference"]) == pytest.approx(diff), eid
        assert rows[eid]["difference_basis"].startswith("derived:"), eid
    assert rows["drc_sib:self_support_or_education"]["estimate"] == ""  # the slides print no difference for it
    assert (rows["drc_sib:ordinary_employment"]["mean_treatment"], rows["drc_sib:ordinary_employment"]["mean_control"]) == ("35.0", "17.0")


# --------------------------------------------------------------------------- plain-data views


def test_risk_of_bias_rows_show_each_estimates_judgements_and_their_use(evidence, layout):
    rows = {r.estimate_id: r for r in risk_of_bias_rows(evidence, layout)}
    assert len(rows) == len(evidence)
    wellbeing = rows["oto:wellbeing_itt"]
    assert wellbeing.judgements["attrition"] == "high" and wellbeing.overall == "high"
    assert wellbeing.own.startswith("attrition high:") and "attrition" in wellbeing.treatment
    assert rows["oto:adult_hours_itt"].judgements["attrition"] == "low" and rows["oto:adult_hours_itt"].own is None
    permanent = rows["drc_sib:status_permanent_transfers"]
    assert permanent.judgements["confounding"] == "critical" and not permanent.in_model


def test_findings_without_numbers_list_nulls_and_positives_together(evidence, layout):
    rows = {f.estimate_id: f for f in findings_without_numbers(evidence, layout)}
    assert rows["cph_cfbu_outreach:self_supported_12m"].region == "|z| < 1.96"
    assert rows["vive_social_support:employment_transition"].region == "z > 1.96"
    assert rows["cph_cfbu_outreach:firm_placement"].region == "z > 0"
    gp = rows["vive_social_support:gp_use"]
    assert not gp.in_model and "inferred by the curator" in gp.status and gp.region is None


def test_compare_fits_lines_up_domains_across_summaries():
    before = {"domains": {"a": {"label": "A", "metric": "pp", "mu": {"mean": 1.0, "hdi_low": 0.0, "hdi_high": 2.0, "p_beneficial": 0.9},
                                "n_projects": 2, "n_estimates": 3}}}
    after = {"domains": {"a": {"label": "A", "metric": "pp", "mu": {"mean": 0.25, "hdi_low": -1.0, "hdi_high": 1.5, "p_beneficial": 0.6},
                               "n_projects": 3, "n_estimates": 4},
                         "b": {"label": "B", "metric": "smd", "mu": {"mean": 0.1}, "n_projects": 1, "n_estimates": 1}}}
    rows = compare_fits([("before", before), ("after", after)])
    assert [r.domain for r in rows] == ["a", "b"]
    assert rows[0].shift("before", "after") == pytest.approx(-0.75)
    assert rows[1].results[0] == ("before", None) and rows[1].shift("before", "after") is None


# --------------------------------------------------------------------------- the rules' alternatives as scenarios


@pytest.mark.parametrize("name, change", [("high_rob_excluded", {"rob_high": "exclude"}),
                                          ("inferred_benefit_included", {"inferred_benefit": "include"})])
def test_each_rules_alternative_is_a_sensitivity_scenario_that_differs_from_the_default_in_that_rule_only(evidence, layout, name, change):
    """The grid's model files for the alternatives data/README.md names: the default's spec but for the one option,
    so the scenario moves exactly what the rule decides (and a change to the default reaches them, or this fails)."""
    from metaeval.sensitivity import load_grid

    assert name in load_grid().levels["bias"]
    spec, default = load_spec(name), load_spec("default")
    assert replace(spec, name=default.name, description=default.description, source=default.source) == replace(default, **change)
    left_out = {e["estimate_id"] for e in prepare(evidence, spec).excluded} - {e["estimate_id"] for e in layout.excluded}
    let_in = {e["estimate_id"] for e in layout.excluded} - {e["estimate_id"] for e in prepare(evidence, spec).excluded}
    if name == "high_rob_excluded":
        assert "oto:wellbeing_itt" in left_out and not let_in
    else:
        assert {"vive_social_support:gp_use", "vive_social_support:hospital_contacts_schizophrenia"} <= let_in and not left_out
