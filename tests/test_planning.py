"""Planning the next evaluation (metaeval.plan): the preposterior simulation against closed forms and exact integration.

- One-level model with known tau: the posterior of mu is N(m, v) and a new study with SE s makes it
  N(m', v') with v' = 1 / (1/v + 1/(tau² + s²)) whatever it finds. The reweighted draws must
  reproduce sqrt(v') study by study, and the expected interval width 2 z sqrt(v'); on exact
  normal draws and on a real MCMC fit.
- Unknown tau: the updated posterior after a simulated study, by reweighting draws of the exact
  posterior, against the exact engine refitted with that study added (numerical integration).
- The expected width falls with n; the numbers are reproducible; bad options are refused.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _initiative_fixtures import TAU, known_tau_posterior, known_tau_posterior_exact  # noqa: E402

from metaeval.draws import DomainDraws  # noqa: E402
from metaeval.errors import InputError  # noqa: E402
from metaeval.planning import (  # noqa: E402
    RESULTS_PER_SE,
    normal_preposterior,
    outcome_sd,
    plan,
    preposterior,
    result_grid,
    study_weights,
    weighted_hdi,
)

Z95 = stats.norm.ppf(0.975)


def _domain(mu, tau, metric="smd", beneficial="increase", domain="d") -> DomainDraws:
    mu = np.asarray(mu, dtype=float).reshape(4, -1)
    tau = np.broadcast_to(np.asarray(tau, dtype=float), mu.size).reshape(4, -1).copy()
    return DomainDraws(domain=domain, label=domain.upper(), metric=metric, beneficial=beneficial, mid=0.1, scale=0.5, hdi_prob=0.95,
                       projects=(), designs=(), mu=mu, tau=tau, theta=np.zeros((0, *mu.shape)))


def _weighted_sd(x, w):
    m = w @ x
    return np.sqrt(w @ (x - m) ** 2)


def test_weighted_hdi_is_the_shortest_window():
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, size=800)
    w = rng.random((3, 800))
    low, high = weighted_hdi(x, w, 0.9)
    order = np.argsort(x)
    for r in range(3):
        xs, c = x[order], np.cumsum(w[r, order] / w[r].sum())
        best = min((xs[j] - xs[i], xs[i], xs[j]) for i in range(800) for j in range(i, 800)
                   if c[j] - (c[i - 1] if i else 0.0) >= 0.9 - 1e-12)
        assert (low[r], high[r]) == (best[1], best[2])


def test_known_tau_reweighting_reproduces_the_closed_form_posterior_sd():
    """mu ~ N(m, v) exactly, tau known: every simulated study leaves SD sqrt(1/(1/v + 1/(tau² + s²)))."""
    m, v, tau = 0.18, 0.03, 0.2
    rng = np.random.default_rng(4)
    mu = m + math.sqrt(v) * rng.standard_normal(40_000)
    taus = np.full_like(mu, tau)
    for se in (0.4, 0.2, 0.1, 0.05):
        want = math.sqrt(1.0 / (1.0 / v + 1.0 / (tau**2 + se**2)))
        y = m + math.sqrt(v + tau**2 + se**2) * rng.standard_normal(30)  # studies from the prior predictive
        w = study_weights(mu, taus, y, se)
        got = np.array([_weighted_sd(mu, row) for row in w])
        assert np.all(np.abs(got / want - 1) < 0.03), (se, got / want)
        width, _ = normal_preposterior(m, v, tau, se, sign=1.0, prob=0.95, p_now=0.85)
        assert width == pytest.approx(2 * Z95 * want, rel=1e-12)


def test_known_tau_plan_matches_the_closed_form_in_width_and_verdict_changes():
    m, v, tau = 0.18, 0.03, 0.2
    rng = np.random.default_rng(8)
    mu = m + math.sqrt(v) * rng.standard_normal(8000)
    result = plan({"d": _domain(mu, tau)}, se=[0.3, 0.1, 0.05], sims=2000, seed=3).domains["d"]
    p_now = float(np.mean(mu > 0))
    for point in result.points:
        want_width, want_change = normal_preposterior(m, v, tau, point.se, sign=1.0, prob=0.95, p_now=p_now)
        assert point.expected_width == pytest.approx(want_width, rel=0.02)
        assert abs(point.p_change - want_change) < 4 * math.sqrt(want_change * (1 - want_change) / 2000) + 0.01
        assert point.closed_form.expected_width == pytest.approx(want_width, rel=0.01)  # tau's median is tau


def test_closed_form_change_probability_against_direct_integration():
    """normal_preposterior's P(change) = P(the class of Φ(m'/sqrt(v')) differs), m' ~ N(m, v − v'): by simulation of m'."""
    from metaeval import words

    rng = np.random.default_rng(9)
    for m, v, tau, se in ((0.18, 0.03, 0.2, 0.1), (-0.05, 0.01, 0.05, 0.2), (0.4, 0.02, 0.1, 0.05)):
        p_now = stats.norm.cdf(m / math.sqrt(v))
        _, got = normal_preposterior(m, v, tau, se, sign=1.0, prob=0.95, p_now=p_now)
        v_new = 1 / (1 / v + 1 / (tau**2 + se**2))
        m_new = m + math.sqrt(v - v_new) * rng.standard_normal(200_000)
        now = words.verdict(p_now)[0]
        changed = np.mean([words.verdict(p)[0] != now for p in stats.norm.cdf(m_new / math.sqrt(v_new))])
        assert got == pytest.approx(changed, abs=0.005)


def _exact_draws(rng, size=4000):
    from metaeval.exact import exact_posterior
    from metaeval.priors import parse_prior

    yi, sei = np.array([0.07, 0.53, 0.17]), np.array([0.056, 0.25, 0.12])
    priors = {"tau_prior": parse_prior("halfnormal(0.2)"), "mu_prior": parse_prior("normal(0, 0.5)")}
    post = exact_posterior(yi, sei, **priors)
    k = rng.choice(post.tau.size, size=size, p=post.weight / post.weight.sum())
    return yi, sei, priors, post.mu_mean[k] + np.sqrt(post.mu_var[k]) * rng.standard_normal(size), post.tau[k]


def test_unknown_tau_reweighting_against_exact_integration():
    """Draws of the exact one-level posterior, reweighted by a new study, against the exact engine refitted with it.

    Measured when written (40 studies per SE, 4000 draws): relative error of the SD of mu 2% rms, for SEs from twice
    to a fifth of the most precise study's; P(beneficial) within its Monte Carlo error (sqrt(p(1 − p) / ESS))."""
    from metaeval.exact import exact_posterior

    rng = np.random.default_rng(12)
    yi, sei, priors, mu, tau = _exact_draws(rng)
    for se in (0.1, 0.05, 0.025):
        errors_sd, errors_p = [], []
        for _ in range(12):
            i = rng.integers(mu.size)
            y = mu[i] + tau[i] * rng.standard_normal() + se * rng.standard_normal()
            w = study_weights(mu, tau, np.array([y]), se)[0]
            exact = exact_posterior(np.append(yi, y), np.append(sei, se), **priors).summary()["mu"]
            errors_sd.append(_weighted_sd(mu, w) / exact["sd"] - 1)
            p, ess = exact["p_beneficial"], 1 / np.sum(w**2)
            errors_p.append(abs(w @ (mu > 0) - p) / (math.sqrt(p * (1 - p) / ess) + 1e-3))
        assert np.sqrt(np.mean(np.square(errors_sd))) < 0.05, (se, errors_sd)
        assert np.max(errors_p) < 4, (se, errors_p)  # in Monte Carlo SEs


def test_expected_width_falls_with_n_and_is_reproducible():
    rng = np.random.default_rng(13)
    _, _, _, mu, tau = _exact_draws(rng)
    draws = {"d": _domain(mu, tau), "e": _domain(-mu, tau, domain="e")}
    n = (25, 50, 100, 200, 400, 800, 1600)
    first = plan(draws, n=n, sims=300, seed=1)
    for dp in first.domains.values():
        widths = [p.expected_width for p in dp.points]
        assert all(a > b for a, b in zip(widths, widths[1:])), widths
        assert all(p.expected_width < dp.width for p in dp.points)
        assert [p.n for p in dp.points] == list(n) and dp.points[0].se == pytest.approx(math.sqrt(2 / 25), rel=1e-5)
        assert all(0 <= p.p_change <= 1 and sum(p.verdicts.values()) == pytest.approx(1, abs=1e-5) for p in dp.points)
    assert plan(draws, n=n, sims=300, seed=1).to_json() == first.to_json()
    alone = plan({"d": draws["d"]}, n=n, sims=300, seed=1)
    assert alone.domains["d"] == first.domains["d"]  # a domain's numbers do not depend on which others are planned
    assert first.most_changed()[0] in ("d", "e")


def test_outcome_sd_from_the_metric_and_the_evidence():
    d = _domain(np.zeros(8), 1.0, metric="pp", domain="x")
    rows = [{"domain": "x", "poolable": True, "yi": 1.0, "metric": "pp", "mean_control": 20.0},
            {"domain": "x", "poolable": True, "yi": 2.0, "metric": "pp", "mean_control": 40.0},
            {"domain": "x", "poolable": False, "yi": 2.0, "metric": "pp", "mean_control": 90.0},  # not pooled: not used
            {"domain": "y", "poolable": True, "yi": 2.0, "metric": "pp", "mean_control": 90.0}]  # another domain
    sd, how = outcome_sd(d, rows)
    assert sd == pytest.approx(100 * math.sqrt(0.3 * 0.7)) and "30%" in how
    assert outcome_sd(d, [])[0] == pytest.approx(50.0) and "50%" in outcome_sd(d, [])[1]
    assert outcome_sd(_domain(np.zeros(8), 1.0, metric="smd"), [])[0] == 1.0
    counts = _domain(np.zeros(8), 1.0, metric="count", domain="x")
    rows = [{"domain": "x", "poolable": True, "yi": 0.7, "metric": "count", "sd_control": 11.8, "sd_treatment": 8.3}]
    assert outcome_sd(counts, rows)[0] == pytest.approx(10.05)
    sd, why = outcome_sd(counts, [])
    assert sd is None and "set sd or se" in why
    skipped = plan({"x": counts}, n=(50,), sims=100)
    assert skipped.domains == {} and "set sd or se" in skipped.skipped["x"]


def test_bad_options_are_refused():
    draws = {"d": _domain(np.zeros(8), 1.0), "e": _domain(np.zeros(8), 1.0, domain="e")}
    for kwargs, field in (({"sd": 2.0}, "--sd/--se"), ({"domain": "d", "se": [0.1, 0.2], "n": (50,)}, "--se"), ({"se": 0.1}, "--sd/--se"),
                          ({"n": (1,)}, "--n"), ({"sims": 10}, "--sims"), ({"domain": "zz"}, "--domain"),
                          ({"domain": "d", "sd": -1.0}, "--sd")):
        with pytest.raises(InputError) as err:
            plan(draws, **kwargs)
        assert err.value.problems[0].field == field, kwargs


@pytest.mark.mcmc
@pytest.mark.subprocess
@pytest.mark.slow
def test_a_real_fit_with_known_tau_reproduces_the_closed_form():
    """The MCMC fit of two studies with tau pinned at 0.2: reweighted SD and expected width against sqrt(v')."""
    from metaeval.draws import domain_draws

    dd = domain_draws(known_tau_posterior())["all"]
    v = known_tau_posterior_exact()["cov"][0, 0]
    mu, tau = dd.mu.ravel(), dd.tau.ravel()
    assert np.std(tau) < 1e-3 and mu.var() == pytest.approx(v, rel=0.1)
    rng = np.random.default_rng(21)
    for se in (0.2, 0.1, 0.05):
        want = math.sqrt(1 / (1 / v + 1 / (TAU**2 + se**2)))
        y = mu.mean() + math.sqrt(v + TAU**2 + se**2) * rng.standard_normal(20)
        got = np.array([_weighted_sd(mu, row) for row in study_weights(mu, tau, y, se)])
        assert np.all(np.abs(got / want - 1) < 0.06), (se, got / want)
    points = plan({"all": dd}, se=[0.2, 0.1, 0.05], sims=1000).domains["all"].points
    for p in points:
        assert p.expected_width == pytest.approx(2 * Z95 * math.sqrt(1 / (1 / v + 1 / (TAU**2 + p.se**2))), rel=0.06)
    assert points[0].expected_width > points[1].expected_width > points[2].expected_width


def test_a_cached_plan_is_the_plan_and_is_found_again_only_for_the_same_inputs(tmp_path, monkeypatch):
    from metaeval import planning

    rng = np.random.default_rng(13)
    _, _, _, mu, tau = _exact_draws(rng)
    draws = {"d": _domain(mu, tau), "e": _domain(-mu, tau, domain="e")}
    cache = tmp_path / "plans"
    computed = plan(draws, sims=200, seed=1, cache=cache)
    [kept] = cache.iterdir()
    assert kept.name == f"{planning.plan_key(draws, [], planning.DEFAULT_N, None, None, 200, 1)}.json"
    assert computed == plan(draws, sims=200, seed=1)  # the cache changes nothing in what is computed

    calls = []
    real = planning.domain_plan
    monkeypatch.setattr(planning, "domain_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = plan(draws, sims=200, seed=1, cache=cache)
    assert calls == [] and again == computed and again.to_json() == computed.to_json()  # found, not simulated
    nudged = {"d": _domain(mu + 1e-12, tau), "e": draws["e"]}
    for other in (dict(sims=300, seed=1), dict(sims=200, seed=2), dict(sims=200, seed=1, n=(60,)), dict(sims=200, seed=1, domain="d")):
        plan(draws, cache=cache, **other)
    plan(nudged, sims=200, seed=1, cache=cache)
    plan(draws, evidence=[{"domain": "d", "metric": "smd"}], sims=200, seed=1, cache=cache)
    assert len(calls) == 2 * 3 + 1 + 2 + 2 and len(list(cache.iterdir())) == 7  # each other input: simulated and kept apart

    kept.write_text(kept.read_text()[:100])  # damaged: simulated again and rewritten
    assert plan(draws, sims=200, seed=1, cache=cache) == computed and len(calls) == 13
    assert planning.Plan.model_validate_json(kept.read_bytes()) == computed
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert plan(draws, sims=200, seed=1, cache=blocker / "plans") == computed  # an unwritable cache: computed all the same


def test_the_in_place_weights_and_column_sums_give_the_plain_expressions_numbers_bit_for_bit():
    """study_weights and weighted_hdi reorder their work for speed, never the arithmetic: plans stay byte-identical."""
    rng = np.random.default_rng(5)
    for case in range(30):
        mu = np.round(rng.normal(0.1, 0.2, 1500), 2 if case % 3 == 0 else 12)  # rounded: ties in the sort
        tau = np.abs(rng.normal(0, 0.1, 1500))
        y, se = rng.normal(0.1, 0.3, 40), float(rng.choice([0.01, 0.05, 0.3]))
        v = tau**2 + se**2
        log_w = -0.5 * np.log(v)[None, :] - 0.5 * (y[:, None] - mu[None, :]) ** 2 / v[None, :]
        plain = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        plain = plain / plain.sum(axis=1, keepdims=True)
        w = study_weights(mu, tau, y, se)
        np.testing.assert_array_equal(w, plain)
        w[:, rng.random(1500) < 0.1] = 0.0  # zero weights as well
        low, high = weighted_hdi(mu, w, 0.95)
        order = np.argsort(mu, kind="stable")
        xs = mu[order]
        for r in range(0, 40, 7):
            c = np.cumsum(w[r, order] / w[r, order].sum())
            reach = np.concatenate(([0.0], c[:-1])) + (0.95 - 1e-12)
            end = np.searchsorted(c, reach[: np.searchsorted(reach, c[-1], side="right")], side="left")
            start = int(np.argmin(xs[end] - xs[: end.size]))
            assert (low[r], high[r]) == (xs[start], xs[end[start]])


def test_updates_between_grid_results_match_those_worked_out_at_every_simulated_result():
    """The simulation works each update out at results RESULTS_PER_SE to the SE apart and interpolates: against
    working it out at each of 1000 simulated results, for new studies from 4 to 1/3 of mu's posterior SD."""
    _, _, _, mu, tau = _exact_draws(np.random.default_rng(21))
    sd = mu.std()
    for se in (4 * sd, sd, sd / 3):
        grid, each = (preposterior(mu, tau, [se], sign=1.0, prob=0.95, sims=1000, rng=np.random.default_rng(3), per_se=per_se)[0]
                      for per_se in (RESULTS_PER_SE, None))
        assert np.max(np.abs(grid["p_beneficial"] - each["p_beneficial"])) < 1e-3, se
        assert abs(grid["width"].mean() / each["width"].mean() - 1) < 1e-3, se
        np.testing.assert_allclose(grid["ess"], each["ess"], rtol=0.01)


def test_result_grid_spans_the_results_at_the_set_spacing_and_gives_way_when_it_would_not_be_fewer():
    y = np.array([0.3, -0.2, 0.8, 0.1])
    grid = result_grid(np.tile(y, 10), 0.5, 4)
    assert grid[0] == -0.2 and grid[-1] == 0.8 and grid.size == 9 and np.allclose(np.diff(grid), 0.125)
    assert result_grid(y, 0.5, 4) is None  # 9 points for 4 results: worked out at each
    assert result_grid(np.tile(y, 10), 0.5, None) is None


def test_the_simulated_verdicts_are_the_words_verdicts_at_the_cuts_and_between_them():
    from metaeval import words
    from metaeval.planning import _verdicts

    cuts = np.array(words.VERDICT_CUTS)
    p = np.concatenate([np.random.default_rng(1).random(2000), cuts, np.nextafter(cuts, 0), [0.0, 1.0]])
    assert _verdicts(p) == [words.verdict(x)[0] for x in p]
