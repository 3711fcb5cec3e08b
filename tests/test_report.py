"""The HTML report: its content as view data (metaeval.views), then the page: every project and domain
shown, data text escaped, self-contained, reproducible."""

from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

sys.path.insert(0, str(Path(__file__).parent))
from _model_fixtures import bundled_like  # noqa: E402
from _report_fixtures import HOSTILE_NAME, HOSTILE_QUOTE, hostile_data_dir, summary_for  # noqa: E402

from metaeval import report, views, views_fit, words  # noqa: E402
from metaeval.certainty import judge  # noqa: E402
from metaeval.result import Exclusion  # noqa: E402


class Page(HTMLParser):
    """Every element with its attributes, the ids, and the visible text of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text_parts: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.elements if t == tag]

    @property
    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.elements if "id" in a]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from metaeval.harmonise import load_evidence

    evidence = load_evidence(hostile_data_dir(tmp_path_factory.mktemp("report")))
    result = judge(summary_for(evidence, engine="mcmc"), evidence)
    return evidence, result, report.render_report(evidence, result)


@pytest.fixture(scope="module")
def exact_case():
    from metaeval.exact import fit_exact
    from metaeval.priors import parse_prior

    evidence = bundled_like()
    result = judge(fit_exact(evidence, priors={"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")}), evidence)
    return evidence, result, report.render_report(evidence, result)


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(f'id="{start}"'):text.index(f'id="{end}"')]


# --- the page -------------------------------------------------------------------------------------


def test_every_project_domain_and_estimate_appears(case):
    evidence, result, text = case
    page = Page(text)
    for name in evidence["project_name"].unique():
        assert name in page.text
    for label in evidence["domain_label"].unique():
        assert label in page.text
    for eid in evidence["estimate_id"]:
        assert eid in page.text
    for domain in result.domains:
        assert f"domain-{domain}" in page.ids


def test_text_from_data_is_escaped(case):
    _, _, text = case
    assert "<script" not in text  # neither the project name nor any script of our own
    assert "<img src=x" not in text and "<b>fed</b>" not in text
    assert str(escape(HOSTILE_NAME)) in text and str(escape(HOSTILE_QUOTE)) in text
    page = Page(text)
    assert HOSTILE_NAME in page.text and HOSTILE_QUOTE in page.text  # shown as text
    assert "caseworker-rated <score> only" in page.text  # an exclusion reason
    assert "n_control = 150 (assumed equal to the <offer> group)" in page.text  # an assumption
    assert not any("onerror" in attrs for _, attrs in page.elements)
    assert [t for t, _ in page.elements if t in ("script", "iframe", "object", "embed", "link", "b", "em")] == []


def test_escaping_reaches_attributes_and_extras(case):
    evidence, result, _ = case
    employment = result.domains["employment"].model_copy(update={"label": 'Jobs" onmouseover="alert(1)'})
    hostile = result.model_copy(update={"domains": {**result.domains, "employment": employment}})
    text = report.render_report(evidence, hostile, extras={"comparison": {"text": "<i>x</i>", "table": [{"<col>": "<cell>"}]}})
    page = Page(text)
    assert not any("onmouseover" in attrs for _, attrs in page.elements)
    assert 'Forest plot for Jobs" onmouseover="alert(1)' in [a.get("aria-label") for a in page.all("svg")]
    assert "<i>" not in text and "&lt;cell&gt;" in text and "&lt;col&gt;" in text


def test_a_tall_forest_says_what_it_leaves_out(case, monkeypatch):
    """A domain whose forest would pass ``FOREST_MAX_ROWS`` rows draws one row per project, and its caption says so."""
    evidence, result, _ = case
    assert "rows of individual estimates and findings are left out" not in report.render_report(evidence, result)
    monkeypatch.setattr(report, "FOREST_MAX_ROWS", 3)
    text = report.render_report(evidence, result)
    assert re.search(r"the \d+ rows of individual estimates and findings are left out", text)


def test_self_contained_no_network_no_script(case):
    _, result, text = case
    page = Page(text)
    csp = [a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    assert page.all("img") == []  # the report's own figures are inline SVG (metaeval.charts), one per domain
    figures = page.all("svg")
    assert len(figures) == len(result.domains) and all(a["class"] == "chart" and a["role"] == "img" for a in figures)
    # each with the same SVG as a file to download (a browser copies an <img> into a document, not an inline figure)
    downloads = [a for a in page.all("a") if a.get("class") == "download"]
    assert len(downloads) == len(figures)
    inline = re.findall(r"<svg .*?</svg>", text, re.S)
    for link, svg in zip(downloads, inline):
        assert re.fullmatch(r"forest-[\w.-]+\.svg", link["download"])
        assert base64.b64decode(link["href"].removeprefix("data:image/svg+xml;base64,")).decode("utf-8") == svg + "\n"
    for tag, attrs in page.elements:
        for key in ("src", "href", "action", "data", "poster"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, key, value[:60])
    targets = {a["href"][1:] for a in page.all("a") if a["href"].startswith("#")}  # every in-page link has its target
    assert targets <= set(page.ids)
    assert len(page.ids) == len(set(page.ids))


def test_the_css_is_the_package_file(case):
    from importlib import resources

    _, _, text = case
    css = (resources.files("metaeval") / "templates" / "report.css").read_text(encoding="utf-8")
    assert f"<style>{css}</style>" in text


def test_same_inputs_same_text(case):
    evidence, result, text = case
    assert report.render_report(evidence, result) == text


def test_sections_present_and_missing_extras_said_plainly(case):
    _, _, text = case
    page = Page(text)
    for section in ("overview", "domains", "evidence", "estimates", "excluded", "direction-only", "assumptions",
                    "priors", "diagnostics", "robustness", "comparison", "sensitivity", "calibration", "reading"):
        assert section in page.ids
    for _, missing in report.EXTRA_SECTIONS.values():
        assert missing in page.text


# --- a domain, as data --------------------------------------------------------------------------


def test_plain_language_summary_numbers(case):
    evidence, result, _ = case
    dom = result.domains["employment"]
    rows = views.rows_of(evidence)
    sentences = views.sentences([r for r in rows if r["domain"] == "employment"], dom)
    mu, new = dom.mu, dom.theta_new
    assert sentences[0] == (f"Average effect: {words.number(mu.mean, 'smd')} SD ({words.number(mu.hdi_low, 'smd')} to "
                            f"{words.number(mu.hdi_high, 'smd')} SD, 95% credible interval).")
    assert sentences[1] == (f"Probability that the average effect is beneficial (an increase is beneficial here): "
                            f"{words.probability(mu.p_beneficial)}.")
    assert "minimal important difference of 0.10 SD" in sentences[2] and words.probability(mu.p_mid) in sentences[2]
    assert f"predictive interval {words.number(new.hdi_low, 'smd')} to {words.number(new.hdi_high, 'smd')}" in sentences[3]
    # the new initiative's probability is said where it differs from the average effect's by 5 points or more
    differs = abs(new.p_beneficial - mu.p_beneficial) >= 0.05
    assert ("probability that a new initiative of this kind would be beneficial" in sentences[3]) == differs
    # randomised vs weaker: 1 RCT estimate, 1 area comparison, weight share from 1/(sei² + tau²)
    by_id = evidence.set_index("estimate_id")
    w_rct = 1 / (by_id.loc["demo:hours_itt", "sei"] ** 2 + dom.tau.mean**2)
    w_area = 1 / (by_id.loc["area:hours", "sei"] ** 2 + dom.tau.mean**2)
    basis = views.evidence_basis(rows, dom)
    assert basis["counts"] == {"rct": 1, "area_comparison": 1}
    assert basis["randomised_weight"] == pytest.approx(w_rct / (w_rct + w_area))
    evidence_sentence = next(s for s in sentences if s.startswith("Evidence:"))
    assert f"1 from randomised trials (about {words.probability(w_rct / (w_rct + w_area))} of the statistical weight)" in evidence_sentence
    assert "1 from weaker designs (area comparison: 1)" in evidence_sentence


def test_the_badge_joins_direction_and_certainty(case):
    _, result, text = case
    for dom in result.domains.values():
        b = views.badge(dom)
        assert b["direction"] == words.verdict(dom.mu.p_beneficial)[0]
        assert b["certainty"] == f"{dom.certainty.level} certainty" and b["reasons"] == [g.reason for g in dom.certainty.downgrades]
    section = Page(_section(text, "domain-employment", "domain-self_support")).text
    dom = result.domains["employment"]
    assert f"Certainty: {dom.certainty.level}." in section and dom.certainty.basis in section
    for g in dom.certainty.downgrades:
        assert g.reason in section


def test_no_randomised_evidence_and_single_project_are_flagged(exact_case):
    evidence, result, _ = exact_case
    rows = views.rows_of(evidence)

    def sentences(d):
        return views.sentences([r for r in rows if r["domain"] == d], result.domains[d])

    assert any(s.startswith("No randomised evidence") for s in sentences("self_support"))  # before-after and area comparison only
    assert any(s.startswith("Only one project") and "τ's prior" in s for s in sentences("exam_grade"))
    assert not any(s.startswith("Only one project") for s in sentences("employment"))


def test_fit_notes_shown_and_left_out_estimates_counted(case):
    evidence, result, _ = case
    employment = result.domains["employment"].model_copy(update={"notes": ("tau <rests> on its prior",)})
    left_out = tuple(Exclusion(estimate_id=e, project="p", domain="employment", reason="x", stage="model") for e in ("a", "b"))
    result = result.model_copy(update={"domains": {**result.domains, "employment": employment}, "exclusions": left_out})
    view = views.domain(result, views.rows_of(evidence), "employment", views.Names(views.rows_of(evidence), result))
    assert view["notes"] == ["tau <rests> on its prior"] and view["n_left_out"] == 2
    text = report.render_report(evidence, result)
    section = _section(text, "domain-employment", "domain-self_support")
    assert "tau &lt;rests&gt; on its prior" in section
    assert "2 estimates of this domain left out of this fit" in section and 'href="#excluded"' in section


def test_a_domain_with_nothing_pooled_is_listed_with_its_reasons(exact_case):
    evidence, result, text = exact_case
    assert "disability_pension" not in result.domains  # only a direction-only finding, which this engine cannot use
    overview = views.overview(result, views.rows_of(evidence), views.Names(views.rows_of(evidence), result))
    assert any(u.startswith("Disability pension") for u in overview["unsummarised"])
    excluded = Page(_section(text, "excluded", "direction-only")).text
    assert "Disability pension" in excluded


def test_a_result_resting_on_priors_and_directions_shows_no_effect_size(case):
    evidence, result, _ = case
    dom = result.domains["employment"]
    bare = dom.model_copy(update={"certainty": dom.certainty.model_copy(update={"effect_shown": False})})
    sentences = views.sentences([], bare)
    assert sentences[0].startswith("No numeric estimate") and "priors' doing" in sentences[0]
    result = result.model_copy(update={"domains": {**result.domains, "employment": bare}})
    row = next(r for r in views.overview(result, [], views.Names([], result))["rows"] if r["domain"]["label"] == dom.label)
    assert row["effect"] is None and row["predictive"] == "–"


def test_direction_only_findings_beside_the_posterior(case):
    evidence, result, _ = case
    names = views.Names(views.rows_of(evidence), result)
    found = {f["id"]: f for f in views.findings(result, views.rows_of(evidence), names)}
    f = found["demo:wellbeing_direction"]
    p = result.domains["self_support"].mu.p_beneficial
    assert f["reported"] == "increase, significant" and f["used"] == "yes (censored likelihood)"
    assert f["p_same"] == words.probability(p) and f["agree"] == "agrees"
    mu = result.domains["self_support"].mu.model_copy(update={"p_beneficial": 0.1})
    flipped = result.model_copy(update={"domains": {**result.domains, "self_support": result.domains["self_support"].model_copy(update={"mu": mu})}})
    f = {f["id"]: f for f in views.findings(flipped, views.rows_of(evidence), names)}["demo:wellbeing_direction"]
    assert f["agree"] == "disagrees" and f["p_same"] == "10%"


def test_exact_engine_exclusions_and_no_sampling_diagnostics(exact_case):
    evidence, result, text = exact_case
    excluded = {x["id"]: x for x in views.excluded(result, views.rows_of(evidence), views.Names(views.rows_of(evidence), result))}
    assert "described without numbers in the source" in excluded["drc:who5"]["reason"]
    direction = _section(text, "direction-only", "assumptions")
    assert direction.count("no: the engine cannot use it; shown beside it only") == 2  # the exact engine leaves them out
    assert views_fit.diagnostics(result) == {"exact": True, "rows": [], "gate": None, "failures": [], "error_sd": None}  # the one-level engine states none
    assert "there are no sampling diagnostics" in text


def test_failed_gate_is_a_banner(case):
    evidence, _, text = case
    assert 'id="gate-failed"' not in text and "passed the gate" in text
    failed = summary_for(evidence, engine="mcmc", passed=False)
    page = report.render_report(evidence, failed)
    assert 'id="gate-failed"' in page and "FAILED" in page
    view = views_fit.diagnostics(failed)
    assert view["gate"] == "FAILED" and view["rows"][0]["value"] == "1.08"  # the failing R-hat is shown
    gate, check = view["rows"][:-1], view["rows"][-1]  # the gate's numbers, then prose: this fit was not checked
    assert all(r["numeric"] for r in gate) and '<td class="num">1.08</td>' in page
    assert not check["numeric"] and check["value"].startswith("not computed: not asked for this fit")
    strict = failed.model_copy(update={"diagnostics": failed.diagnostics.model_copy(update={
        "thresholds": {"rhat_max": 1.05, "ess_min": 100, "divergences": 0}, "failures": ("R-hat 1.08 > 1.05", "bulk ESS 95 < 100")})})
    section = Page(report.render_report(evidence, strict).split('id="diagnostics"')[1]).text
    assert "≤ 1.05" in section and "≥ 100" in section and "≤ 1.01" not in section
    assert "FAILED: R-hat 1.08 > 1.05; bulk ESS 95 < 100" in section


def test_priors_and_bias_assumptions_listed(case):
    _, result, text = case
    section = Page(_section(text, "priors", "diagnostics")).text
    for param, prior in result.model.priors.items():
        assert param in section and prior in section
    assert "matched register control" in section and "normal(0.05, 0.1)" in section
    assert "Bias-adjusted <additive> design bias" in section  # escaped model text
    assert "lognormal(-2.30259, 0.5)" in section  # direction-only SE prior, under other settings
    view = views_fit.priors(result)
    from metaeval.result import RiskOfBiasRule, Sampler

    # the appraisal options, shown where the fit records them (not by an engine that applies none)
    unapplied = result.model.model_copy(update={"inferred_benefit": None, "risk_of_bias": None})
    assert not any("risk of bias" in k or "curator" in k for k in views_fit.priors(result.model_copy(update={"model": unapplied}))["settings"])

    default = result.model.model_copy(update={"inferred_benefit": "exclude", "risk_of_bias": RiskOfBiasRule(
        high="inflate", sd=0.25, domains=("attrition", "reporting"))})
    settings = views_fit.priors(result.model_copy(update={"model": default}))["settings"]
    assert settings["outcomes whose benefit the curator inferred"] == "left out"
    assert settings["risk of bias judged high (attrition, reporting)"] == "widens the bias prior by 0.25 x the domain's scale per domain judged high"
    # the target acceptance the sampler used, and the rule where the model has one for integrated-out effects
    assert view["settings"]["target_accept"] == 0.99
    sampled = result.model.model_copy(update={"target_accept": 0.995, "target_accept_integrated": 0.9, "sampler": Sampler(
        chains=4, draws=1000, tune=1000, seed=1, sampler="nutpie", target_accept=0.9)})
    assert views_fit.priors(result.model_copy(update={"model": sampled}))["settings"]["target_accept"] == (
        "0.9 (the model's 0.995, or 0.9 where every project effect is integrated out)")
    assert view["per_domain"]["params"] == ["mu", "tau"]
    assert {r["domain"]: r["priors"] for r in view["per_domain"]["rows"]}["Employment"] == [
        result.domains["employment"].priors["mu"], result.domains["employment"].priors["tau"]]


def test_extras_render_tables_figures_and_unknown_sections(case):
    evidence, result, _ = case
    from metaeval.plots import forest_plot

    extras = {
        "sensitivity": {"text": ["Two scenarios."], "table": [{"scenario": "HN(0.5)", "mu": 0.3123456}],
                        "figures": [{"caption": "tau wider", "figure": forest_plot(evidence, result, "employment")}]},
        "comparison": "Only one model was fitted.",
        "loo_pit": {"title": "LOO-PIT check", "figure": b"not an image"},
    }
    page = Page(report.render_report(evidence, result, extras=extras))
    assert "Two scenarios." in page.text and "0.3123" in page.text and "tau wider" in page.text
    assert len(page.all("img")) == 1 and len(page.all("svg")) == len(result.domains)  # the supplied figure; the forest plots
    assert "Only one model was fitted." in page.text
    assert "extra-loo_pit" in page.ids and "LOO-PIT check" in page.text
    assert "A figure could not be embedded" in page.text
    assert report.EXTRA_SECTIONS["calibration"][1] in page.text  # still missing, still said


def test_progress_is_reported_to_the_end(case):
    evidence, result, _ = case
    calls = []
    report.render_report(evidence, result, extras={"other": "x"}, progress=lambda *a: calls.append(a))
    assert [c[1] for c in calls] == list(range(1, len(calls) + 1))
    assert calls[-1][1] == calls[-1][2]
    assert any("Employment" in c[0] for c in calls)


def test_write_report_atomic(case, tmp_path):
    evidence, result, text = case
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old")
    assert report.write_report(target, evidence, result, progress=False) == target
    assert target.read_text(encoding="utf-8") == text
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_write_report_with_progress_bar(case, tmp_path):
    evidence, result, text = case
    target = tmp_path / "report.html"
    report.write_report(target, evidence, result, progress=True)
    assert target.read_text(encoding="utf-8") == text


def test_number_style():
    assert words.number(-1.234, "smd") == "−1.23"
    assert words.number(-0.04, "pp") == "0.0"
    assert words.number(1234.5, "hours") == "1,234"
    assert words.number(None, "pp") == "–"
    assert words.number(0.000123) == "0.000123"
    assert words.probability(0.999) == ">99%" and words.probability(0.001) == "<1%" and words.probability(0.5) == "50%"
    assert words.verdict(0.98)[0] == "Very likely beneficial"
    assert words.verdict(0.5)[0] == "Unclear"
    assert words.verdict(0.01)[0] == "Very likely adverse"
    assert words.verdict(None)[0] == "Not estimated"


def test_a_dict_is_not_a_result(case):
    evidence, _, _ = case
    with pytest.raises(TypeError, match="Result"):
        report.render_report(evidence, {"engine": "mcmc"})


def test_cli_report(case, tmp_path, capsys):
    from metaeval.cli import main
    from metaeval.commands import calibration_section

    evidence, result, _ = case
    data = hostile_data_dir(tmp_path)
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(result.to_json())
    out = tmp_path / "out"
    assert main(["report", "--data", str(data), "--summary", str(summary_file), "--out", str(out)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == out / "report.html"
    # the summary file is shown as given (judged when it was written); the default MCMC model cites its calibration
    assert path.read_text(encoding="utf-8") == report.render_report(evidence, result, extras={"calibration": calibration_section()})
    # the exact engine needs no earlier fit
    assert main(["report", "--data", str(data), "--engine", "exact", "--output", str(tmp_path / "exact.html")]) == 0
    assert "exact numerical integration" in (tmp_path / "exact.html").read_text(encoding="utf-8")
    capsys.readouterr()
    # an MCMC report without a fit says what to do and writes nothing
    assert main(["report", "--data", str(data), "--out", str(tmp_path / "empty")]) == 1
    assert "run `metaeval fit`" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report.html").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", "--data", str(data), "--summary", str(bad)]) == 2
    assert "not a JSON fit summary" in capsys.readouterr().err


def test_metafor_csv_report_has_no_invented_units_or_designs():
    """A plain CSV (no design, no metric): no 'weaker designs' claim and no made-up unit."""
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.priors import parse_prior

    evidence = load_evidence(csv=Path(__file__).parent / "fixtures" / "eight_schools.csv")
    result = judge(fit_exact(evidence, priors={"mu": parse_prior("normal(0, 10)"), "tau": parse_prior("halfcauchy(5)")}), evidence)
    sentences = views.sentences(views.rows_of(evidence), result.domains["all"])
    assert "Evidence: 8 pooled estimates from 8 projects; design not stated for 8." in sentences
    assert not any("weaker" in s or "randomised" in s for s in sentences)
    mu = result.domains["all"].mu
    assert sentences[0] == (f"Average effect: {words.number(mu.mean)} ({words.number(mu.hdi_low)} to "
                            f"{words.number(mu.hdi_high)}, 95% credible interval).")
    text = report.render_report(evidence, result)
    for study in "ABCDEFGH":
        assert f"<code>{study}</code>" in text  # each study in the project and estimate tables
    assert len(Page(text).all("svg")) == 1  # the one domain's forest plot
    assert "Assumed, not given" in text and "direction assumed" in text  # the CSV did not say which way helps


def test_report_cites_the_committed_calibration_study_of_the_default_model(case, tmp_path):
    from metaeval.cli import build_parser
    from metaeval.commands import calibration_section, report_extras
    from metaeval.harmonise import load_evidence

    record = json.loads((Path(__file__).resolve().parents[1] / "bench" / "sbc_results.json").read_text())  # the full run
    section = calibration_section()
    assert section["text"].count(record["analysis"]["verdict"]) == 1
    assert f"at commit {record['code']['commit'][:12]}" in section["text"]  # which code was calibrated
    assert {row["parameter"]: row["chi-square p"] for row in section["table"]} == record["analysis"]["primary_p_values"]
    evidence, args = load_evidence(), build_parser().parse_args(["report", "--out", str(tmp_path)])
    _, default, _ = case  # the default MCMC model, no overrides
    assert report_extras(args, evidence, default)[1]["calibration"] == section
    # the study calibrates the default MCMC model only: not cited for the exact engine, another model or prior
    model = default.model
    for other in (default.model_copy(update={"engine": "exact", "diagnostics": None}),
                  default.model_copy(update={"model": model.model_copy(update={"name": "no_bias"})}),
                  default.model_copy(update={"model": model.model_copy(update={"overrides": {"tau": "halfnormal(1)"}})})):
        assert "calibration" not in (report_extras(args, evidence, other)[1] or {})


def test_the_appraisal_is_in_the_report():
    """Per-estimate risk of bias with what the model did, and each finding's region of z, beside the posterior."""
    from metaeval.appraisal import appraise
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.model import prepare
    from metaeval.spec import load_spec

    evidence, spec = load_evidence(), load_spec("default")
    appraisal = appraise(evidence, prepare(evidence, spec))
    result = judge(fit_exact(evidence, priors=spec.priors), evidence)
    names = views.Names(views.rows_of(evidence), result)
    rob = {r["id"]: r for r in views.risk_of_bias(appraisal, names)}
    assert rob["drc_sib:status_permanent_transfers"]["overall"] == "critical"
    assert "confounding critical" in rob["drc_sib:status_permanent_transfers"]["judgements"]
    found = {f["id"]: f for f in views.findings(result, views.rows_of(evidence), names, appraisal)}
    assert found["vive_social_support:job_retention"]["reported"] == "none, not significant"
    assert found["vive_social_support:job_retention"]["region"] == "|z| < 1.96"  # a null enters as a null
    levels = found["cph_mjolnerparken:goal2_youth_education_or_job"]
    assert levels["reported"].startswith("decrease (read from the levels)") and levels["counted"] is None
    text = report.render_report(evidence, result, appraisal=appraisal)
    section = Page(_section(text, "risk-of-bias", "excluded")).text
    assert "drc_sib:status_permanent_transfers" in section and "critical" in section
    assert "No per-estimate risk-of-bias judgements" in report.render_report(evidence, result)  # without the appraisal
