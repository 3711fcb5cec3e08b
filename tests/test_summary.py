"""Summaries from a posterior with known draws (no sampling): checked against analytic values."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _model_fixtures import csv_like
from scipy import stats

from metaeval.model import prepare
from metaeval.present import render, summary_csv, summary_table
from metaeval.sampling import SamplerSettings, annotate, diagnose
from metaeval.spec import load_spec
from metaeval.summary import summarise

CHAINS, DRAWS = 4, 2500
TAU_JOBS = 0.5


def _evidence() -> pd.DataFrame:
    jobs = csv_like([0.5, 0.2, 0.9], [0.3, 0.2, 0.4], studies=["a", "b", "c"], domain="jobs")
    jobs["design"] = ["rct", "unspecified", "before_after"]
    jobs["domain_mid"] = 0.1
    absence = csv_like([-0.4, -0.1], [0.2, 0.3], studies=["p", "q"], domain="absence")
    absence["domain_beneficial"] = "decrease"
    single = csv_like([0.1], [0.1], studies=["solo"], domain="grades")
    return pd.concat([jobs, absence, single], ignore_index=True)


def _posterior(divergences: int = 0, seed: int = 0):
    """A posterior whose draws we know: mu ~ N(0.3, 0.2) (jobs), N(-0.5, 0.25) (absence), N(0, 0.1) (grades)."""
    spec = load_spec("default")
    layout = prepare(_evidence(), spec)
    rng = np.random.default_rng(seed)
    domains = [d["id"] for d in layout.domains]
    assert domains == ["absence", "grades", "jobs"]
    mu = np.stack([rng.normal(-0.5, 0.25, (CHAINS, DRAWS)), rng.normal(0.0, 0.1, (CHAINS, DRAWS)), rng.normal(0.3, 0.2, (CHAINS, DRAWS))], axis=-1)
    tau = np.stack([np.abs(rng.normal(0, 0.3, (CHAINS, DRAWS))), np.abs(rng.normal(0, 0.2, (CHAINS, DRAWS))), np.full((CHAINS, DRAWS), TAU_JOBS)], axis=-1)
    offsets = {"absence/p": -1.0, "absence/q": 0.0, "grades/solo": 0.0, "jobs/a": 1.0, "jobs/b": 0.0, "jobs/c": -1.0}
    labels = [p["label"] for p in layout.projects]
    theta = np.stack([mu[..., domains.index(lab.split("/")[0])] + offsets[lab] + rng.normal(0, 0.05, (CHAINS, DRAWS)) for lab in labels], axis=-1)
    bias_labels = [t["label"] for t in layout.bias_terms]
    assert bias_labels == ["jobs/c"]
    bias = rng.normal(0.2, 0.1, (CHAINS, DRAWS, 1))
    coords = {"chain": np.arange(CHAINS), "draw": np.arange(DRAWS)}
    post = xr.Dataset(
        {
            "mu": (("chain", "draw", "domain"), mu),
            "tau": (("chain", "draw", "domain"), tau),
            "theta_project": (("chain", "draw", "project"), theta),
            "bias": (("chain", "draw", "bias_term"), bias),
        },
        coords={**coords, "domain": domains, "project": labels, "bias_term": bias_labels},
    )
    diverging = np.zeros((CHAINS, DRAWS), dtype=bool)
    diverging.flat[:divergences] = True
    stats_ = xr.Dataset({"diverging": (("chain", "draw"), diverging)}, coords=coords)
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats_})
    return annotate(tree, layout, spec, SamplerSettings(seed=7).resolved(spec, layout)), layout, spec


@pytest.fixture(scope="module")
def summary():
    return summarise(_posterior()[0])


def _mc(p: float, n: int = CHAINS * DRAWS) -> float:
    return 5 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_the_result_holds_what_the_posterior_says(summary):
    assert summary.engine == "mcmc" and summary.seed == 7 and summary.diagnostics is not None
    for dom in summary.domains.values():
        assert dom.tau.p_beneficial is None and dom.theta_new.p_mid is None  # only where they mean something
        assert dom.omega is None  # no project reports two estimates in a domain here
    jobs = summary.domains["jobs"]
    assert [p.project for p in jobs.projects] == ["a", "b", "c"]
    assert jobs.designs == {"before_after": 1, "rct": 1, "unspecified": 1}
    assert jobs.priors["tau"] == "halfnormal(0.4)" and summary.model.sampler.seed == 7


def test_mu_against_the_normal_it_was_drawn_from(summary):
    mu = summary.domains["jobs"].mu
    assert mu.mean == pytest.approx(0.3, abs=0.01)
    assert mu.sd == pytest.approx(0.2, rel=0.03)
    assert mu.hdi_low == pytest.approx(0.3 - 1.96 * 0.2, abs=0.02)
    assert mu.hdi_high == pytest.approx(0.3 + 1.96 * 0.2, abs=0.02)
    assert mu.hdi_prob == 0.95
    assert mu.p_beneficial == pytest.approx(stats.norm.cdf(0.3 / 0.2), abs=_mc(0.93))
    assert mu.p_mid == pytest.approx(stats.norm.cdf((0.3 - 0.1) / 0.2), abs=_mc(0.84))


def test_beneficial_direction_is_respected_where_a_decrease_helps(summary):
    absence = summary.domains["absence"]
    assert absence.mu.p_beneficial == pytest.approx(stats.norm.cdf(0.5 / 0.25), abs=_mc(0.98))
    assert absence.mu.p_mid is None  # no MID in this domain
    # p's effect is 1 lower than q's: lower is better here, so p is the best and beats q
    assert {p.project: p.p_best for p in absence.projects} == {"p": 1.0, "q": 0.0}
    assert absence.pairwise == {"p": {"q": 1.0}, "q": {"p": 0.0}}


def test_ranks_and_pairwise_in_an_increase_domain(summary):
    jobs = summary.domains["jobs"]
    assert {p.project: p.p_best for p in jobs.projects} == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert jobs.pairwise["a"] == {"b": 1.0, "c": 1.0}
    assert jobs.pairwise["c"] == {"a": 0.0, "b": 0.0}
    assert summary.domains["grades"].pairwise == {}
    assert summary.domains["grades"].project("solo").p_best == 1.0


def test_predictive_effect_of_a_new_project(summary):
    new = summary.domains["jobs"].theta_new
    assert new.mean == pytest.approx(0.3, abs=0.02)
    assert new.sd == pytest.approx(math.sqrt(0.2**2 + TAU_JOBS**2), rel=0.03)
    assert new.p_beneficial == pytest.approx(stats.norm.cdf(0.3 / math.sqrt(0.2**2 + TAU_JOBS**2)), abs=_mc(0.7))


def test_pooling_factors_with_a_known_tau(summary):
    spec = load_spec("default")
    jobs = summary.domains["jobs"]
    assert jobs.project("a").pooling == pytest.approx(0.3**2 / (0.3**2 + TAU_JOBS**2), rel=1e-5)
    assert jobs.project("b").pooling == pytest.approx(0.2**2 / (0.2**2 + TAU_JOBS**2), rel=1e-5)
    sd_bias = spec.bias_designs["before_after"].params[1] * 1.0  # domain scale 1
    v = 0.4**2 + sd_bias**2
    assert jobs.project("c").pooling == pytest.approx(v / (v + TAU_JOBS**2), rel=1e-5)
    assert jobs.project("c").bias.mean == pytest.approx(0.2, abs=0.01)
    assert jobs.project("a").raw == 0.5 and jobs.project("a").raw_se == 0.3


def test_pooling_counts_omega_where_a_project_has_several_estimates():
    """Pooling is the weight on mu in E[theta_p | y_p, mu, tau, omega]: checked by Gaussian conditioning
    with matrix algebra, draw by draw (cov(y_p) = tau^2 11' + diag(sei^2 + omega^2))."""
    evidence = csv_like([0.4, 0.1, 0.3], [0.2, 0.3, 0.25], studies=["a1", "a2", "b"], domain="jobs")
    evidence["project_id"] = ["a", "a", "b"]
    spec = load_spec("default")
    layout = prepare(evidence, spec)
    assert layout.omega_domains == ["jobs"]
    rng = np.random.default_rng(3)
    shape = (2, 300)
    tau, omega = np.abs(rng.normal(0, 0.3, shape)), np.abs(rng.normal(0, 0.4, shape))
    coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
    post = xr.Dataset(
        {"mu": (("chain", "draw", "domain"), rng.normal(0.2, 0.1, (*shape, 1))),
         "tau": (("chain", "draw", "domain"), tau[..., None]),
         "omega": (("chain", "draw", "omega_domain"), omega[..., None]),
         "theta_project": (("chain", "draw", "project"), rng.normal(0.2, 0.1, (*shape, 2)))},
        coords={**coords, "domain": ["jobs"], "omega_domain": ["jobs"], "project": [p["label"] for p in layout.projects]},
    )
    stats_ = xr.Dataset({"diverging": (("chain", "draw"), np.zeros(shape, bool))}, coords=coords)
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats_})
    jobs = summarise(annotate(tree, layout, spec, SamplerSettings())).domains["jobs"]

    def weight_on_mu(sei, t, o):
        cov = t**2 * np.ones((len(sei), len(sei))) + np.diag(np.square(sei) + o**2)
        return 1 - t**2 * np.ones(len(sei)) @ np.linalg.solve(cov, np.ones(len(sei)))

    a = [weight_on_mu([0.2, 0.3], t, o) for t, o in zip(tau.ravel(), omega.ravel())]
    assert jobs.project("a").pooling == pytest.approx(np.mean(a), rel=1e-4)  # the summary keeps 6 significant digits
    # one estimate: no omega in its likelihood
    assert jobs.project("b").pooling == pytest.approx(np.mean(0.25**2 / (0.25**2 + tau**2)), rel=1e-4)
    without_omega = np.mean([weight_on_mu([0.2, 0.3], t, 0.0) for t in tau.ravel()])
    assert jobs.project("a").pooling > without_omega + 0.05  # omega makes the project's own data count for less
    assert jobs.omega is not None and jobs.omega.mean == pytest.approx(float(omega.mean()), rel=1e-5)


