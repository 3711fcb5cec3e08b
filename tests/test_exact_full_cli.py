"""The exact engine at the doors: --engine exact|mcmc|auto, the MCMC cross-check, exact sensitivity grids."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from metaeval.cli import main

EIGHT = Path(__file__).parent / "fixtures" / "eight_schools.csv"


def _cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


MINI = Path(__file__).parent / "fixtures" / "mini"


def test_engine_exact_computes_the_chosen_model(tmp_path):
    """--engine exact is the chosen model itself, direction-only findings and all; it samples nothing, so it
    states no seed (not "seed None")."""
    rc, out, err = _cli("fit", "--engine", "exact", "--data", MINI, "--out", tmp_path)
    assert rc == 0, err
    assert "engine: exact (no sampling, no MCMC diagnostics)" in out and "model: default (" in out and "seed" not in out
    rc, out, err = _cli("fit", "--engine", "exact", "--data", MINI, "--format", "json", "--out", tmp_path)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["engine"] == "exact" and doc["model"]["name"] == "default" and doc["diagnostics"] is None
    assert sum(d["n_findings"] for d in doc["domains"].values()) == 1
    assert doc["numerical"]["error_sd_max"] < 0.01
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow
def test_engine_exact_computes_the_bundled_evidence_with_findings_in_several_projects(tmp_path):
    """The bundled evidence has direction-only findings in up to six projects of a domain (the appraisal rules of
    data/README.md): computed exactly on request (metaeval.exact_cells), every finding in, its errors stated."""
    rc, out, err = _cli("fit", "--engine", "exact", "--format", "json", "--out", tmp_path)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["engine"] == "exact" and doc["model"]["name"] == "default"
    assert doc["domains"]["activation"]["n_findings"] == 7 and doc["domains"]["progression"]["n_findings"] == 5
    assert doc["numerical"]["error_sd_max"] < 0.01 and doc["numerical"]["error_p_max"] < 0.01
    assert all(p["hdi_low"] < p["mean"] < p["hdi_high"] for d in doc["domains"].values() for p in d["projects"])


def test_engine_exact_refuses_a_model_without_an_exact_form(tmp_path):
    rc, out, err = _cli("fit", "--engine", "exact", "--model", "design_hierarchy", "--out", tmp_path)
    assert rc == 2 and out == ""
    assert "design_hierarchy" in err and "use --engine mcmc" in err and "Traceback" not in err
    assert not (tmp_path / "summary.json").exists()


def test_engine_auto_is_exact_where_the_model_has_an_exact_form(tmp_path):
    import argparse

    from metaeval.commands import engine_for
    from metaeval.harmonise import evidence_records
    from metaeval.spec import load_spec

    records = evidence_records(MINI)
    auto = argparse.Namespace(engine="auto")
    assert engine_for(auto, records, load_spec("default")) == "exact"
    assert engine_for(auto, records, load_spec("design_hierarchy")) == "mcmc"
    assert engine_for(auto, evidence_records(), load_spec("default")) == "mcmc"  # findings in several projects: seconds, not ms
    assert engine_for(argparse.Namespace(engine="mcmc"), records, load_spec("default")) == "mcmc"
    rc, out, err = _cli("fit", "--engine", "auto", "--csv", EIGHT, "--format", "json", "--out", tmp_path)
    assert rc == 0, err
    assert json.loads(out)["engine"] == "exact"


def test_findings_in_two_projects_are_exact_on_request_and_two_designs_of_one_project_are_refused():
    """Two projects in one domain reported only as direction and significance: exact when asked for, left to MCMC by
    the automatic uses (auto, the cross-check, the robustness variants), said plainly; one project's findings under
    two designs: no exact form."""
    import pandas as pd

    from metaeval.exact_full import exact_reason
    from metaeval.model import prepare
    from metaeval.spec import load_spec

    rows = [
        dict(estimate_id="a", project_id="a", domain="d", design="rct", yi=0.1, sei=0.1, poolable=True),
        dict(estimate_id="b", project_id="b", domain="d", design="rct", yi=None, sei=None, poolable=True,
             direction_only=True, direction="increase", significant=True),
        dict(estimate_id="c", project_id="c", domain="d", design="rct", yi=None, sei=None, poolable=True,
             direction_only=True, direction="decrease", significant=False),
    ]
    spec = load_spec("default")
    layout = prepare(pd.DataFrame(rows), spec)
    assert exact_reason(layout, spec) is None
    assert "2 projects" in exact_reason(layout, spec, several_cells=False) and "--engine exact" in exact_reason(layout, spec, several_cells=False)
    two_designs = rows + [dict(estimate_id="d", project_id="b", domain="d", design="matched_register", yi=None, sei=None, poolable=True,
                               direction_only=True, direction="increase", significant=False)]
    assert "under two designs" in exact_reason(prepare(pd.DataFrame(two_designs), spec), spec)


@pytest.fixture(scope="module")
def mcmc_fit(tmp_path_factory):
    """A short MCMC fit of eight schools under the default model (the one-level model: an exact form)."""
    from metaeval.harmonise import load_evidence
    from metaeval.sampling import SamplerSettings
    from metaeval.spec import load_spec
    from metaeval.summary import fit_and_summarise

    table = load_evidence(csv=EIGHT)
    spec = load_spec("default")
    result, fitted = fit_and_summarise(table, spec, out=tmp_path_factory.mktemp("mcmc"),
                                       settings=SamplerSettings(chains=4, draws=1000, tune=1000, seed=11), progress=False)
    return table, spec, result, fitted


@pytest.mark.mcmc
def test_cross_check_passes_a_sound_fit_and_reports_its_largest_discrepancy(mcmc_fit):
    from metaeval.exact_full import CROSS_CHECK_Z, with_cross_check

    table, spec, result, fitted = mcmc_fit
    checked = with_cross_check(result, fitted.posterior, table, spec)
    check = checked.diagnostics.cross_check
    assert check is not None and check.threshold == CROSS_CHECK_Z
    assert check.passed and check.max_z <= CROSS_CHECK_Z
    assert 0 < check.max_discrepancy_sd < 0.2  # 4,000 draws: Monte Carlo error of a few hundredths of an SD
    assert check.quantity.startswith("all: ")
    assert checked.diagnostics.passed == result.diagnostics.passed
    from metaeval.present import render

    assert f"  against the exact answer: largest difference {check.max_discrepancy_sd:.2g} posterior SDs" in render(checked, "table")


@pytest.mark.mcmc
@pytest.mark.subprocess
def test_cross_check_with_the_exact_moments_computed_meanwhile_in_a_worker_is_the_same(mcmc_fit, monkeypatch):
    """`run` computes the exact side in a worker process while the fit starts (exact_moments_meanwhile): the same
    check as computed here, and a model without an exact form is said the same way."""
    from dataclasses import replace

    import metaeval.executor as executor
    from metaeval.exact_full import exact_moments_meanwhile, with_cross_check

    monkeypatch.setattr(executor, "default_workers", lambda: 2)
    table, spec, result, fitted = mcmc_fit
    with exact_moments_meanwhile(table, spec) as moments:
        assert moments._processes.procs  # in a worker
        assert with_cross_check(result, fitted.posterior, table, spec, moments=moments) == with_cross_check(result, fitted.posterior, table, spec)
    hierarchical = replace(spec, bias_mode="hierarchical")
    with exact_moments_meanwhile(table, hierarchical) as moments:
        skipped = with_cross_check(result, fitted.posterior, table, hierarchical, moments=moments).diagnostics.cross_check_skipped
    assert "hierarchical" in skipped


@pytest.mark.mcmc
def test_cross_check_fails_the_gate_on_a_discrepancy_beyond_monte_carlo_error(mcmc_fit):
    """A result whose pooled mean is off by half a posterior SD (a wrong model or a stuck sampler) fails."""
    from metaeval.exact_full import with_cross_check

    table, spec, result, fitted = mcmc_fit
    dom = result.domain("all")
    shifted = dom.model_copy(update={"mu": dom.mu.model_copy(update={"mean": dom.mu.mean + 0.5 * dom.mu.sd})})
    wrong = result.model_copy(update={"domains": {"all": shifted}})
    checked = with_cross_check(wrong, fitted.posterior, table, spec)
    check = checked.diagnostics.cross_check
    assert not check.passed and check.quantity == "all: mu (posterior mean)"
    assert check.max_discrepancy_sd == pytest.approx(0.5, abs=0.05)
    assert checked.diagnostics.passed is False
    assert any("disagrees with the exact answer" in f and "all: mu" in f for f in checked.diagnostics.failures)


@pytest.mark.mcmc
def test_cross_check_leaves_a_model_without_an_exact_form_alone(mcmc_fit):
    from dataclasses import replace

    from metaeval.exact_full import with_cross_check

    table, spec, result, fitted = mcmc_fit
    hierarchical = replace(spec, bias_mode="hierarchical")
    diagnostics = with_cross_check(result, fitted.posterior, table, hierarchical).diagnostics
    assert diagnostics.cross_check is None and "hierarchical" in diagnostics.cross_check_skipped
    assert diagnostics.passed == result.diagnostics.passed


#: Two domains, five and three projects, randomised and weaker designs (bias terms), no direction-only finding.
FIVE = """study,yi,sei,domain,design,project
a1,0.30,0.10,d,rct,A
b1,0.10,0.12,d,rct,B
c1,0.45,0.08,d,matched_register,C
d1,0.60,0.20,d,before_after,D
e1,0.05,0.15,d,rct,E
a2,0.20,0.10,e,rct,A
c2,0.35,0.09,e,matched_register,C
e2,0.00,0.12,e,rct,E
"""


def _within_monte_carlo_error(got: float, want: float, draws: int) -> bool:
    """A probability estimated from ``draws`` independent draws against its exact value (4.5 standard errors, and
    0.005 for the exact value's own stated error)."""
    return abs(got - want) <= 4.5 * math.sqrt(want * (1 - want) / draws) + 0.005


def test_compare_with_the_exact_engine_ranks_on_exact_draws_and_checks_the_order_against_no_bias(tmp_path):
    """``compare --engine exact`` ranks on independent draws from the exact posterior, computed here (nothing is kept
    in --out) and seeded. Its P(best) and P(A better) are the exact engine's own, the very numbers ``fit --engine
    exact`` prints (they were the draws' count, a point or two away); the no_bias variant's, the order's check, are
    counted in its draws and agree with its exact values within Monte Carlo error; a second call prints the same."""
    csv = tmp_path / "five.csv"
    csv.write_text(FIVE)
    out_dir = tmp_path / "out"
    rc, out, err = _cli("compare", "--engine", "exact", "--csv", csv, "--format", "json", "--out", out_dir)
    assert rc == 0, err
    domains = json.loads(out)["domains"]
    for model, key in (("default", "p_best"), ("no_bias", "p_best_reference")):
        rc, fitted, err = _cli("fit", "--engine", "exact", "--model", model, "--csv", csv, "--format", "json", "--out", tmp_path / model)
        assert rc == 0, err
        for d, dom in json.loads(fitted)["domains"].items():
            ranks = {r["project"]: r[key] for r in domains[d]["ranks"]}
            for p in dom["projects"]:
                if model == "default":
                    assert ranks[p["project"]] == p["p_best"], (d, p["project"])
                else:
                    assert _within_monte_carlo_error(ranks[p["project"]], p["p_best"], domains[d]["n_draws"]), (model, d, p["project"])
            if model == "default":
                assert domains[d]["pairwise"] == dom["pairwise"] and domains[d]["integrated"]
                assert {(x["a"], x["b"]): x["p_a_better"] for x in domains[d]["differences"]} == {
                    (x["a"], x["b"]): dom["pairwise"][x["a"]][x["b"]] for x in domains[d]["differences"]}
    assert not out_dir.exists()
    assert _cli("compare", "--engine", "exact", "--csv", csv, "--format", "json", "--out", out_dir)[1] == out


def test_run_with_the_exact_engine_reports_the_comparison_and_the_plan_from_its_draws(tmp_path):
    """The report of an exact result has the sections that need draws (comparison with its no_bias check, leave-it-out
    shifts, plan) from the exact posterior's draws; the plan's P(beneficial) and interval width of mu agree with the
    exact values."""
    from metaeval.cli import build_parser
    from metaeval.commands import analysis_for, exact_summary, read_evidence
    from metaeval.spec import load_spec
    from metaeval.views import Names
    from metaeval.views_initiatives import comparison_view

    csv = tmp_path / "five.csv"
    csv.write_text(FIVE)
    for source in (["--csv", str(csv)], ["--data", str(MINI)]):
        args = build_parser().parse_args(["report", "--engine", "exact", *source, "--out", str(tmp_path / "out")])
        evidence = read_evidence(args, say=False)
        summary = exact_summary(args, evidence, load_spec("default"))
        analysis = analysis_for(args, evidence, summary)
        assert analysis.comparison is not None
        view = comparison_view(analysis, Names(evidence.to_dict("records"), summary))  # the page says where its numbers come from
        compared = bool(analysis.comparison.domains)  # the mini evidence has one project a domain: nothing compared
        assert view["integrated"] == compared and view["n_draws"] == (4000 if compared else None) and (compared or source[0] == "--data")
        for d, dc in analysis.comparison.domains.items():  # the comparison's P(best) is the outcome section's
            assert {r.project: r.p_best for r in dc.ranks} == {p.project: p.p_best for p in summary.domains[d].projects}
        if source[0] == "--csv":  # no finding: nothing missing, the no_bias check included (its exact form is fast here)
            assert analysis.missing == {} and analysis.comparison.reference == "no_bias"
            assert any(e.shift is not None for profile in analysis.profiles.profiles for e in profile.effects)
        else:  # a metric with a group SD: a plan for each domain
            assert set(analysis.plan.domains) == set(summary.domains)
            for d, plan in analysis.plan.domains.items():
                mu = summary.domains[d].mu
                assert _within_monte_carlo_error(plan.p_beneficial, mu.p_beneficial, 4000)
                assert plan.width == pytest.approx(mu.hdi_high - mu.hdi_low, rel=0.1)


def test_a_report_with_nothing_to_plan_says_why_without_an_empty_table(tmp_path):
    """A metric without a group SD cannot be planned for: the plan section says so for each domain, with no table."""
    csv = tmp_path / "five.csv"
    csv.write_text(FIVE)
    rc, out, err = _cli("run", "--engine", "exact", "--csv", csv, "--out", tmp_path / "out")
    assert rc == 0, err
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    plan = page[page.index('id="plan"'):page.index("<section>", page.index('id="plan"'))]
    assert "Not planned: d: no group SD is reported" in plan and "<table" not in plan


def test_exact_draws_after_an_exact_result_reuse_its_block_posteriors(monkeypatch):
    """The report's draws come from the block posteriors its exact result computed and kept in this process, not a
    second integration (on the bundled evidence 10 CPU-seconds); a result computed without draws to follow (a
    robustness variant, a sensitivity scenario: nothing draws from those) leaves nothing behind."""
    import metaeval.exact_full as exact_full
    from metaeval.harmonise import load_evidence
    from metaeval.spec import load_spec

    computed = []
    real = exact_full.block_posterior
    monkeypatch.setattr(exact_full, "block_posterior", lambda block: computed.append(block) or real(block))
    evidence, spec = load_evidence(csv=EIGHT), load_spec("default")
    for draws, again in (((4000, 3), 0), (None, 1)):
        for kept in (exact_full._POSTERIORS, exact_full._RESULTS, exact_full._DRAWS):
            kept.clear()
        exact_full.fit_exact_model(evidence, spec, draws=draws)
        first = len(computed)
        tree = exact_full.exact_draws(evidence, spec, seed=3)
        assert len(computed) - first == again, draws
    assert tree["posterior"]["mu"].shape == (1, 4000, 1)


def test_a_project_whose_findings_se_the_exact_engine_integrates_out_has_no_shift_and_the_report_says_why():
    """A project's leave-it-out shift reweights the drawn SEs of its direction-only findings; the exact engine
    integrates them out, so from its draws such a project has no shift (shown as "–", and the report says why),
    while the other projects of its domain have theirs."""
    from _model_fixtures import bundled_like

    from metaeval.analysis import analyse
    from metaeval.exact_full import exact_draws, fit_exact_model
    from metaeval.influence import SE_NOT_DRAWN
    from metaeval.model import prepare
    from metaeval.spec import load_spec
    from metaeval.views_initiatives import _shift_text

    evidence, spec = bundled_like(), load_spec("default")
    layout = prepare(evidence, spec)
    with_findings = {(f["domain"], f["project"]) for f in layout.findings}
    analysis = analyse(evidence, fit_exact_model(evidence, spec), source=exact_draws(evidence, spec))
    shifts = {(e.domain, profile.project): e.shift for profile in analysis.profiles.profiles for e in profile.effects if e.shift}
    shared = [(d, p) for d, p in with_findings if sum(1 for other in shifts if other[0] == d) > 1]
    assert shared
    for d, p in shared:
        assert shifts[(d, p)].shift is None and shifts[(d, p)].note == SE_NOT_DRAWN and _shift_text(shifts[(d, p)], None) == "–"
        assert any(s.shift is not None for (d2, p2), s in shifts.items() if d2 == d and p2 != p)
    assert analysis.missing["shifts"].startswith("No leave-it-out shift for a project with direction-only findings")


@pytest.mark.mcmc
def test_cross_check_not_computed_is_said_in_the_report(mcmc_fit):
    """A prior beyond what the exact engine integrates in double precision: run's cross-check leaves the fit as it
    is (the MCMC result stands) and the report's diagnostics say why beside the gate."""
    from metaeval.exact_full import with_cross_check
    from metaeval.present import render
    from metaeval.spec import load_spec
    from metaeval.views_fit import diagnostics

    table, _, result, fitted = mcmc_fit
    checked = with_cross_check(result, fitted.posterior, table, load_spec("default", ["mu=normal(0,1e14)"]))
    assert checked.diagnostics.cross_check is None and checked.diagnostics.passed == result.diagnostics.passed
    why = checked.diagnostics.cross_check_skipped
    assert why.startswith("the exact engine cannot integrate this evidence in double precision: domain 'all'") and "1e+14" in why
    row = diagnostics(checked)["rows"][-1]
    assert row["check"] == "against the exact answer" and row["value"] == f"not computed: {why}"
    assert not row["numeric"]  # prose, not set as a number (right-aligned, tabular figures)
    assert f"  against the exact answer: not computed: {why}" in render(checked, "table")


@pytest.mark.mcmc
def test_a_fit_never_checked_says_so_where_the_check_would_stand(mcmc_fit):
    """`fit` does not check against the exact answer (`run` does): its report and text output say that, rather than
    leave the row out."""
    from metaeval.present import render
    from metaeval.views_fit import diagnostics

    _, _, result, _ = mcmc_fit  # fitted without the cross-check, as `fit` does
    assert result.diagnostics.cross_check is None and result.diagnostics.cross_check_skipped is None
    row = diagnostics(result)["rows"][-1]
    assert row["check"] == "against the exact answer" and row["value"].startswith("not computed: not asked for this fit (`metaeval run`")
    assert "  against the exact answer: not computed: not asked for this fit" in render(result, "table")


def test_sensitivity_grid_with_the_exact_engine(monkeypatch):
    """Every scenario with an exact form is integrated; design_hierarchy fails, saying why; no power-scaling."""
    from _model_fixtures import bundled_like

    from metaeval.sensitivity import load_grid, run_sensitivity

    result = run_sensitivity(grid=load_grid("sensitivity"), evidence=bundled_like(), engine="exact", workers=1)  # in this process
    by_name = {s["name"]: r for s, r in zip(result.scenarios, result.results)}
    assert not by_name["bias=design_hierarchy"]["ok"] and "hierarchical" in by_name["bias=design_hierarchy"]["error"]
    assert all(r["ok"] for name, r in by_name.items() if name != "bias=design_hierarchy")
    assert result.loo and all(item["ok"] for item in result.loo)
    assert result.power_scaling is None
    assert by_name["baseline"]["value"]["gate_passed"] is None  # nothing sampled, nothing to gate
    # each specification curve reads its domain's metric on the effect axis
    import matplotlib.pyplot as plt

    import metaeval.sensitivity_outputs as outputs

    drawn, real = {}, outputs.spec_curve
    monkeypatch.setattr(outputs, "spec_curve", lambda table, d, **kw: drawn.setdefault(d, real(table, d, **kw)))
    outputs.spec_curves(result)
    metric = {d: v["metric"] for d, v in by_name["baseline"]["value"]["domains"].items()}
    table = result.table().dropna(subset=["domain"])  # the table (sensitivity.csv) says each domain's metric too
    assert len(set(metric.values())) > 1 and table["metric"].tolist() == [metric[d] for d in table["domain"]]
    assert drawn and all(fig.axes[0].get_ylabel().startswith(f"pooled effect μ ({metric[d]})") for d, fig in drawn.items())
    for fig in drawn.values():
        plt.close(fig)
    # leaving out a project changes only the domains it is in
    for item in result.loo:
        for d, dom in item["value"]["domains"].items():
            if item["project"] not in by_name["baseline"]["value"]["domains"][d]["projects"]:
                assert dom == by_name["baseline"]["value"]["domains"][d], (item["project"], d)


def test_the_sensitivity_table_says_a_scenario_it_could_not_compute_below_it(tmp_path):
    """A scenario without an exact form is one sentence under the table (exit 1), not an error column that widened
    every row of it; each row says its domain's metric."""
    rc, out, err = _cli("sensitivity", "--engine", "exact", "--bias", "design_hierarchy", "--tau", "--inclusion", "--estimand",
                        "--direction-only", "--no-loo", "--no-power-scaling", "--no-report", "--scheduler", "serial", "--out", tmp_path)
    assert rc == 1, err
    table, below = out.split("\nnot computed:\n")
    header, *rows = table.strip().splitlines()
    assert header.split()[:3] == ["scenario", "domain", "metric"] and "error" not in header
    assert rows and all(len(row) <= len(header) for row in rows) and "NoExactForm" not in table
    assert below.startswith("  bias=design_hierarchy: NoExactForm: model 'design_hierarchy' learns a design-bias level")


def test_exact_sensitivity_files_hold_the_report_s_figures(tmp_path):
    """Each specification curve is drawn once: its PNG file is the figure the report embeds, byte for byte, and
    carries no matplotlib version (the same file from every version)."""
    import base64
    import re

    rc, _, err = _cli("sensitivity", "--engine", "exact", "--csv", EIGHT, "--out", tmp_path, "--tau", "halfnormal(1)",
                      "--bias", "--inclusion", "--estimand", "--direction-only", "--no-loo", "--no-power-scaling", "--workers", "1")
    assert rc == 0, err
    folder = tmp_path / "sensitivity"
    curves = sorted(folder.glob("spec_curve_*.png"))
    embedded = {base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', (folder / "report.html").read_text())}
    assert curves and all(path.read_bytes() in embedded for path in curves)
    assert not any(b"matplotlib" in path.read_bytes() for path in curves)


@pytest.mark.subprocess
def test_exact_grid_in_worker_processes_gives_what_the_serial_scheduler_gives_here(tmp_path, monkeypatch):
    """No scheduler named: the domains are integrated in worker processes; --scheduler serial: all in this process
    (none started). The same numbers either way."""
    import metaeval.exact_full as exact_full
    import metaeval.executor as executor

    started = []

    class Counted(executor.Processes):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(len(self.procs))

    monkeypatch.setattr(executor, "Processes", Counted)
    grid = ("--tau", "halfnormal(1)", "halfnormal(0.2)", "--bias", "no_bias", "--inclusion", "--estimand", "--direction-only",
            "--no-power-scaling", "--no-report", "--workers", "2")
    saved = {}
    for how in ((), ("--scheduler", "serial")):
        started.clear()
        exact_full._AVERAGES.clear()  # each way computes its own
        rc, _, err = _cli("sensitivity", "--engine", "exact", "--csv", EIGHT, "--out", tmp_path / (how[-1] if how else "workers"), *grid, *how)
        assert rc == 0, err
        assert started == ([] if how else [2])
        saved[how] = json.loads((tmp_path / (how[-1] if how else "workers") / "sensitivity" / "sensitivity.json").read_text())
    values = [[r["value"] for r in s["results"] + s["loo"]] for s in saved.values()]
    assert values[0] == values[1] and len(values[0]) > 4


@pytest.mark.subprocess
def test_a_fit_of_domains_with_findings_in_several_projects_is_the_same_in_worker_processes(monkeypatch):
    """summarise_exact integrates such domains side by side in worker processes (the bundled evidence: activation,
    employment, ...); the result is the one this process computes alone, and so are the draws that follow it (`run`,
    `report`: drawn in the workers, each domain from a random stream of its own)."""
    import numpy as np

    import metaeval
    import metaeval.exact_full as exact_full
    import metaeval.executor as executor
    from metaeval.harmonise import load_evidence

    evidence, spec = load_evidence(), metaeval.load_spec("default", ["tau=halfnormal(0.25)"])  # computed by no other test
    sent = []
    real = executor.in_processes
    monkeypatch.setattr(executor, "in_processes", lambda fn, items, workers=None, **kw: sent.append(len(items)) or real(fn, items, workers, **kw))
    here = exact_full.fit_exact_model(evidence, spec, workers=1, draws=(500, 7))
    drawn_here = exact_full.exact_draws(evidence, spec, draws=500, seed=7)["posterior"]
    assert sent == []
    for kept in (exact_full._POSTERIORS, exact_full._RESULTS, exact_full._DRAWS):
        kept.clear()
    computed = []
    monkeypatch.setattr(exact_full, "block_posterior", lambda block: computed.append(block))
    elsewhere = exact_full.fit_exact_model(evidence, spec, workers=2, draws=(500, 7))
    drawn_elsewhere = exact_full.exact_draws(evidence, spec, draws=500, seed=7)["posterior"]
    assert sent == [len(elsewhere.domains)] and elsewhere == here
    assert computed == []  # result and draws both made in the workers
    for name in ("mu", "tau", "omega", "theta_project", "bias"):
        np.testing.assert_array_equal(drawn_elsewhere[name].values, drawn_here[name].values)
