"""The HTML report: every project and domain shown, data text escaped, self-contained, reproducible."""

from __future__ import annotations

import copy
import html
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _model_fixtures import bundled_like  # noqa: E402
from _report_fixtures import HOSTILE_NAME, HOSTILE_QUOTE, hostile_data_dir, summary_for  # noqa: E402

from metaeval import report  # noqa: E402


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
    summary = summary_for(evidence, engine="mcmc")
    return evidence, summary, report.render_report(evidence, summary)


@pytest.fixture(scope="module")
def exact_case():
    from metaeval.exact import fit_exact
    from metaeval.priors import parse_prior

    evidence = bundled_like()
    summary = fit_exact(evidence, priors={"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")})
    return evidence, summary, report.render_report(evidence, summary)


def test_every_project_domain_and_estimate_appears(case):
    evidence, summary, text = case
    page = Page(text)
    for name in evidence["project_name"].unique():
        assert name in page.text
    for label in evidence["domain_label"].unique():
        assert label in page.text
    for eid in evidence["estimate_id"]:
        assert eid in page.text
    for domain in summary["domains"]:
        assert f"domain-{domain}" in page.ids


def test_text_from_data_is_escaped(case):
    _, _, text = case
    assert "<script" not in text  # neither the project name nor any script of our own
    assert "<img src=x" not in text and "<b>fed</b>" not in text
    assert html.escape(HOSTILE_NAME, quote=True) in text
    assert html.escape(HOSTILE_QUOTE, quote=True) in text
    page = Page(text)
    assert HOSTILE_NAME in page.text and HOSTILE_QUOTE in page.text  # shown as text
    assert "caseworker-rated <score> only" in page.text  # an exclusion reason
    assert "n_control = 150 (assumed equal to the <offer> group)" in page.text  # an assumption
    assert not any("onerror" in attrs for _, attrs in page.elements)
    assert [t for t, _ in page.elements if t in ("script", "iframe", "object", "embed", "link", "b", "em")] == []


def test_escaping_reaches_attributes_and_extras(case):
    evidence, summary, _ = case
    summary = copy.deepcopy(summary)
    summary["domains"]["employment"]["label"] = 'Jobs" onmouseover="alert(1)'
    text = report.render_report(evidence, summary, extras={"comparison": {"text": "<i>x</i>",
                                                                         "table": [{"<col>": "<cell>"}]}})
    page = Page(text)
    assert not any("onmouseover" in attrs for _, attrs in page.elements)
    assert 'Forest plot for Jobs" onmouseover="alert(1)' in [a.get("alt") for a in page.all("img")]
    assert "<i>" not in text and "&lt;cell&gt;" in text and "&lt;col&gt;" in text


