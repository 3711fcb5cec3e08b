"""Exact inference for the full model (``metaeval.exact_core``, ``metaeval.exact_full``) against
independent references.

- The one-level model (no bias terms, no findings, one estimate a project) is what ``metaeval.exact``
  integrates (itself checked against metafor and bayesmeta): both must agree to 1e-5 posterior SDs.
- Small blocks with a replicated project (omega), a biased design (an offset) and one or two direction-
  only findings, in one project or in two (``metaeval.exact_cells``), are checked against ``_exact_brute``: dense matrix algebra on the full joint covariance
  and plain trapezoid grids over tau, omega and each finding's SE (nothing shared with the engine but
  the Block container). Means and SDs must agree to 1e-3 SD, each interval must hold 0.95 of the brute-
  force posterior (to 1e-4), and every stated numerical error must cover the actual one.
- On the bundled evidence, the result is a whole Result (as the MCMC engine's), and its stated errors
  are below a hundredth of a posterior SD.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _exact_brute import brute_force, weighted_draws

from metaeval.exact import exact_posterior
from metaeval.exact_block import NEW, Block, NoExactForm
from metaeval.exact_cells import CellsLevel, CellsPosterior, block_posterior
from metaeval.exact_core import BlockPosterior
from metaeval.priors import parse_prior as P

#: Actual errors below this many posterior SDs (a hundredth of the engine's target) are not held to the
#: stated error, which can be smaller still at that level (the brute force is accurate to about 1e-5).
NOISE = 1e-4


def _rows(block: Block) -> np.ndarray:
    return np.arange(1 + block.n_clusters + block.offset_cluster.size)


CASES = {
    # SMD-like: a trial with two estimates (omega), a comparison-group study (bias term), a matched
    # register study reported only as "significant increase" (bias term)
    "replicated_biased_one_finding": (
        Block.build(n_clusters=3, mu_prior=P("normal(0,0.5)"), tau_prior=P("halfnormal(0.2)"), omega_prior=P("halfnormal(0.2)"),
                    estimates=[(0.02, 0.08**2, 0, -1, True), (0.17, 0.08**2, 0, -1, True), (0.53, 0.25**2, 1, 0, False)],
                    offsets=[(1, 0.05, 0.1), (2, 0.025, 0.05)],
                    censored=[(1.96, 40.0, 2, 1, False, 1.0, P("lognormal(-2.5, 0.5)"))]),
        dict(tau_range=(-12, 0.5), omega_range=(-12, 0.5))),
    # percentage points: a trial, and a randomised project reported only as "no significant effect"
    # (no bias term: its effect is pinned by the finding alone)
    "unbiased_finding": (
        Block.build(n_clusters=2, mu_prior=P("normal(0,10)"), tau_prior=P("halfnormal(4)"),
                    estimates=[(-1.0, 3.5**2, 0, -1, False)],
                    censored=[(-1.96, 1.96, 1, -1, False, 1.0, P("lognormal(0.47, 0.5)"))]),
        dict(tau_range=(-9, 3.5), n_tau=200)),
    # two findings of one project in one domain (the VIVE shape): they share its effect and bias
    # term and differ by omega and their own SEs
    "two_findings_one_project": (
        Block.build(n_clusters=2, mu_prior=P("normal(0,10)"), tau_prior=P("halfnormal(4)"), omega_prior=P("halfnormal(4)"),
                    estimates=[(-1.0, 3.5**2, 0, -1, False)], offsets=[(1, 0.5, 1.0)],
                    censored=[(1.96, 40.0, 1, 0, True, 1.0, P("lognormal(0.47, 0.5)"))] * 2),
        dict(tau_range=(-9, 3.5), omega_range=(-9, 3.5), n_tau=50, n_omega=36, n_se=16)),
    # findings in two projects of a domain (the bundled shape): a trial, a comparison-group study reported as
    # "significant increase" (bias term) and a randomised project reported as "no significant effect" (no bias
    # term: its effect is pinned by the finding, given mu); metaeval.exact_cells integrates them given mu
    "findings_in_two_projects": (
        Block.build(n_clusters=3, mu_prior=P("normal(0,10)"), tau_prior=P("halfnormal(4)"),
                    estimates=[(-1.0, 3.5**2, 0, -1, False)], offsets=[(1, 0.5, 1.0)],
                    censored=[(1.96, 40.0, 1, 0, False, 1.0, P("lognormal(0.47, 0.5)")),
                              (-1.96, 1.96, 2, -1, False, 1.0, P("lognormal(0.47, 0.5)"))]),
        dict(tau_range=(-9, 3.5), n_tau=200)),
    # the same on the SMD-like scale with omega (a replicated trial), the findings being directions only
    "findings_in_two_projects_replicated": (
        Block.build(n_clusters=3, mu_prior=P("normal(0,0.5)"), tau_prior=P("halfnormal(0.2)"), omega_prior=P("halfnormal(0.2)"),
                    estimates=[(0.02, 0.08**2, 0, -1, True), (0.17, 0.08**2, 0, -1, True)], offsets=[(1, 0.05, 0.1)],
                    censored=[(0.0, 40.0, 1, 0, False, 1.0, P("lognormal(-2.5, 0.5)")),
                              (-40.0, 0.0, 2, -1, False, 1.0, P("lognormal(-2.5, 0.5)"))]),
        dict(tau_range=(-12, 0.5), omega_range=(-12, 0.5), n_tau=60, n_omega=40, n_se=16)),
}


_DRAWS: dict[int, tuple] = {}


def _weighted_draws(block: Block):
    """400,000 importance-weighted draws from the brute-force posterior of ``block``, drawn once a case."""
    if id(block) not in _DRAWS:
        _DRAWS[id(block)] = weighted_draws(block, 400_000, seed=3)
    return _DRAWS[id(block)]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    block, grids = CASES[request.param]
    return block, block_posterior(block), brute_force(block, **grids)


@pytest.mark.slow
def test_moments_match_brute_force_and_stated_errors_cover_them(case):
    block, post, ref = case
    rows = _rows(block)
    (mean, sd), (err_mean, err_sd) = post.both("moments", rows)
    actual_mean, actual_sd = np.abs(mean - ref["mean"]), np.abs(sd - ref["sd"])
    assert np.all(actual_mean < 1e-3 * ref["sd"]), actual_mean / ref["sd"]
    assert np.all(actual_sd < 1e-3 * ref["sd"]), actual_sd / ref["sd"]
    assert np.all((actual_mean <= err_mean) | (actual_mean < NOISE * ref["sd"]))
    assert np.all((actual_sd <= err_sd) | (actual_sd < NOISE * ref["sd"]))


def test_variance_parameters_match_brute_force(case):
    block, post, ref = case
    (tau_mean, tau_sd, _, _), _ = post.both("axis_summary", 0, 0.95)
    assert tau_mean == pytest.approx(ref["tau"][0], abs=1e-3 * ref["tau"][1])
    assert tau_sd == pytest.approx(ref["tau"][1], abs=1e-3 * ref["tau"][1])
    if block.has_omega:
        (om_mean, om_sd, _, _), _ = post.both("axis_summary", 1, 0.95)
        assert om_mean == pytest.approx(ref["omega"][0], abs=1e-3 * ref["omega"][1])
        assert om_sd == pytest.approx(ref["omega"][1], abs=1e-3 * ref["omega"][1])


def test_the_density_alone_is_the_density_of_the_cdf(case):
    """The intervals' unimodality check reads the density alone (no CDF, no slope): the very same numbers, on the
    wide and the narrow branches alike (the cases' findings pin project effects: narrow)."""
    block, post, _ = case
    fine, rows = post.fine, _rows(block)
    levels = [(fine, rows)]
    if isinstance(fine, CellsLevel):  # rows routed to the mu level or to a finding project's quantities
        routed: dict = {}
        for r in rows:
            h, local = fine.route.get(int(r), (None, int(r)))
            routed.setdefault(h, []).append(local)
        levels = [(fine.mu_level if h is None else fine.quantities[h], np.array(local)) for h, local in routed.items()]
    for level, local in levels:
        mean, sd = level.moments(local)
        x = mean[:, None] + sd[:, None] * np.linspace(-4, 4, 17)
        F, f, df = level.cdf(local, x)
        none, alone, none_too = level.cdf(local, x, density_only=True)
        assert none is None and none_too is None and F is not None and df is not None
        assert np.array_equal(alone, f)


@pytest.mark.slow
def test_intervals_hold_their_mass_under_the_brute_force_posterior(case):
    block, post, ref = case
    rows = _rows(block)
    (lo, hi), (err_lo, err_hi) = post.both("intervals", rows, 0.95)
    _, sd = post.fine.moments(rows)
    assert np.all(np.maximum(err_lo, err_hi) < 0.01 * sd)
    if block.lo.size > 1:  # the quadrature has no CDF for two findings: weighted draws instead
        draws, w = _weighted_draws(block)
        ess = 1 / np.sum(w**2)
        for i in rows:
            mass = w @ ((draws[:, i] >= lo[i]) & (draws[:, i] <= hi[i]))
            assert abs(mass - 0.95) < 4 * math.sqrt(0.95 * 0.05 / ess), (i, mass, ess)
        return
    for i in rows:
        h = 1e-3 * sd[i]
        F = ref["cdf"](i, [lo[i], hi[i], lo[i] - h, lo[i] + h, hi[i] - h, hi[i] + h])
        assert F[1] - F[0] == pytest.approx(0.95, abs=1e-4), (i, F[1] - F[0])
        # shortest: the density at both ends is the same (by the slope of the brute-force CDF)
        assert (F[3] - F[2]) == pytest.approx(F[5] - F[4], rel=2e-3), i


@pytest.mark.slow
def test_probabilities_match_brute_force(case):
    block, post, ref = case
    rows = _rows(block)
    p_up, err = post.both("prob_above", rows, 1.0, 0.0)
    p_down, _ = post.both("prob_above", rows, -1.0, 0.0)
    assert np.all(err < 1e-3)
    if block.lo.size > 1:  # the quadrature has no CDF for two findings: weighted draws instead
        draws, w = _weighted_draws(block)
        ess = 1 / np.sum(w**2)
        for i in rows:
            simulated = w @ (draws[:, i] > 0)
            assert abs(p_up[i] - simulated) < 4 * math.sqrt(simulated * (1 - simulated) / ess) + 1e-4, (i, p_up[i], simulated)
            assert p_up[i] + p_down[i] == pytest.approx(1.0, abs=1e-12)
        return
    for i in rows:
        below = ref["cdf"](i, 0.0)[0]
        assert p_up[i] == pytest.approx(1 - below, abs=1e-5)
        assert p_down[i] == pytest.approx(below, abs=1e-5)


def test_one_level_model_is_the_one_level_engine():
    """No bias terms, no findings, one estimate a project: metaeval.exact's model, to 1e-5 SD."""
    y = np.array([0.12, 0.18, 0.05, 0.21, 0.10, -0.08, 0.30])
    s = np.array([0.08, 0.10, 0.12, 0.09, 0.07, 0.15, 0.11])
    block = Block.build(n_clusters=y.size, mu_prior=P("normal(0,1)"), tau_prior=P("halfcauchy(0.5)"),
                        estimates=[(y[i], s[i] ** 2, i, -1, False) for i in range(y.size)])
    post = BlockPosterior(block)
    ref = exact_posterior(y, s, tau_prior=P("halfcauchy(0.5)"), mu_prior=P("normal(0,1)"), labels=[str(i) for i in range(y.size)]).summary()
    rows = np.arange(1 + y.size)
    mean, sd = post.fine.moments(rows)
    lo, hi = post.fine.intervals(rows, 0.95)
    expected = [ref["mu"]] + [ref["projects"][str(i)] for i in range(y.size)]
    for i, e in enumerate(expected):
        for key, value in (("mean", mean[i]), ("sd", sd[i]), ("hdi_low", lo[i]), ("hdi_high", hi[i])):
            assert value == pytest.approx(e[key], abs=1e-5 * e["sd"]), (i, key)
    new_mean, new_sd = post.fine.moments(np.array([NEW]))
    assert new_sd[0] == pytest.approx(ref["theta_new"]["sd"], abs=1e-5 * ref["theta_new"]["sd"])
    tau = post.fine.axis_summary(0, 0.95)
    for key, value in zip(("mean", "sd", "hdi_low", "hdi_high"), tau):
        assert value == pytest.approx(ref["tau"][key], abs=1e-4 * ref["tau"]["sd"]), key
    assert post.fine.prob_above(np.array([0]), 1.0, 0.0)[0] == pytest.approx(ref["mu"]["p_beneficial"], abs=1e-6)
    pooling = post.fine.pooling()
    for i in range(y.size):
        assert pooling[i] == pytest.approx(ref["projects"][str(i)]["pooling"], abs=1e-6)


def test_comparisons_match_simulation_from_the_components():
    """P(first) and pairwise probabilities against 400,000 draws from the posterior's own components."""
    y = np.array([0.30, 0.25, 0.10, 0.28, 0.05])
    s = np.array([0.10, 0.08, 0.12, 0.15, 0.09])
    block = Block.build(n_clusters=y.size, mu_prior=P("normal(0,1)"), tau_prior=P("halfnormal(0.2)"),
                        estimates=[(y[i], s[i] ** 2, i, -1, False) for i in range(y.size)])
    level = BlockPosterior(block).fine
    rng = np.random.default_rng(1)
    w, _, mu_mean, mu_var, m, v, c, _ = level._given_eta(np.arange(1, 6), 1e-14)
    n = 400_000
    k = rng.choice(w.size, size=n, p=w)
    mu = mu_mean[k] + np.sqrt(mu_var[k]) * rng.standard_normal(n)
    slope = c[k] / mu_var[k][:, None]
    theta = m[k] + slope * (mu - mu_mean[k])[:, None] + np.sqrt(np.maximum(v[k] - slope * c[k], 0)) * rng.standard_normal((n, 5))
    for rows in (np.arange(1, 3), np.arange(1, 4), np.arange(1, 6)):
        sub = theta[:, rows - 1]
        simulated = np.bincount(sub.argmax(1), minlength=rows.size) / n
        first, sampling = level.first(rows, 1.0)
        mcse = np.sqrt(simulated * (1 - simulated) / n)
        assert np.all(np.abs(first - simulated) < 4 * mcse + sampling + 1e-4), (rows, first, simulated)
        assert first.sum() == pytest.approx(1.0, abs=1e-6)
    pair = level.pairwise(np.arange(1, 6), -1.0)
    simulated = (theta[:, :, None] < theta[:, None, :]).mean(0)
    off = ~np.eye(5, dtype=bool)
    assert np.all(np.abs(pair - simulated)[off] < 4 * np.sqrt(0.25 / n) + 2e-3)


def test_p_first_integrates_over_mu_as_finely_as_mu_moves_the_rows_apart():
    """P(first) among many rows, given (tau, omega, eta), is an integral over mu: the rule over mu must resolve
    how far mu moves the rows against each other (a precise project's effect barely follows mu, an imprecise
    one's follows it closely). Against the trapezoid rule 50 times finer, on mixtures with loadings from 0.05
    to 5: within 1e-9; the eight Gauss-Hermite nodes used before were off by more than 1e-3 at the large ones."""
    from metaeval.exact_level import first_of_independent, gauss_hermite, relative_loading

    def trapezoid(h):
        t = np.arange(-math.floor(8.5 / h), math.floor(8.5 / h) + 1) * h
        return t, np.exp(-0.5 * t * t) / np.exp(-0.5 * t * t).sum()

    rng = np.random.default_rng(5)
    worst_before = 0.0
    for target in (0.05, 0.2, 0.6, 2.0, 5.0):
        sd = 0.05 * np.exp(rng.uniform(0, np.log(10), (2, 6)))
        slope = rng.uniform(0, 1, (2, 6))
        m = rng.normal(0, 0.1, (2, 6))
        unit = relative_loading(slope, sd, np.ones(2))
        mu_var = np.full(2, (target / unit) ** 2)  # the loading scales with mu's SD
        loading = relative_loading(slope, sd, np.sqrt(mu_var))
        assert loading == pytest.approx(target, rel=1e-9)
        args = (np.array([0.3, 0.7]), np.zeros(2), mu_var, m, sd**2 + slope * slope * mu_var[:, None], slope * mu_var[:, None], 1.0)
        reference = first_of_independent(*args, mu_nodes=trapezoid(0.007 / max(loading, 1.0)))
        assert reference.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.abs(first_of_independent(*args) - reference).max() < 1e-9, target
        worst_before = max(worst_before, np.abs(first_of_independent(*args, mu_nodes=gauss_hermite(8)) - reference).max())
    assert worst_before > 1e-3


def test_p_first_counts_a_row_fixed_given_mu_as_a_point():
    """A project known only from a direction-only finding has no spread of its own once eta (the finding's latent
    effect) is fixed: in each component it is a point, fixed or moving with mu. It comes first when every other row
    lies below it; the others must beat it. Against 1,000,000 draws from the same mixture (the density of a point
    summed on a grid gave such a row 0.009 where it has 0.37, and the probabilities summed to 0.63)."""
    from metaeval.exact_level import first_of_independent

    rng = np.random.default_rng(8)
    K = 3
    w, mu_mean, mu_var = np.array([0.2, 0.5, 0.3]), rng.normal(0, 0.1, K), np.array([0.04, 0.09, 0.02])
    slope = np.column_stack([rng.uniform(0, 1, (K, 3)), np.zeros(K), np.full(K, 0.5)])  # rows 3 and 4: points
    spread = np.column_stack([rng.uniform(0.1, 0.3, (K, 3)), np.zeros((K, 2))])
    m = rng.normal(0.1, 0.15, (K, 5))
    c = slope * mu_var[:, None]
    v = spread**2 + slope * c
    p = first_of_independent(w, mu_mean, mu_var, m, v, c, 1.0)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    n = 1_000_000
    k = rng.choice(K, size=n, p=w)
    mu = mu_mean[k] + np.sqrt(mu_var[k]) * rng.standard_normal(n)
    theta = m[k] + slope[k] * (mu - mu_mean[k])[:, None] + spread[k] * rng.standard_normal((n, 5))
    simulated = np.bincount(theta.argmax(1), minlength=5) / n
    assert simulated[3] > 0.05 and simulated[4] > 0.05
    assert np.all(np.abs(p - simulated) < 4 * np.sqrt(simulated * (1 - simulated) / n) + 1e-5), (p, simulated)


def test_p_first_in_passes_of_a_few_values_is_the_same(monkeypatch):
    """Many rows take P(first) a few components, or a few values of one, at a time (memory): the same numbers."""
    from metaeval import exact_level

    rng = np.random.default_rng(7)
    sd, slope = rng.uniform(0.05, 0.5, (5, 40)), rng.uniform(0, 1, (5, 40))
    mu_var = np.full(5, 0.01)
    args = (np.full(5, 0.2), np.zeros(5), mu_var, rng.normal(0, 0.2, (5, 40)), sd**2 + slope**2 * 0.01, slope * 0.01, -1.0)
    whole = exact_level.first_of_independent(*args)
    nodes = exact_level.mu_rule(exact_level.relative_loading(slope, sd, np.sqrt(mu_var)))[0].size
    for chunk in (40 * nodes * 3, 40 * nodes * 10_000):  # three values of x a pass; several components a pass
        monkeypatch.setattr(exact_level, "CHUNK", chunk)
        assert np.allclose(exact_level.first_of_independent(*args), whole, rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", ["crowded", "spread"])
def test_p_first_leaves_out_only_what_adds_nothing(monkeypatch, case):
    """Among many rows, P(first) starts its values where the product of all rows' CDFs reaches e^-60 (which cuts
    where rows crowd the top), and leaves out, per pass of values, the rows far below all of them (where rows
    spread over many SDs): each cuts in its case, and the numbers are within 1e-10 of a rule six times finer without
    either cut (where rows crowd, the rule without the floor was off by 1e-8: its values ran over a wider range)."""
    from metaeval import exact_level

    rng = np.random.default_rng(11)
    K, L = 3, 400
    if case == "crowded":
        m, sd = rng.normal(0, 0.5, (K, L)), rng.uniform(0.5, 1.0, (K, L))
    else:
        m, sd = rng.normal(0, 4, (K, L)), rng.uniform(0.2, 1.0, (K, L))
    slope = rng.uniform(0, 0.2, (K, L))
    args = (np.full(K, 1 / K), np.zeros(K), np.ones(K), m, sd**2 + slope**2, slope, 1.0)
    low, high = (m - 7.5 * sd).max(1)[:, None], (m + 7.5 * sd).max(1)[:, None]
    if case == "crowded":  # the values start at least 2 SDs of the widest row higher
        assert np.all(exact_level._product_floor(m[:, None, :], sd, low, high) > low + 2)
    else:  # a quarter of the rows lie far below every value
        assert np.all((m + exact_level.FAR * sd < low).sum(1) > L // 4)
    got = exact_level.first_of_independent(*args)
    monkeypatch.setattr(exact_level, "FAR", np.inf)
    monkeypatch.setattr(exact_level, "PRODUCT_FLOOR", -np.inf)
    want = exact_level.first_of_independent(*args, x_step=0.1)
    assert np.abs(got - want).max() < 1e-10 and abs(want.sum() - 1) < 1e-9


def test_the_relative_loading_is_the_least_over_common_slopes():
    """A common slope shifts every row alike and changes no ranking: the loading is the smallest largest
    |slope - s| x SD(mu) / SD over s (against a fine search over s)."""
    from metaeval.exact_level import relative_loading

    rng = np.random.default_rng(6)
    slope, sd, mu_sd = rng.uniform(0, 1, (3, 7)), rng.uniform(0.05, 0.5, (3, 7)), rng.uniform(0.01, 1, 3)
    s = np.linspace(-0.5, 1.5, 400_001)
    brute = max(mu_sd[k] * (np.abs(slope[k][:, None] - s) / sd[k][:, None]).max(0).min() for k in range(3))
    assert relative_loading(slope, sd, mu_sd) == pytest.approx(brute, rel=1e-5)


def test_findings_in_two_projects_are_integrated_given_mu_and_two_designs_of_one_project_are_not():
    se = P("lognormal(-1,0.5)")
    two = Block.build(n_clusters=2, mu_prior=P("normal(0,1)"), tau_prior=P("halfnormal(1)"),
                      censored=[(1.96, 40.0, 0, -1, False, 1.0, se), (1.96, 40.0, 1, -1, False, 1.0, se)])
    assert isinstance(block_posterior(two), CellsPosterior)
    with pytest.raises(NoExactForm, match="one group only"):
        BlockPosterior(two)
    one_project = Block.build(n_clusters=2, mu_prior=P("normal(0,1)"), tau_prior=P("halfnormal(1)"), offsets=[(0, 0.5, 1.0)],
                              estimates=[(0.1, 0.01, 1, -1, False)],
                              censored=[(1.96, 40.0, 0, -1, False, 1.0, se), (1.96, 40.0, 0, 0, False, 1.0, se)])
    with pytest.raises(NoExactForm, match="one group a cluster"):
        block_posterior(one_project)


def test_the_mode_search_leaves_a_node_whose_likelihood_no_step_can_raise():
    """Newton's search for each node's mode of the tilted density halves a step that does not raise it, 50 times at
    most; a node where none does (its derivatives useless: the far nodes of the replicated findings returned a
    clipped 1e150) has nothing left to try and leaves the search then (it took 100 rounds, most of the bundled
    evidence's exact fit)."""
    from metaeval.exact_nodes import Prepared

    prep = Prepared(CASES["unbiased_finding"][0])
    calls = []

    def log_lik(eta, idx, derivatives):  # node 0: a quadratic with its mode at eta 1; node 1: a slope that never pays
        calls.append(eta.shape[0])
        rows = np.arange(2)[idx][:, None]
        f = np.where(rows == 0, -0.5 * (eta - 1.0) ** 2, -1e6 * np.abs(eta))
        return f, np.where(rows == 0, 1.0 - eta, 1e150), np.where(rows == 0, -1.0, 0.0)

    u, w, log_l, mode, scale = prep.eta_rule(np.zeros(2), np.ones(2), np.zeros(2), False, log_lik=log_lik)
    assert mode[0] == pytest.approx(0.5) and mode[1] == 0.0  # N(u; 0, 1) x N(1; u, 1): its mode is at 1/2
    assert len(calls) < 60  # one round of halvings for node 1, not 100


def test_a_block_digest_changes_with_anything_its_posterior_depends_on():
    """A process keeps block posteriors by their block's digest (for the draws after a result): blocks built alike
    share one, and a change in an estimate, a prior's parameter, an SE prior or a finding's region gives another."""
    from dataclasses import replace

    block = CASES["replicated_biased_one_finding"][0]
    twin = Block.build(n_clusters=3, mu_prior=P("normal(0,0.5)"), tau_prior=P("halfnormal(0.2)"), omega_prior=P("halfnormal(0.2)"),
                       estimates=[(0.02, 0.08**2, 0, -1, True), (0.17, 0.08**2, 0, -1, True), (0.53, 0.25**2, 1, 0, False)],
                       offsets=[(1, 0.05, 0.1), (2, 0.025, 0.05)],
                       censored=[(1.96, 40.0, 2, 1, False, 1.0, P("lognormal(-2.5, 0.5)"))])
    assert twin.digest() == block.digest()
    others = [replace(block, y=block.y + np.array([0.0, 0.0, 1e-12])), replace(block, tau_prior=P("halfnormal(0.21)")),
              replace(block, se_prior=(P("lognormal(-2.5, 0.6)"),)), replace(block, lo=np.array([0.0])),
              replace(block, residual=np.array([True, False, False]))]
    assert len({block.digest(), *(b.digest() for b in others)}) == 1 + len(others)


def test_drawing_from_running_sums_counts_the_entries_below_each_target():
    """The draws pick each eta node by the count of its row's running weight sums below a uniform target (a
    binary search per draw, rows read in place): the same count as comparing every entry, with weightless nodes
    (flat runs) and targets on an entry."""
    from metaeval.exact_cells import _count_below

    rng = np.random.default_rng(4)
    weights = rng.random((50, 9)) * (rng.random((50, 9)) > 0.4)
    cum = np.cumsum(weights, axis=1)
    rows = rng.integers(0, 50, 2000)
    target = rng.random(2000) * cum[rows, -1]
    target[:100] = cum[rows[:100], rng.integers(0, 9, 100)]  # exactly on an entry: that entry is not below
    assert np.array_equal(_count_below(cum, rows, target), (cum[rows] < target[:, None]).sum(1))


def _se_rule(prior: str = "lognormal(0, 1)"):
    from metaeval.exact_block import SE_STEP
    from metaeval.exact_nodes import _prior_rule

    s, w = _prior_rule(P(prior), SE_STEP)
    with np.errstate(divide="ignore"):
        return s, np.log(w)


#: Regions of direction-only findings: significant increase (an open end), not significant, significant
#: decrease, a p-value band, and a bounded upper end (as the bundled evidence's 1.96 < z < 40).
REGIONS = [(1.96, np.inf), (-1.96, 1.96), (-np.inf, -1.96), (1.0, 2.58), (1.96, 40.0)]


@pytest.mark.parametrize("lo, hi", REGIONS)
@pytest.mark.parametrize("omega2", [0.0, 0.3, 90.0])
def test_a_censored_table_is_the_direct_evaluation(lo, hi, omega2):
    """The lattice table (quintic Hermite between lattice points) against direct evaluation of the SE rule, from
    the bulk to the far tails and beyond the lattice's reach: log l within 1e-6 where it is above -5 and within
    2e-5 relative below (where l < e^-5); its derivatives, which only place the eta rule, within 1e-4 (the first)
    and 1e-3 (the second) in the bulk."""
    from metaeval.exact_nodes import TABLE_REACH, TABLE_STEP, Table, _censored_terms

    s, log_w = _se_rule()
    table = Table(lo, hi, s, log_w, TABLE_STEP)
    h = TABLE_STEP * math.sqrt(s[log_w >= log_w.max() - 5 * math.log(10)].min() ** 2 + omega2)
    far = [-1e6, 1e6, h * TABLE_REACH * 1.5, -1.3e63]  # the mode search's trial steps reach 1e63
    out = np.geomspace(80, 0.99 * h * TABLE_REACH, 400)  # where the lattice widens with |eta|, to the end of its reach
    eta = np.concatenate([np.linspace(-80, 80, 16_001), out, -out, far])[:, None] * np.ones(2)
    omega2s = np.full(eta.shape[0], omega2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing overflows on the way
        got = table.at(eta, omega2s, derivatives=True)
    want = _censored_terms(eta, lo, hi, s, log_w, omega2s, True)
    gone = ~np.isfinite(want[0])  # l = 0 in double precision, far out: the same there
    assert np.array_equal(got[0][gone], want[0][gone])
    value, d1, d2 = (np.abs(g[~gone] - w[~gone]) / np.maximum(1.0, np.abs(w[~gone])) for g, w in zip(got, want))
    bulk = want[0][~gone] > -5
    assert value[bulk].max() < 1e-6 and value.max() < 2e-5
    assert d1[bulk].max() < 1e-4 and d2[bulk].max() < 1e-3
    values_only = table.at(eta, omega2s, derivatives=False)
    assert values_only[1] is None and np.allclose(values_only[0], got[0], rtol=1e-12, atol=1e-12)


def test_the_tables_quintic_is_the_one_level_engine_s():
    """The tables' power-form coefficients give the quintic Hermite interpolant the one-level engine reads its
    CDF tables with (mixtures._quintic): the same values and slopes."""
    from metaeval.mixtures import _quintic, quintic_coefficients

    rng = np.random.default_rng(5)
    ends = rng.normal(size=(6, 200))
    u = rng.random(200)
    c = quintic_coefficients(*ends[:, :, None])[:, :, 0]  # (200, 6)
    value = sum(c[:, q] * u**q for q in range(6))
    slope = sum(q * c[:, q] * u ** (q - 1) for q in range(1, 6))
    want = _quintic(u, *ends)
    assert np.allclose(value, want[0], rtol=1e-12, atol=1e-12) and np.allclose(slope, want[1], rtol=1e-12, atol=1e-12)


def test_a_censored_table_is_the_same_whatever_order_it_is_built_in():
    """Blocks of the lattice are built where queries fall, for the values of omega the rows hold: the numbers at a
    point do not depend on which queries came first, nor on the other values of omega read in the same call."""
    from metaeval.exact_nodes import TABLE_STEP, Table

    s, log_w = _se_rule()
    a, b = np.linspace(-3, 3, 101)[:, None] * np.ones(3), np.linspace(-40, 10, 77)[:, None] * np.ones(3)
    om_a, om_b = np.full(101, 0.3), np.where(np.arange(77) % 2, 0.3, 2.0)
    one, two = Table(1.96, np.inf, s, log_w, TABLE_STEP), Table(1.96, np.inf, s, log_w, TABLE_STEP)
    first = one.at(a, om_a, True), one.at(b, om_b, True)
    second = two.at(b, om_b, True), two.at(a, om_a, True)
    for x, y in zip(first, second[::-1]):
        assert all(np.array_equal(u, v) for u, v in zip(x, y))
    alone = Table(1.96, np.inf, s, log_w, TABLE_STEP).at(b[om_b == 2.0], om_b[om_b == 2.0], True)
    assert all(np.array_equal(u[om_b == 2.0], v) for u, v in zip(first[1], alone))
    many = np.linspace(-30, 30, 150_000)[:, None]  # read in chunks of rows: the same numbers as a query of a few of them
    whole = Table(1.96, np.inf, s, log_w, TABLE_STEP).at(many, np.full(many.shape[0], 0.3), True)
    rows = np.arange(0, many.shape[0], 997)
    single = Table(1.96, np.inf, s, log_w, TABLE_STEP).at(many[rows], np.full(rows.size, 0.3), True)
    assert all(np.array_equal(u[rows], v) for u, v in zip(whole, single))


@pytest.mark.parametrize("lo, hi", REGIONS)
def test_the_censored_factor_s_derivatives_are_its_slopes(lo, hi):
    """The first and second derivatives in eta (which the mode search and the eta rule's scale use) against central
    differences of the log factor and of its first derivative, open ends included (an infinite end's density term
    is 0, not inf x 0)."""
    from metaeval.exact_nodes import _censored_terms

    s, log_w = _se_rule()
    eta = np.linspace(-6, 6, 25)[:, None]
    step = 1e-4

    def at(x):
        return _censored_terms(x, lo, hi, s, log_w, np.full(x.shape[0], 0.3), True)

    value, d1, d2 = at(eta)
    up, down = at(eta + step), at(eta - step)
    assert np.allclose(d1, (up[0] - down[0]) / (2 * step), rtol=1e-5, atol=1e-7)
    assert np.allclose(d2, (up[1] - down[1]) / (2 * step), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("prior", ["studentt(3, 0, 1)"])
def test_a_mu_prior_without_conjugacy_has_no_exact_form(prior):
    with pytest.raises(NoExactForm, match="not normal or flat"):
        Block.build(n_clusters=1, mu_prior=P(prior), tau_prior=P("halfnormal(1)"), estimates=[(0.1, 0.01, 0, -1, False)])


# ---------------------------------------------------------------------------- the adapter


@pytest.fixture(scope="module")
def evidence():
    """Shaped like the bundled evidence before the appraisal rules of data/README.md (direction-only findings in one project
    of a domain, a project with two estimates, weak designs): the bundled evidence now has findings in up
    to six projects of a domain (metaeval.exact_cells: see the CLI tests)."""
    from _model_fixtures import bundled_like

    return bundled_like()


@pytest.fixture(scope="module")
def bundled(evidence):
    import metaeval
    from metaeval.exact_full import fit_exact_model

    return fit_exact_model(evidence, metaeval.load_spec("default"))


def test_the_moments_alone_are_the_result_s(bundled, evidence):
    """What the MCMC cross-check compares (exact_moments: no intervals, no probabilities) is the full result's
    means and SDs, with errors no larger than the result states."""
    import metaeval
    from metaeval.exact_full import exact_moments
    from metaeval.model import prepare

    spec = metaeval.load_spec("default")
    moments = exact_moments(prepare(evidence, spec), spec)
    assert set(moments) == set(bundled.domains)
    for d, dom in bundled.domains.items():
        pairs = [(moments[d].mu, dom.mu), (moments[d].tau, dom.tau)] + [(moments[d].projects[p.project], p) for p in dom.projects]
        assert set(moments[d].projects) == {p.project for p in dom.projects}
        for got, want in pairs:
            assert got.mean == pytest.approx(want.mean, abs=1e-5 * want.sd) and got.sd == pytest.approx(want.sd, rel=1e-5)
            assert 0 <= got.error <= want.error_sd * want.sd * (1 + 1e-5)


def test_the_domain_averages_alone_are_the_result_s(bundled, evidence):
    """What the sensitivity grid and the robustness check read (exact_averages: no project effects, no comparisons)
    is the full result's, number for number, whatever other domains a second call shares with the first."""
    import metaeval
    from metaeval.exact_full import exact_averages
    from metaeval.model import prepare

    spec = metaeval.load_spec("default")
    averages = exact_averages(prepare(evidence, spec), spec)
    assert averages == {d: dom.average() for d, dom in bundled.domains.items()}
    assert all(a.projects and a.mu.p_beneficial is not None and a.tau.hdi_high > 0 for a in averages.values())
    wider = metaeval.load_spec("default", ["tau=halfnormal(2)"])
    full = metaeval.fit_exact_model(evidence, wider)
    assert exact_averages(prepare(evidence, wider), wider) == {d: dom.average() for d, dom in full.domains.items()} != averages


@pytest.mark.subprocess
def test_domains_computed_in_worker_processes_are_the_ones_computed_here_and_are_not_computed_again(bundled, evidence, monkeypatch):
    """precompute (the sensitivity grid's): the averages and full results worker processes send back are equal to
    this process's, and exact_averages and summarise_exact then find them; a domain that fails there is left to
    fail here, with its own error."""
    import metaeval
    import metaeval.exact_full as exact_full
    from metaeval.model import prepare

    spec = metaeval.load_spec("default", ["tau=halfnormal(0.3)"])  # not computed by any other test of this process
    layout = prepare(evidence, spec)
    parts = exact_full.domain_parts(layout, spec)
    exact_full.precompute(parts[1:], parts[:1], workers=2)
    assert all((key,) in exact_full._AVERAGES for key in parts) and (parts[0], False) in exact_full._RESULTS
    assert (parts[1], False) not in exact_full._RESULTS
    monkeypatch.setattr(exact_full, "block_posterior", lambda block: pytest.fail("computed again"))
    averages = exact_full.exact_averages(layout, spec)
    sent = exact_full._RESULTS(parts[0], False)[0]
    monkeypatch.undo()
    for key in parts:
        exact_full._AVERAGES.items.pop((key,))
        exact_full._RESULTS.items.pop((key, False), None)
    here = exact_full.summarise_exact(layout, spec)
    assert averages == {d: dom.average() for d, dom in here.domains.items()}
    first = parts[0].part["meta"]["id"]
    assert sent == here.domains[first]
    broken = exact_full.DomainPart({**parts[0].part, "hdi_prob": "not a probability"})
    exact_full.precompute([broken], workers=2)
    assert (broken,) not in exact_full._AVERAGES


@pytest.mark.subprocess
def test_worker_processes_that_end_early_leave_the_domains_to_this_process_with_a_note(evidence, caplog):
    import metaeval
    import metaeval.exact_full as exact_full
    from metaeval.executor import Processes
    from metaeval.model import prepare

    spec = metaeval.load_spec("default", ["tau=halfnormal(0.35)"])  # not computed by any other test of this process
    parts = exact_full.domain_parts(prepare(evidence, spec), spec)
    with Processes(2, preload=["metaeval_has_no_such_module"]) as broken, caplog.at_level("WARNING"):
        exact_full.precompute(parts, workers=broken)
    assert "could not finish" in caplog.text and "metaeval_has_no_such_module" in caplog.text
    assert not any((key,) in exact_full._AVERAGES for key in parts)


def test_bundled_result_is_a_full_result(bundled, evidence):
    import metaeval
    from metaeval.model import prepare
    from metaeval.result import Result

    layout = prepare(evidence, metaeval.load_spec("default"))
    assert bundled.engine == "exact" and bundled.diagnostics is None
    assert Result.from_json(bundled.to_json()) == bundled
    assert sorted(bundled.domains) == sorted(d["id"] for d in layout.domains)
    for d, dom in bundled.domains.items():
        for q in (dom.mu, dom.tau, dom.theta_new):
            assert q.hdi_low <= q.mean <= q.hdi_high and q.sd > 0 and q.error_sd is not None
        assert dom.mu.p_beneficial is not None and dom.theta_new.p_beneficial is not None
        assert (dom.omega is not None) == (d in layout.omega_domains)
        cells = [c for c in layout.projects if c["domain"] == d]
        assert dom.n_projects == len(cells) == len(dom.projects)
        assert sum(p.p_best for p in dom.projects) == pytest.approx(1.0, abs=1e-4)
        for p in dom.projects:
            assert p.hdi_low < p.mean < p.hdi_high and p.error_sd is not None
        if len(cells) > 1:
            a, b = dom.projects[0].project, dom.projects[1].project
            assert dom.pairwise[a][b] + dom.pairwise[b][a] == pytest.approx(1.0, abs=1e-5)
    assert {x.estimate_id for x in bundled.exclusions} == {x["estimate_id"] for x in layout.excluded}


def test_bundled_stated_errors_are_below_a_hundredth_of_a_posterior_sd(bundled):
    assert bundled.numerical.error_sd_max < 0.01
    for dom in bundled.domains.values():
        for entry in [dom.mu, dom.tau, dom.theta_new, *dom.projects]:
            assert entry.error_sd < 0.01


def test_bias_terms_are_reported_where_the_mcmc_summary_reports_them(bundled, evidence):
    import metaeval
    from metaeval.model import prepare

    layout = prepare(evidence, metaeval.load_spec("default"))
    for d, dom in bundled.domains.items():
        for p in dom.projects:
            terms = [t for t in layout.bias_terms if t["domain"] == d and t["project"] == p.project]
            assert (p.bias is not None) == bool(terms), (d, p.project)
            if len(terms) == 1:  # the data can only narrow a bias term's prior
                assert p.bias.sd <= terms[0]["sd"] * (1 + 1e-6)


@pytest.mark.parametrize("model", ["no_bias", "rct_only", "variance_inflation", "marginal"])
def test_conditionally_gaussian_variants_have_an_exact_form(model, evidence):
    """Their means and SDs to a hundredth of a posterior SD. An interval end can be ill-conditioned (tau's
    density nearly flat from 0, so where the shortest interval starts is barely determined: it was so for
    no_bias on the bundled evidence's education), and the stated error says so; below a tenth of an SD."""
    import metaeval
    from metaeval.exact_full import domain_block, exact_form, fit_exact_model
    from metaeval.model import prepare

    spec = metaeval.load_spec(model)
    assert exact_form(spec) is None
    result = fit_exact_model(evidence, spec)
    assert result.numerical.error_sd_max < 0.1
    for d, dom in result.domains.items():  # no_bias: a project known only from a finding once took 0.009 of 0.37
        if len(dom.projects) > 1:
            assert sum(p.p_best for p in dom.projects) == pytest.approx(1.0, abs=1e-3), d
    layout = prepare(evidence, spec)
    for meta in layout.domains:
        block, cells, terms = domain_block(layout, meta["id"])
        post = BlockPosterior(block)
        _, (err_mean, err_sd) = post.both("moments", np.arange(1 + len(cells) + len(terms)))
        _, sd = post.fine.moments(np.arange(1 + len(cells) + len(terms)))
        assert np.all(np.maximum(err_mean, err_sd) < 0.01 * sd), meta["id"]


def test_the_design_hierarchy_has_no_exact_form(evidence):
    import metaeval
    from metaeval.exact_full import exact_form, fit_exact_model

    spec = metaeval.load_spec("design_hierarchy")
    assert "hierarchical" in exact_form(spec)
    with pytest.raises(NoExactForm, match="use --engine mcmc"):
        fit_exact_model(evidence, spec)


def test_variance_inflation_is_the_default_model_on_inflated_ses(tmp_path):
    """A design weight w enters as SE / sqrt(w): the same posterior as unweighted data with those SEs."""
    import pandas as pd

    from metaeval.exact_full import fit_exact_model
    from metaeval.harmonise import load_evidence
    from metaeval.spec import load_spec

    base = pd.DataFrame({"study": ["a", "b", "c"], "yi": [0.1, 0.4, 0.25], "sei": [0.1, 0.2, 0.15],
                         "design": ["rct", "before_after", "rct"], "scale": 1.0})  # a stated scale: the same priors
    spec = load_spec("variance_inflation")
    w = spec.weight("before_after")
    inflated = base.assign(sei=base["sei"] / np.sqrt(np.where(base["design"] == "rct", 1.0, w)), design="rct")

    def fit(frame, spec, name):
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        return fit_exact_model(load_evidence(csv=path), spec).domain("all")

    a = fit(base, spec, "weighted")
    b = fit(inflated, load_spec("no_bias"), "inflated")
    for q in ("mu", "tau"):
        assert getattr(a, q).mean == pytest.approx(getattr(b, q).mean, rel=1e-5)
        assert getattr(a, q).hdi_high == pytest.approx(getattr(b, q).hdi_high, rel=1e-5)
    assert math.isclose(a.project("b").mean, b.project("b").mean, rel_tol=1e-5)


def test_draws_reproduce_the_posterior(case):
    """200,000 draws: means within 4.5 Monte Carlo SEs, SDs within 1%, each interval holding 0.95 of them."""
    block, post, _ = case
    rows = _rows(block)
    sample = post.draws(200_000, np.random.default_rng(5))
    x = np.column_stack([sample["mu"], sample["theta"], sample["offset"]])
    mean, sd = post.fine.moments(rows)
    lo, hi = post.fine.intervals(rows, 0.95)
    assert np.all(np.abs(x.mean(0) - mean) < 4.5 * sd / math.sqrt(len(x)))
    assert np.all(np.abs(x.std(0) / sd - 1) < 0.01)
    inside = ((x >= lo) & (x <= hi)).mean(0)
    assert np.all(np.abs(inside - 0.95) < 4.5 * math.sqrt(0.95 * 0.05 / len(x)))
    assert sample["tau"].mean() == pytest.approx(post.fine.axis_summary(0, 0.95)[0], rel=0.01)


def test_the_comparison_of_an_exact_result_shows_the_engines_probabilities(evidence, bundled):
    """One number per quantity: given the exact result its draws come from, the comparison's P(best) and P(A better)
    are the engine's (the draws' counts differ from them by Monte Carlo error, in some project here), its ranks and
    differences still the draws'. Among some of the projects only, P(best) is counted in the draws (the engine's is
    among all of them) while the pairwise probabilities stay the engine's; an MCMC result changes nothing."""
    import metaeval
    from metaeval.exact_full import exact_draws
    from metaeval.ranking import compare

    tree = exact_draws(evidence, metaeval.load_spec("default"), seed=3)
    counted, integrated = compare(tree), compare(tree, integrated=bundled)
    assert integrated.domains.keys() == counted.domains.keys() and integrated.domains
    moved = 0
    for d, dc in integrated.domains.items():
        dom, plain = bundled.domain(d), counted.domains[d]
        assert dc.integrated and not plain.integrated
        assert {r.project: r.p_best for r in dc.ranks} == {p.project: p.p_best for p in dom.projects}
        assert dc.pairwise == dom.pairwise and all(x.p_a_better == dom.pairwise[x.a][x.b] for x in dc.differences)
        assert [(r.project, r.expected_rank, r.p_rank) for r in dc.ranks] == [(r.project, r.expected_rank, r.p_rank) for r in plain.ranks]
        assert [(x.a, x.b, x.mean, x.hdi_low) for x in dc.differences] == [(x.a, x.b, x.mean, x.hdi_low) for x in plain.differences]
        moved += sum(r.p_best != {p.project: p.p_best for p in dom.projects}[r.project] for r in plain.ranks)
    assert moved  # the draws alone would have shown other numbers

    d = max(integrated.domains, key=lambda d: len(integrated.domains[d].projects))
    some = list(integrated.domains[d].projects[:2])
    part, part_counted = compare(tree, domain=d, projects=some, integrated=bundled), compare(tree, domain=d, projects=some)
    assert [r.p_best for r in part.domains[d].ranks] == [r.p_best for r in part_counted.domains[d].ranks]
    assert part.domains[d].pairwise == {a: {b: bundled.domain(d).pairwise[a][b] for b in some if b != a} for a in some}
    assert compare(tree, integrated=bundled.model_copy(update={"engine": "mcmc"})) == counted


def test_exact_draws_are_read_like_an_mcmc_posterior(evidence):
    """summarise() of the exact engine's draws gives the exact result, up to Monte Carlo error."""
    import metaeval
    from metaeval.exact_full import exact_draws, fit_exact_model
    from metaeval.summary import summarise

    spec = metaeval.load_spec("default")
    n = 20_000
    tree = exact_draws(evidence, spec, draws=n, seed=1)
    again = exact_draws(evidence, spec, draws=n, seed=1)
    assert np.array_equal(again["posterior"]["theta_project"].values, tree["posterior"]["theta_project"].values)  # seeded
    exact = fit_exact_model(evidence, spec)
    gate = {"rhat_max": None, "ess_bulk_min": None, "ess_tail_min": None, "divergences": 0, "passed": True, "failures": (), "thresholds": {}}
    sampled = summarise(tree, diagnostics=gate)
    for d, dom in exact.domains.items():
        got = sampled.domain(d)
        assert abs(got.mu.mean - dom.mu.mean) < 4.5 * dom.mu.sd / math.sqrt(n), d
        assert abs(got.tau.mean - dom.tau.mean) < 4.5 * dom.tau.sd / math.sqrt(n), d
        for a, b in zip(got.projects, dom.projects):
            assert a.project == b.project and abs(a.mean - b.mean) < 4.5 * b.sd / math.sqrt(n), (d, a.project)
            assert abs(a.p_best - b.p_best) < 4.5 * math.sqrt(0.25 / n) + 1e-3, (d, a.project)


def test_moments_a_heavy_tailed_prior_leaves_infinite_are_null(tmp_path):
    """One study under tau ~ halfcauchy: the posterior of tau decays like tau^-3, so its SD (and a new
    project's) is infinite: null with a note, as the one-level engine says; the intervals stay."""
    import pandas as pd

    from metaeval.exact_full import exact_averages, exact_moments, fit_exact_model
    from metaeval.harmonise import load_evidence
    from metaeval.model import prepare
    from metaeval.spec import load_spec

    path = tmp_path / "one.csv"
    pd.DataFrame({"study": ["a"], "yi": [0.3], "sei": [0.1], "scale": [1.0]}).to_csv(path, index=False)
    evidence, spec = load_evidence(csv=path), load_spec("default", ["tau=halfcauchy(1)"])
    dom = fit_exact_model(evidence, spec).domain("all")
    ref = exact_posterior([0.3], [0.1], tau_prior=P("halfcauchy(1)"), mu_prior=P("normal(0,1)")).summary()
    assert dom.tau.sd is None and dom.theta_new.sd is None and ref["tau"]["sd"] is None
    tau = exact_moments(prepare(evidence, spec), spec)["all"].tau  # what the MCMC cross-check then leaves out
    assert tau.sd is None and tau.mean == pytest.approx(dom.tau.mean, rel=1e-5)
    assert exact_averages(prepare(evidence, spec), spec)["all"].tau == dom.tau  # and the grid reads it as null too
    assert dom.tau.mean == pytest.approx(ref["tau"]["mean"], rel=0.05)
    assert dom.tau.hdi_high == pytest.approx(ref["tau"]["hdi_high"], rel=0.01)
    assert any("not finite" in n for n in dom.notes)
