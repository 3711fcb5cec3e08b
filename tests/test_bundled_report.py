"""The bundled evidence's report, as view data: what the appraisal rules move (data/README.md, "Appraisal rules")
and the certainty of every domain (docs/model.md, "Certainty").

What the rules move comes from the record ``bench/rules.py`` wrote (``metaeval/records/rules.json``), shown only for
the evidence it was made on. The certainty ratings come from the default model's MCMC fit of the bundled
evidence, the report ``metaeval run`` writes (one fit, about 30 s: marked slow).
"""

from __future__ import annotations

import json

import pytest

from metaeval import report, views, views_fit, words
from metaeval.appraisal import RULES, bundled_rules_record, rules_moves
from metaeval.certainty import judge
from metaeval.evidence import default_data_dir
from metaeval.harmonise import evidence_digest, load_evidence

RECORD = bundled_rules_record()


@pytest.fixture(scope="module")
def bundled():
    """The bundled evidence and the exact engine's one-level result for it (milliseconds; the same evidence digest
    as any fit of it)."""
    from metaeval.exact import fit_exact
    from metaeval.spec import load_spec

    evidence, spec = load_evidence(), load_spec("default")
    return evidence, judge(fit_exact(evidence, priors=spec.priors), evidence)


# --- what the appraisal rules move -----------------------------------------------------------------------------


def test_the_record_is_of_the_bundled_evidence_as_it_is():
    assert RECORD is not None
    assert RECORD["evidence_sha256"] == evidence_digest(load_evidence()), (
        "the bundled evidence changed since bench/rules.py recorded what the appraisal rules move: rerun it")


