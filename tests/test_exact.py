"""The exact engine against independent references.

- posteriordb's eight-schools reference posterior (MCMC draws);
- brute-force quadrature over (mu, tau): the joint posterior evaluated pointwise on
  product Gauss-Legendre grids, mu integrated numerically (never analytically), the
  study effects and theta_new through their conditional normals given (mu, tau);
- 1-D adaptive quadrature (scipy.integrate.quad) over tau for many studies, where the
  posterior of tau is sharp (this checks the grid, not the analytic step);
- textbook closed forms: known tau (conjugate normal), tau -> 0 (fixed effect), one
  study (tau's posterior is its prior).

HDIs are checked through their defining conditions under the reference density:
mass hdi_prob between the ends, equal density at both ends (or the support's end).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

from metaeval import exact as exact_module
from metaeval.exact import exact_posterior, fit_exact
from metaeval.priors import Prior, parse_prior

SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SCHOOLS_SE = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
Z975 = stats.norm.ppf(0.975)


# ---------------------------------------------------------------------------- references


def gauss_legendre(edges, nodes=20):
    """Composite Gauss-Legendre nodes and weights over consecutive panels [edges[i], edges[i+1]]."""
    x, w = special.roots_legendre(nodes)
    lo, hi = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x).ravel(), ((hi - lo) / 2 * w).ravel()


def graded_edges(a, b, panels, fine_at=()):
    """Panel edges on [a, b]: uniform, plus geometrically finer panels towards the points fine_at."""
    u = [np.linspace(0.0, 1.0, panels + 1)]
    for point in fine_at:
        c = (point - a) / (b - a)
        u += [c - np.geomspace(1e-9, 1.0 / panels, 10), c + np.geomspace(1e-9, 1.0 / panels, 10)]
    u = np.unique(np.clip(np.concatenate(u), 0.0, 1.0))
    return a + (b - a) * u


def norm_logpdf(x, mean, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


class BruteForce:
    """The posterior of (mu, tau) by brute force: p(mu, tau | y) evaluated pointwise,
    integrated on product Gauss-Legendre grids. mu is integrated numerically, never
    analytically; the likelihood is the textbook marginal yi ~ N(mu, sei^2 + tau^2)
    (its sum over studies expanded as a quadratic in mu, for speed)."""

    def __init__(self, y, s, tau_logpdf, mu_logpdf, *, tau_scale, tau_bounds=None, cuts=(0.0,), panels=24):
        self.y, self.s2 = np.asarray(y, float), np.asarray(s, float) ** 2
        self.tau_logpdf, self.mu_logpdf = tau_logpdf, mu_logpdf
        v, wv = gauss_legendre(np.linspace(0.0, 1.0, panels + 1))
        if tau_bounds is None:  # tau = T v / (1 - v) on (0, inf)
            self.tau, self.wt = tau_scale * v / (1 - v), wv * tau_scale / (1 - v) ** 2
        else:
            lo, hi = tau_bounds
            self.tau, self.wt = lo + (hi - lo) * v, wv * (hi - lo)
        # the mu range: widened until the marginal density at both ends is negligible
        centre, half = float(np.mean(self.y)), 4.0 * float(np.sqrt(self.s2.max()) + np.std(self.y))
        self.shift = 0.0
        while True:
            ends = self.log_joint(np.array([centre - half, centre, centre + half])[:, None], self.tau[None, :])
            if ends[[0, 2]].max() < ends[1].max() - 40 and ends[[0, 2]].max() < ends.max() - 40:
                break
            half *= 1.5
        self.mu_range = (centre - half, centre + half)
        # panels end at the probability thresholds (0, the MID) and are finer next to them
        cuts = [c for c in cuts if abs(c - centre) < half]
        self.mu, self.wm = gauss_legendre(graded_edges(centre - half, centre + half, 2 * panels, cuts), nodes=12)
        self.mu_step = float(np.diff(self.mu).max())
        lj = self.log_joint(self.mu[:, None], self.tau[None, :])
        self.shift = lj.max()
        self.Z = 1.0
        self.Z = self.expect(lambda m, t: np.ones_like(m * t))

    def log_joint(self, mu, tau):
        v = self.s2 + np.asarray(tau)[..., None] ** 2  # studies on a new last axis
        a = -0.5 * np.log(2 * np.pi * v).sum(-1)
        s0, s1, s2 = (1 / v).sum(-1), (self.y / v).sum(-1), (self.y**2 / v).sum(-1)
        loglik = a - 0.5 * (s2 - 2 * mu * s1 + mu * mu * s0)  # = sum_i log N(y_i | mu, v_i)
        return self.mu_logpdf(mu) + self.tau_logpdf(tau) + loglik - self.shift

    def joint(self, mu, tau):
        return np.exp(self.log_joint(mu, tau)) / self.Z

    def expect(self, g):
        """E[g(mu, tau) | y]."""
        M, T = self.mu[:, None], self.tau[None, :]
        return float(np.einsum("i,j,ij->", self.wm, self.wt, self.joint(M, T) * g(M, T)))

    def mu_density(self, x):
        return self.joint(np.atleast_1d(x)[:, None], self.tau[None, :]) @ self.wt

    def tau_density(self, t):
        return self.wm @ self.joint(self.mu[:, None], np.atleast_1d(t)[None, :])

    def theta_density(self, x, i=None, zeta_nodes=128):
        """Density of theta_new (i None) or of study i's effect at the points x.

        Given (mu, tau) the effect is normal: N(mu, tau) for theta_new, N(c, d) with
        d^2 = 1 / (1/sei^2 + 1/tau^2) and c = d^2 (yi/sei^2 + mu/tau^2) for study i. For
        small tau that normal is too narrow for the mu grid, so there mu is substituted
        by zeta = (x - c) / d and integrated over zeta instead."""
        x = np.atleast_1d(np.asarray(x, float))
        small = self.tau <= 5.0 * self.mu_step
        zeta, wz = gauss_legendre(np.linspace(-9.0, 9.0, 9), zeta_nodes // 8)
        out = np.zeros_like(x)
        # large tau: integrate over the mu grid
        T = self.tau[None, ~small, None]
        M = self.mu[None, None, :]
        X = x[:, None, None]
        if i is None:
            cond_mean, cond_var = M, T**2
        else:
            d2 = 1.0 / (1.0 / self.s2[i] + 1.0 / T**2)
            cond_mean, cond_var = d2 * (self.y[i] / self.s2[i] + M / T**2), d2
        vals = self.joint(M, T) * np.exp(norm_logpdf(X, cond_mean, cond_var))
        out += np.einsum("xtm,t,m->x", vals, self.wt[~small], self.wm)
        # small tau: substitute zeta
        T = self.tau[None, small, None]
        Zt = zeta[None, None, :]
        if i is None:
            mu, jac = X - T * Zt, 1.0
        else:
            d2 = 1.0 / (1.0 / self.s2[i] + 1.0 / T**2)
            mu = (X - np.sqrt(d2) * Zt - d2 * self.y[i] / self.s2[i]) * T**2 / d2
            jac = T**2 / d2
        vals = self.joint(mu, T) * jac * np.exp(-0.5 * Zt**2) / math.sqrt(2 * math.pi)
        out += np.einsum("xtz,t,z->x", vals, self.wt[small], wz)
        return out


def check_hdi(density, lo, hi, p, *, support_low=None, mass_tol=2e-6, density_tol=2e-4):
    """The defining conditions of a shortest interval, under a reference density function."""
    x, w = gauss_legendre(np.linspace(lo, hi, 3))
    mass = float(density(x) @ w)
    assert mass == pytest.approx(p, abs=mass_tol), f"mass {mass} between {lo} and {hi}"
    f_lo, f_hi = float(density(np.array([lo]))[0]), float(density(np.array([hi]))[0])
    if support_low is not None and lo == support_low:
        assert f_lo >= f_hi * (1 - density_tol)  # the density is highest at the support's end
    else:
        assert f_lo == pytest.approx(f_hi, rel=density_tol), f"density {f_lo} at {lo}, {f_hi} at {hi}"


# ---------------------------------------------------------------------------- posteriordb


def test_eight_schools_matches_posteriordb_reference():
    """posteriordb eight_schools reference: mu 4.41 (sd 3.31), tau 3.60 (sd 3.20).

    Those numbers summarise posteriordb's Stan reference draws (about 10,000), so they
    carry a Monte Carlo error of about sd / 100 = 0.03, more than their rounding: we check
    them to one decimal and to within 2 such Monte Carlo SEs (our values: mu 4.397 (3.318),
    tau 3.598 (3.220)); the brute-force tests below check our values to 1e-6.
    """
    out = exact_posterior(SCHOOLS_Y, SCHOOLS_SE, tau_prior=parse_prior("halfcauchy(5)"), mu_prior=parse_prior("normal(0, 5)")).summary()
    mu, tau = out["mu"], out["tau"]
    for ours, ref in ((mu["mean"], 4.41), (mu["sd"], 3.31), (tau["mean"], 3.60), (tau["sd"], 3.20)):
        assert round(ours, 1) == round(ref, 1)
    assert abs(mu["mean"] - 4.41) <= 2 * mu["sd"] / 100
    assert abs(tau["mean"] - 3.60) <= 2 * tau["sd"] / 100
    assert abs(mu["sd"] - 3.31) <= 2 * mu["sd"] / 100
    assert abs(tau["sd"] - 3.20) <= 2 * tau["sd"] / 100


# ---------------------------------------------------------------------------- brute force


def _hc(scale):
    return lambda t: stats.halfcauchy.logpdf(t, scale=scale)


CASES = {
    # name: (y, se, tau prior, mu prior, reference tau prior, reference mu prior, tau scale, tau bounds, mid, beneficial)
    "schools-hc5-n5": (SCHOOLS_Y, SCHOOLS_SE, "halfcauchy(5)", "normal(0, 5)", _hc(5), lambda m: stats.norm.logpdf(m, 0, 5),
                       5.0, None, 3.0, "increase"),
    "schools-hn10-flat": (SCHOOLS_Y, SCHOOLS_SE, "halfnormal(10)", None, lambda t: stats.halfnorm.logpdf(t, scale=10),
                          lambda m: 0 * m, 6.0, None, None, "increase"),
    "four-exp-decrease": ([-0.30, -0.05, -0.42, 0.10], [0.12, 0.10, 0.20, 0.15], "exponential(4)", "normal(0, 1)",
                          lambda t: stats.expon.logpdf(t, scale=0.25), lambda m: stats.norm.logpdf(m, 0, 1),
                          0.2, None, 0.1, "decrease"),
    "two-hn-flat": ([2.0, 5.0], [1.0, 1.5], "halfnormal(2)", None, lambda t: stats.halfnorm.logpdf(t, scale=2),
                    lambda m: 0 * m, 2.0, None, 1.0, "increase"),
    "five-uniform": ([0.8, 1.9, 0.2, 1.1, 2.6], [0.5, 0.6, 0.4, 0.7, 0.9], "uniform(0, 3)", "normal(1, 2)",
                     lambda t: stats.uniform.logpdf(t, 0, 3), lambda m: stats.norm.logpdf(m, 1, 2),
                     None, (0.0, 3.0), 0.5, "increase"),
    "six-lognormal": ([12.0, 4.0, 9.0, -2.0, 7.0, 15.0], [3.0, 4.0, 2.5, 5.0, 3.5, 6.0], "lognormal(1, 0.5)", "normal(0, 20)",
                      lambda t: stats.lognorm.logpdf(t, 0.5, scale=math.e), lambda m: stats.norm.logpdf(m, 0, 20),
                      3.0, None, 5.0, "increase"),
    "three-halft": ([0.5, -0.2, 0.9], [0.3, 0.25, 0.4], "halfstudentt(3, 0.5)", "normal(0, 2)",
                    lambda t: np.log(2) + stats.t.logpdf(t, 3, 0, 0.5), lambda m: stats.norm.logpdf(m, 0, 2),
                    0.4, None, None, "increase"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    y, se, tau_text, mu_text, tau_ref, mu_ref, tau_scale, bounds, mid, beneficial = CASES[request.param]
    sign = 1.0 if beneficial == "increase" else -1.0
    cuts = (0.0,) if mid is None else (0.0, sign * mid)
    ref = BruteForce(y, se, tau_ref, mu_ref, tau_scale=tau_scale, tau_bounds=bounds, cuts=cuts)
    post = exact_posterior(y, se, tau_prior=parse_prior(tau_text), mu_prior=None if mu_text is None else parse_prior(mu_text),
                           mid=mid, beneficial=beneficial)
    return request.param, ref, post, post.summary(), mid, sign


def test_brute_force_reference_is_converged(case):
    """The reference itself is converged: a coarser grid gives the same moments."""
    name, ref, *_ = case
    y, se, _, _, tau_ref, mu_ref, tau_scale, bounds, *_ = CASES[name]
    coarse = BruteForce(y, se, tau_ref, mu_ref, tau_scale=tau_scale, tau_bounds=bounds, panels=16)
    for g in (lambda m, t: m, lambda m, t: m * m, lambda m, t: t + 0 * m, lambda m, t: t * t + 0 * m):
        assert coarse.expect(g) == pytest.approx(ref.expect(g), rel=1e-8, abs=1e-10)


def test_moments_match_brute_force(case):
    _, ref, post, out, mid, sign = case
    e_mu, e_mu2 = ref.expect(lambda m, t: m), ref.expect(lambda m, t: m * m)
    e_tau, e_tau2 = ref.expect(lambda m, t: t + 0 * m), ref.expect(lambda m, t: t * t + 0 * m)
    sd_mu = math.sqrt(e_mu2 - e_mu**2)
    tol = 1e-6 * sd_mu
    assert out["mu"]["mean"] == pytest.approx(e_mu, abs=tol)
    assert out["mu"]["sd"] == pytest.approx(sd_mu, abs=tol)
    assert out["tau"]["mean"] == pytest.approx(e_tau, rel=1e-6)
    assert out["tau"]["sd"] == pytest.approx(math.sqrt(e_tau2 - e_tau**2), rel=1e-6)
    assert out["theta_new"]["mean"] == pytest.approx(e_mu, abs=tol)
    assert out["theta_new"]["sd"] == pytest.approx(math.sqrt(e_tau2 + e_mu2 - e_mu**2), rel=1e-6)
    # probabilities: the mu grid has panel edges at 0 and at the MID
    assert out["mu"]["p_beneficial"] == pytest.approx(ref.expect(lambda m, t: (sign * m > 0) + 0 * t), abs=1e-7)
    if mid is None:
        assert out["mu"]["p_mid"] is None
    else:
        assert out["mu"]["p_mid"] == pytest.approx(ref.expect(lambda m, t: (sign * m > mid) + 0 * t), abs=1e-7)
    assert out["theta_new"]["p_beneficial"] == pytest.approx(ref.expect(lambda m, t: special.ndtr(sign * m / t)), abs=1e-6)


def test_study_effects_match_brute_force(case):
    """theta_i | mu, tau, y ~ N(c, d): its mean and SD, and the pooling factor, averaged by brute force."""
    _, ref, post, out, *_ = case
    for i, label in enumerate(post.labels):
        s2, y = post.sei[i] ** 2, post.yi[i]

        def d2(m, t, s2=s2):
            return 1.0 / (1.0 / s2 + 1.0 / t**2) + 0 * m

        def c(m, t, s2=s2, y=y):
            return d2(m, t) * (y / s2 + m / t**2)

        mean = ref.expect(c)
        sd = math.sqrt(ref.expect(lambda m, t: c(m, t) ** 2 + d2(m, t)) - mean**2)
        entry = out["projects"][label]
        assert entry["raw"] == y and entry["raw_se"] == post.sei[i]
        assert entry["mean"] == pytest.approx(mean, abs=1e-6 * sd)
        assert entry["sd"] == pytest.approx(sd, rel=1e-6)
        assert entry["pooling"] == pytest.approx(ref.expect(lambda m, t, s2=s2: s2 / (s2 + t**2) + 0 * m), abs=1e-7)


def test_intervals_are_the_shortest_under_the_brute_force_density(case):
    _, ref, post, out, *_ = case
    p = post.hdi_prob
    check_hdi(ref.mu_density, out["mu"]["hdi_low"], out["mu"]["hdi_high"], p)
    support_low = post.tau_prior.params[0] if post.tau_prior.family == "uniform" else 0.0
    check_hdi(ref.tau_density, out["tau"]["hdi_low"], out["tau"]["hdi_high"], p, support_low=support_low)
    check_hdi(ref.theta_density, out["theta_new"]["hdi_low"], out["theta_new"]["hdi_high"], p)
    # the study with the largest and the one with the smallest estimate
    for i in (int(np.argmax(post.yi)), int(np.argmin(post.yi))):
        entry = out["projects"][post.labels[i]]
        check_hdi(lambda x, i=i: ref.theta_density(x, i), entry["hdi_low"], entry["hdi_high"], p)


def test_cdfs_match_brute_force(case):
    _, ref, post, out, *_ = case
    for x in (out["mu"]["mean"] - out["mu"]["sd"], out["mu"]["mean"] + 0.5 * out["mu"]["sd"]):
        nodes, w = gauss_legendre(np.linspace(ref.mu_range[0], x, 41))
        assert post.cdf_of("mu", x)[0] == pytest.approx(float(ref.mu_density(nodes) @ w), abs=1e-7)
    with pytest.raises(ValueError, match="unknown quantity"):
        post.cdf_of("nonsense", 0.0)


def test_tau_cdf_matches_brute_force(case):
    _, ref, post, *_ = case
    support_low = post.tau_prior.params[0] if post.tau_prior.family == "uniform" else 0.0
    for q in (0.1, 0.5, 0.9):
        # the reference quantile, by root finding on the brute-force CDF
        def cdf(t):
            x, w = gauss_legendre(np.linspace(support_low, t, 17))
            return float(ref.tau_density(x) @ w)

        upper = support_low + 1.0
        while cdf(upper) < q:
            upper = support_low + 2 * (upper - support_low)
        t_q = optimize.brentq(lambda t: cdf(t) - q, support_low + 1e-12, upper, xtol=1e-12)
        assert post.cdf_of("tau", t_q)[0] == pytest.approx(q, abs=1e-6)


# ---------------------------------------------------------------------------- closed forms


def test_known_tau_limit_is_the_conjugate_normal():
    """tau's prior concentrated at tau0: mu | y is the textbook conjugate normal with
    weights 1 / (sei^2 + tau0^2), and each study effect the textbook shrinkage estimate."""
    y = np.array([0.31, -0.12, 0.55, 0.20, 0.05])
    s = np.array([0.10, 0.15, 0.30, 0.12, 0.20])
    tau0, m0, s0 = 0.2, 0.1, 0.5
    post = exact_posterior(y, s, tau_prior=Prior("lognormal", (math.log(tau0), 1e-6)), mu_prior=Prior("normal", (m0, s0)), mid=0.1)
    out = post.summary()
    w = 1 / (s**2 + tau0**2)
    precision = w.sum() + 1 / s0**2
    mean, sd = (w @ y + m0 / s0**2) / precision, math.sqrt(1 / precision)
    tol = 1e-5 * sd  # the prior's width 1e-6 * tau0 moves the answer by about this much
    assert out["mu"]["mean"] == pytest.approx(mean, abs=tol)
    assert out["mu"]["sd"] == pytest.approx(sd, abs=tol)
    assert out["mu"]["hdi_low"] == pytest.approx(mean - Z975 * sd, abs=tol)
    assert out["mu"]["hdi_high"] == pytest.approx(mean + Z975 * sd, abs=tol)
    assert out["mu"]["p_beneficial"] == pytest.approx(stats.norm.sf(0, mean, sd), abs=1e-6)
    assert out["mu"]["p_mid"] == pytest.approx(stats.norm.sf(0.1, mean, sd), abs=1e-6)
    new_sd = math.sqrt(sd**2 + tau0**2)
    assert out["theta_new"]["sd"] == pytest.approx(new_sd, abs=tol)
    assert out["theta_new"]["hdi_high"] == pytest.approx(mean + Z975 * new_sd, abs=tol)
    assert out["tau"]["mean"] == pytest.approx(tau0, rel=1e-5)
    for i, label in enumerate(post.labels):
        shrink = s[i] ** 2 / (s[i] ** 2 + tau0**2)
        th_mean = shrink * mean + (1 - shrink) * y[i]
        th_sd = math.sqrt((1 - shrink) * s[i] ** 2 + shrink**2 * sd**2)
        entry = out["projects"][label]
        assert entry["mean"] == pytest.approx(th_mean, abs=tol)
        assert entry["sd"] == pytest.approx(th_sd, abs=tol)
        assert entry["hdi_low"] == pytest.approx(th_mean - Z975 * th_sd, abs=tol)
        assert entry["pooling"] == pytest.approx(shrink, abs=1e-5)


def test_tau_near_zero_is_the_fixed_effect_meta_analysis():
    y = np.array([1.0, 2.0, 0.0, 3.0])
    s = np.array([0.5, 0.5, 0.8, 1.0])
    out = exact_posterior(y, s, tau_prior=parse_prior("halfnormal(1e-9)")).summary()
    w = 1 / s**2
    mean, sd = w @ y / w.sum(), math.sqrt(1 / w.sum())
    assert out["mu"]["mean"] == pytest.approx(mean, abs=1e-8)
    assert out["mu"]["sd"] == pytest.approx(sd, rel=1e-8)
    assert out["mu"]["hdi_low"] == pytest.approx(mean - Z975 * sd, abs=1e-6)
    assert out["tau"]["mean"] == pytest.approx(1e-9 * math.sqrt(2 / math.pi), rel=1e-6)
    for entry in out["projects"].values():  # complete pooling
        assert entry["mean"] == pytest.approx(mean, abs=1e-8)
        assert entry["pooling"] == pytest.approx(1.0, abs=1e-9)


def test_one_study_tau_posterior_is_its_prior():
    """With one study and a flat mu prior, p(y | tau) does not depend on tau."""
    sigma, y, s = 0.4, 0.3, 0.2
    post = exact_posterior([y], [s], tau_prior=parse_prior(f"halfnormal({sigma})"), labels=["only"])
    out = post.summary()
    assert out["tau"]["mean"] == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=1e-8)
    assert out["tau"]["sd"] == pytest.approx(sigma * math.sqrt(1 - 2 / math.pi), rel=1e-8)
    assert out["tau"]["hdi_low"] == 0.0
    assert out["tau"]["hdi_high"] == pytest.approx(sigma * Z975, rel=1e-6)  # halfnormal's 95% quantile
    # mu | tau ~ N(y, s^2 + tau^2): mean y, variance s^2 + E[tau^2]
    assert out["mu"]["mean"] == pytest.approx(y, abs=1e-10)
    assert out["mu"]["sd"] == pytest.approx(math.sqrt(s**2 + sigma**2), rel=1e-8)
    # the study effect is N(y, s) whatever tau is
    only = out["projects"]["only"]
    assert only["mean"] == pytest.approx(y, abs=1e-10)
    assert only["sd"] == pytest.approx(s, rel=1e-8)
    assert (only["hdi_low"], only["hdi_high"]) == pytest.approx((y - Z975 * s, y + Z975 * s), abs=1e-6)
    pooling = integrate.quad(lambda t: s**2 / (s**2 + t**2) * stats.halfnorm.pdf(t, scale=sigma), 0, np.inf)[0]
    assert only["pooling"] == pytest.approx(pooling, abs=1e-8)
    assert any("one estimate" in note for note in out["notes"])
    json.dumps(out, allow_nan=False)


def test_one_study_heavy_tailed_prior_reports_null_moments_not_nan():
    """halfcauchy tau, flat mu, one study: tau's posterior is half-Cauchy, so E[tau],
    E[mu] and E[theta_new] do not exist; intervals and probabilities still do."""
    beta = 0.5
    out = exact_posterior([0.3], [0.2], tau_prior=parse_prior(f"halfcauchy({beta})")).summary()
    for key in ("mu", "tau", "theta_new"):
        assert out[key]["mean"] is None and out[key]["sd"] is None
    assert out["tau"]["hdi_high"] == pytest.approx(beta * math.tan(math.pi * 0.95 / 2), rel=1e-6)
    # mu | tau ~ N(y, s^2 + tau^2) is symmetric about y
    assert out["mu"]["hdi_low"] + out["mu"]["hdi_high"] == pytest.approx(2 * 0.3, abs=1e-6)
    assert out["projects"]["1"]["sd"] == pytest.approx(0.2, rel=1e-8)
    assert any("not finite" in note for note in out["notes"])
    json.dumps(out, allow_nan=False)


def test_one_study_with_normal_mu_prior_has_finite_mean_of_tau():
    """A normal mu prior adds one power of tau to the tail: E[tau] exists, SD(tau) not.
    Here p(y | tau) = N(y | m0, s0^2 + s^2 + tau^2), so E[tau] is a 1-D integral."""
    y, s, m0, s0, beta = 0.3, 0.2, 0.0, 1.0, 0.5

    def post_tau(t):
        return stats.halfcauchy.pdf(t, scale=beta) * stats.norm.pdf(y, m0, np.sqrt(s0**2 + s**2 + t**2))

    z = integrate.quad(post_tau, 0, np.inf, epsabs=0, epsrel=1e-12, limit=500)[0]
    e_tau = integrate.quad(lambda t: t * post_tau(t), 0, np.inf, epsabs=0, epsrel=1e-12, limit=500)[0] / z
    out = exact_posterior([y], [s], tau_prior=parse_prior(f"halfcauchy({beta})"), mu_prior=Prior("normal", (m0, s0))).summary()
    assert out["tau"]["mean"] == pytest.approx(e_tau, rel=1e-6)
    assert out["tau"]["sd"] is None and out["theta_new"]["sd"] is None
    assert out["mu"]["sd"] is not None


def test_flat_tau_prior_with_enough_studies():
    """bayesmeta's uniform prior on tau > 0 with a flat mu prior: proper from 3 studies;
    E[tau] needs 4 (p(tau | y) ~ tau^-(k-1))."""
    y, s = [0.1, 0.5, 0.3, 0.9], [0.2, 0.2, 0.3, 0.25]
    out3 = exact_posterior(y[:3], s[:3], tau_prior=Prior("flat", ())).summary()
    assert out3["tau"]["mean"] is None and out3["tau"]["hdi_high"] > 0
    s2 = np.array(s) ** 2
    y4 = np.array(y)

    def post_tau(t):  # flat priors: p(y | tau) by quadrature over mu (mu | tau has an SD of about tau / 2)
        v = s2 + t**2
        half = 40.0 * (1.0 + t)
        return integrate.quad(lambda m: np.exp(norm_logpdf(y4, m, v).sum()), y4.mean() - half, y4.mean() + half,
                              points=[y4.mean()], epsabs=0, epsrel=1e-12, limit=200)[0]

    # tau = u / (1 - u) maps (0, inf) to (0, 1)
    z = integrate.quad(lambda u: post_tau(u / (1 - u)) / (1 - u) ** 2, 0, 1, epsabs=0, epsrel=1e-10, limit=400)[0]
    e_tau = integrate.quad(lambda u: u / (1 - u) * post_tau(u / (1 - u)) / (1 - u) ** 2, 0, 1, epsabs=0, epsrel=1e-10, limit=400)[0] / z
    out4 = exact_posterior(y, s, tau_prior=Prior("flat", ())).summary()
    assert out4["tau"]["mean"] == pytest.approx(e_tau, rel=1e-5)
    assert out4["tau"]["sd"] is None


# ---------------------------------------------------------------------------- the grid


def _quad_reference(y, s, tau_pdf, m0, s0):
    """Moments by adaptive 1-D quadrature over tau around the mode (mu conjugate given tau).

    log p(y | tau): the multivariate normal with covariance diag(s^2 + tau^2) + s0^2 11'
    (determinant lemma and Sherman-Morrison), written independently of the engine."""
    s2 = s**2

    def log_lik(t):
        v = s2 + t**2
        r = y - m0
        a = (1 / v).sum()
        logdet = np.log(v).sum() + np.log1p(s0**2 * a)
        quad = (r**2 / v).sum() - s0**2 * ((r / v).sum()) ** 2 / (1 + s0**2 * a)
        return -0.5 * (logdet + quad)

    def conditional(t):
        w = 1 / (s2 + t**2)
        precision = w.sum() + 1 / s0**2
        return (w @ y + m0 / s0**2) / precision, 1 / precision

    log_post = np.vectorize(lambda t: log_lik(t) + np.log(tau_pdf(t)))
    mode = optimize.minimize_scalar(lambda lt: -log_post(np.exp(lt)), bounds=(-12, 5), method="bounded").x
    t_mode = math.exp(mode)
    shift = log_post(t_mode)

    def expect(g):
        f = lambda t: math.exp(log_post(t) - shift) * g(t)  # noqa: E731
        pts = [t_mode * r for r in (0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 2.0)]
        val = integrate.quad(f, 0, 50 * t_mode, points=pts, epsabs=0, epsrel=1e-11, limit=800)[0]
        return val

    z = expect(lambda t: 1.0)
    e = {
        "tau": expect(lambda t: t) / z, "tau2": expect(lambda t: t * t) / z,
        "mu": expect(lambda t: conditional(t)[0]) / z,
        "mu2": expect(lambda t: conditional(t)[1] + conditional(t)[0] ** 2) / z,
        "p_mu": expect(lambda t: special.ndtr(conditional(t)[0] / math.sqrt(conditional(t)[1]))) / z,
    }
    return e, expect, z, conditional


@pytest.mark.parametrize("k, tau_true, prior", [(1000, 0.2, "halfnormal(0.5)"), (300, 0.002, "halfcauchy(0.5)"), (200, 30.0, "exponential(0.1)")])
def test_grid_is_accurate_for_sharp_tiny_and_huge_tau(k, tau_true, prior):
    """Many studies make the posterior of tau sharp; true tau far below or far above the SEs."""
    rng = np.random.default_rng(k)
    s = rng.uniform(0.05, 0.5, k)
    y = rng.normal(0.1, tau_true, k) + rng.normal(0, s)
    p = parse_prior(prior)
    tau_pdf = {"halfnormal": lambda t: stats.halfnorm.pdf(t, scale=0.5), "halfcauchy": lambda t: stats.halfcauchy.pdf(t, scale=0.5),
               "exponential": lambda t: stats.expon.pdf(t, scale=10.0)}[p.family]
    e, *_ = _quad_reference(y, s, tau_pdf, 0.0, 10.0)
    out = exact_posterior(y, s, tau_prior=p, mu_prior=Prior("normal", (0.0, 10.0))).summary()
    assert out["tau"]["mean"] == pytest.approx(e["tau"], rel=1e-6)
    assert out["tau"]["sd"] == pytest.approx(math.sqrt(e["tau2"] - e["tau"] ** 2), rel=1e-5)
    sd_mu = math.sqrt(e["mu2"] - e["mu"] ** 2)
    assert out["mu"]["mean"] == pytest.approx(e["mu"], abs=1e-6 * sd_mu)
    assert out["mu"]["sd"] == pytest.approx(sd_mu, rel=1e-6)
    assert out["mu"]["p_beneficial"] == pytest.approx(e["p_mu"], abs=1e-7)


def test_compressed_study_intervals_match_quadrature():
    """With many studies the study-effect mixtures use a Gauss rule instead of the grid:
    their intervals must still satisfy the HDI conditions under CDFs from 1-D quadrature."""
    rng = np.random.default_rng(7)
    k = 400
    s = rng.uniform(0.05, 0.5, k)
    y = rng.normal(0.1, 0.2, k) + rng.normal(0, s)
    post = exact_posterior(y, s, tau_prior=parse_prior("halfnormal(0.5)"), mu_prior=Prior("normal", (0.0, 10.0)))
    assert k * int((post.weight > 1e-14).sum()) > exact_module._FULL_GRID_BUDGET  # the compressed path
    out = post.summary()
    _, expect, z, conditional = _quad_reference(y, s, lambda t: stats.halfnorm.pdf(t, scale=0.5), 0.0, 10.0)
    for i in (int(np.argmax(y)), int(np.argmin(y)), int(np.argmax(s)), int(np.argmin(s))):
        entry = out["projects"][post.labels[i]]

        def cond(t, i=i):
            m, v = conditional(t)
            b = s[i] ** 2 / (s[i] ** 2 + t**2)
            return b * m + (1 - b) * y[i], math.sqrt((1 - b) * s[i] ** 2 + b * b * v)

        def cdf(x):
            return expect(lambda t: special.ndtr((x - cond(t)[0]) / cond(t)[1])) / z

        def density(x):
            return expect(lambda t: stats.norm.pdf(x, *cond(t))) / z

        assert cdf(entry["hdi_high"]) - cdf(entry["hdi_low"]) == pytest.approx(0.95, abs=1e-7)
        assert density(entry["hdi_low"]) == pytest.approx(density(entry["hdi_high"]), rel=1e-4)


def test_compressed_and_full_grid_agree(monkeypatch):
    rng = np.random.default_rng(11)
    k = 250
    s = rng.uniform(0.05, 0.5, k)
    y = rng.normal(0.0, 0.3, k) + rng.normal(0, s)
    kwargs = dict(tau_prior=parse_prior("halfcauchy(0.5)"), mu_prior=Prior("normal", (0.0, 1.0)))
    compressed = exact_posterior(y, s, **kwargs).summary()
    monkeypatch.setattr(exact_module, "_FULL_GRID_BUDGET", 10**9)
    full = exact_posterior(y, s, **kwargs).summary()
    for label, entry in full["projects"].items():
        for key in ("hdi_low", "hdi_high"):
            assert compressed["projects"][label][key] == pytest.approx(entry[key], abs=1e-6 * entry["sd"])


def test_finer_grid_changes_nothing(monkeypatch):
    """Halving the t-step of the tau grid and the x-step of the mixture tables moves no
    reported number by more than 1e-6 of its scale (the grid is converged)."""
    kwargs = dict(tau_prior=parse_prior("halfcauchy(5)"), mu_prior=parse_prior("normal(0, 5)"))
    base = exact_posterior(SCHOOLS_Y, SCHOOLS_SE, **kwargs).summary()
    monkeypatch.setattr(exact_module, "_H_T", exact_module._H_T / 2)
    monkeypatch.setattr(exact_module, "_X_STEP", exact_module._X_STEP / 2)
    fine = exact_posterior(SCHOOLS_Y, SCHOOLS_SE, **kwargs).summary()
    for key in ("mu", "tau", "theta_new"):
        for stat in ("mean", "sd", "hdi_low", "hdi_high"):
            assert base[key][stat] == pytest.approx(fine[key][stat], abs=1e-6 * fine[key]["sd"])
    for label, entry in fine["projects"].items():
        for stat in ("mean", "sd", "hdi_low", "hdi_high", "pooling"):
            assert base["projects"][label][stat] == pytest.approx(entry[stat], abs=1e-6 * entry["sd"])


def test_same_inputs_same_numbers():
    kwargs = dict(tau_prior=parse_prior("halfnormal(5)"), mu_prior=parse_prior("normal(0, 10)"), mid=2.0)
    assert exact_posterior(SCHOOLS_Y, SCHOOLS_SE, **kwargs).summary() == exact_posterior(SCHOOLS_Y, SCHOOLS_SE, **kwargs).summary()


def test_decrease_is_the_mirror_of_increase():
    """Negating the data (and a symmetric prior) mirrors the posterior: P(mu < -mid | -y) = P(mu > mid | y)."""
    kwargs = dict(tau_prior=parse_prior("halfnormal(5)"), mu_prior=parse_prior("normal(0, 10)"), mid=2.0)
    up = exact_posterior(SCHOOLS_Y, SCHOOLS_SE, beneficial="increase", **kwargs).summary()
    down = exact_posterior(-np.array(SCHOOLS_Y), SCHOOLS_SE, beneficial="decrease", **kwargs).summary()
    for key in ("p_beneficial", "p_mid"):
        assert down["mu"][key] == pytest.approx(up["mu"][key], abs=1e-12)
    assert down["theta_new"]["p_beneficial"] == pytest.approx(up["theta_new"]["p_beneficial"], abs=1e-12)
    assert down["mu"]["hdi_low"] == pytest.approx(-up["mu"]["hdi_high"], abs=1e-6 * up["mu"]["sd"])
    assert 0.5 < up["mu"]["p_beneficial"] < 1.0


def test_random_datasets_give_plain_and_coherent_summaries():
    """Any scale, any number of studies, any accepted prior: no NaN, probabilities in [0, 1],
    every interval ordered and holding its mean (study effects are unimodal enough for that)."""
    rng = np.random.default_rng(2026)
    families = ["halfnormal({})", "halfcauchy({})", "exponential({})", "lognormal({}, 1)", "uniform(0, {})", "halfstudentt(3, {})"]
    for _ in range(30):
        k = int(rng.choice([1, 2, 3, 7, 30]))
        scale = 10 ** rng.uniform(-3, 3)
        s = scale * rng.uniform(0.1, 2.0, k)
        y = rng.normal(0.0, scale * 10 ** rng.uniform(-2, 1), k) + rng.normal(0.0, s)
        size = scale * 10 ** rng.uniform(-1, 1)
        family = families[int(rng.integers(len(families)))]
        arg = math.log(size) if family.startswith("lognormal") else (1 / size if family.startswith("exponential") else size)
        mu_prior = None if rng.random() < 0.4 else Prior("normal", (0.0, 10 * scale))
        out = exact_posterior(y, s, tau_prior=parse_prior(family.format(arg)), mu_prior=mu_prior, mid=scale).summary()
        json.dumps(out, allow_nan=False)
        for key in ("mu", "tau", "theta_new"):
            assert out[key]["hdi_low"] < out[key]["hdi_high"]
            assert 0.0 <= out[key].get("p_beneficial", 0.5) <= 1.0
        assert out["tau"]["hdi_low"] >= 0.0
        for entry in out["projects"].values():
            assert entry["hdi_low"] < entry["mean"] < entry["hdi_high"]
            assert 0.0 <= entry["pooling"] <= 1.0


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "yi, sei, kwargs, message",
    [
        ([], [], {}, "no estimates"),
        ([1.0, 2.0], [1.0], {}, "differ in length"),
        ([1.0, float("nan")], [1.0, 1.0], {}, "yi must be finite"),
        ([1.0, 2.0], [1.0, float("inf")], {}, "sei must be finite and positive"),
        ([1.0, 2.0], [1.0, 0.0], {}, "sei must be finite and positive"),
        ([1.0, 2.0], [1.0, -0.5], {}, "sei must be finite and positive"),
        ([1.0, 2.0], [1.0, 1.0], {"tau_prior": Prior("flat", ())}, "improper posterior"),
        ([1.0], [1.0], {"tau_prior": Prior("flat", ()), "mu_prior": Prior("normal", (0.0, 1.0))}, "improper posterior"),
        ([1.0, 2.0], [1.0, 1.0], {"tau_prior": Prior("normal", (0.0, 1.0))}, "tau > 0"),
        ([1.0, 2.0], [1.0, 1.0], {"tau_prior": Prior("uniform", (-1.0, 2.0))}, "tau > 0"),
        ([1.0, 2.0], [1.0, 1.0], {"mu_prior": Prior("studentt", (3.0, 0.0, 1.0))}, "normal or flat mu prior"),
        ([1.0, 2.0], [1.0, 1.0], {"hdi_prob": 1.0}, "hdi_prob"),
        ([1.0, 2.0], [1.0, 1.0], {"beneficial": "up"}, "beneficial"),
        ([1.0, 2.0], [1.0, 1.0], {"mid": -1.0}, "mid"),
        ([1.0, 2.0], [1.0, 1.0], {"labels": ["a", "a"]}, "labels"),
    ],
)
def test_bad_input_raises_a_clear_error(yi, sei, kwargs, message):
    kwargs = {"tau_prior": parse_prior("halfnormal(1)"), **kwargs}
    with pytest.raises(ValueError, match=message):
        exact_posterior(yi, sei, **kwargs)


def test_flat_tau_is_proper_from_three_studies_with_flat_mu_and_two_with_normal_mu():
    exact_posterior([1.0, 2.0, 0.5], [1.0, 1.0, 1.0], tau_prior=Prior("flat", ()))
    exact_posterior([1.0, 2.0], [1.0, 1.0], tau_prior=Prior("flat", ()), mu_prior=Prior("normal", (0.0, 5.0)))


# ---------------------------------------------------------------------------- fit_exact


def _row(estimate_id, project, domain, yi, sei, *, design="rct", poolable=True, direction_only=False, reason=None,
         beneficial="increase", mid=2.0, scale=10.0):
    return {
        "estimate_id": estimate_id, "project_id": project, "domain": domain, "design": design, "estimand": "itt",
        "outcome": estimate_id, "yi": yi, "sei": sei, "poolable": poolable, "direction_only": direction_only,
        "direction": None, "significant": None, "sig_level": math.nan, "exclusion_reason": reason,
        "domain_label": domain.title(), "domain_metric": "pp", "domain_beneficial": beneficial,
        "domain_mid": mid, "domain_scale": scale,
    }


def _table():
    nan = math.nan
    return pd.DataFrame([
        _row("a:emp", "a", "employment", 1.5, 3.0),
        _row("b:emp", "b", "employment", 18.0, 8.0, design="comparison_group"),
        _row("c:emp", "c", "employment", 3.0, 2.5, design="area_comparison"),
        _row("v:emp", "v", "employment", nan, nan, design="matched_register", direction_only=True),
        _row("d:emp", "d", "employment", nan, nan, poolable=False, reason="no numbers in the source"),
        _row("a:abs1", "a", "absence", -1.2, 0.8, beneficial="decrease", mid=1.0, scale=5.0),
        _row("a:abs2", "a", "absence", -0.5, 0.9, beneficial="decrease", mid=1.0, scale=5.0),
        _row("a:grade", "a", "grade", 0.2, 0.25, mid=nan, scale=1.0),
        _row("v:pension", "v", "pension", nan, nan, direction_only=True, beneficial="decrease", mid=1.0, scale=5.0),
    ])


PRIORS = {"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")}


def test_fit_exact_shape_and_json():
    from metaeval.result import Result

    out = fit_exact(_table(), priors=PRIORS)
    assert Result.from_json(out.to_json()) == out  # plain JSON, no NaN anywhere
    assert out.engine == "exact" and out.seed is None and out.diagnostics is None  # nothing sampled, nothing faked
    assert list(out.domains) == ["absence", "employment", "grade"]  # pension has nothing to pool
    emp = out.domains["employment"]
    assert emp.n_estimates == 3 and emp.n_projects == 3 and [p.project for p in emp.projects] == ["a", "b", "c"]
    assert emp.designs == {"area_comparison": 1, "comparison_group": 1, "rct": 1}
    assert emp.tau.p_beneficial is None and emp.mu.p_mid is not None and emp.pairwise == {}
    reasons = {x.estimate_id: (x.stage, x.reason) for x in out.exclusions}
    assert reasons["v:emp"][0] == "engine" and "direction" in reasons["v:emp"][1]
    assert reasons["d:emp"] == ("evidence", "no numbers in the source")
    assert reasons["v:pension"][0] == "engine"
    assert out.domains["grade"].mid is None and out.domains["grade"].mu.p_mid is None


def test_fit_exact_leaves_out_a_curator_inferred_benefit_and_records_it():
    """As the default model does (data/README.md "Benefit only where the source or the domain says so"): an outcome whose
    beneficial direction the curator inferred does not enter; the model record says the rule applied, or that it did not."""
    plain = fit_exact(_table(), priors=PRIORS)
    assert plain.model.inferred_benefit is None  # no benefit_basis column: the rule had nothing to apply to
    table = _table().assign(benefit_basis="domain")
    table.loc[table["estimate_id"] == "b:emp", "benefit_basis"] = "curator"
    out = fit_exact(table, priors=PRIORS)
    assert out.model.inferred_benefit == "exclude"
    assert [p.project for p in out.domains["employment"].projects] == ["a", "c"]
    left = {x.estimate_id: x for x in out.exclusions}["b:emp"]
    assert left.stage == "model" and "inferred by the curator" in left.reason
    kept = table[table["estimate_id"] != "b:emp"]
    assert out.domains["employment"].mu == fit_exact(kept, priors=PRIORS).domains["employment"].mu


def test_fit_exact_scales_spec_priors_and_not_overrides():
    """Spec priors are in units of domain_scale (10 for employment); overrides are absolute."""
    table = _table()
    used = table[table["domain"] == "employment"].iloc[:3]
    direct = exact_posterior(used["yi"], used["sei"], tau_prior=parse_prior("halfnormal(2.5)"), mu_prior=parse_prior("normal(0, 10)"),
                             mid=2.0, labels=list(used["project_id"])).summary()
    out = fit_exact(table, priors=PRIORS).domains["employment"]
    assert out.mu.model_dump(include=set(direct["mu"])) == direct["mu"]
    assert {p.project: p.model_dump(include={"raw", "raw_se", "mean", "sd", "hdi_low", "hdi_high", "pooling"})
            for p in out.projects} == direct["projects"]
    assert out.priors == {"mu": "normal(0, 10)", "tau": "halfnormal(2.5)"}
    # an absolute override, per domain first
    over = fit_exact(table, priors=PRIORS, overrides={"tau": parse_prior("halfnormal(9)"), "tau.employment": parse_prior("halfnormal(2.5)")})
    assert over.domains["employment"].tau.model_dump(include=set(direct["tau"])) == direct["tau"]
    assert over.domains["grade"].priors["tau"] == "halfnormal(9)"
    assert over.domains["grade"].priors["mu"] == "normal(0, 1)"  # grade's scale is 1


def test_fit_exact_domain_edge_cases():
    out = fit_exact(_table(), priors=PRIORS)
    absence = out.domains["absence"]  # one project, two estimates: an effect per estimate, with a note
    assert [(p.project, p.estimate_id) for p in absence.projects] == [("a", "a:abs1"), ("a", "a:abs2")] and absence.n_projects == 1
    assert any("independent studies" in n for n in absence.notes)
    assert absence.beneficial == "decrease" and absence.mu.p_beneficial > 0.5  # both estimates < 0
    grade = out.domains["grade"]  # one study: tau's posterior is (nearly) its prior, and says so
    assert any("one estimate" in n for n in grade.notes) and grade.tau.mean is not None
    assert "pension" not in out.domains  # only a direction-only finding: nothing to pool, and the exclusion says why
    assert [x.estimate_id for x in out.exclusions_in("pension")] == ["v:pension"]


def test_fit_exact_domain_rows_must_agree_on_its_metadata():
    table = _table()
    table.loc[1, "domain_label"] = "Jobs"
    with pytest.raises(ValueError, match=r"domain 'employment': rows disagree on domain_label \(Employment, Jobs\)"):
        fit_exact(table, priors=PRIORS)
    table = _table().astype({"domain_mid": object})
    table.loc[0, "domain_mid"], table.loc[2, "domain_mid"] = math.nan, None  # missing in some rows: the others' value holds
    assert fit_exact(table, priors=PRIORS).domains["employment"].mid == 2.0


def test_fit_exact_bad_input():
    with pytest.raises(ValueError, match="empty"):
        fit_exact(_table().iloc[:0], priors=PRIORS)
    bad = _table()
    bad.loc[0, "sei"] = 0.0
    with pytest.raises(ValueError, match="a:emp"):
        fit_exact(bad, priors=PRIORS)
    with pytest.raises(ValueError, match="tau prior"):
        fit_exact(_table(), priors={"mu": PRIORS["mu"]})
    with pytest.raises(ValueError, match="lacks column"):
        fit_exact(_table().drop(columns=["sei"]), priors=PRIORS)
    rows = _table().to_dict("records")
    del rows[3]["poolable"]
    with pytest.raises(ValueError, match="lacks column.*poolable"):
        fit_exact(rows, priors=PRIORS)
    with pytest.raises(ValueError, match="DataFrame .* or a list of row dicts"):
        fit_exact("evidence.csv", priors=PRIORS)


def test_fit_exact_minimal_csv_table():
    """A metafor-style CSV table: no project, domain 'all', scale 1, no MID."""
    table = pd.DataFrame({"estimate_id": list("ABCDEFGH"), "project_id": list("ABCDEFGH"), "domain": "all",
                          "yi": SCHOOLS_Y, "sei": SCHOOLS_SE, "poolable": True, "domain_scale": 1.0})
    out = fit_exact(table, priors={"mu": parse_prior("normal(0, 5)"), "tau": parse_prior("halfcauchy(5)")})
    entry = out.domains["all"]
    direct = exact_posterior(SCHOOLS_Y, SCHOOLS_SE, tau_prior=parse_prior("halfcauchy(5)"), mu_prior=parse_prior("normal(0, 5)"),
                             labels=list("ABCDEFGH")).summary()
    assert entry.mu.model_dump(include=set(direct["mu"])) == direct["mu"] and entry.tau.model_dump(include=set(direct["tau"])) == direct["tau"]
    assert entry.designs == {"unspecified": 8} and entry.mid is None
