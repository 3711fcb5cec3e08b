"""Exact posterior of a conditionally Gaussian two-level hierarchy, by quadrature (NumPy/SciPy only).

One *block* (the adapter, :mod:`metaeval.exact_full`, makes one per outcome domain) is::

    mu      ~ Normal(m0, s0) or flat
    theta_c ~ Normal(mu, tau)                        clusters c
    b_t     ~ Normal(m_t, s_t)                       offsets t, each in one cluster, priors fixed
    y_k     ~ Normal(theta_c + b_t + e_k, v_k)       e_k ~ Normal(0, omega) where flagged (else 0)
    lo_f < yhat_f / s_f < hi_f                       censored observations: only the region is known, with
    yhat_f  ~ Normal(theta_c + b_t, s_f^2 + omega^2 [flagged]),   s_f = se_f / sqrt(w_f),  se_f ~ its prior

Given the variance parameters (tau, omega) everything but the censored observations is Gaussian and is
integrated in closed form, cluster by cluster (linear in the number of observations): within a cluster the
observations collapse to one estimate per offset group and then to one per cluster, and the clusters to
mu, as in the one-level model of :mod:`metaeval.exact`. What is left:

- a quadrature over (tau, omega): a product trapezoid rule in t on z = c + a sinh(t) per axis (z = log tau,
  log omega), centred on the posterior mode with a the posterior SD in z, reaching until the density has
  fallen by e^-DROP (the one-level engine's grid, in one or two dimensions);
- per (tau, omega) node, the censored observations. They see the latent Gaussian vector only through
  eta = theta_c + b_t, the effect of the (cluster, offset) group holding them (one such group a block:
  more are not integrated here, and say so). Given the other observations, eta is Normal(E, S); each
  censored observation's likelihood P(region | eta) = E_se[Phi(.) - Phi(.)] is closed form given the SE
  and is integrated over the SE's prior by a trapezoid rule in log se. The tilted density Normal(E, S) x
  likelihood is integrated around its mode, scaled by its curvature, by a trapezoid rule on
  x = sinh(t): this gives the marginal likelihood and nodes on eta;
- every latent quantity (mu, theta_c, b_t, a new cluster's effect) is then a mixture of normals over the
  (tau, omega, eta) nodes with closed-form component means (linear in eta) and variances: moments and
  tail probabilities are sums; shortest intervals come from the mixture CDF.

Numerical error. Everything is computed twice: with the default rules and with rules 1.5 times coarser
in every dimension (steps in t of the (tau, omega) grid, of the log-SE rule and of the eta rule). The
rules converge geometrically, so the difference is, in practice, an upper bound on the default rules'
error; it is reported per quantity (tests/test_exact_full.py holds it against brute-force quadrature).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import special

from metaeval.exact import _gauss_rule, _log_dtau_dz, _prior_scales, _scan_mode, _shortest_interval, _tau_from_z
from metaeval.priors import Prior

_LOG_2PI = math.log(2 * math.pi)
STEP = 0.25  # t-step of the (tau, omega) grid (errors of 1e-4 SD on the tests' cases; the coarse rule's, 3e-3 on the bundled evidence)
SE_STEP = 0.3  # t-step of the rule over a censored observation's SE, in log se
ETA_STEP = 0.15  # t-step of the trapezoid rule on one eta dimension, x = sinh(t)
COARSE = 1.5  # the coarse rules' steps are this much larger
DROP = 25.0  # nodes where the log density is this far below its maximum are negligible (e^-25 ~ 1e-11)
REACH = 60.0  # furthest a grid goes from its centre, in log units (a heavier tail is cut here: _Level.edge_density)
NARROW = 0.7  # cdf: a component narrower than this times eta's spread (c u_scale) takes the narrow branch
NEW = -1  # quantity row of a new cluster's effect, mu + tau z
WEIGHT_FLOOR = 1e-13  # mixture components lighter than this (relative) are left out of intervals, not moments
CHUNK = 200_000  # rows x components evaluated at once (memory)
COMPRESS_BUDGET = 100_000  # rows x (tau, omega) nodes above which a compressed rule is tried (no censored data)
COMPRESS_TOL = 1e-7  # the largest CDF error a compressed rule may make at its probes
COMPARE_BUDGET = 40_000  # P(first) and pairwise among 4 or more rows: a systematic sample of this many components
# over the rows (P(first)) or their square (pairwise), at least 32 and at most 256


class NoExactForm(ValueError):
    """The block is outside what this engine integrates (the reason is the message)."""


# ---------------------------------------------------------------------------- input


@dataclass(frozen=True, eq=False)
class Block:
    """One independent block of the model as arrays (module docstring). Indices are 0-based; an offset
    index of -1 means none. ``se_prior`` has one prior per censored observation."""

    n_clusters: int
    mu_prior: Prior
    tau_prior: Prior
    omega_prior: Prior | None
    y: np.ndarray
    v: np.ndarray
    cluster: np.ndarray
    offset: np.ndarray
    residual: np.ndarray
    offset_cluster: np.ndarray
    offset_mean: np.ndarray
    offset_sd: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    c_cluster: np.ndarray
    c_offset: np.ndarray
    c_residual: np.ndarray
    c_weight: np.ndarray
    se_prior: tuple[Prior, ...] = ()

    @classmethod
    def build(cls, *, n_clusters, mu_prior, tau_prior, omega_prior=None, estimates=(), offsets=(), censored=()):
        """From rows: ``estimates`` (y, v, cluster, offset, residual), ``offsets`` (cluster, mean, sd),
        ``censored`` (lo, hi, cluster, offset, residual, weight, se_prior)."""
        e = list(zip(*estimates)) if len(estimates) else [()] * 5
        o = list(zip(*offsets)) if len(offsets) else [()] * 3
        c = list(zip(*censored)) if len(censored) else [()] * 7

        def f(x):
            return np.asarray(x, dtype=float)

        def i(x):
            return np.asarray(x, dtype=np.int64)

        block = cls(n_clusters=int(n_clusters), mu_prior=mu_prior, tau_prior=tau_prior, omega_prior=omega_prior,
                    y=f(e[0]), v=f(e[1]), cluster=i(e[2]), offset=i(e[3]), residual=np.asarray(e[4], dtype=bool),
                    offset_cluster=i(o[0]), offset_mean=f(o[1]), offset_sd=f(o[2]),
                    lo=f(c[0]), hi=f(c[1]), c_cluster=i(c[2]), c_offset=i(c[3]), c_residual=np.asarray(c[4], dtype=bool),
                    c_weight=f(c[5]), se_prior=tuple(c[6]))
        block.check()
        return block

    def check(self) -> None:
        if self.mu_prior.family not in ("normal", "flat"):
            raise NoExactForm(f"mu's prior {self.mu_prior} is not normal or flat, so mu is not conditionally Gaussian")
        for name, prior in (("tau", self.tau_prior), ("omega", self.omega_prior), *(("se", p) for p in self.se_prior)):
            if prior is not None and not (prior.support == "positive" or (prior.family == "uniform" and prior.params[0] >= 0)):
                raise NoExactForm(f"{name} needs a proper prior on positive values, got {prior}")
        if (self.residual.any() or self.c_residual.any()) and self.omega_prior is None:
            raise ValueError("observations flagged with a residual need an omega prior")
        if self.mu_prior.family == "flat" and self.y.size == 0:
            raise NoExactForm("a flat mu prior with no Gaussian observation gives an improper posterior")
        if self.y.size + self.lo.size == 0:
            raise ValueError("a block needs at least one observation")
        if np.any(~np.isfinite(self.y)) or np.any(~(self.v > 0)) or np.any(~np.isfinite(self.v)):
            raise ValueError("observations need finite values and positive variances")
        if np.any(~(self.offset_sd > 0)):
            raise ValueError("offset priors need positive SDs")
        if np.any(~(self.lo < self.hi)) or np.any(~(self.c_weight > 0)):
            raise ValueError("censored observations need lo < hi and positive weights")

    @property
    def has_omega(self) -> bool:
        return self.omega_prior is not None


# ---------------------------------------------------------------------------- rules


@functools.cache
def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for the standard normal (weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


def _mode(logdens, z0: float, z1: float) -> tuple[float, float]:
    """Mode and SD (from the curvature) of a unimodal log density in z, from a scan of [z0, z1] widened as
    needed (the one-level engine's search)."""
    return _scan_mode(logdens, np.arange(z0, z1 + 0.25, 0.5))[:2]


def _reach(logdens, centre: float, spread: float, step: float) -> tuple[float, float]:
    """The t-range on z = centre + spread sinh(t) where logdens is within DROP of its maximum, one step
    wider each side (at most REACH from the centre)."""
    t_max = math.asinh(REACH / spread)
    t = np.arange(-math.ceil(t_max / step), math.ceil(t_max / step) + 1) * step
    lp = logdens(centre + spread * np.sinh(t))
    wanted = np.flatnonzero(lp >= np.nanmax(lp) - DROP)
    return float(max(t[wanted[0]] - step, -t_max)), float(min(t[wanted[-1]] + step, t_max))


def _prior_rule(prior: Prior, step: float):
    """Nodes (values) and weights (summing to 1) of a trapezoid rule for E[g(x)] under a positive prior,
    in z = log x (logit for a uniform prior), z = c + a sinh(t) with t on multiples of ``step``."""

    def logdens(z):
        return np.where(np.isfinite(z), prior.logpdf(_tau_from_z(z, prior)) + _log_dtau_dz(z, prior), -np.inf)

    scales = [s for s in _prior_scales(prior) if s > 0]
    c, a = _mode(logdens, math.log(min(scales)) - 10, math.log(max(scales)) + 10)
    t0, t1 = _reach(logdens, c, a, step)
    t = np.arange(math.ceil(t0 / step), math.floor(t1 / step) + 1) * step
    z = c + a * np.sinh(t)
    lw = logdens(z) + np.log(a * np.cosh(t))
    w = np.exp(lw - lw.max())
    return _tau_from_z(z, prior), w / w.sum()


# ---------------------------------------------------------------------------- censored factors


def _log_ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails and for narrow intervals."""
    d = special.ndtr(b) - special.ndtr(a)
    out = np.log(np.maximum(d, 1e-300))
    small = d < 1e-6
    if small.any():
        at, bt = a[small], b[small]
        upper = at > 0  # both ends in the upper tail: mirror them into the lower one
        hi_, lo_ = np.where(upper, -at, bt), np.where(upper, -bt, at)
        width, mid = bt - at, 0.5 * (at + bt)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tail = special.log_ndtr(hi_) + np.log1p(-np.exp(special.log_ndtr(lo_) - special.log_ndtr(hi_)))
            # a narrow interval: the midpoint rule, with its curvature term
            narrow = np.log(width) - 0.5 * mid * mid - 0.5 * _LOG_2PI + np.log1p(width * width * (mid * mid - 1) / 24)
        out[small] = np.where((width < 1e-4) | ~np.isfinite(tail), narrow, tail)
    return out


def _censored_terms(eta, lo, hi, s, log_w, omega2, derivatives: bool, tails: bool = False):
    """log P(lo < yhat/s_j < hi | eta), averaged over SE nodes s_j with log weights log_w; with
    ``derivatives`` also its first and second derivatives in eta. eta: (N, P); omega2: (N,). ``tails``:
    in log space throughout (for probabilities too small to sum directly)."""
    sigma = np.sqrt(s[None, None, :] ** 2 + omega2[:, None, None])
    a = (lo * s[None, None, :] - eta[..., None]) / sigma
    b = (hi * s[None, None, :] - eta[..., None]) / sigma
    if not (derivatives or tails):  # the common case first: probabilities summed directly, logs where they underflow
        upper = a > 0  # both ends in the upper tail: the difference of upper-tail probabilities keeps its digits
        d = np.where(upper, special.ndtr(-a) - special.ndtr(-b), special.ndtr(b) - special.ndtr(a))
        total = d @ np.exp(log_w)
        low = ~(total > 1e-250)
        with np.errstate(divide="ignore"):
            out = np.log(total)
        if low.any():
            rows = np.nonzero(low)[0]
            out[low] = _censored_terms(eta[low][:, None], lo, hi, s, log_w, omega2[rows], False, tails=True)[0][:, 0]
        return out, None, None
    with np.errstate(all="ignore"):  # far nodes give -inf; they weigh nothing and are cleaned below
        log_d = _log_ndtr_diff(a, b)
        lw = log_w + log_d
        top = np.maximum(lw.max(-1, keepdims=True), -1e300)  # -inf everywhere: total stays -inf, not nan
        total = np.log(np.exp(lw - top).sum(-1)) + top[..., 0]
        if not derivatives:
            return total, None, None
        pi = np.exp(lw - total[..., None])
        half = 0.5 * _LOG_2PI
        ra = np.exp(np.minimum(-0.5 * a * a - half - log_d, 700.0))  # phi(a) / (Phi(b) - Phi(a))
        rb = np.exp(np.minimum(-0.5 * b * b - half - log_d, 700.0))
        d1 = np.nan_to_num(np.where(pi > 0, (ra - rb) / sigma * pi, 0.0).sum(-1))
        d2 = np.nan_to_num(np.where(pi > 0, (a * ra - b * rb) / sigma**2 * pi, 0.0).sum(-1) - d1 * d1)
    return total, d1, d2


# ---------------------------------------------------------------------------- the Gaussian algebra


def _sum_by(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Sum the last axis of ``values`` (rows x items) by ``index`` into ``n`` slots."""
    rows = values.reshape(int(np.prod(values.shape[:-1])), values.shape[-1])
    out = np.zeros((rows.shape[0], n))
    for r in range(rows.shape[0] if values.shape[-1] else 0):
        out[r] = np.bincount(index, weights=rows[r], minlength=n)
    return out.reshape(*values.shape[:-1], n)


@dataclass
class _Nodes:
    """What is known at N (tau, omega) nodes: the log posterior density (in tau, omega), and per quantity
    row (0 mu, 1..C clusters, C+1.. offsets) its mean and variance given the Gaussian observations, its
    covariances with the standardised eta and with mu, and the eta nodes u (N, P, H) with their weights."""

    tau: np.ndarray
    omega: np.ndarray
    log_post: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    cov_u: np.ndarray
    cov_mu: np.ndarray
    u: np.ndarray
    u_weight: np.ndarray
    u_centre: np.ndarray  # one eta dimension: u = u_centre + u_scale sinh(t) at the nodes, t on a lattice
    u_scale: np.ndarray
    offset_slope: np.ndarray  # (N, T) beta of b_t | theta_c ~ N(alpha + beta theta_c, gamma), for draws
    eta_mean: np.ndarray  # eta = eta_mean + eta_root u (0 without censored observations)
    eta_root: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Nodes]) -> _Nodes:
        """One set of nodes from several (eta node lists padded both sides with weightless nodes)."""
        P = max(p.u.shape[1] for p in parts)
        padded = []
        for p in parts:
            side = (P - p.u.shape[1]) // 2
            padded.append(cls(**{**p.__dict__, "u": np.pad(p.u, ((0, 0), (side, side), (0, 0))),
                                 "u_weight": np.pad(p.u_weight, ((0, 0), (side, side)))}))
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in padded]) for f in fields(cls)})


    def take(self, index) -> _Nodes:
        return _Nodes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class _Prepared:
    """A block's index structure, and the Gaussian algebra at any (tau, omega) nodes."""

    def __init__(self, block: Block):
        self.b = block
        C, T = block.n_clusters, block.offset_cluster.size
        self.C, self.T = C, T
        key = block.cluster * (T + 1) + block.offset + 1
        uniq, self.group = np.unique(key, return_inverse=True)
        self.group_cluster, self.group_offset = uniq // (T + 1), uniq % (T + 1) - 1
        self.G = uniq.size
        has = self.group_offset >= 0
        off = np.concatenate([block.offset_mean, [0.0]]), np.concatenate([block.offset_sd, [0.0]])
        self.m_g, self.s2_g = off[0][self.group_offset], off[1][self.group_offset] ** 2  # index -1: no offset
        self.has_data = np.bincount(self.group_cluster, minlength=C) > 0
        self.offset_group = np.full(T, -1)
        self.offset_group[self.group_offset[has]] = np.flatnonzero(has)
        # censored groups h: the (cluster, offset) pairs holding censored observations
        ckey = block.c_cluster * (T + 1) + block.c_offset + 1
        cuniq, self.c_group = np.unique(ckey, return_inverse=True)
        self.h_cluster, self.h_offset = cuniq // (T + 1), cuniq % (T + 1) - 1
        self.H = cuniq.size
        if self.H > 1:
            raise NoExactForm(f"censored observations in {self.H} (cluster, offset) groups of one block: the exact engine "
                              "integrates them in one group only")
        self.prec0, self.m0 = (1 / block.mu_prior.params[1] ** 2, block.mu_prior.params[0]) if block.mu_prior.family == "normal" else (0.0, 0.0)
        self._rules: dict = {}

    def se_rule(self, f: int, coarse: bool):
        """Nodes s_j (SE / sqrt(weight)) and log weights of censored observation f's SE rule."""
        key = (self.b.se_prior[f], coarse)
        if key not in self._rules:
            self._rules[key] = _prior_rule(self.b.se_prior[f], SE_STEP * (COARSE if coarse else 1))
        x, w = self._rules[key]
        with np.errstate(divide="ignore"):
            return x / math.sqrt(self.b.c_weight[f]), np.log(w)

    def collapse(self, omega: np.ndarray) -> dict:
        """Per omega value (J of them): each estimate group's precision and mean, each cluster's collapsed
        estimate (precision p_c, mean xbar_c) and the log-likelihood the collapses leave over."""
        b = self.b
        v = b.v[None, :] + b.residual[None, :] * (omega**2)[:, None]
        inv = 1 / v
        P = _sum_by(inv, self.group, self.G)
        ybar = _sum_by(b.y * inv, self.group, self.G) / np.where(P > 0, P, 1.0)
        lrow = -0.5 * (_LOG_2PI + np.log(v) + (b.y - ybar[:, self.group]) ** 2 * inv)
        ll_g = _sum_by(lrow, self.group, self.G) + 0.5 * (_LOG_2PI - np.log(P))
        x, vg = ybar - self.m_g, 1 / P + self.s2_g
        p_c = _sum_by(1 / vg, self.group_cluster, self.C)
        safe = np.where(self.has_data, p_c, 1.0)
        xbar = np.where(self.has_data, _sum_by(x / vg, self.group_cluster, self.C) / safe, 0.0)
        lg = -0.5 * (_LOG_2PI + np.log(vg) + (x - xbar[:, self.group_cluster]) ** 2 / vg)
        ll = _sum_by(ll_g + lg, self.group_cluster, self.C) + np.where(self.has_data, 0.5 * (_LOG_2PI - np.log(safe)), 0.0)
        return {"P": P, "ybar": ybar, "p_c": p_c, "xbar": xbar, "ll": ll.sum(-1)}

    def nodes(self, tau: np.ndarray, omega: np.ndarray, coarse: bool = False, floor=-np.inf, density_only: bool = False) -> _Nodes:
        """The Gaussian algebra and the censored factors at nodes (tau, omega) (arrays of one length).

        The censored factors are probabilities, so the log posterior without them bounds it from above:
        nodes where that bound is below ``floor`` (per node, or one number) skip them and get -inf.
        ``density_only``: the log posterior is all that is wanted, to place the grid (the quantities' arrays
        stay empty when there are no censored observations, whose factor is then Laplace's approximation)."""
        b, C, T, H = self.b, self.C, self.T, self.H
        N = tau.size
        with np.errstate(over="ignore"):
            bad = ~((tau > 0) & np.isfinite(tau * tau) & np.isfinite(omega * omega))
        if bad.any():  # beyond floating point (an axis' far end): weightless stand-ins
            tau, omega = np.where(bad, 1.0, tau), np.where(bad, 1.0 if b.has_omega else 0.0, omega)
        om_values, j = np.unique(omega, return_inverse=True)
        col = self.collapse(om_values)
        pc, xb = col["p_c"][j], col["xbar"][j]
        t2 = (tau**2)[:, None]
        has = self.has_data
        Vc = 1 / pc[:, has] + t2
        P = self.prec0 + (1 / Vc).sum(1)
        M = (self.prec0 * self.m0 + (xb[:, has] / Vc).sum(1)) / P
        V = 1 / P
        Q = ((xb[:, has] - M[:, None]) ** 2 / Vc).sum(1) + self.prec0 * (M - self.m0) ** 2
        log_post = col["ll"][j] - 0.5 * (np.log(Vc).sum(1) + np.log(P) + Q) + b.tau_prior.logpdf(tau)
        if b.has_omega:
            log_post = log_post + b.omega_prior.logpdf(omega)
        log_post[bad] = -np.inf
        if density_only and H == 0:
            empty = np.zeros((N, 0))
            return _Nodes(tau, omega, log_post, empty, empty, np.zeros((N, 0, 0)), empty, np.zeros((N, 1, 0)), np.ones((N, 1)), np.zeros(N),
                          np.ones(N), empty, np.zeros(N), np.zeros(N))
        # cluster effects given mu: theta_c | mu ~ N(a + r mu, q)
        r = 1 / (1 + t2 * pc)
        q = t2 * r
        Et, Vt = t2 * pc * xb * r + r * M[:, None], q + r**2 * V[:, None]
        # offsets given their cluster's effect: b_t | theta ~ N(alpha + beta theta, gamma)
        og, oc = self.offset_group, b.offset_cluster
        pad = np.zeros((om_values.size, 1))  # slot -1: an offset without estimates
        Pt = np.concatenate([col["P"], pad], 1)[j][:, og]
        yt = np.where(og >= 0, np.concatenate([col["ybar"], pad], 1)[j][:, og], b.offset_mean)
        s2 = b.offset_sd**2
        gain = s2 * Pt / (s2 * Pt + 1)
        alpha, beta, gamma = b.offset_mean + gain * (yt - b.offset_mean), -gain, s2 / (s2 * Pt + 1)
        mean = np.concatenate([M[:, None], Et, alpha + beta * Et[:, oc]], 1)
        var = np.concatenate([V[:, None], Vt, gamma + beta**2 * Vt[:, oc]], 1)
        cov_mu = np.concatenate([np.ones((N, 1)), r, beta * r[:, oc]], 1) * V[:, None]
        if H == 0:
            return _Nodes(tau, omega, log_post, mean, var, np.zeros((N, 1 + C + T, 0)), cov_mu, np.zeros((N, 1, 0)), np.ones((N, 1)),
                          np.zeros(N), np.ones(N), beta, np.zeros(N), np.zeros(N))
        # the censored group: eta = lam + kap theta_c + eps, eps ~ N(0, gam), with c and t its cluster and offset
        c, t = int(self.h_cluster[0]), int(self.h_offset[0])
        kap, lam, gam = (1 + beta[:, t], alpha[:, t], gamma[:, t]) if t >= 0 else (np.ones(N), np.zeros(N), np.zeros(N))
        E = lam + kap * Et[:, c]
        cov_theta = r * (r[:, c] * V)[:, None]  # Cov(theta_c', theta_c) = r_c' r_c V + [c' = c] q_c
        cov_theta[:, c] += q[:, c]
        cov_theta *= kap[:, None]  # now Cov(theta_c', eta)
        cov_offset = beta * cov_theta[:, oc]
        if t >= 0:
            cov_offset[:, t] += gam
        root = np.sqrt(kap * cov_theta[:, c] + gam)  # eta = E + root u, u ~ N(0, 1)
        cov_eta = np.concatenate([(kap * r[:, c] * V)[:, None], cov_theta, cov_offset], 1)
        cov_u = (cov_eta / np.where(root > 0, root, np.inf)[:, None])[..., None]
        ok = np.isfinite(log_post) & (log_post >= floor) & np.isfinite(E) & np.isfinite(root)
        u_ok, w_ok, z_ok, centre_ok, scale_ok = self._eta_quadrature(E[ok], root[ok], omega[ok], coarse, laplace=density_only)
        u, u_w = np.zeros((N, u_ok.shape[1], 1)), np.zeros((N, u_ok.shape[1]))
        u[ok, :, 0], u_w[ok], u_w[~ok, u_ok.shape[1] // 2] = u_ok, w_ok, 1.0
        centre, scale = np.zeros(N), np.ones(N)
        centre[ok], scale[ok] = centre_ok, scale_ok
        log_post = np.where(ok, log_post, -np.inf)
        log_post[ok] += z_ok
        return _Nodes(tau, omega, log_post, mean, var, cov_u, cov_mu, u, u_w, centre, scale, beta, E, root)

    def _log_lik(self, eta: np.ndarray, omega: np.ndarray, coarse: bool, derivatives: bool):
        """The censored observations' log likelihood at eta (N, P); with ``derivatives`` also its first
        and second derivatives in eta."""
        b = self.b
        total, d1, d2 = np.zeros(eta.shape), np.zeros(eta.shape), np.zeros(eta.shape)
        for f in range(b.lo.size):
            s, log_w = self.se_rule(f, coarse)
            om2 = omega**2 if b.c_residual[f] else np.zeros_like(omega)
            lf, g1, g2 = _censored_terms(eta, b.lo[f], b.hi[f], s, log_w, om2, derivatives)
            total += lf
            if derivatives:
                d1 += g1
                d2 += g2
        return total, d1, d2

    def _eta_quadrature(self, E, root, omega, coarse, laplace: bool = False):
        """Per (tau, omega) node, the rule over u (eta = E + root u, u ~ N(0, 1)) for the tilted density
        N(u; 0, 1) L(eta): nodes u = u* + C sinh(t) (t on a lattice, step ETA_STEP) around the mode u*,
        scaled by the curvature there, reaching until the density has fallen by e^-DROP; a trapezoid rule
        in t converges geometrically for skewed and sharp likelihoods alike. Returns the nodes (N, P),
        their normalised weights, log E[L(eta)], u* and C. With ``laplace``, log E[L(eta)] is Laplace's
        approximation and there are no nodes (for the scans that place the grid, not for the posterior)."""
        N = E.size
        if N == 0:
            return np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0), np.zeros(0), np.ones(0)

        def objective(u, idx=slice(None), derivatives=True):  # log of the tilted density (unnormalised)
            ll, g, d2 = self._log_lik(E[idx, None] + root[idx, None] * u, omega[idx], coarse, derivatives)
            return -0.5 * u * u + ll, g, d2

        u = np.zeros(N)
        f, g, d2 = (x[:, 0] for x in objective(u[:, None]))
        active = np.arange(N)
        for _ in range(100):  # Newton, the curvature kept negative, steps halved until f rises
            if not active.size:
                break
            ra = root[active]
            step = (-u[active] + ra * g[active]) / (1 + ra * ra * np.maximum(-d2[active], 0.0))
            todo, scale = np.arange(active.size), np.ones(active.size)
            for _ in range(50):
                idx = active[todo]
                trial = u[idx] + scale[todo] * step[todo]
                f_new, g_new, d2_new = (x[:, 0] for x in objective(trial[:, None], idx))
                ok = f_new >= f[idx] - 1e-12 * np.abs(f[idx])
                u[idx[ok]], f[idx[ok]], g[idx[ok]], d2[idx[ok]] = trial[ok], f_new[ok], g_new[ok], d2_new[ok]
                todo = todo[~ok]
                scale[todo] *= 0.5
                if not todo.size:
                    break
            active = active[np.abs(scale * step) >= 1e-9]
        curvature = 1 - root * root * d2
        curvature = np.where(curvature > 1e-6, curvature, 1 + root * root * np.maximum(-d2, 0.0))
        C = 1 / np.sqrt(curvature)
        if laplace:
            return np.zeros((N, 1)), np.ones((N, 1)), f + np.log(C), u, C
        h = ETA_STEP * (COARSE if coarse else 1)
        far = np.minimum((np.abs(u) + math.sqrt(2 * DROP) + 1) / C, 1e12)
        reach = np.ceil(np.arcsinh(np.where(np.isfinite(far), far, 10.0)) / h).astype(int)
        P = 2 * reach.max() + 1
        nodes, log_w = np.zeros((N, P)), np.full((N, P), -np.inf)
        for k in np.unique(reach):  # one rule per reach, so a far-reaching node costs only itself
            idx = np.flatnonzero(reach == k)
            t = np.arange(-k, k + 1) * h
            at = slice((P - t.size) // 2, (P + t.size) // 2)  # centred: position p is t = (p - (P-1)/2) h
            nodes[idx, at] = u[idx, None] + C[idx, None] * np.sinh(t)
            log_w[idx, at] = np.log(h * np.cosh(t)) - 0.5 * _LOG_2PI + objective(nodes[idx, at], idx, False)[0]
        log_w = np.where(np.isnan(log_w), -np.inf, log_w)
        top = log_w.max(1, keepdims=True)
        weights = np.exp(log_w - top)
        total = weights.sum(1)
        return nodes, weights / total[:, None], np.log(total) + top[:, 0] + np.log(C), u, C


# ---------------------------------------------------------------------------- the grid


@dataclass
class _Axis:
    """One axis of the (tau, omega) grid: z = centre + spread sinh(t), t in [t0, t1]."""

    prior: Prior
    centre: float
    spread: float
    t0: float = 0.0
    t1: float = 0.0

    def t(self, step: float) -> np.ndarray:
        return np.arange(math.ceil(self.t0 / step - 1e-9), math.floor(self.t1 / step + 1e-9) + 1) * step

    def value(self, t: np.ndarray) -> np.ndarray:
        return _tau_from_z(self.centre + self.spread * np.sinh(t), self.prior)

    def log_jacobian(self, t: np.ndarray) -> np.ndarray:
        """log d(value)/dt."""
        return _log_dtau_dz(self.centre + self.spread * np.sinh(t), self.prior) + np.log(self.spread * np.cosh(t))


class _Grid:
    """The (tau[, omega]) product grid: axes from scans through the mode, extents grown over the whole
    product grid while an edge holds non-negligible density. Nodes evaluated on the way are kept."""

    def __init__(self, prep: _Prepared):
        self.prep = prep
        b = prep.b
        self.two = b.has_omega
        self._known: dict[tuple[int, int], tuple[int, int]] = {}  # (i, j) -> (batch, row)
        self._batches: list[_Nodes] = []
        self._log_t: list[np.ndarray] = []

        def logdens_z(z_tau, z_om):
            """log posterior density in (z_tau, z_omega) at arrays of points."""
            z_tau, z_om = np.broadcast_arrays(np.atleast_1d(np.asarray(z_tau, float)), np.atleast_1d(np.asarray(z_om, float)))
            tau = _tau_from_z(z_tau, b.tau_prior)
            om = _tau_from_z(z_om, b.omega_prior) if self.two else np.zeros(tau.size)
            ok = (tau > 0) & np.isfinite(tau) & ((om > 0) & np.isfinite(om) if self.two else True)
            out = np.full(tau.shape, -np.inf)
            if ok.any():
                lp = prep.nodes(tau[ok], om[ok], density_only=True).log_post + _log_dtau_dz(z_tau[ok], b.tau_prior)
                if self.two:
                    lp += _log_dtau_dz(z_om[ok], b.omega_prior)
                out[ok] = np.where(np.isfinite(lp), lp, -np.inf)
            return out

        data = [x for x in (math.sqrt(b.v.min()) if b.v.size else 0, float(np.ptp(b.y)) if b.y.size else 0) if x > 0]
        tau_scales = data + [s for s in _prior_scales(b.tau_prior) if s > 0]
        span_tau = (math.log(min(tau_scales)) - 12, math.log(max(tau_scales)) + 6)
        if not self.two:
            c, a = _mode(lambda z: logdens_z(z, 0.0), *span_tau)
            self.axes = [_Axis(b.tau_prior, c, a)]
            self.axes[0].t0, self.axes[0].t1 = _reach(lambda z: logdens_z(z, 0.0), c, a, STEP)
            self.top = float(logdens_z(c, 0.0)[0]) + math.log(a)  # a node's density in t: below the maximum
            self._fill()
            return
        om_scales = data + [s for s in _prior_scales(b.omega_prior) if s > 0]
        span_om = (math.log(min(om_scales)) - 12, math.log(max(om_scales)) + 6)
        c_om = math.log(float(np.median(om_scales)))
        for _ in range(2):  # coordinate-wise scans to the mode
            c_tau, a_tau = _mode(lambda z: logdens_z(z, c_om), *span_tau)
            c_om, a_om = _mode(lambda z: logdens_z(c_tau, z), *span_om)
        # marginal SDs from the Hessian at the mode (finite differences on a 3 x 3 stencil)
        h1, h2 = 0.5 * a_tau, 0.5 * a_om
        Z1, Z2 = np.meshgrid(c_tau + h1 * np.array([-1.0, 0, 1]), c_om + h2 * np.array([-1.0, 0, 1]), indexing="ij")
        L = logdens_z(Z1, Z2)
        f11 = (L[0, 1] - 2 * L[1, 1] + L[2, 1]) / h1**2
        f22 = (L[1, 0] - 2 * L[1, 1] + L[1, 2]) / h2**2
        f12 = (L[2, 2] - L[2, 0] - L[0, 2] + L[0, 0]) / (4 * h1 * h2)
        det = f11 * f22 - f12**2
        if np.isfinite(det) and f11 < 0 and det > 0:
            a_tau, a_om = math.sqrt(-f22 / det), math.sqrt(-f11 / det)
        self.axes = [_Axis(b.tau_prior, c_tau, float(np.clip(a_tau, 1e-8, 5))), _Axis(b.omega_prior, c_om, float(np.clip(a_om, 1e-8, 5)))]
        for ax, lines in zip(self.axes, (lambda z: logdens_z(z, c_om), lambda z: logdens_z(c_tau, z))):
            ax.t0, ax.t1 = _reach(lines, ax.centre, ax.spread, STEP)
            limit = math.asinh(REACH / ax.spread)  # the marginal reaches past the line through the mode
            ax.t0, ax.t1 = max(1.3 * ax.t0 - STEP, -limit), min(1.3 * ax.t1 + STEP, limit)
        self.top = float(logdens_z(c_tau, c_om)[0]) + math.log(self.axes[0].spread * self.axes[1].spread)
        for _ in range(100):  # grow while an edge holds non-negligible density
            lt = self._fill()
            top = lt.max()
            moved = False
            for i, ax in enumerate(self.axes):
                limit = math.asinh(REACH / ax.spread)
                first, last = (lt[0], lt[-1]) if i == 0 else (lt[:, 0], lt[:, -1])
                if first.max() > top - DROP and ax.t0 > -limit:
                    ax.t0, moved = max(ax.t0 - 1.0, -limit), True
                if last.max() > top - DROP and ax.t1 < limit:
                    ax.t1, moved = min(ax.t1 + 1.0, limit), True
            if not moved:
                break
        # trim rows and columns holding nothing, keeping one negligible node beyond the mass
        keep = lt >= lt.max() - DROP
        for i, ax in enumerate(self.axes):
            t = ax.t(STEP)
            idx = np.flatnonzero(keep.any(axis=1 - i))
            ax.t0, ax.t1 = float(t[max(idx[0] - 1, 0)]), float(t[min(idx[-1] + 1, t.size - 1)])

    def _fill(self) -> np.ndarray:
        """Evaluate the grid's nodes not yet known; return the log density in t on the whole grid."""
        ks = [np.rint(ax.t(STEP) / STEP).astype(int) for ax in self.axes]
        if not self.two:
            ks.append(np.zeros(1, dtype=int))
        I, J = np.meshgrid(*ks, indexing="ij")
        new = [(i, j) for i, j in zip(I.ravel(), J.ravel()) if (i, j) not in self._known]
        if new:
            t = np.array(new, dtype=float) * STEP
            tau = self.axes[0].value(t[:, 0])
            om = self.axes[1].value(t[:, 1]) if self.two else np.zeros(len(new))
            jac = self.axes[0].log_jacobian(t[:, 0]) + (self.axes[1].log_jacobian(t[:, 1]) if self.two else 0.0)
            nodes = self.prep.nodes(tau, om, floor=self.top - DROP - 5 - jac)
            log_t = nodes.log_post + jac
            for row, key in enumerate(new):
                self._known[key] = (len(self._batches), row)
            self._batches.append(nodes)
            self._log_t.append(np.where(np.isfinite(log_t), log_t, -np.inf))
            self.top = max(self.top, float(self._log_t[-1].max()))
        refs = [self._known[(i, j)] for i, j in zip(I.ravel(), J.ravel())]
        return np.array([self._log_t[bt][r] for bt, r in refs]).reshape(I.shape if self.two else I.shape[:1])

    def level(self, coarse: bool) -> _Level:
        """The posterior under the default (fine) or the coarse rules."""
        step = STEP * (COARSE if coarse else 1)
        ts = [ax.t(step) for ax in self.axes]
        grids = np.meshgrid(*ts, indexing="ij")
        t = [g.ravel() for g in grids]
        if coarse:
            tau = self.axes[0].value(t[0])
            om = self.axes[1].value(t[1]) if self.two else np.zeros(tau.size)
            jac = self.axes[0].log_jacobian(t[0]) + (self.axes[1].log_jacobian(t[1]) if self.two else 0.0)
            nodes = self.prep.nodes(tau, om, coarse=True, floor=self.top - DROP - 5 - jac)
        else:
            ks = [np.rint(x / STEP).astype(int) for x in t] + ([] if self.two else [np.zeros(t[0].size, dtype=int)])
            refs = [self._known[(i, j)] for i, j in zip(*ks)]
            whole = _Nodes.concat(self._batches)
            offsets = np.cumsum([0] + [bt.tau.size for bt in self._batches])
            nodes = whole.take(np.array([offsets[bt] + r for bt, r in refs]))
        log_t = nodes.log_post + self.axes[0].log_jacobian(t[0]) + (self.axes[1].log_jacobian(t[1]) if self.two else 0.0)
        return _Level(self.prep, self.axes, ts, grids[0].shape, nodes, np.where(np.isfinite(log_t), log_t, -np.inf), coarse)


# ---------------------------------------------------------------------------- mixtures


def _sinc_table(t: np.ndarray, g: np.ndarray, x_of_t, refine: int = 8):
    """x, CDF, density and its slope tabulated ``refine`` times finer than the uniform nodes t, for a
    density g in t known at the nodes.

    g is interpolated by its cardinal (sinc) series, whose integral (through the sine integral) gives the
    CDF: for a g analytic in a strip, as here, this converges geometrically like the trapezoid rule on the
    same nodes. The density's slope comes from finite differences on the fine table.
    """
    h = t[1] - t[0] if t.size > 1 else STEP
    tt = np.arange(t[0] - 2 * h, t[-1] + 2 * h + 1e-12, h / refine)
    d = (tt[:, None] - t[None, :]) / h
    total = g.sum()
    cdf = np.clip(np.maximum.accumulate((g * (0.5 + special.sici(np.pi * d)[0] / np.pi)).sum(1) / total), 0.0, 1.0)
    dens_t = np.sinc(d) @ g / (total * h)
    dens_t = np.where(dens_t > 1e-9 * dens_t.max(), dens_t, 0.0)  # the series' ringing where g is negligible: the
    # Jacobian dx/dt there is tiny too, and would turn it into density
    x = x_of_t(tt)
    dens = dens_t / np.gradient(x, tt, edge_order=2)
    return x, cdf, dens, np.gradient(dens, x, edge_order=2)


def _hdi(evaluate, mean: np.ndarray, sd: np.ndarray, p: float):
    """Shortest intervals holding mass p, per row, of distributions given by ``evaluate(x)`` -> (CDF,
    density, the density's slope) at x (rows x points): Newton on F(b) - F(a) = p and f(a) = f(b) from the
    normal approximation, a few dozen evaluations rather than a table. Rows where Newton does not settle,
    or whose density dips inside the interval (not unimodal), are solved from a table of the CDF
    (:func:`metaeval.exact._shortest_interval`)."""
    half = special.ndtri(0.5 + p / 2)
    a, b = mean - half * sd, mean + half * sd
    done = np.zeros(mean.size, dtype=bool)
    for _ in range(60):
        F, f, df = evaluate(np.stack([a, b], 1))
        g1, g2 = F[:, 1] - F[:, 0] - p, f[:, 1] - f[:, 0]
        done = (np.abs(g1) < 1e-10) & (np.abs(g2) <= 1e-6 * np.maximum(f[:, 0], f[:, 1]))
        if done.all():
            break
        fa, fb, da, db = f[:, 0], f[:, 1], df[:, 0], df[:, 1]
        det = fb * da - fa * db
        ok = det > 0
        step_a = np.where(ok, -(db * g1 - fb * g2) / np.where(ok, det, 1.0), 0.0)
        step_b = np.where(ok, -(da * g1 - fa * g2) / np.where(ok, det, 1.0), 0.0)
        cap = np.maximum(np.abs(step_a), np.abs(step_b)) / np.maximum(0.5 * sd, 1e-300)  # at most half an SD a step
        scale = 1 / np.maximum(cap, 1.0)
        a, b = a + scale * step_a, b + scale * step_b
    # a unimodal density stays above its value at the ends inside the interval
    _, f, _ = evaluate(np.concatenate([np.stack([a, b], 1), a[:, None] + (b - a)[:, None] * np.linspace(0.1, 0.9, 9)], 1))
    bad = ~done | (f[:, 2:].min(1) < np.minimum(f[:, 0], f[:, 1]) * (1 - 1e-9))
    if bad.any():  # a table of the CDF over mean +- 12 SD, 1,200 points a row
        x = mean[:, None] + sd[:, None] * np.linspace(-12.0, 12.0, 1201)
        F, f, df = (v[bad] for v in evaluate(x))
        lo, hi = _shortest_interval(x[bad], F, f, df, p)
        a, b = a.copy(), b.copy()
        a[bad], b[bad] = lo, hi
    return a, b


# ---------------------------------------------------------------------------- one resolution


class _Level:
    """The posterior under one set of rules: node weights, and the quantities as normal mixtures."""

    def __init__(self, prep, axes, ts, shape, nodes: _Nodes, log_t: np.ndarray, coarse: bool):
        self.prep, self.axes, self.ts, self.coarse, self.nodes = prep, axes, ts, coarse, nodes
        self.tau, self.omega = nodes.tau, nodes.omega
        g = np.exp(log_t - log_t.max())
        self.g = g.reshape(shape)  # density in t at the nodes (relative)
        self.weight = g / g.sum()
        edges = [self.g[0], self.g[-1]] + ([self.g[:, 0], self.g[:, -1]] if self.g.ndim == 2 else [])
        self.edge_density = float(max(np.max(e) for e in edges))  # relative: large when the grid was cut short
        self._reduced: dict = {}
        self._tables = None
        self.eta_step = ETA_STEP * (COARSE if coarse else 1)  # the lattice the eta nodes sit on
        self._cdf_parts: dict = {}

    def components(self, rows: np.ndarray):
        """Means, SDs (rows x components) and weights of the mixtures of quantity ``rows``
        (row NEW: a new cluster's effect, mu + tau z)."""
        n = self.nodes
        rows = np.asarray(rows)
        base = np.where(rows == NEW, 0, rows)
        cu = n.cov_u[:, base]
        mean = n.mean[:, base, None] + np.einsum("nqh,nph->nqp", cu, n.u)  # (N, R, P)
        var = n.var[:, base] - (cu**2).sum(-1) + np.where(rows == NEW, 1.0, 0.0) * (self.tau**2)[:, None]
        sd = np.sqrt(np.maximum(var, 0.0))[:, :, None] * np.ones(n.u.shape[1])
        w = self.weight[:, None] * n.u_weight
        K = w.size
        return np.moveaxis(mean, 1, 0).reshape(len(rows), K), np.moveaxis(sd, 1, 0).reshape(len(rows), K), w.ravel()

    def moments(self, rows: np.ndarray):
        m, s, w = self.components(rows)
        mean = m @ w
        return mean, np.sqrt(np.maximum((m**2 + s**2) @ w - mean**2, 0.0))

    def prob_above(self, rows: np.ndarray, sign: float, threshold: float):
        """P(sign * quantity > threshold) per row (sign +1 or -1)."""
        F = np.clip(self.cdf(rows, np.full((len(rows), 1), sign * threshold))[0][:, 0], 0.0, 1.0)
        return 1 - F if sign > 0 else F

    def intervals(self, rows: np.ndarray, p: float):
        """Shortest intervals holding mass p, per row."""
        level = self.reduced(rows)
        mean, sd = level.moments(rows)
        lo, hi = np.empty(len(rows)), np.empty(len(rows))
        chunk = max(1, CHUNK // (level.weight.size * level.nodes.u.shape[1] * 6))
        for r0 in range(0, len(rows), chunk):
            part = rows[r0:r0 + chunk]
            lo[r0:r0 + chunk], hi[r0:r0 + chunk] = _hdi(lambda x: level.cdf(part, x), mean[r0:r0 + chunk], sd[r0:r0 + chunk], p)
        return lo, hi

    def cdf(self, rows: np.ndarray, x: np.ndarray):
        """CDF, density and the density's slope of quantity ``rows`` at x (rows x points).

        Given a node, a quantity is m + c u + s Z with u the (standardised) eta and Z ~ N(0, 1). Where s
        is wide against c times eta's spread, the sum over the eta nodes is accurate; where it is narrow
        (a project effect pinned by a direction-only finding: s can be 0), the CDF is E_Z[G((x - m - sZ) / c)]
        with G the CDF of eta, from its cardinal series on the eta nodes (Gauss-Hermite over Z)."""
        key = tuple(np.asarray(rows).tolist())
        if key not in self._cdf_parts:
            self._cdf_parts = {key: self._split(np.asarray(rows))}
        m, s, w, narrow = self._cdf_parts[key]
        z = np.clip((x[:, :, None] - m[:, None, :]) / s[:, None, :], -37.0, 37.0)  # Phi(-37) ~ 6e-300: no denormals
        phi = np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * s[:, None, :])
        F = np.einsum("rxk,rk->rx", special.ndtr(z), w)
        f = np.einsum("rxk,rk->rx", phi, w)
        df = -np.einsum("rxk,rk->rx", phi * z / s[:, None, :], w)
        if narrow is not None:
            parts = self._narrow_cdf(*narrow, x)
            F, f, df = F + parts[0], f + parts[1], df + parts[2]
        return F, f, df

    def _split(self, rows: np.ndarray):
        """For ``cdf``: the components (means, SDs and weights per row, those of narrow node-row pairs
        weightless) and the narrow pairs' data."""
        n = self.nodes
        base = np.where(rows == NEW, 0, rows)
        m, s, w = self.components(rows)
        P = n.u.shape[1]
        keep = w > WEIGHT_FLOOR * w.max()
        m, s, w = m[:, keep], np.maximum(s[:, keep], 1e-300), np.broadcast_to(w[keep] / w[keep].sum(), (len(rows), int(keep.sum()))).copy()
        if self.prep.H != 1:
            return m, s, w, None
        node_of = np.repeat(np.arange(self.weight.size), P)[keep]
        c = n.cov_u[:, base, 0]  # (N, R)
        sd = np.sqrt(np.maximum(n.var[:, base] - c * c + np.where(rows == NEW, 1.0, 0.0) * (self.tau**2)[:, None], 0.0))
        narrow = sd < NARROW * np.abs(c) * n.u_scale[:, None]
        if not narrow.any():
            return m, s, w, None
        w[narrow[node_of].T] = 0.0
        i, r = np.nonzero(narrow)
        total = self.weight[np.unique(node_of)].sum()  # the kept nodes' weight (the components' normaliser)
        return m, s, w, (i, r, n.mean[i, base[r]], c[i, r], sd[i, r], self.weight[i] / total, len(rows))

    def _narrow_cdf(self, node, r, m, c, s, weight, n_rows, x):
        """The narrow branch of ``cdf`` (see there): the node-row pairs (node, r) with their quantity's
        mean m, slope c on eta and SD s, and the node's weight; summed per row."""
        n = self.nodes
        grid, G, D = self._eta_tables()
        zj, wj = _gh(16)
        cc = np.where(c == 0, 1e-300, c)
        v = (x[r][:, :, None] - m[:, None, None] - s[:, None, None] * zj) / cc[:, None, None]  # (K, X, J)
        scale = n.u_scale[node][:, None, None]
        t = np.arcsinh((v - n.u_centre[node][:, None, None]) / scale)
        step = grid[1] - grid[0]
        pos = np.clip((t - grid[0]) / step, 0.0, grid.size - 1 - 1e-9)
        j0 = pos.astype(int)
        frac = pos - j0
        at = node[:, None, None]
        G0, G1, D0, D1 = G[at, j0], G[at, j0 + 1], D[at, j0] * step, D[at, j0 + 1] * step
        f2, f3 = frac * frac, frac * frac * frac  # cubic Hermite on the table, and its derivatives
        G_t = np.clip((2 * f3 - 3 * f2 + 1) * G0 + (f3 - 2 * f2 + frac) * D0 + (3 * f2 - 2 * f3) * G1 + (f3 - f2) * D1, 0.0, 1.0)
        g_t = ((6 * f2 - 6 * frac) * G0 + (3 * f2 - 4 * frac + 1) * D0 + (6 * frac - 6 * f2) * G1 + (3 * f2 - 2 * frac) * D1) / step
        dg_t = ((12 * frac - 6) * G0 + (6 * frac - 4) * D0 + (6 - 12 * frac) * G1 + (6 * frac - 2) * D1) / step**2
        dt = 1 / (scale * np.cosh(t))  # dt/dv, and its derivative
        ddt = -np.tanh(t) * dt * dt
        Fn = np.where((cc > 0)[:, None, None], G_t, 1 - G_t) @ wj
        fn = (g_t * dt / np.abs(cc)[:, None, None]) @ wj
        dfn = ((dg_t * dt * dt + g_t * ddt) / (cc * np.abs(cc))[:, None, None]) @ wj
        out = [np.zeros((n_rows, x.shape[1])) for _ in range(3)]
        for total, part in zip(out, (Fn, fn, dfn)):
            np.add.at(total, r, weight[:, None] * part)
        return out

    def _eta_tables(self):
        """One eta dimension: per node, the CDF G and density D in t of eta's tilted density, from the
        cardinal (sinc) series on its trapezoid nodes, tabulated 8 times finer (cf. ``_sinc_table``)."""
        if self._tables is None:
            n = self.nodes
            P, h = n.u.shape[1], self.eta_step
            t = (np.arange(P) - (P - 1) / 2) * h
            grid = np.arange(t[0] - 2 * h, t[-1] + 2 * h + 1e-12, h / 8)
            d = (grid[:, None] - t[None, :]) / h
            G = n.u_weight @ (0.5 + special.sici(np.pi * d)[0] / np.pi).T
            D = n.u_weight @ (np.sinc(d) / h).T
            self._tables = (grid, G, D)
        return self._tables

    def reduced(self, rows: np.ndarray) -> _Level:
        """For many rows on many nodes (and no censored observations), the cheapest of the Gauss rules of
        ``_candidates`` that reproduces this level's mixture CDFs within COMPRESS_TOL at the mean and mean
        +- 2 SD of ``rows`` (the 16 whose mixtures vary most, when there are more); else this level itself.
        Used for intervals and comparisons, not for moments."""
        key = tuple(np.asarray(rows).tolist())
        if len(rows) * self.weight.size <= COMPRESS_BUDGET or self.prep.H:
            return self
        if key in self._reduced:
            return self._reduced[key]
        m, s, w = self.components(rows)
        keep = w > WEIGHT_FLOOR * w.max()
        spread = (m[:, keep].max(1) - m[:, keep].min(1)) / np.maximum(s[:, keep].min(1), 1e-300)
        probe_rows = np.asarray(rows)[np.argsort(spread)[-16:]]
        mean, sd = self.moments(probe_rows)
        probes = mean[:, None] + sd[:, None] * np.array([-2.0, 0.0, 2.0])

        exact = self.cdf(probe_rows, probes)[0]
        choice = self
        for candidate in self._candidates():
            if candidate is not None and np.max(np.abs(candidate.cdf(probe_rows, probes)[0] - exact)) <= COMPRESS_TOL:
                choice = candidate
                break
        self._reduced[key] = choice
        return choice

    def _candidates(self):
        """Cheaper rules, cheapest first (see ``reduced``): Gauss rules of this level's own measure over
        (z_tau, z_omega), n points per axis. In z_tau it is the n-point Gauss rule of the grid's marginal
        measure (Lanczos, as the one-level engine compresses); for omega, at each of those nodes, the Gauss
        rule of the conditional measure, whose density there comes from the grid's cardinal series in t."""
        b = self.prep.b
        g = self.g if self.g.ndim == 2 else self.g[:, None]
        t1 = self.ts[0]
        z1 = self.axes[0].centre + self.axes[0].spread * np.sinh(t1)
        marginal = g.sum(1) / g.sum()
        for n in (3, 4, 6, 8, 12):
            if n ** g.ndim * 3 > self.weight.size:
                break
            nodes1, w1 = _gauss_rule(z1, marginal, n)
            if b.has_omega:
                t2 = self.ts[1]
                z2 = self.axes[1].centre + self.axes[1].spread * np.sinh(t2)
                at = np.arcsinh((nodes1 - self.axes[0].centre) / self.axes[0].spread)
                h = t1[1] - t1[0] if t1.size > 1 else STEP
                rows = np.maximum(np.sinc((at[:, None] - t1[None, :]) / h) @ g, 0.0)  # the density at each node, over omega
                faint = rows.max(1) <= 1e-12 * g.max()  # a node far out: the nearest grid row's shape
                rows[faint] = g[np.abs(at[faint, None] - t1[None, :]).argmin(1)]
                rules = [_gauss_rule(z2, r / r.sum(), n) for r in rows]
                zq = np.array([(a, x) for a, (xs, _) in zip(nodes1, rules) for x in xs])
                wq = np.array([wa * wb for wa, (_, ws) in zip(w1, rules) for wb in ws])
            else:
                zq, wq = nodes1[:, None], w1
            tau = _tau_from_z(zq[:, 0], b.tau_prior)
            om = _tau_from_z(zq[:, 1], b.omega_prior) if b.has_omega else np.zeros(tau.size)
            with np.errstate(divide="ignore"):
                yield _Level(self.prep, self.axes, self.ts, (tau.size,), self.prep.nodes(tau, om, self.coarse), np.log(wq), self.coarse)

    # -- the variance parameters ------------------------------------------------------------------

    def axis_summary(self, i: int, p: float):
        """Mean, SD and shortest interval of tau (i = 0) or omega (i = 1)."""
        x = self.tau if i == 0 else self.omega
        mean = float(x @ self.weight)
        sd = math.sqrt(max(float(x**2 @ self.weight) - mean**2, 0.0))
        g = self.g.sum(axis=1 - i) if self.g.ndim == 2 else self.g
        t, ax = self.ts[i], self.axes[i]
        lo, hi = _shortest_interval(*(a[None] for a in _sinc_table(t, g, ax.value)), p)
        support_low = ax.prior.params[0] if ax.prior.family == "uniform" else 0.0
        # an interval from the grid's first cell (negligible density) starts at the support's end
        low = support_low if lo[0] <= ax.value(t[1:2])[0] else float(lo[0])
        return mean, sd, low, float(hi[0])

    def pooling(self) -> np.ndarray:
        """baggr's pooling factor per cluster, E[v / (v + tau^2)], v the variance of the cluster's Gaussian
        observations as one estimate of its effect (omega included where flagged) plus the largest prior
        variance of its offsets among them; NaN for a cluster without Gaussian observations."""
        b, prep = self.prep.b, self.prep
        om_values, j = np.unique(self.omega, return_inverse=True)
        v = b.v[None, :] + b.residual[None, :] * (om_values**2)[:, None]
        precision = _sum_by(1 / v, b.cluster, prep.C)[j]  # (N, C)
        offset_var = np.zeros(prep.C)
        if b.offset.size and (b.offset >= 0).any():
            with_offset = b.offset >= 0
            np.maximum.at(offset_var, b.cluster[with_offset], b.offset_sd[b.offset[with_offset]] ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = 1 / precision + offset_var
            out = self.expect((var / (var + (self.tau**2)[:, None])).T)
        return np.where(prep.has_data, out, np.nan)

    def expect(self, values: np.ndarray) -> np.ndarray:
        """E[values] over (tau, omega): ``values`` has the nodes on its last axis."""
        return values @ self.weight

    # -- comparisons between clusters -------------------------------------------------------------

    def _given_eta(self, rows: np.ndarray, floor: float, at_most: int | None = None, offset: float = 0.5):
        """Per component kept (weight above ``floor`` x the largest): its weight and node, mu's conditional
        mean and variance given eta, and the rows' conditional means, variances, covariances with mu and
        with the standardised eta. With ``at_most``, more components than that are replaced by a
        systematic sample of that many (in grid order, no random numbers)."""
        n = self.nodes
        w = (self.weight[:, None] * n.u_weight).ravel()
        keep = np.flatnonzero(w > floor * w.max())
        weights = w[keep] / w[keep].sum()
        if at_most is not None and keep.size > at_most:
            picks = np.searchsorted(np.cumsum(weights), (np.arange(at_most) + offset) / at_most).clip(0, keep.size - 1)
            picked, counts = np.unique(picks, return_counts=True)
            keep, weights = keep[picked], counts / at_most
        P = n.u.shape[1]
        node = keep // P
        u = n.u.reshape(n.u.shape[0] * P, n.u.shape[2])[keep]
        cu = n.cov_u[node]
        mu_mean = n.mean[node, 0] + (cu[:, 0] * u).sum(-1)
        mu_var = np.maximum(n.var[node, 0] - (cu[:, 0] ** 2).sum(-1), 1e-300)
        m = n.mean[node][:, rows] + np.einsum("kqh,kh->kq", cu[:, rows], u)
        v = np.maximum(n.var[node][:, rows] - (cu[:, rows] ** 2).sum(-1), 0.0)
        c = n.cov_mu[node][:, rows] - np.einsum("kqh,kh->kq", cu[:, rows], cu[:, 0])
        return weights, node, mu_mean, mu_var, m, v, c, cu[:, rows]

    def _joint(self, rows: np.ndarray):
        """Per component kept (a systematic sample for 4 rows or more): its weight, and the rows'
        conditional means and covariance matrix."""
        level = self.reduced(rows)
        n = level.nodes
        w, node, _, _, m, v, _, cu = level._given_eta(rows, WEIGHT_FLOOR, _sample_size(len(rows) ** 2) if len(rows) > 3 else None)
        # Cov(theta_a, theta_b | tau, omega) = r_a r_b V + [a = b] q_a, less what eta explains
        V = n.var[node, 0]
        r = n.cov_mu[node][:, rows] / V[:, None]
        cov = r[:, :, None] * r[:, None, :] * V[:, None, None] - np.einsum("kah,kbh->kab", cu, cu)
        idx = np.arange(len(rows))
        cov[:, idx, idx] = v
        return w, m, cov

    def pairwise(self, rows: np.ndarray, sign: float) -> np.ndarray:
        """P(sign * q_a > sign * q_b) for rows a, b (the diagonal is meaningless)."""
        w, m, cov = self._joint(rows)
        var = np.diagonal(cov, axis1=1, axis2=2)
        diff_var = var[:, :, None] + var[:, None, :] - 2 * cov
        diff_mean = sign * (m[:, :, None] - m[:, None, :])
        return np.einsum("kab,k->ab", _prob_positive(diff_mean, diff_var), w)

    def first(self, rows: np.ndarray, sign: float, points: int = 8) -> np.ndarray:
        """P(row a has the largest sign * value among ``rows``) per row (cluster effects only), and the error
        of sampling the components (0 where they are not sampled).

        Two rows: a normal CDF per component; three: a bivariate normal orthant (Owen's T). More: given
        (tau, omega), eta and mu the cluster effects are independent normals, so P(a first) is a
        one-dimensional integral of a's density times the others' CDFs, by the trapezoid rule on a grid
        over the top of the range, with Gauss-Hermite over mu, on two interleaved systematic samples of the
        components (their difference is the sampling error).
        Rows that cannot come first (mean plus 4.5 SDs below another's mean minus 4.5 SDs in every
        component) get 0 and take no part.
        """
        L = len(rows)
        if L == 1:
            return np.ones(1), np.zeros(1)
        if L <= 3:
            w, m, cov = self._joint(rows)
            var = np.diagonal(cov, axis1=1, axis2=2)
            out = np.zeros(L)
            for a in range(L):
                b = [i for i in range(L) if i != a]
                mean = sign * (m[:, a, None] - m[:, b])  # D_i = sign (q_a - q_b_i)
                dvar = var[:, a, None] + var[:, b] - 2 * cov[:, a, b]
                if L == 2:
                    out[a] = _prob_positive(mean[:, 0], dvar[:, 0]) @ w
                    continue
                sd = np.sqrt(np.maximum(dvar, 1e-300))
                c12 = var[:, a] - cov[:, a, b[0]] - cov[:, a, b[1]] + cov[:, b[0], b[1]]
                out[a] = _bivariate_normal(mean[:, 0] / sd[:, 0], mean[:, 1] / sd[:, 1], c12 / (sd[:, 0] * sd[:, 1])) @ w
            return out, np.zeros(L)
        halves = [self._first_many(rows, sign, points, offset) for offset in (0.25, 0.75)]
        return 0.5 * (halves[0] + halves[1]), np.abs(halves[0] - halves[1])

    def _first_many(self, rows: np.ndarray, sign: float, points: int, offset: float) -> np.ndarray:
        """``first`` for four rows or more, on one systematic sample of the components."""
        # the sample: about COMPARE_BUDGET * 50 evaluations of a normal CDF in all (x 128, mu 8, rows)
        w, _, mu_mean, mu_var, m, v, c, _ = self.reduced(rows)._given_eta(rows, 1e-10, _sample_size(len(rows) * 20) // 2, offset)
        hi_, lo_ = sign * m + 4.5 * np.sqrt(v), sign * m - 4.5 * np.sqrt(v)  # 9 SDs apart: P(ahead) < 1e-10
        live = np.flatnonzero((hi_ >= lo_.max(1, keepdims=True)).any(0))
        m, v, c = m[:, live], v[:, live], c[:, live]
        slope = c / mu_var[:, None]
        sd = np.maximum(np.sqrt(np.maximum(v - slope * c, 0.0)), 1e-12)  # given mu as well
        x_mu, w_mu = _gh(points)
        mu = mu_mean[:, None] + np.sqrt(mu_var)[:, None] * x_mu  # (K, J)
        mean = sign * (m[:, None, :] + slope[:, None, :] * (mu[:, :, None] - mu_mean[:, None, None]))  # (K, J, L)
        # per (component, mu): x on a grid from where every row but a negligible few lies below, to the top;
        # log of the product of all rows' CDFs, then each row's density against the others' product
        low = (mean - 7.5 * sd[:, None, :]).max(-1)
        high = (mean + 7.5 * sd[:, None, :]).max(-1)
        step = np.clip(sd.min(1)[:, None] / 3, (high - low) / 128, (high - low) / 48)  # resolve the narrowest, within reason
        count = int(np.ceil(((high - low) / step).max())) + 1
        x = low[..., None] + step[..., None] * np.arange(count)  # (K, J, X)
        out = np.zeros(len(rows))
        chunk = max(1, CHUNK // (count * live.size * x_mu.size))
        for k0 in range(0, len(w), chunk):
            ks = slice(k0, k0 + chunk)
            z = (x[ks][..., None] - mean[ks][:, :, None, :]) / sd[ks][:, None, None, :]  # (k, J, X, L)
            log_cdf = special.log_ndtr(z)
            dens = np.exp(-0.5 * z * z + log_cdf.sum(-1, keepdims=True) - log_cdf) / (sd[ks][:, None, None, :] * math.sqrt(2 * math.pi))
            per = dens.sum(2) * step[ks][..., None]  # (k, J, L): trapezoid (the integrand is negligible at both ends)
            out[live] += np.einsum("kjl,j,k->l", per, w_mu, w[ks])
        return out


def _sample_size(work: int) -> int:
    """How many components the comparisons sample (see COMPARE_BUDGET) for ``work`` per component."""
    return int(np.clip(COMPARE_BUDGET // max(work, 1), 32, 256))


def _prob_positive(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """P(D > 0) for D ~ Normal(mean, var), with var = 0 a point mass."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 1e-300, mean / np.sqrt(np.maximum(var, 1e-300)), np.where(mean > 0, np.inf, -np.inf))
    return special.ndtr(z)


def _bivariate_normal(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X < h, Y < k) for standard normals with correlation rho, by Owen's T function (Owen 1956)."""
    rho = np.clip(rho, -1 + 1e-12, 1 - 1e-12)
    h = np.where(h == 0, 1e-15, h)
    k = np.where(k == 0, 1e-15, k)
    root = np.sqrt(1 - rho * rho)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (0.5 * (special.ndtr(h) + special.ndtr(k)) - special.owens_t(h, (k - rho * h) / (h * root))
               - special.owens_t(k, (h - rho * k) / (k * root)) - np.where(h * k < 0, 0.5, 0.0))
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------------------- the result


class BlockPosterior:
    """The exact posterior of one block: the default rules' answer, and the coarse rules' for error estimates."""

    def __init__(self, block: Block):
        self.block = block
        self.prep = _Prepared(block)
        grid = _Grid(self.prep)
        self.axes = grid.axes
        self.fine = grid.level(coarse=False)
        self.coarse = grid.level(coarse=True)

    def draws(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` independent draws from the posterior: ``mu``, ``tau``, ``omega``, ``theta`` (n, C), ``offset`` (n, T).

        The posterior is sampled as this engine represents it: a component (a (tau, omega) node and an eta
        node) by its weight, then every latent effect from its exact Gaussian conditional given it, mu first,
        each cluster's effect given mu, each offset given its cluster's (the offset of the censored group:
        eta minus its cluster's effect). tau and omega take their grid's node values (the quadrature's own
        measure, whose moments are the reported ones); everything else is continuous.
        """
        lv, prep = self.fine, self.prep
        nd = lv.nodes
        C, T, P = prep.C, prep.T, nd.u.shape[1]
        w = (lv.weight[:, None] * nd.u_weight).ravel()
        pick = rng.choice(w.size, size=n, p=w / w.sum())
        node, u = pick // P, nd.u.reshape(nd.u.shape[0] * P, nd.u.shape[2])[pick]
        cu, mean, var, cov_mu = nd.cov_u[node], nd.mean[node], nd.var[node], nd.cov_mu[node]
        m = mean + np.einsum("nqh,nh->nq", cu, u)  # given eta
        v = var - (cu**2).sum(-1)
        c = cov_mu - np.einsum("nqh,nh->nq", cu, cu[:, 0])  # covariance with mu, given eta
        z = rng.standard_normal((n, 1 + C + T))
        mu = m[:, 0] + np.sqrt(np.maximum(v[:, 0], 0.0)) * z[:, 0]
        slope = c / np.maximum(v[:, :1], 1e-300)
        given_mu = m + slope * (mu - m[:, 0])[:, None]
        sd_mu = np.sqrt(np.maximum(v - slope * c, 0.0))
        theta = given_mu[:, 1 : 1 + C] + sd_mu[:, 1 : 1 + C] * z[:, 1 : 1 + C]
        oc, beta = self.block.offset_cluster, nd.offset_slope[node]
        rows = np.arange(1 + C, 1 + C + T)
        th = theta[:, oc] - given_mu[:, 1 + oc]  # each offset's cluster effect, about its mean given mu and eta
        offset = given_mu[:, rows] + beta * th + np.sqrt(np.maximum(sd_mu[:, rows] ** 2 - beta**2 * sd_mu[:, 1 + oc] ** 2, 0.0)) * z[:, rows]
        if prep.H and prep.h_offset[0] >= 0:  # the censored group's offset is what eta leaves of its cluster's effect
            t, c0 = int(prep.h_offset[0]), int(prep.h_cluster[0])
            offset[:, t] = nd.eta_mean[node] + nd.eta_root[node] * u[:, 0] - theta[:, c0]
        return {"mu": mu, "tau": lv.tau[node], "omega": lv.omega[node], "theta": theta, "offset": offset}

    def both(self, method: str, *args):
        """(value, |value - coarse value|) of a _Level method's result (or of each part of a tuple)."""
        a = getattr(self.fine, method)(*args)
        c = getattr(self.coarse, method)(*args)
        if isinstance(a, tuple):
            return tuple(np.asarray(x, float) for x in a), tuple(np.abs(np.asarray(x, float) - np.asarray(y, float)) for x, y in zip(a, c))
        return np.asarray(a, float), np.abs(np.asarray(a, float) - np.asarray(c, float))