def test_each_state_of_the_record_adds_one_documented_rule():
    assert [s["state"] for s in RECORD["itt"]] == ["before", *(r.state for r in RULES)]
    readme = (default_data_dir() / "README.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"### {rule.section.split(' › ')[-1]}" in readme, rule.section  # the reason it links to is documented there


def test_the_view_shows_every_domain_before_and_after_each_rule(bundled):
    evidence, result = bundled
    view = views.rules_moves(rules_moves(RECORD, result.provenance.evidence_sha256), views.Names(views.rows_of(evidence), result))
    assert view["applies"]
    assert [c["label"] for c in view["columns"]] == ["Before the rules", *(r.state for r in RULES)]
    assert [c["anchor"] for c in view["columns"][1:]] == [s["anchor"] for s in view["steps"]]
    rows = {r["domain"]["label"]: r for r in view["rows"]}
    domains = {d for s in RECORD["itt"] for d in s["summary"]["domains"]}
    assert len(rows) == len(domains) == 11
    for d in domains:  # every cell is the record's own number, in the domain's style
        states = [s["summary"]["domains"].get(d) for s in RECORD["itt"]]
        label = next(s["label"] for s in states if s)
        row = rows[label]
        assert len(row["cells"]) == len(RULES) + 1
        for cell, state in zip(row["cells"], states):
            if state is None:
                assert cell is None
            else:
                assert cell["mean"] == words.number(state["mu"]["mean"], state["metric"])
                assert cell["p_beneficial"] == words.probability(state["mu"]["p_beneficial"])
                assert cell["n"] == state["n_estimates"]
    activation = rows["Firm-oriented activation"]  # positive before the null findings entered, not after
    assert (activation["verdict_before"], activation["verdict_after"], activation["verdict_changed"]) == ("Possibly beneficial", "Unclear", True)
    assert rows["Progression"]["cells"][0] is None and rows["Progression"]["verdict_before"] == "not analysed"
    steps = {s["name"]: s for s in view["steps"]}
    symmetric = steps["Findings without a standard error"]["admitted"]
    assert {"cph_cfbu_outreach:self_supported_12m", "cph_mploy_local:job_or_education"} <= set(symmetric)  # the null findings the symmetric rule admits
    assert "drc_sib:status_permanent_transfers" in steps["Dependence"]["removed"]
    assert set(steps["Benefit only where the source or the domain says so"]["removed"]) >= {
        "vive_social_support:gp_use", "vive_social_support:hospital_contacts_schizophrenia"}
    assert steps["Sparse cells"]["counts"] == "the same estimates enter (their SEs or priors change)"


def test_on_other_evidence_the_record_is_not_shown(bundled):
    evidence, result = bundled
    names = views.Names(views.rows_of(evidence), result)
    other = evidence_digest(load_evidence(estimand="tot"))  # the participation analysis: other evidence, other record
    for moves, says in ((rules_moves(RECORD, other), "this report's evidence is not that evidence"),
                        (rules_moves(RECORD, None), "its digest is unknown"),
                        (rules_moves(None, RECORD["evidence_sha256"]), "No record"),
                        (rules_moves({**RECORD, "evidence_sha256": None}, RECORD["evidence_sha256"]), "does not say which evidence"),
                        (rules_moves(json.loads(json.dumps(RECORD).replace('"+ dependence"', '"+ hunch"')), RECORD["evidence_sha256"]),
                         "no documented rule names: + hunch")):
        assert not moves.applies and says in moves.why_not and moves.domains == ()
        assert views.rules_moves(moves, names) == {"applies": False, "why_not": moves.why_not}


def test_the_page_has_the_section_for_the_bundled_evidence_only(bundled):
    evidence, result = bundled
    text = report.render_report(evidence, result)
    section = text[text.index('id="rules-move"'):text.index('id="excluded"')]
    for rule in RULES:
        assert f'id="rule-{RULES.index(rule) + 1}"' in section and rule.name.replace("'", "&#39;") in section
    assert 'href="#rule-2"' in section and "Firm-oriented activation" in section
    tot = load_evidence(estimand="tot")
    other = report.render_report(tot, result.model_copy(update={"provenance": result.provenance.model_copy(
        update={"evidence_sha256": evidence_digest(tot)})}))
    section = other[other.index('id="rules-move"'):other.index('id="excluded"')]
    assert "does not apply and is not shown" in section and 'id="rule-1"' not in section


# --- certainty per domain, on the report's view data -----------------------------------------------------------


@pytest.fixture(scope="module")
def mcmc(tmp_path_factory):
    """The default model's MCMC fit of the bundled evidence, judged and checked against the exact answer: what
    `metaeval run` reports; and the folder it was fitted in."""
    from metaeval.spec import load_spec
    from metaeval.summary import fit_and_summarise

    evidence, out = load_evidence(), tmp_path_factory.mktemp("bundled-fit")
    result, _ = fit_and_summarise(evidence, load_spec("default"), out=out, progress=False, cross_check=True)
    assert result.diagnostics.passed
    rows = views.rows_of(evidence)
    names = views.Names(rows, result)
    return result, {r["domain"]["label"]: r for r in views.overview(result, rows, names)["rows"]}, \
        {d: views.domain(result, rows, d, names)["certainty"] for d in result.domains}, out


@pytest.mark.mcmc
@pytest.mark.slow
def test_the_fit_is_checked_against_the_exact_answer_once(mcmc, monkeypatch):
    """Findings in several projects of a domain are no reason to skip the oracle: the exact engine computes the
    bundled model, the fit agrees within Monte Carlo error, and the check is kept with the fit (the next run reads it)."""
    import metaeval.exact_full
    from metaeval.spec import load_spec
    from metaeval.summary import fit_and_summarise

    result, _, _, out = mcmc
    check = result.diagnostics.cross_check
    assert check is not None and result.diagnostics.cross_check_skipped is None
    assert check.passed and check.max_z <= check.threshold
    assert 0 < check.max_discrepancy_sd < 0.15  # 4,000 draws: a few hundredths of a posterior SD; 0.056 measured
    assert check.quantity.split(":")[0] in result.domains

    def computed_again(*args, **kwargs):
        raise AssertionError("the exact answer was computed again for a fit that has its check")

    monkeypatch.setattr(metaeval.exact_full, "exact_moments", computed_again)
    again, fitted = fit_and_summarise(load_evidence(), load_spec("default"), out=out, progress=False, cross_check=True)
    assert fitted.cached and again.diagnostics.cross_check == check


@pytest.mark.mcmc
@pytest.mark.slow
def test_every_domain_carries_a_certainty_with_reasons(mcmc):
    result, overview, certainty, _ = mcmc
    assert set(certainty) == set(result.domains) and len(overview) == len(result.domains)
    for d, c in certainty.items():
        assert c is not None and c["level"] in ("high", "moderate", "low", "very low"), d
        assert c["basis"] and all(g["reason"] for g in c["downgrades"]), d
        badge = overview[result.domains[d].label]["badge"]
        assert badge["certainty"] == f"{c['level']} certainty" and badge["reasons"] == [g["reason"] for g in c["downgrades"]]
        if c["level"] != c["start"]:
            assert c["downgrades"], d  # a lower level always says why
    assert rules_moves(RECORD, result.provenance.evidence_sha256).applies  # the report `run` writes shows what the rules move
    settings = views_fit.priors(result)["settings"]  # and the appraisal options its fit used
    assert settings["outcomes whose benefit the curator inferred"] == "left out"
    assert settings["risk of bias judged high (attrition, measurement, reporting)"].startswith("widens the bias prior by 0.25")


def _reasons(c: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in c["downgrades"]:
        out.setdefault(g["domain"], []).append(g["reason"])
    return out


@pytest.mark.mcmc
@pytest.mark.slow
def test_health_and_wellbeing_has_no_number_and_says_its_size_is_the_priors(mcmc):
    """No numeric estimate: the one finding is a direction, so the size comes from the priors; no effect is printed."""
    result, overview, certainty, _ = mcmc
    c, row = certainty["health_wellbeing"], overview["Health and wellbeing"]
    reasons = _reasons(c)
    assert row["effect"] is None and row["badge"]["effect_shown"] is False
    assert c["level"] == "very low"
    assert any("driven by priors" in r for r in reasons["prior dominance"])
    assert any("directions without a number" in r for r in reasons["risk of bias"])


@pytest.mark.mcmc
@pytest.mark.slow
def test_disability_pension_is_not_sure_from_one_non_significant_trial_and_a_direction(mcmc):
    """The trial (non-significant) and VIVE's direction-only finding are what is left after the appraisal rules (DRC's
    0%-cell row is judged critical and leaves with its table); a high P(beneficial) must not read as a sure finding."""
    result, overview, certainty, _ = mcmc
    dom, c = result.domains["disability_pension"], certainty["disability_pension"]
    reasons = _reasons(c)
    assert dom.mu.p_beneficial > 0.9  # the direction is likely ...
    assert c["level"] in ("low", "very low")  # ... and the certainty low
    assert reasons["imprecision"] == ["the interval of the average effect includes no effect"]
    assert any("directions without a number" in r for r in reasons["risk of bias"])
    assert "drc_sib:status_permanent_transfers" in {x.estimate_id for x in result.exclusions_in("disability_pension")}


@pytest.mark.mcmc
@pytest.mark.slow
def test_firm_oriented_activation_rests_on_directions_beside_a_trial_that_carries_all_the_weight(mcmc):
    result, overview, certainty, _ = mcmc
    c = certainty["activation"]
    reasons = _reasons(c)
    assert c["start"] == "high" and c["basis"] == "randomised estimates carry 100% of the weight"
    assert any("directions without a number" in r for r in reasons["risk of bias"])
    assert reasons["imprecision"]
    assert c["level"] == "very low"