def test_single_project_domain_says_tau_is_its_prior(summary):
    notes = " ".join(summary.domains["grades"].notes)
    assert "tau's posterior equals its prior" in notes
    assert not any("tau's posterior" in n for n in summary.domains["jobs"].notes)
    # the prior's influence: posterior SD over prior SD (HalfNormal(0.4): SD 0.4 * sqrt(1 - 2/pi))
    tau_sd = summary.domains["grades"].tau.sd
    assert summary.domains["grades"].prior_influence.tau == pytest.approx(tau_sd / (0.4 * math.sqrt(1 - 2 / math.pi)), rel=1e-5)


def test_json_is_canonical_and_byte_identical():
    tree = _posterior()[0]
    first, second = summarise(tree).to_json(), summarise(tree).to_json()
    assert first == second
    data = json.loads(first)
    assert first == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert "NaN" not in first and "Infinity" not in first

    def floats(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from floats(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from floats(v)
        elif isinstance(obj, float):
            yield obj

    assert all(len(f"{x:.15g}".lstrip("-").replace(".", "").lstrip("0").split("e")[0]) <= 6 for x in floats(data))


def test_theta_new_depends_on_the_seed_only():
    tree, layout, spec = _posterior()
    a = summarise(tree).domains["jobs"].theta_new
    tree.attrs["metaeval_seed"] = 8
    b = summarise(tree).domains["jobs"].theta_new
    assert a != b and a.mean == pytest.approx(b.mean, abs=0.03)


def test_diagnostics_gate_fails_plainly_on_divergences():
    tree = _posterior(divergences=3)[0]
    summary = summarise(tree)
    assert summary.diagnostics.divergences == 3 and summary.diagnostics.passed is False
    table = summary_table(summary)
    assert "diagnostics gate FAILED" in table and "3 divergent transition(s)" in table


def test_gate_names_the_worst_variable():
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(4, 500, 2))
    draws[0, :, 1] += 3.0  # one chain elsewhere for the second element
    post = xr.Dataset({"tau": (("chain", "draw", "domain"), draws)}, coords={"domain": ["ok", "stuck"]})
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), np.zeros((4, 500), bool))})})
    result = diagnose(tree)
    assert not result["passed"]
    assert result["rhat_max"] > 1.1
    assert any("tau[stuck]" in f for f in result["failures"])
    iid = xr.DataTree.from_dict({"posterior": xr.Dataset({"tau": (("chain", "draw"), rng.normal(size=(4, 1000)))}),
                                 "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), np.zeros((4, 1000), bool))})})
    assert diagnose(iid)["passed"]


def test_csv_and_table_renderings(summary):
    frame = pd.read_csv(io.StringIO(summary_csv(summary)))
    assert len(frame) == 3 * 3 + 6  # mu, tau, theta_new per domain, plus one row per project
    row = frame[(frame.domain == "jobs") & (frame.quantity == "mu")].iloc[0]
    assert row["mean"] == summary.domains["jobs"].mu.mean
    # written without pandas, read back by pandas: the same long table as Result.to_frame (missing cells empty)
    pd.testing.assert_frame_equal(frame, summary.to_frame().replace({None: np.nan}).infer_objects(), check_dtype=False)
    table = render(summary, "table")
    for domain in ("jobs", "absence", "grades"):
        assert f"{domain}:" in table
    assert "rests on 3 project(s)" in table
    assert render(summary, "json") == summary.to_json()


def test_csv_defuses_formula_like_names():
    evidence = csv_like([0.1, 0.2], [0.1, 0.1], studies=["=HYPERLINK(1)", "b"], domain="all")
    spec = load_spec("default")
    layout = prepare(evidence, spec)
    rng = np.random.default_rng(0)
    post = xr.Dataset(
        {"mu": (("chain", "draw", "domain"), rng.normal(size=(2, 100, 1))),
         "tau": (("chain", "draw", "domain"), np.abs(rng.normal(size=(2, 100, 1)))),
         "theta_project": (("chain", "draw", "project"), rng.normal(size=(2, 100, 2)))},
        coords={"domain": ["all"], "project": [p["label"] for p in layout.projects]},
    )
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), np.zeros((2, 100), bool))})})
    text = summary_csv(summarise(annotate(tree, layout, spec, SamplerSettings())))
    assert "'=HYPERLINK(1)" in text and "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
