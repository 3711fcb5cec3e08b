"""Right answers on any evidence base: what a CSV's domains are, priors in the data's units, and every
output saying what was assumed rather than given.

References: the BCG vaccine trials (Colditz et al. 1994; ``tests/fixtures/bcg.csv``, made by
``make_bcg.R`` with metafor's escalc: log risk ratios, lower is better) and eight schools (Rubin
1981), whose pooled mean under weakly informative priors lies between about 4.4 (posteriordb's
N(0, 5) / HalfCauchy(5)) and 7.9 (flat priors).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from metaeval.cli import main
from metaeval.harmonise import DomainDefaults, derived_scale, evidence_records, load_evidence

FIXTURES = Path(__file__).parent / "fixtures"
BCG = FIXTURES / "bcg.csv"
EIGHT = FIXTURES / "eight_schools.csv"
EIGHT_YI = [28, 8, -3, 7, -1, 1, 18, 12]
EIGHT_SEI = [15, 10, 16, 11, 9, 11, 10, 18]


# --- what a CSV's domains are -----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_domain_columns_describe_the_domain(tmp_path):
    csv = _write(tmp_path / "d.csv", "study,yi,sei,domain,beneficial,scale,mid,metric,label\n"
                                     "a,-0.2,0.1,deaths,decrease,0.5,0.1,log_rr,Deaths\nb,-0.1,0.2,deaths,,,,,\n")
    rows = evidence_records(csv=csv)
    assert {(r["domain_beneficial"], r["domain_scale"], r["domain_mid"], r["domain_metric"], r["domain_label"]) for r in rows} == \
        {("decrease", 0.5, 0.1, "log_rr", "Deaths")}
    assert all(r["domain_assumed"] == {} for r in rows)  # nothing assumed: nothing to say
    assert all(r["metric"] == "log_rr" and r["yi"] == r["estimate"] for r in rows)  # on the domain's own metric, unconverted


def test_a_domain_column_that_disagrees_within_a_domain_names_both_rows(tmp_path, capsys):
    csv = _write(tmp_path / "d.csv", "study,yi,sei,domain,beneficial\na,1,1,x,decrease\nb,1,1,x,increase\nc,1,1,y,increase\n")
    assert main(["validate", "--csv", str(csv)]) == 2
    err = capsys.readouterr().err
    assert "row 3 (study 'b')" in err and "row 2 (study 'a')" in err and "beneficial" in err and "domain 'x'" in err
    assert "Traceback" not in err


def test_a_domains_file_describes_the_domains_and_columns_must_agree_with_it(tmp_path, capsys):
    domains = _write(tmp_path / "domains.yaml", """domains:
  - id: all
    label: Tuberculosis
    description: Cases of tuberculosis, log risk ratio.
    metric: log_or
    beneficial: decrease
    mid: 0.1
    mid_rationale: Analyst assumption for the test.
    scale: 1
    scale_rationale: Analyst assumption for the test.
""")
    rows = evidence_records(csv=BCG, domains=domains)
    assert {(r["domain_beneficial"], r["domain_scale"], r["domain_label"]) for r in rows} == {("decrease", 1.0, "Tuberculosis")}
    clash = _write(tmp_path / "clash.csv", "study,yi,sei,beneficial\na,1,1,increase\n")
    assert main(["validate", "--csv", str(clash), "--domains", str(domains)]) == 2
    err = capsys.readouterr().err
    assert "contradicts the domains file" in err and "field beneficial" in err


def test_command_line_defaults_fill_what_the_csv_leaves_out(tmp_path):
    csv = _write(tmp_path / "d.csv", "study,yi,sei,domain,beneficial\na,1,1,x,\nb,1,1,y,increase\n")
    rows = {r["domain"]: r for r in evidence_records(csv=csv, defaults=DomainDefaults(beneficial="decrease", scale=2.0))}
    assert rows["x"]["domain_beneficial"] == "decrease" and rows["y"]["domain_beneficial"] == "increase"  # a column wins
    assert rows["x"]["domain_scale"] == 2.0 and rows["x"]["domain_assumed"] == {}


def test_domain_options_apply_to_a_csv_only(capsys):
    assert main(["validate", "--beneficial", "decrease"]) == 2
    assert "describe the domains of a --csv" in capsys.readouterr().err


def test_the_derived_scale_is_the_root_mean_square_of_yi_and_sei():
    assert derived_scale(EIGHT_YI, EIGHT_SEI) == pytest.approx(math.sqrt((sum(y * y for y in EIGHT_YI) + sum(s * s for s in EIGHT_SEI)) / 8))
    assert derived_scale(EIGHT_YI, EIGHT_SEI) == pytest.approx(18.3848, abs=1e-4)
    # it reads the size of what is reported, never its sign, and follows the units
    assert derived_scale([-y for y in EIGHT_YI], EIGHT_SEI) == derived_scale(EIGHT_YI, EIGHT_SEI)
    assert derived_scale([y / 100 for y in EIGHT_YI], [s / 100 for s in EIGHT_SEI]) == pytest.approx(derived_scale(EIGHT_YI, EIGHT_SEI) / 100)


# --- eight schools: the default priors do not swamp the data ----------------------------------------


def test_eight_schools_default_model_is_not_pulled_to_zero_exactly(tmp_path, capsys):
    """Under the default model eight schools is the one-level model, which the exact engine computes."""
    assert main(["fit", "--engine", "exact", "--csv", str(EIGHT), "--format", "json", "--out", str(tmp_path)]) == 0
    mu = json.loads(capsys.readouterr().out)["domains"]["all"]["mu"]
    assert 3.5 <= mu["mean"] <= 9
    # with scale 1 (the old silent default) the prior pulled it to 0.44
    table = load_evidence(csv=EIGHT, defaults=DomainDefaults(scale=1.0))
    from metaeval.exact import fit_exact
    from metaeval.spec import load_spec

    spec = load_spec("default")
    assert fit_exact(table, priors=spec.priors).domains["all"].mu.mean < 1


@pytest.mark.mcmc
@pytest.mark.slow
def test_eight_schools_default_model_is_not_pulled_to_zero_by_mcmc(tmp_path, capsys):
    assert main(["fit", "--csv", str(EIGHT), "--format", "json", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["diagnostics"]["passed"]
    assert 3.5 <= summary["domains"]["all"]["mu"]["mean"] <= 9


# --- BCG: lower is better -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bcg_runs(tmp_path_factory):
    """The BCG trials fitted by `metaeval run` with lower beneficial (bias-adjusted default model) and by
    the no-bias model, and once with no direction given."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bcg")
    runs = {}
    for name, extra in (("decrease", ["--beneficial", "decrease"]), ("no_bias", ["--beneficial", "decrease", "--model", "no_bias"]),
                        ("assumed", [])):
        folder = out / name
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(["run", "--csv", str(BCG), "--out", str(folder), "--format", "json", *extra])
        runs[name] = {"rc": rc, "summary": json.loads(stdout.getvalue()), "err": stderr.getvalue(), "out": folder}
    return runs