def test_self_contained_no_network_no_script(case):
    _, summary, text = case
    page = Page(text)
    csp = [a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    images = page.all("img")
    assert len(images) == len(summary["domains"])
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    for tag, attrs in page.elements:
        for key in ("src", "href", "action", "data", "poster"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, key, value[:60])
    # every in-page link has its target
    targets = {a["href"][1:] for a in page.all("a")}
    assert targets <= set(page.ids)
    assert len(page.ids) == len(set(page.ids))


def test_same_inputs_same_text(case):
    evidence, summary, text = case
    assert report.render_report(evidence, summary) == text


def test_sections_present_and_missing_extras_said_plainly(case):
    _, _, text = case
    page = Page(text)
    for section in ("overview", "domains", "evidence", "estimates", "excluded", "direction-only", "assumptions",
                    "priors", "diagnostics", "comparison", "sensitivity", "calibration", "reading"):
        assert section in page.ids
    for key, (_, missing) in report.EXTRA_SECTIONS.items():
        assert missing in page.text


def test_plain_language_summary_numbers(case):
    evidence, summary, _ = case
    dom = summary["domains"]["employment"]
    sentences = report.domain_sentences(evidence, summary, "employment")
    mu, new = dom["mu"], dom["theta_new"]
    assert sentences[0] == (f"Pooled effect: {report.fmt_num(mu['mean'], 'smd')} SD (95% credible interval "
                            f"{report.fmt_num(mu['hdi_low'], 'smd')} to {report.fmt_num(mu['hdi_high'], 'smd')} SD).")
    assert f"is beneficial here): {report.fmt_prob(mu['p_beneficial'])}." in sentences[1]
    assert "minimal important difference of 0.10 SD" in sentences[2]
    assert report.fmt_prob(mu["p_mid"]) in sentences[2]
    assert f"predictive interval {report.fmt_num(new['hdi_low'], 'smd')} to {report.fmt_num(new['hdi_high'], 'smd')}" in sentences[3]
    # randomised vs weaker: 1 RCT estimate, 1 area comparison, weight share from 1/(sei² + tau²)
    rows = evidence.set_index("estimate_id")
    tau = dom["tau"]["mean"]
    w_rct = 1 / (rows.loc["demo:hours_itt", "sei"] ** 2 + tau**2)
    w_area = 1 / (rows.loc["area:hours", "sei"] ** 2 + tau**2)
    basis = report.evidence_basis(evidence, summary, "employment")
    assert basis["counts"] == {"rct": 1, "area_comparison": 1}
    assert basis["randomised_weight"] == pytest.approx(w_rct / (w_rct + w_area))
    evidence_sentence = next(s for s in sentences if s.startswith("Evidence:"))
    assert f"1 from randomised trials (about {report.fmt_prob(w_rct / (w_rct + w_area))} of the statistical weight)" in evidence_sentence
    assert "1 from weaker designs (area comparison: 1)" in evidence_sentence


def test_no_randomised_evidence_and_single_project_are_flagged(exact_case):
    evidence, summary, _ = exact_case
    sentences = report.domain_sentences(evidence, summary, "self_support")  # before-after and area comparison only
    assert any(s.startswith("No randomised evidence") for s in sentences)
    sentences = report.domain_sentences(evidence, summary, "exam_grade")  # one project
    assert any(s.startswith("Only one project") and "τ's prior" in s for s in sentences)
    assert not any(s.startswith("Only one project") for s in report.domain_sentences(evidence, summary, "employment"))


def test_fit_notes_shown_apart_and_left_out_lines_counted(case):
    evidence, summary, _ = case
    summary = copy.deepcopy(summary)
    summary["domains"]["employment"]["notes"] = ["tau <rests> on its prior", "Left out: a (p) - x", "Left out: b (p) - y"]
    assert report.domain_notes(summary, "employment") == (["tau <rests> on its prior"], 2)
    text = report.render_report(evidence, summary)
    section = text[text.index('id="domain-employment"'):text.index('id="domain-self_support"')]
    assert "tau &lt;rests&gt; on its prior" in section
    assert "2 estimates of this domain left out of this fit" in section and 'href="#excluded"' in section
    assert "Left out: a" not in section


def test_nothing_pooled_domain_says_so(exact_case):
    evidence, summary, text = exact_case
    assert report.domain_sentences(evidence, summary, "disability_pension")[0].startswith("Nothing was pooled")
    page = Page(text)
    # the direction-only finding still gets its figure (an arrow); a domain with nothing at all would get a note
    assert "Forest plot for Disability pension" in [a.get("alt") for a in page.all("img")]


def test_direction_only_findings_beside_the_posterior(case):
    evidence, summary, _ = case
    p = summary["domains"]["self_support"]["mu"]["p_beneficial"]
    text = report.render_report(evidence, summary)
    section = text[text.index('id="direction-only"'):text.index('id="assumptions"')]
    assert "demo:wellbeing_direction" in section and "increase, significant" in section
    assert report.fmt_prob(p) in section and "agrees" in section
    assert "yes (censored likelihood)" in section
    flipped = copy.deepcopy(summary)
    flipped["domains"]["self_support"]["mu"]["p_beneficial"] = 0.1
    text = report.render_report(evidence, flipped)
    section = text[text.index('id="direction-only"'):text.index('id="assumptions"')]
    assert "disagrees" in section and "10%" in section


def test_exact_engine_exclusions_and_no_sampling_diagnostics(exact_case):
    _, summary, text = exact_case
    excluded = text[text.index('id="excluded"'):text.index('id="direction-only"')]
    assert "drc:who5" in excluded and "described without numbers in the source" in excluded
    # the exact engine leaves direction-only findings out of its model: the table says so
    direction = text[text.index('id="direction-only"'):text.index('id="assumptions"')]
    assert direction.count("no: shown beside it only") == 2
    assert "there are no sampling diagnostics" in text


def test_failed_gate_is_a_banner(case):
    evidence, _, text = case
    assert 'id="gate-failed"' not in text and "passed the gate" in text
    failed = report.render_report(evidence, summary_for(evidence, engine="mcmc", passed=False))
    assert 'id="gate-failed"' in failed and "FAILED" in failed
    assert "1.08" in failed  # the failing R-hat is shown
    judged = summary_for(evidence, engine="mcmc", passed=False)
    judged["diagnostics"].update(thresholds={"rhat_max": 1.05, "ess_min": 100, "divergences": 0},
                                 failures=["R-hat 1.08 > 1.05", "bulk ESS 95 < 100"])
    section = Page(report.render_report(evidence, judged).split('id="diagnostics"')[1]).text
    assert "≤ 1.05" in section and "≥ 100" in section and "≤ 1.01" not in section
    assert "FAILED: R-hat 1.08 > 1.05; bulk ESS 95 < 100" in section


def test_priors_and_bias_assumptions_listed(case):
    _, summary, text = case
    section = Page(text[text.index('id="priors"'):text.index('id="diagnostics"')]).text
    for param, prior in summary["model"]["priors"].items():
        assert param in section and prior in section
    assert "matched register control" in section and "normal(0.05, 0.1)" in section
    assert "Bias-adjusted <additive> design bias" in section  # escaped model text
    assert "lognormal(-2.30259, 0.5)" in section  # direction-only SE prior, under other settings


def test_extras_render_tables_figures_and_unknown_sections(case):
    evidence, summary, _ = case
    from metaeval.plots import forest_plot

    extras = {
        "sensitivity": {"text": ["Two scenarios."], "table": [{"scenario": "HN(0.5)", "mu": 0.3123456}],
                        "figures": [{"caption": "tau wider", "figure": forest_plot(evidence, summary, "employment")}]},
        "comparison": "Only one model was fitted.",
        "loo_pit": {"title": "LOO-PIT check", "figure": b"not an image"},
    }
    text = report.render_report(evidence, summary, extras=extras)
    page = Page(text)
    assert "Two scenarios." in page.text and "0.3123" in page.text and "tau wider" in page.text
    assert len(page.all("img")) == len(summary["domains"]) + 1
    assert "Only one model was fitted." in page.text
    assert "extra-loo_pit" in page.ids and "LOO-PIT check" in page.text
    assert "A figure could not be embedded" in page.text
    assert report.EXTRA_SECTIONS["calibration"][1] in page.text  # still missing, still said


def test_progress_is_reported_to_the_end(case):
    evidence, summary, _ = case
    calls = []
    report.render_report(evidence, summary, extras={"other": "x"}, progress=lambda *a: calls.append(a))
    done = [c[1] for c in calls]
    assert done == list(range(1, len(calls) + 1))
    assert calls[-1][1] == calls[-1][2]
    assert any("Employment" in c[0] for c in calls)


def test_write_report_atomic(case, tmp_path):
    evidence, summary, text = case
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    target.write_text("old")
    assert report.write_report(target, evidence, summary, progress=False) == target
    assert target.read_text(encoding="utf-8") == text
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_write_report_with_progress_bar(case, tmp_path):
    evidence, summary, text = case
    target = tmp_path / "report.html"
    report.write_report(target, evidence, summary, progress=True)
    assert target.read_text(encoding="utf-8") == text


def test_formatting_helpers():
    assert report.fmt_num(-1.234, "smd") == "−1.23"
    assert report.fmt_num(-0.04, "pp") == "0.0"
    assert report.fmt_num(1234.5, "hours") == "1,234"
    assert report.fmt_num(None, "pp") == "–"
    assert report.fmt_num(0.000123) == "0.000123"
    assert report.fmt_prob(0.999) == ">99%" and report.fmt_prob(0.001) == "<1%" and report.fmt_prob(0.5) == "50%"
    assert report.verdict(0.98)[0] == "Very likely beneficial"
    assert report.verdict(0.5)[0] == "Unclear"
    assert report.verdict(0.01)[0] == "Very likely adverse"
    assert report.verdict(None)[0] == "Not estimated"


def test_bad_summary_is_refused(case):
    evidence, _, _ = case
    with pytest.raises(ValueError, match="domains"):
        report.render_report(evidence, {"engine": "mcmc"})


def test_cli_report(case, tmp_path, capsys):
    from metaeval.cli import main

    evidence, summary, text = case
    data = hostile_data_dir(tmp_path)
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(json.dumps(summary))
    out = tmp_path / "out"
    assert main(["report", "--data", str(data), "--summary", str(summary_file), "--out", str(out)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == out / "report.html"
    if summary["engine"] == "mcmc" and summary["model"]["name"] == "default":  # the calibration study is cited
        from metaeval.cli import _calibration_section

        text = report.render_report(evidence, summary, extras={"calibration": _calibration_section()})
    assert path.read_text(encoding="utf-8") == text
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


def test_per_domain_priors_become_one_table_either_way_round():
    per_param = {"mu": {"a": "normal(0, 1)", "b": "normal(0, 2)"}, "tau": {"a": "halfnormal(1)"}}
    per_domain = {"a": {"mu": "normal(0, 1)", "tau": "halfnormal(1)"}, "b": {"mu": "normal(0, 2)"}}
    one, two = Page(report._by_domain(per_param, ["a", "b"])), Page(report._by_domain(per_domain, ["a", "b"]))
    assert one.text == two.text
    assert "Domainmutau" in one.text.replace("\n", "") and "bnormal(0, 2)–" in one.text.replace("\n", "")


def test_model_source_is_shown_relative_to_the_project(case):
    evidence, summary, _ = case
    summary = copy.deepcopy(summary)
    root = Path(report.__file__).resolve().parent.parent
    summary["model"]["source"] = str(root / "models" / "default.toml")
    text = report.render_report(evidence, summary)
    assert "models/default.toml" in text and str(root) not in text


def test_metafor_csv_report_has_no_invented_units_or_designs(tmp_path):
    """A plain CSV (no design, no metric): no 'weaker designs' claim and no made-up unit."""
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.priors import parse_prior

    evidence = load_evidence(csv=Path(__file__).parent / "fixtures" / "eight_schools.csv")
    summary = fit_exact(evidence, priors={"mu": parse_prior("normal(0, 10)"), "tau": parse_prior("halfcauchy(5)")})
    sentences = report.domain_sentences(evidence, summary, "all")
    assert "Evidence: 8 pooled estimates from 8 projects; design not stated for 8." in sentences
    assert not any("weaker" in s or "randomised" in s for s in sentences)
    mu = summary["domains"]["all"]["mu"]
    assert sentences[0] == (f"Pooled effect: {report.fmt_num(mu['mean'])} (95% credible interval "
                            f"{report.fmt_num(mu['hdi_low'])} to {report.fmt_num(mu['hdi_high'])}).")
    text = report.render_report(evidence, summary)
    for study in "ABCDEFGH":
        assert f"<code>{study}</code>" in text  # each study in the project and estimate tables
    assert len(Page(text).all("img")) == 1


def test_report_cites_the_committed_calibration_study_of_the_default_model(tmp_path):
    from metaeval.cli import _calibration_section, _report_extras, build_parser
    from metaeval.harmonise import load_evidence

    record = json.loads((Path(__file__).resolve().parents[1] / "bench" / "sbc_results.json").read_text())
    section = _calibration_section()
    assert section["text"].count(record["analysis"]["verdict"]) == 1
    assert f"at commit {record['code']['commit'][:12]}" in section["text"]  # which code was calibrated
    assert {row["parameter"]: row["chi-square p"] for row in section["table"]} == record["analysis"]["primary_p_values"]
    evidence, args = load_evidence(), build_parser().parse_args(["report", "--out", str(tmp_path)])
    default = {"engine": "mcmc", "model": {"name": "default", "overrides": {}}, "domains": {}}
    assert _report_extras(args, evidence, default)["calibration"] == section
    # the study calibrates the default MCMC model only: not cited for the exact engine, another model or prior
    for other in ({**default, "engine": "exact"}, {**default, "model": {"name": "no_bias", "overrides": {}}},
                  {**default, "model": {"name": "default", "overrides": {"tau": "halfnormal(1)"}}}):
        assert "calibration" not in (_report_extras(args, evidence, other) or {})
