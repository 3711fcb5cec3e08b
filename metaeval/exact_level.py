"""The exact core's posterior under one set of rules (:mod:`metaeval.exact_core`): node weights, and every latent
quantity as a mixture of normals over the (tau, omega, eta) nodes: moments, CDFs, shortest intervals, pooling
factors and comparisons between clusters (NumPy/SciPy only)."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

from metaeval.exact_block import (
    CHUNK,
    COARSE,
    COMPARE_BUDGET,
    COMPRESS_BUDGET,
    COMPRESS_TOL,
    ETA_STEP,
    NARROW,
    NEW,
    STEP,
    WEIGHT_FLOOR,
)
from metaeval.exact_nodes import Nodes, sum_by
from metaeval.mixtures import gauss_rule, shortest_interval
from metaeval.tau_grid import tau_from_z


@functools.cache
def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for the standard normal (weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


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


def hdi_by_newton(evaluate, mean: np.ndarray, sd: np.ndarray, p: float, density=None):
    """Shortest intervals holding mass p, per row, of distributions given by ``evaluate(x)`` -> (CDF,
    density, the density's slope) at x (rows x points): Newton on F(b) - F(a) = p and f(a) = f(b) from the
    normal approximation, a few dozen evaluations rather than a table. Rows where Newton does not settle,
    or whose density dips inside the interval (not unimodal), are solved from a table of the CDF
    (:func:`metaeval.mixtures.shortest_interval`). ``density(x)``: the density alone, for that check, where it
    costs less than ``evaluate``."""
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
    points = np.concatenate([np.stack([a, b], 1), a[:, None] + (b - a)[:, None] * np.linspace(0.1, 0.9, 9)], 1)
    f = density(points) if density is not None else evaluate(points)[1]
    bad = ~done | (f[:, 2:].min(1) < np.minimum(f[:, 0], f[:, 1]) * (1 - 1e-9))
    if bad.any():  # a table of the CDF over mean +- 12 SD, 1,200 points a row
        x = mean[:, None] + sd[:, None] * np.linspace(-12.0, 12.0, 1201)
        F, f, df = (v[bad] for v in evaluate(x))
        lo, hi = shortest_interval(x[bad], F, f, df, p)
        a, b = a.copy(), b.copy()
        a[bad], b[bad] = lo, hi
    return a, b


# ---------------------------------------------------------------------------- one resolution


class Level:
    """The posterior under one set of rules: node weights, and the quantities as normal mixtures."""

    def __init__(self, prep, axes, ts, shape, nodes: Nodes, log_t: np.ndarray, coarse: bool):
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
            lo[r0:r0 + chunk], hi[r0:r0 + chunk] = hdi_by_newton(lambda x: level.cdf(part, x), mean[r0:r0 + chunk], sd[r0:r0 + chunk], p,
                                                                 density=lambda x: level.cdf(part, x, density_only=True)[1])
        return lo, hi

    def cdf(self, rows: np.ndarray, x: np.ndarray, density_only: bool = False):
        """CDF, density and the density's slope of quantity ``rows`` at x (rows x points); ``density_only``: the
        density alone (None for the others).

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
        f = np.einsum("rxk,rk->rx", phi, w)
        F = df = None
        if not density_only:
            F = np.einsum("rxk,rk->rx", special.ndtr(z), w)
            df = -np.einsum("rxk,rk->rx", phi * z / s[:, None, :], w)
        if narrow is not None:
            parts = self.narrow_cdf(*narrow, x, density_only=density_only)
            f = f + parts[1]
            if not density_only:
                F, df = F + parts[0], df + parts[2]
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

    def narrow_cdf(self, node, r, m, c, s, weight, n_rows, x, density_only: bool = False):
        """The narrow branch of ``cdf`` (see there): the node-row pairs (node, r) with their quantity's
        mean m, slope c on eta and SD s, and the node's weight; summed per row (``density_only``: None for
        the CDF and the density's slope)."""
        n = self.nodes
        grid, G, D = self.eta_tables()
        zj, wj = gauss_hermite(16)
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
        g_t = ((6 * f2 - 6 * frac) * G0 + (3 * f2 - 4 * frac + 1) * D0 + (6 * frac - 6 * f2) * G1 + (3 * f2 - 2 * frac) * D1) / step
        dt = 1 / (scale * np.cosh(t))  # dt/dv, and its derivative
        parts = [None, (g_t * dt / np.abs(cc)[:, None, None]) @ wj, None]
        if not density_only:
            G_t = np.clip((2 * f3 - 3 * f2 + 1) * G0 + (f3 - 2 * f2 + frac) * D0 + (3 * f2 - 2 * f3) * G1 + (f3 - f2) * D1, 0.0, 1.0)
            dg_t = ((12 * frac - 6) * G0 + (6 * frac - 4) * D0 + (6 - 12 * frac) * G1 + (6 * frac - 2) * D1) / step**2
            ddt = -np.tanh(t) * dt * dt
            parts[0] = np.where((cc > 0)[:, None, None], G_t, 1 - G_t) @ wj
            parts[2] = ((dg_t * dt * dt + g_t * ddt) / (cc * np.abs(cc))[:, None, None]) @ wj
        out = [None if part is None else np.zeros((n_rows, x.shape[1])) for part in parts]
        for total, part in zip(out, parts):
            if part is not None:
                np.add.at(total, r, weight[:, None] * part)
        return out

    def eta_tables(self):
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

    def reduced(self, rows: np.ndarray) -> Level:
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
            nodes1, w1 = gauss_rule(z1, marginal, n)
            if b.has_omega:
                t2 = self.ts[1]
                z2 = self.axes[1].centre + self.axes[1].spread * np.sinh(t2)
                at = np.arcsinh((nodes1 - self.axes[0].centre) / self.axes[0].spread)
                h = t1[1] - t1[0] if t1.size > 1 else STEP
                rows = np.maximum(np.sinc((at[:, None] - t1[None, :]) / h) @ g, 0.0)  # the density at each node, over omega
                faint = rows.max(1) <= 1e-12 * g.max()  # a node far out: the nearest grid row's shape
                rows[faint] = g[np.abs(at[faint, None] - t1[None, :]).argmin(1)]
                rules = [gauss_rule(z2, r / r.sum(), n) for r in rows]
                zq = np.array([(a, x) for a, (xs, _) in zip(nodes1, rules) for x in xs])
                wq = np.array([wa * wb for wa, (_, ws) in zip(w1, rules) for wb in ws])
            else:
                zq, wq = nodes1[:, None], w1
            tau = tau_from_z(zq[:, 0], b.tau_prior)
            om = tau_from_z(zq[:, 1], b.omega_prior) if b.has_omega else np.zeros(tau.size)
            with np.errstate(divide="ignore"):
                yield Level(self.prep, self.axes, self.ts, (tau.size,), self.prep.nodes(tau, om, self.coarse), np.log(wq), self.coarse)

    # -- the variance parameters ------------------------------------------------------------------

    def axis_summary(self, i: int, p: float):
        """Mean, SD and shortest interval of tau (i = 0) or omega (i = 1)."""
        x = self.tau if i == 0 else self.omega
        mean = float(x @ self.weight)
        sd = math.sqrt(max(float(x**2 @ self.weight) - mean**2, 0.0))
        g = self.g.sum(axis=1 - i) if self.g.ndim == 2 else self.g
        t, ax = self.ts[i], self.axes[i]
        lo, hi = shortest_interval(*(a[None] for a in _sinc_table(t, g, ax.value)), p)
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
        precision = sum_by(1 / v, b.cluster, prep.C)[j]  # (N, C)
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

    def first(self, rows: np.ndarray, sign: float) -> np.ndarray:
        """P(row a has the largest sign * value among ``rows``) per row (cluster effects only), and the error
        of sampling the components (0 where they are not sampled).

        Two rows: a normal CDF per component; three: a bivariate normal orthant (Owen's T). More: given
        (tau, omega), eta and mu the cluster effects are independent normals, so P(a first) is a
        one-dimensional integral of a's density times the others' CDFs, by the trapezoid rule on a grid
        over the top of the range, with a rule over mu as fine as mu moves the rows against each other
        (:func:`mu_rule`), on two interleaved systematic samples of the components (their difference is the
        sampling error).
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
        halves = []
        for offset in (0.25, 0.75):
            # the sample: COMPARE_BUDGET / (20 x rows) components (32 to 256), half in each
            w, _, mu_mean, mu_var, m, v, c, _ = self.reduced(rows)._given_eta(rows, 1e-10, _sample_size(L * 20) // 2, offset)
            halves.append(first_of_independent(w, mu_mean, mu_var, m, v, c, sign, coarse=self.coarse))
        return 0.5 * (halves[0] + halves[1]), np.abs(halves[0] - halves[1])


#: At most this many values of x per (component, mu) in P(first): enough for rows' SDs about 160-fold apart.
MAX_VALUES = 4096
#: P(first) leaves out, at each pass of values, the rows this many SDs below all of them: their log CDF is
#: above -1e-17 and their density below 2e-16 of its peak there.
FAR = 8.5


def first_of_independent(w, mu_mean, mu_var, m, v, c, sign: float, mu_nodes: tuple | None = None, x_step: float = 0.6,
                         coarse: bool = False) -> np.ndarray:
    """P(row a has the largest sign * value) per row, in a mixture of components (weights ``w``) in each of which
    mu is Normal(mu_mean, mu_var) and the rows are Normal(m, v) with covariances ``c`` with mu and independent
    given mu (arrays components x rows). ``mu_nodes``: the rule over mu's standard score (default :func:`mu_rule`);
    ``x_step``: the step of the trapezoid rule over the values, in SDs of the narrowest row (at least 48 steps
    over the range, at most MAX_VALUES). 0.6 was off by at most 3e-10 against 0.1 on 200 random mixtures whose
    rows' SDs differ up to 30-fold (bench/first_rule.py); 1 by up to 3e-6. ``coarse``: the coarse rules' steps
    (COARSE times ``x_step`` and :func:`mu_rule`'s), so that the default and the coarse rules' difference, part of
    the stated error, moves with these integrals too. It tracks their error rather than bounds it: the trapezoid
    rule's error swings with where the grid falls (steps of 1.2 SDs against 1.8, by hand: in 3 of 30 mixtures the
    error exceeded the difference, by up to 3e-8 against 9e-11).

    A row fixed given mu (no spread of its own: a project known only from a direction-only finding, whose
    effect the component's eta fixes) is a point: it comes first when it is the highest point and every
    other row lies below it; the others must lie above the highest point, so their integral starts there,
    by Gauss-Legendre panels (the integrand is cut there, which the trapezoid rule would not resolve)."""
    hi_, lo_ = sign * m + 4.5 * np.sqrt(v), sign * m - 4.5 * np.sqrt(v)  # 9 SDs apart: P(ahead) < 1e-10
    live = np.flatnonzero((hi_ >= lo_.max(1, keepdims=True)).any(0))
    out = np.zeros(m.shape[1])
    m, v, c = m[:, live], v[:, live], c[:, live]
    slope = c / mu_var[:, None]
    sd = np.sqrt(np.maximum(v - slope * c, 0.0))  # given mu as well
    point = sd <= 1e-6 * sd.max(1, keepdims=True)  # (K, L): a variance to 1e-12 of the widest is rounding (up to 1e-15 seen)
    narrowest = np.where(point, np.inf, sd).min(1)[:, None]  # (K, 1): of the rows with a spread
    # a point moves with mu against the others on their scale
    x_mu, w_mu = mu_nodes or mu_rule(relative_loading(slope, np.where(point, narrowest, sd), np.sqrt(mu_var)), coarse)
    x_step = x_step * (COARSE if coarse else 1)
    mu = mu_mean[:, None] + np.sqrt(mu_var)[:, None] * x_mu  # (K, J)
    values = sign * (m[:, None, :] + slope[:, None, :] * (mu[:, :, None] - mu_mean[:, None, None]))  # (K, J, L)
    points = np.broadcast_to(point[:, None, :], values.shape)
    top = np.where(points, values, -np.inf).max(-1)  # (K, J): the highest point (-inf: none)
    mean = np.where(points, -np.inf, values)  # a point lies below every x the integral visits: its CDF there is 1
    sd = np.where(point, 1.0, sd)
    if point.any():  # P(the highest point first) = P(every other row below it)
        below = np.exp(special.log_ndtr((top[..., None] - mean) / sd[:, None, :]).sum(-1))  # (K, J)
        out[live] += np.einsum("kjl,kj,j,k->l", points & (values == top[..., None]), below, w_mu, w)
    # per (component, mu): x from where every row but a negligible few lies below (or from the highest point),
    # to the top; the log of the product of all rows' CDFs, then each row's density against the others' product
    low = np.where(points, -np.inf, mean - 7.5 * sd[:, None, :]).max(-1)
    high = np.maximum(np.where(points, -np.inf, mean + 7.5 * sd[:, None, :]).max(-1), top)
    low = np.maximum(low, _product_floor(mean, sd, low, high))
    if point.any():  # Gauss-Legendre panels of 1.5 SDs of the narrowest row, from the highest point up: within
        # 6e-13 of panels of 0.25 SD with 12 nodes on 200 random mixtures with one or two points
        low = np.maximum(low, top)
        panels = int(np.clip(np.ceil(((high - low) / (1.5 * narrowest)).max()), 1, MAX_VALUES // 8))
        xi, wi = np.polynomial.legendre.leggauss(8)
        t, weight = (np.arange(panels)[:, None] + (1 + xi) / 2).ravel(), np.tile(wi / 2, panels)
        unit = (high - low) / panels
    else:  # the trapezoid rule: the integrand is negligible at both ends
        unit = np.minimum(x_step * narrowest, (high - low) / 48)
        t = np.arange(min(int(np.ceil(((high - low) / unit).max())) + 1, MAX_VALUES))
        unit = np.maximum(unit, (high - low) / (t.size - 1))  # wider steps where MAX_VALUES would not reach the top
        weight = np.ones(t.size)
    per_pass = max(1, CHUNK // (live.size * x_mu.size))  # x values a pass: one component, or several
    components = max(1, per_pass // t.size)  # components a pass
    for k0 in range(0, len(w), components):
        ks = slice(k0, k0 + components)
        per = np.zeros(mean[ks].shape)  # (k, J, L)
        for x0 in range(0, t.size, per_pass):
            x = low[ks][..., None] + unit[ks][..., None] * t[x0:x0 + per_pass]  # (k, J, X)
            # rows more than FAR SDs below every x of the pass: their CDF is 1 and their density 0 to double precision
            near = np.flatnonzero((mean[ks] + FAR * sd[ks][:, None, :] >= x.min(-1, keepdims=True)).any((0, 1)))
            m_, s_ = mean[ks][:, :, None, near], sd[ks][:, None, None, near]
            z = (x[..., None] - m_) / s_  # (k, J, X, L near)
            # each row's density times the others' CDFs: phi(z) / Phi(z) times the product of all CDFs, in place.
            # The product, not a sum of log CDFs: log_ndtr was 80% of the time. Phi is kept above Phi(-37) ~ 6e-300,
            # never 0 to divide by. Where the product underflows (below 1e-308) no row's term is worth keeping: for
            # the others' product to reach 1e-17, the row's own Phi would be below 1e-291 (z < -36), its density e^-648.
            cdf = special.ndtr(np.maximum(z, -37.0))
            dens = np.square(z, out=z)
            dens *= -0.5
            np.exp(dens, out=dens)
            dens *= cdf.prod(-1, keepdims=True)
            dens /= cdf
            per[..., near] += np.einsum("kjxl,x->kjl", dens, weight[x0:x0 + per_pass]) / (s_[:, :, 0] * math.sqrt(2 * math.pi))
        out[live] += np.einsum("kjl,kj,j,k->l", per, unit[ks], w_mu, w[ks])
    return out


#: P(first)'s values start where the product of all rows' CDFs reaches e^-60: below it a row's integrand, at most
#: its hazard (under 9 / its SD, 7.5 SDs above its mean at most) times that product, adds nothing in double precision.
PRODUCT_FLOOR = -60.0


def _product_floor(mean: np.ndarray, sd: np.ndarray, low: np.ndarray, high: np.ndarray, rows: int = 32, steps: int = 64) -> np.ndarray:
    """Per (component, mu): the highest of ``steps`` values from ``low`` to ``high`` below which the product of all
    rows' CDFs (``mean`` (K, J, L), ``sd`` (K, L)) is under e^PRODUCT_FLOOR, bounded from above by the ``rows`` rows
    with the highest means (each CDF is at most 1, so fewer rows bound the product from above): with many rows most
    of the range below the top is such. ``low`` where no value is."""
    L = mean.shape[-1]
    pick = np.argpartition(-mean, min(rows, L) - 1, axis=-1)[..., :min(rows, L)]  # (K, J, R)
    m = np.take_along_axis(mean, pick, -1)
    s = np.take_along_axis(np.broadcast_to(sd[:, None, :], mean.shape), pick, -1)
    with np.errstate(invalid="ignore"):  # a point's mean is -inf (its CDF is 1); no row with a spread: low is -inf (nan: no cut)
        x = low[..., None] + (high - low)[..., None] * np.linspace(0.0, 1.0, steps)  # (K, J, X)
        bound = special.log_ndtr((x[..., None] - m[:, :, None, :]) / s[:, :, None, :]).sum(-1)  # (K, J, X), rising in x
    first = (bound < PRODUCT_FLOOR).sum(-1)  # values below the floor
    return np.where(first > 0, np.take_along_axis(x, np.maximum(first - 1, 0)[..., None], -1)[..., 0], low)


def relative_loading(slope: np.ndarray, sd: np.ndarray, mu_sd: np.ndarray) -> float:
    """How far one SD of mu moves the rows against each other, in their own SDs given mu: per component
    (rows x ``slope`` on mu, ``sd`` given mu; ``mu_sd`` mu's SD), the least over a common slope s of the largest
    |slope - s| mu_sd / sd (a shift of all rows together changes no ranking); the largest over components."""
    lo, hi = slope.min(1), slope.max(1)
    for _ in range(40):  # bisection (to 1e-12 of the range): the largest excess above s falls as s rises, the largest below it grows
        s = 0.5 * (lo + hi)
        above = ((slope - s[:, None]) / sd).max(1)
        below = ((s[:, None] - slope) / sd).max(1)
        lo, hi = np.where(above > below, s, lo), np.where(above > below, hi, s)
    return float((np.maximum(above, below) * mu_sd).max())


def mu_rule(loading: float, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (in mu's standard score) and weights of P(first)'s integral over mu, by how far mu moves the rows
    against each other (:func:`relative_loading`). Measured against the trapezoid rule with 30 times finer
    steps on 400 random mixtures (bench/first_rule.py): Gauss-Hermite with 8 nodes (the rule before) was off
    by up to 2e-11 for loadings to 0.3, 7e-5 to 1, 8e-3 to 3 and 0.04 beyond; with 4 nodes by 3e-10 to 0.1;
    the trapezoid rule with steps of 0.35 / max(loading, 0.5) by at most 5e-14 beyond 0.3. ``coarse``: 3 and 6
    nodes, and COARSE times the step."""
    if loading <= 0.1:
        return gauss_hermite(3 if coarse else 4)
    if loading <= 0.3:
        return gauss_hermite(6 if coarse else 8)
    h = 0.35 / max(loading, 0.5) * (COARSE if coarse else 1)
    t = np.arange(-math.floor(8.5 / h), math.floor(8.5 / h) + 1) * h  # mu within 8.5 SDs: all but 2e-17
    w = np.exp(-0.5 * t * t)
    return t, w / w.sum()


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