@pytest.mark.mcmc
def test_bcg_with_lower_beneficial_is_beneficial(bcg_runs):
    run = bcg_runs["decrease"]
    assert run["rc"] == 0, run["err"]
    dom = run["summary"]["domains"]["all"]
    assert dom["beneficial"] == "decrease" and dom["mu"]["mean"] < 0
    assert dom["mu"]["p_beneficial"] > 0.99
    # the trial most likely best is the one whose shrunken effect is most protective (most negative)
    best = max(dom["projects"], key=lambda p: p["p_best"])
    assert best == min(dom["projects"], key=lambda p: p["mean"])


@pytest.mark.mcmc
def test_the_weak_design_adjustment_moves_bcg_towards_the_null(bcg_runs):
    adjusted = bcg_runs["decrease"]["summary"]["domains"]["all"]["mu"]["mean"]
    face_value = bcg_runs["no_bias"]["summary"]["domains"]["all"]["mu"]["mean"]
    assert face_value < adjusted < 0  # discounting the non-randomised trials makes the vaccine look less effective


@pytest.mark.mcmc
def test_without_a_direction_every_output_says_which_was_assumed(bcg_runs):
    run = bcg_runs["assumed"]
    assert run["rc"] == 0, run["err"]
    dom = run["summary"]["domains"]["all"]
    assert set(dom["assumed"]) == {"beneficial", "scale"}
    assert dom["mu"]["p_beneficial"] < 0.01  # lower is better here: read the other way round, and it says so
    assert "direction assumed: an increase is beneficial" in run["err"]
    assert "direction assumed" in (run["out"] / "summary.csv").read_text(encoding="utf-8")
    assert "direction assumed" in (run["out"] / "report.html").read_text(encoding="utf-8")
    for fmt in ("table", "csv", "json"):
        import contextlib
        import io

        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert main(["summary", "--csv", str(BCG), "--out", str(run["out"]), "--format", fmt]) == 0
        assert "direction assumed" in stdout.getvalue(), fmt
    # told the direction, nothing is said to be assumed about it
    told = bcg_runs["decrease"]
    assert "beneficial" not in told["summary"]["domains"]["all"]["assumed"] and "direction assumed" not in told["err"]


# --- the report says what the source said -----------------------------------------------------------


def test_findings_reported_as_a_decrease_read_decrease():
    """VIVE reports fewer GP visits and fewer hospital contacts; the health domain counts lower as better for
    them, so the model takes them as increases on its scale, but the report and the plot say "decrease"."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _report_fixtures import summary_for

    from metaeval.plots import direction_text, forest_rows
    from metaeval.report import render_report

    evidence = load_evidence()
    gp = evidence.set_index("estimate_id").loc["vive_social_support:gp_use"]
    assert (gp["direction"], gp["direction_counted"]) == ("decrease", "increase")
    summary = summary_for(evidence, engine="mcmc")
    # the fixture pools numeric estimates only; give the health domain (direction-only findings) an entry too
    health = summary.domains["employment"].model_copy(update={"id": "health_wellbeing", "label": "Health and wellbeing", "projects": ()})
    summary = summary.model_copy(update={"domains": {**summary.domains, "health_wellbeing": health}})
    rows = [r for r in forest_rows(evidence, summary, "health_wellbeing") if r.get("estimate_id") == "vive_social_support:gp_use"]
    assert [r["direction"] for r in rows] == ["decrease"] and rows[0]["counted"] == "increase"
    assert direction_text(rows[0]).startswith("reported: significant decrease")
    page = render_report(evidence, summary)
    findings = page.split('id="direction-only"')[1]
    row = next(tr for tr in findings.split("<tr>") if "vive_social_support:gp_use" in tr)
    assert "<td>decrease, significant (counted as an increase" in row and "<td>increase, significant" not in row
