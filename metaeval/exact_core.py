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

import math
from dataclasses import dataclass

import numpy as np

from metaeval.exact_block import COARSE, DROP, REACH, STEP, Block
from metaeval.exact_level import Level
from metaeval.exact_nodes import Nodes, Prepared, find_mode, t_reach
from metaeval.priors import Prior
from metaeval.tau_grid import log_dtau_dz, prior_scales, tau_from_z

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
        return tau_from_z(self.centre + self.spread * np.sinh(t), self.prior)

    def log_jacobian(self, t: np.ndarray) -> np.ndarray:
        """log d(value)/dt."""
        return log_dtau_dz(self.centre + self.spread * np.sinh(t), self.prior) + np.log(self.spread * np.cosh(t))


class Grid:
    """The (tau[, omega]) product grid: axes from scans through the mode, extents grown over the whole
    product grid while an edge holds non-negligible density. Nodes evaluated on the way are kept."""

    def __init__(self, prep: Prepared):
        self.prep = prep
        b = prep.b
        self.two = b.has_omega
        self._known: dict[tuple[int, int], tuple[int, int]] = {}  # (i, j) -> (batch, row)
        self._batches: list[Nodes] = []
        self._log_t: list[np.ndarray] = []

        def logdens_z(z_tau, z_om):
            """log posterior density in (z_tau, z_omega) at arrays of points."""
            z_tau, z_om = np.broadcast_arrays(np.atleast_1d(np.asarray(z_tau, float)), np.atleast_1d(np.asarray(z_om, float)))
            tau = tau_from_z(z_tau, b.tau_prior)
            om = tau_from_z(z_om, b.omega_prior) if self.two else np.zeros(tau.size)
            ok = (tau > 0) & np.isfinite(tau) & ((om > 0) & np.isfinite(om) if self.two else True)
            out = np.full(tau.shape, -np.inf)
            if ok.any():
                lp = prep.nodes(tau[ok], om[ok], density_only=True).log_post + log_dtau_dz(z_tau[ok], b.tau_prior)
                if self.two:
                    lp += log_dtau_dz(z_om[ok], b.omega_prior)
                out[ok] = np.where(np.isfinite(lp), lp, -np.inf)
            return out

        data = [x for x in (math.sqrt(b.v.min()) if b.v.size else 0, float(np.ptp(b.y)) if b.y.size else 0) if x > 0]
        tau_scales = data + [s for s in prior_scales(b.tau_prior) if s > 0]
        span_tau = (math.log(min(tau_scales)) - 12, math.log(max(tau_scales)) + 6)
        if not self.two:
            c, a = find_mode(lambda z: logdens_z(z, 0.0), *span_tau)
            self.axes = [_Axis(b.tau_prior, c, a)]
            self.axes[0].t0, self.axes[0].t1 = t_reach(lambda z: logdens_z(z, 0.0), c, a, STEP)
            self.top = float(logdens_z(c, 0.0)[0]) + math.log(a)  # a node's density in t: below the maximum
            self._fill()
            return
        om_scales = data + [s for s in prior_scales(b.omega_prior) if s > 0]
        span_om = (math.log(min(om_scales)) - 12, math.log(max(om_scales)) + 6)
        c_om = math.log(float(np.median(om_scales)))
        for _ in range(2):  # coordinate-wise scans to the mode
            c_tau, a_tau = find_mode(lambda z: logdens_z(z, c_om), *span_tau)
            c_om, a_om = find_mode(lambda z: logdens_z(c_tau, z), *span_om)
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
            ax.t0, ax.t1 = t_reach(lines, ax.centre, ax.spread, STEP)
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
        ii, jj = np.meshgrid(*ks, indexing="ij")
        new = [(i, j) for i, j in zip(ii.ravel(), jj.ravel()) if (i, j) not in self._known]
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
        refs = [self._known[(i, j)] for i, j in zip(ii.ravel(), jj.ravel())]
        return np.array([self._log_t[bt][r] for bt, r in refs]).reshape(ii.shape if self.two else ii.shape[:1])

    def level(self, coarse: bool) -> Level:
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
            whole = Nodes.concat(self._batches)
            offsets = np.cumsum([0] + [bt.tau.size for bt in self._batches])
            nodes = whole.take(np.array([offsets[bt] + r for bt, r in refs]))
        log_t = nodes.log_post + self.axes[0].log_jacobian(t[0]) + (self.axes[1].log_jacobian(t[1]) if self.two else 0.0)
        return Level(self.prep, self.axes, ts, grids[0].shape, nodes, np.where(np.isfinite(log_t), log_t, -np.inf), coarse)


# ---------------------------------------------------------------------------- the result


class BlockPosterior:
    """The exact posterior of one block: the default rules' answer, and the coarse rules' for error estimates."""

    def __init__(self, block: Block):
        self.block = block
        self.prep = Prepared(block)
        grid = Grid(self.prep)
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
        """(value, |value - coarse value|) of a Level method's result (or of each part of a tuple)."""
        a = getattr(self.fine, method)(*args)
        c = getattr(self.coarse, method)(*args)
        if isinstance(a, tuple):
            return tuple(np.asarray(x, float) for x in a), tuple(np.abs(np.asarray(x, float) - np.asarray(y, float)) for x, y in zip(a, c))
        return np.asarray(a, float), np.abs(np.asarray(a, float) - np.asarray(c, float))
