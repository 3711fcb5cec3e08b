"""Exact posterior of a block whose censored observations sit in several clusters (NumPy/SciPy only).

:mod:`metaeval.exact_core` integrates one censored group (a (cluster, offset) pair holding censored
observations) a block. With several, each in its own cluster, the block is still exact, one level down:
given (tau, omega) *and mu* the clusters are independent, so

- each group's likelihood given mu, l_g(mu) = E[L_g(eta_g) | mu], is a one-dimensional integral over its
  eta: a closed-form normal CDF difference for a group of one observation (its SE rule the only integral
  left), Gauss-Hermite over eta for several;
- mu takes the place of eta in the core's machinery: per (tau, omega) node, the core's trapezoid rule over
  the standardised mu for N(mu; M, V) x prod_g l_g(mu) (:meth:`~metaeval.exact_nodes.Prepared.eta_rule`) gives
  the node's weight and mu's nodes; mu itself, a new cluster's effect and the clusters without censored
  observations (and their offsets) are then the core's normal mixtures, linear in mu (a
  :class:`~metaeval.exact_level.Level`; mu's own distribution from its cardinal series);
- a group's cluster effect and offsets are, given (tau, omega, mu), the core's one-group case: a Level per
  group over (tau, omega, mu) nodes, mu at the Gauss nodes of its rule at each (tau, omega) node (these
  quantities are smooth in mu), each with its eta rule. Where a small tau makes such a quantity follow mu
  (its spread given mu far below its slope on mu times mu's spread), mu's cardinal series gives its CDF
  instead of those few nodes.

P(first) and the pairwise probabilities need the clusters jointly: they are estimated from COMPARE_DRAWS
draws at those (tau, omega, mu) nodes (seeded; the fine and the coarse rules draw independently, so their
difference is the estimates' error). :meth:`CellsLevel.draws` draws mu from its distribution at each node.
Every number is checked against brute-force quadrature (tests/test_exact_full.py) and two 40,000-draw MCMC
fits of the bundled evidence (bench/exact_full.py agreement).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from metaeval.exact_block import NARROW, WEIGHT_FLOOR, Block, NoExactForm
from metaeval.exact_core import BlockPosterior, Grid, TwoRules
from metaeval.exact_level import Level, gauss_hermite, hdi_by_newton
from metaeval.exact_nodes import Nodes, Prepared
from metaeval.mixtures import gauss_rule

#: Gauss-Hermite points over eta for the likelihood given mu of a group of several observations (fine, coarse rules).
GH_POINTS = {False: 32, True: 20}
#: Gauss points over mu per (tau, omega) node for the groups' quantities (fine, coarse rules).
MU_GAUSS = {False: 10, True: 7}
#: Draws behind P(first) and the pairwise probabilities, per set of rules (standard error at most 0.0016).
COMPARE_DRAWS = 100_000


def _only_censored(block: Block, keep: np.ndarray) -> Block:
    """``block`` with only the censored observations ``keep`` (a boolean mask over them)."""
    return replace(block, lo=block.lo[keep], hi=block.hi[keep], c_cluster=block.c_cluster[keep], c_offset=block.c_offset[keep],
                   c_residual=block.c_residual[keep], c_weight=block.c_weight[keep],
                   se_prior=tuple(p for p, k in zip(block.se_prior, keep) if k))


class CellsPrepared(Prepared):
    """The block's algebra with mu as the core's one latent dimension (see the module docstring): the
    Gaussian observations' algebra at (tau, omega) nodes, and per node the rule over the standardised mu
    tilted by every group's likelihood given mu."""

    def __init__(self, block: Block):
        super().__init__(block, many=True)
        if np.unique(self.h_cluster).size < self.H:
            raise NoExactForm("censored observations in two (cluster, offset) groups of one cluster: the exact engine "
                              "integrates one group a cluster")
        self.gauss = Prepared(_only_censored(block, np.zeros(block.lo.size, dtype=bool)))
        self.groups = [Prepared(_only_censored(block, self.c_group == h)) for h in range(self.H)]
        self.H = 1  # for Level: one latent dimension, mu

    def group_given_mu(self, g: Nodes, h: int):
        """eta_h = theta_c + b_t of group h given mu at nodes ``g`` (the Gaussian observations' algebra):
        E[eta | mu] = E0 + slope (mu - M), Var[eta | mu] = D."""
        c, t, C = int(self.h_cluster[h]), int(self.h_offset[h]), self.C
        V = g.var[:, 0]
        E0, cov, var = g.mean[:, 1 + c].copy(), g.cov_mu[:, 1 + c].copy(), g.var[:, 1 + c].copy()
        if t >= 0:
            E0 += g.mean[:, 1 + C + t]
            cov += g.cov_mu[:, 1 + C + t]
            var += g.var[:, 1 + C + t] + 2 * g.offset_slope[:, t] * g.var[:, 1 + c]
        return E0, cov / V, np.maximum(var - cov * cov / V, 0.0)

    def log_lik_mu(self, g: Nodes, omega: np.ndarray, coarse: bool):
        """``log_lik(mu, idx, derivatives)`` for the core's eta rule: the sum over groups of log l_h(mu)
        at the nodes ``idx`` of ``g``, and its derivatives in mu."""
        M = g.mean[:, 0]
        parts = [self.group_given_mu(g, h) for h in range(len(self.groups))]

        def log_lik(mu, idx, derivatives):
            idx = np.arange(M.size)[idx]
            total, d1, d2 = np.zeros(mu.shape), np.zeros(mu.shape), np.zeros(mu.shape)
            for sub, (E0, slope, D) in zip(self.groups, parts):
                m = E0[idx, None] + slope[idx, None] * (mu - M[idx, None])
                lf, g1, g2 = self._group_log_lik(sub, m, D[idx], omega[idx], coarse, derivatives)
                total += lf
                if derivatives:
                    d1 += slope[idx, None] * g1
                    d2 += slope[idx, None] ** 2 * g2
            return total, d1, d2

        return log_lik

    @staticmethod
    def _group_log_lik(sub: Prepared, m, D, omega, coarse, derivatives):
        """log E[L(eta)] for eta ~ N(m, D) (m: (N, P); D, omega: (N,)) of one group's observations, and its
        derivatives in m: closed form for one observation, else Gauss-Hermite over eta."""
        if sub.b.lo.size == 1:  # its normal CDF difference with eta's variance added
            return sub.censored_log_lik(m, omega, coarse, derivatives, extra_var=D)
        # several observations (replicates, each with its own residual): Gauss-Hermite over eta ~ N(m, D),
        # GH_POINTS nodes (the coarse rules: fewer, so that the reported error covers this rule's)
        z, w = gauss_hermite(GH_POINTS[coarse])
        N, P = m.shape
        root = np.sqrt(D)[:, None, None]
        eta = (m[..., None] + root * z).reshape(N, P * z.size)
        with np.errstate(over="ignore", invalid="ignore"):
            ll, g1, g2 = sub.censored_log_lik(eta, omega, coarse, derivatives)
        ll = ll.reshape(N, P, z.size)
        top = ll.max(-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        pi = np.exp(ll - top) * w
        total = pi.sum(-1)
        with np.errstate(divide="ignore"):
            log_l = np.log(total) + top[..., 0]
        if not derivatives:
            return log_l, None, None
        pi = pi / np.where(total > 0, total, 1.0)[..., None]  # the tilted weights
        live = pi > 0  # nodes of no weight may carry infinite derivatives; far nodes, derivatives whose squares overflow
        g1 = np.where(live, np.clip(g1.reshape(N, P, z.size), -1e150, 1e150), 0.0)
        g2 = np.where(live, np.clip(g2.reshape(N, P, z.size), -1e150, 1e150), 0.0)
        e1 = (pi * g1).sum(-1)
        return log_l, e1, (pi * (g2 + g1 * g1)).sum(-1) - e1 * e1

    def nodes(self, tau: np.ndarray, omega: np.ndarray, coarse: bool = False, floor=-np.inf, density_only: bool = False) -> Nodes:
        """The Gaussian observations' algebra at nodes (tau, omega), with u = (mu - M) / sqrt(V) and its rule
        tilted by the groups' likelihoods (see :meth:`Prepared.nodes`)."""
        g = self.gauss.nodes(tau, omega)
        N = tau.size
        M, root = g.mean[:, 0], np.sqrt(g.var[:, 0])
        ok = np.isfinite(g.log_post) & (g.log_post >= floor) & np.isfinite(M) & (root > 0)
        sub = g.take(np.flatnonzero(ok))
        u_ok, w_ok, z_ok, centre_ok, scale_ok = self.eta_rule(
            M[ok], root[ok], omega[ok], coarse, laplace=density_only, log_lik=self.log_lik_mu(sub, omega[ok], coarse), log_base=g.log_post[ok])
        u, u_w = np.zeros((N, u_ok.shape[1], 1)), np.zeros((N, u_ok.shape[1]))
        u[ok, :, 0], u_w[ok], u_w[~ok, u_ok.shape[1] // 2] = u_ok, w_ok, 1.0
        centre, scale = np.zeros(N), np.ones(N)
        centre[ok], scale[ok] = centre_ok, scale_ok
        log_post = np.full(N, -np.inf)
        log_post[ok] = g.log_post[ok] + z_ok
        cov_u = (g.cov_mu / np.where(root > 0, root, np.inf)[:, None])[..., None]
        return Nodes(tau, omega, log_post, g.mean, g.var, cov_u, g.cov_mu, u, u_w, centre, scale, g.offset_slope, M, root)


class CellsLevel:
    """The posterior under one set of rules: ``mu_level`` (the core's Level over (tau, omega) with mu as its
    latent dimension) for mu, a new cluster and the clusters without censored observations; per group, a
    Level over the (tau, omega, mu) nodes with the group's eta for its cluster and offsets."""

    def __init__(self, prep: CellsPrepared, mu_level: Level):
        self.prep, self.mu_level = prep, mu_level
        self.tau, self.omega, self.weight, self.edge_density = mu_level.tau, mu_level.omega, mu_level.weight, mu_level.edge_density
        self._theta = None
        self.route = {}  # full row -> (group, its row there)
        for h in range(len(prep.groups)):
            for local, row in enumerate(self._group_rows(h)):
                self.route[int(row)] = (h, local + 1)

    @functools.cached_property
    def _pairs(self):
        """The (tau, omega, mu) nodes for the groups: per (tau, omega) node, the Gauss rule of mu's lattice rule
        there (a group's quantities are smooth in mu), MU_GAUSS points, fewer for the coarse rules; their (tau,
        omega) node, mu and normalised weight. Made when a group's quantity is first asked for (a domain's average
        effect and spread need none: the sensitivity grid's blocks skip them)."""
        mu_level = self.mu_level
        nd = mu_level.nodes
        live = np.flatnonzero(mu_level.weight > WEIGHT_FLOOR * mu_level.weight.max())
        node, mu, weight = [], [], []
        for i in live:
            x, w = gauss_rule(nd.u[i, :, 0], nd.u_weight[i], MU_GAUSS[mu_level.coarse])
            node += [i] * x.size
            mu.append(nd.eta_mean[i] + nd.eta_root[i] * x)
            weight.append(mu_level.weight[i] * w)
        weight = np.concatenate(weight)
        return np.array(node), np.concatenate(mu), weight / weight.sum()

    @property
    def node(self) -> np.ndarray:
        return self._pairs[0]

    @property
    def mu(self) -> np.ndarray:
        return self._pairs[1]

    @property
    def pair_weight(self) -> np.ndarray:
        return self._pairs[2]

    @functools.cached_property
    def quantities(self) -> list[_GroupQuantities]:
        """Per group, its rows' quantities (made when first asked for, as :attr:`_pairs`)."""
        return [_GroupQuantities(self, *self._group_level(h)) for h in range(len(self.prep.groups))]

    def _group_rows(self, h: int) -> np.ndarray:
        """Group h's rows: its cluster's effect and the cluster's offsets, as rows of the block."""
        prep = self.prep
        offsets = np.flatnonzero(prep.b.offset_cluster == int(prep.h_cluster[h]))
        return np.concatenate([[1 + int(prep.h_cluster[h])], 1 + prep.C + offsets])

    def given_mu(self, h: int, k: np.ndarray, mu: np.ndarray) -> Nodes:
        """Group h at mu Level nodes ``k`` with mu values ``mu``: the core's one-group Nodes, rows (mu, the
        group's rows), eta_h its latent dimension with its rule; ``log_post`` left at 0."""
        prep, nd = self.prep, self.mu_level.nodes
        t, C = int(prep.h_offset[h]), prep.C
        rows = self._group_rows(h)
        V, M = nd.var[k, 0], nd.mean[k, 0]
        slope = nd.cov_mu[k][:, rows] / V[:, None]
        mean = nd.mean[k][:, rows] + slope * (mu - M)[:, None]  # given mu
        var = np.maximum(nd.var[k][:, rows] - slope * nd.cov_mu[k][:, rows], 0.0)
        offsets = rows[1:] - 1 - C
        v_c, beta = var[:, 0], nd.offset_slope[k][:, offsets]
        gamma = np.maximum(var[:, 1:] - beta**2 * v_c[:, None], 0.0)
        cov = np.concatenate([v_c[:, None], beta * v_c[:, None]], 1)  # with eta (so far: with theta_c), given mu
        E, var_eta = mean[:, 0].copy(), v_c.copy()
        if t >= 0:
            j = int(np.flatnonzero(offsets == t)[0])
            E += mean[:, 1 + j]
            var_eta = (1 + beta[:, j]) ** 2 * v_c + gamma[:, j]
            cov = cov * (1 + beta[:, j])[:, None]
            cov[:, 1 + j] += gamma[:, j]
        root = np.sqrt(var_eta)
        u, u_w, _, centre, scale = prep.groups[h].eta_rule(E, root, nd.omega[k], self.mu_level.coarse)
        K = k.size
        return Nodes(nd.tau[k], nd.omega[k], np.zeros(K), np.concatenate([mu[:, None], mean], 1), np.concatenate([np.zeros((K, 1)), var], 1),
                     np.concatenate([np.zeros((K, 1)), cov / np.where(root > 0, root, np.inf)[:, None]], 1)[..., None],
                     np.zeros((K, 1 + rows.size)), u[..., None], u_w, centre, scale, beta, E, root)

    def _group_level(self, h: int):
        """Group h's rows and their Level over the (tau, omega, mu) pairs: given (tau, omega, mu) they are the
        core's one-group case, eta_h their one latent dimension."""
        with np.errstate(divide="ignore"):
            return self._group_rows(h), Level(self.prep.groups[h], None, None, (self.node.size,), self.given_mu(h, self.node, self.mu),
                                              np.log(self.pair_weight), self.mu_level.coarse)

    # -- one quantity at a time ---------------------------------------------------------------------

    def _rowwise(self, method: str, rows, *args):
        """A per-row Level method over rows from the mu Level and the groups' quantities."""
        rows = np.asarray(rows, dtype=int)
        if not rows.size:
            return getattr(self.mu_level, method)(rows, *args)
        where = [self.route.get(int(r), (None, int(r))) for r in rows]
        out = None
        for h in {h for h, _ in where}:
            at = np.array([i for i, (g, _) in enumerate(where) if g == h])
            local = np.array([where[i][1] for i in at])
            level = self.mu_level if h is None else self.quantities[h]
            part = getattr(level, method)(local, *args)
            part = part if isinstance(part, tuple) else (part,)
            if out is None:
                out = [np.empty(len(rows)) for _ in part]
            for o, p in zip(out, part):
                o[at] = p
        return tuple(out) if len(out) > 1 else out[0]

    def moments(self, rows):
        return self._rowwise("moments", rows)

    def intervals(self, rows, p: float):
        return self._rowwise("intervals", rows, p)

    def prob_above(self, rows, sign: float, threshold: float):
        return self._rowwise("prob_above", rows, sign, threshold)

    def axis_summary(self, i: int, p: float):
        return self.mu_level.axis_summary(i, p)

    def pooling(self) -> np.ndarray:
        return self.mu_level.pooling()

    # -- jointly ------------------------------------------------------------------------------------

    def draws(self, n: int, rng: np.random.Generator, *, at_pairs: bool = False) -> dict[str, np.ndarray]:
        """``n`` independent draws (as :meth:`metaeval.exact_core.BlockPosterior.draws`): a (tau, omega) node by its
        weight, mu from its distribution there (the inverse of its cardinal-series CDF), each group's eta from its
        rule given mu, then the cluster effects and offsets from their Gaussian conditionals (independent across
        clusters given mu). ``at_pairs``: mu at the groups' Gauss nodes instead (a quadrature over mu, for the
        comparisons)."""
        prep, nd = self.prep, self.mu_level.nodes
        C, T = prep.C, prep.T
        if at_pairs:
            pick = rng.choice(self.node.size, size=n, p=self.pair_weight)
            node, mu = self.node[pick], self.mu[pick]
        else:
            node = rng.choice(self.weight.size, size=n, p=self.weight)
            grid, G, _ = self.mu_level.eta_tables()
            G = np.maximum.accumulate(np.clip(G, 0.0, None), axis=1)
            target = rng.random(n) * G[node, -1]
            at = np.clip(_count_below(G, node, target), 1, grid.size - 1)
            g0, g1 = G[node, at - 1], G[node, at]
            t = grid[at - 1] + (grid[at] - grid[at - 1]) * np.where(g1 > g0, (target - g0) / np.where(g1 > g0, g1 - g0, 1.0), 0.5)
            mu = nd.eta_mean[node] + nd.eta_root[node] * (nd.u_centre[node] + nd.u_scale[node] * np.sinh(t))
        u = (mu - nd.eta_mean[node]) / nd.eta_root[node]
        cu = nd.cov_u[node, :, 0]
        m = nd.mean[node] + cu * u[:, None]  # given mu
        sd = np.sqrt(np.maximum(nd.var[node] - cu * cu, 0.0))
        z = rng.standard_normal((n, 1 + C + T))
        theta = m[:, 1:1 + C] + sd[:, 1:1 + C] * z[:, 1:1 + C]
        oc, beta = prep.b.offset_cluster, nd.offset_slope[node]
        rows = np.arange(1 + C, 1 + C + T)
        gamma = np.maximum(sd[:, rows] ** 2 - beta**2 * sd[:, 1 + oc] ** 2, 0.0)
        offset = m[:, rows] + beta * (theta[:, oc] - m[:, 1 + oc]) + np.sqrt(gamma) * z[:, rows]
        for h, quantities in enumerate(self.quantities):
            group_rows, level = quantities.rows, quantities.level
            if at_pairs:  # the group's nodes at the picked pairs, each pair's cumulative weights summed once
                g, at = level.nodes, pick
                cum = quantities.cumulative_weight()
            else:
                g, at = self.given_mu(h, node, mu), np.arange(n)
                cum = np.cumsum(g.u_weight, axis=1)
            q = np.minimum(_count_below(cum, at, rng.random(n) * cum[at, -1]), cum.shape[1] - 1)
            eta_u = g.u[at, q, 0]
            c, t = int(prep.h_cluster[h]), int(prep.h_offset[h])
            cu_g, mean, var = g.cov_u[at, :, 0], g.mean[at], g.var[at]
            mean_g = mean + cu_g * eta_u[:, None]  # given mu and eta
            sd_g = np.sqrt(np.maximum(var - cu_g * cu_g, 0.0))
            theta[:, c] = mean_g[:, 1] + sd_g[:, 1] * z[:, 1 + c]
            for j, row in enumerate(group_rows[1:]):
                o = row - 1 - C
                if o == t:  # what eta leaves of its cluster's effect
                    offset[:, o] = g.eta_mean[at] + g.eta_root[at] * eta_u - theta[:, c]
                else:  # given its cluster's effect (and mu)
                    b = g.offset_slope[at, j]
                    offset[:, o] = (mean[:, 2 + j] + b * (theta[:, c] - mean[:, 1])
                                    + np.sqrt(np.maximum(var[:, 2 + j] - b * b * var[:, 1], 0.0)) * z[:, row])
        return {"mu": mu, "tau": self.tau[node], "omega": self.omega[node], "theta": theta, "offset": offset}

    def _compare_draws(self, rows: np.ndarray, sign: float) -> np.ndarray:
        """sign x the cluster effects of ``rows`` in COMPARE_DRAWS draws (seeded; the fine and the coarse rules'
        are independent, so their difference is the estimates' error)."""
        if self._theta is None:
            self._theta = self.draws(COMPARE_DRAWS, np.random.default_rng([18, int(self.mu_level.coarse)]), at_pairs=True)["theta"]
        return sign * self._theta[:, np.asarray(rows) - 1]

    def first(self, rows, sign: float):
        """P(row a has the largest sign x value among ``rows``), and twice its Monte Carlo standard error."""
        x = self._compare_draws(rows, sign)
        p = np.bincount(x.argmax(1), minlength=x.shape[1]) / x.shape[0]
        return p, 2 * np.sqrt(p * (1 - p) / x.shape[0])

    def pairwise(self, rows, sign: float) -> np.ndarray:
        """P(sign x q_a > sign x q_b) for rows a, b (the diagonal is meaningless)."""
        x = self._compare_draws(rows, sign)
        return (x[:, :, None] > x[:, None, :]).mean(0)


def _count_below(cum: np.ndarray, rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per draw i, how many entries of row ``rows[i]`` of ``cum`` (running sums of weights: non-decreasing) are
    below ``target[i]``: a binary search side by side for all draws, so that no draw copies its row."""
    lo, hi = np.zeros(rows.size, dtype=int), np.full(rows.size, cum.shape[1])
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        below = cum[rows, np.minimum(mid, cum.shape[1] - 1)] < target
        lo = np.where(open_ & below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)
    return lo


class _GroupQuantities:
    """A group's rows (its cluster's effect and offsets): moments from its Level over the (tau, omega, mu)
    nodes; CDFs, intervals and tail probabilities from that Level too, except at the (tau, omega) nodes where a
    row is narrow in mu's direction (its spread given mu, R, far below its slope on mu times mu's spread: a
    small tau makes the cluster's effect follow mu), whose handful of mu nodes would be steps: there the row
    is m + a u + R with u mu's lattice variable, whose CDF the mu Level's cardinal series gives (its narrow
    branch), R's dependence on u taken into a (a regression over the mu nodes) and R's remainder as a normal."""

    def __init__(self, cells: CellsLevel, rows: np.ndarray, level: Level):
        self.cells, self.rows, self.level = cells, rows, level
        self._splits: dict = {}
        self._cumulative = None

    def moments(self, local):
        return self.level.moments(local)

    def cumulative_weight(self) -> np.ndarray:
        """The running sums of each (tau, omega, mu) node's eta weights (for drawing eta at the nodes)."""
        if self._cumulative is None:
            self._cumulative = np.cumsum(self.level.nodes.u_weight, axis=1)
        return self._cumulative

    def _split(self, r: int):
        """Row r (local): the Level of the nodes where it is wide, their mass, and the narrow branch's items."""
        if r in self._splits:
            return self._splits[r]
        cells, lv = self.cells, self.level
        mu_nodes, g = cells.mu_level.nodes, lv.nodes
        node, W = cells.node, cells.pair_weight
        N = mu_nodes.tau.size
        row = int(self.rows[r - 1])
        c = g.cov_u[:, r, 0]
        s2 = np.maximum(g.var[:, r] - c * c, 0.0)
        m_u = (g.u_weight * g.u[..., 0]).sum(1)  # eta's standardised mean and variance given mu
        v_u = np.maximum((g.u_weight * g.u[..., 0] ** 2).sum(1) - m_u**2, 0.0)
        uk = (cells.mu - mu_nodes.eta_mean[node]) / mu_nodes.eta_root[node]
        W_n = np.bincount(node, W, minlength=N)
        w = W / W_n[node]

        def per_node(values):
            return np.bincount(node, w * values, minlength=N)

        u_bar, m_bar = per_node(uk), per_node(m_u)
        du = uk - u_bar[node]
        spread = per_node(du * du)
        beta = np.where(spread > 0, per_node(du * (m_u - m_bar[node])) / np.where(spread > 0, spread, 1.0), 0.0)
        alpha = m_bar - beta * u_bar
        resid = per_node(v_u + (m_u - alpha[node] - beta[node] * uk) ** 2)
        first = np.zeros(N, dtype=int)
        first[node[::-1]] = np.arange(node.size)[::-1]  # a pair of each node (c and s2 are the same for all)
        c_n, s2_n = c[first], s2[first]
        a = mu_nodes.cov_mu[:, row] / mu_nodes.var[:, 0] * mu_nodes.eta_root + c_n * beta
        sd_R = np.sqrt(s2_n + c_n**2 * resid)
        narrow = (W_n > 0) & (sd_R < NARROW * np.abs(a) * mu_nodes.u_scale)
        wide = np.flatnonzero(~narrow[node])
        level = None
        if wide.size:
            with np.errstate(divide="ignore"):
                level = Level(lv.prep, None, None, (wide.size,), g.take(wide), np.log(W[wide]), lv.coarse)
        at = np.flatnonzero(narrow)
        items = (at, mu_nodes.mean[at, row] + c_n[at] * alpha[at], a[at], sd_R[at], W_n[at])
        self._splits[r] = (level, float(W[wide].sum()), items)
        return self._splits[r]

    def cdf(self, local, x: np.ndarray, density_only: bool = False):
        """CDF, density and its slope of rows ``local`` at x (rows x points); ``density_only``: the density alone
        (None for the others)."""
        out = [None if density_only and q != 1 else np.zeros(x.shape) for q in range(3)]
        for i, r in enumerate(np.asarray(local).tolist()):
            level, mass, (node, m, a, sd, weight) = self._split(r)
            if level is not None:
                for total, part in zip(out, level.cdf(np.array([r]), x[i:i + 1], density_only)):
                    if part is not None:
                        total[i] += mass * part[0]
            if node.size:
                parts = self.cells.mu_level.narrow_cdf(node, np.zeros(node.size, dtype=int), m, a, sd, weight, 1, x[i:i + 1], density_only)
                for total, part in zip(out, parts):
                    if part is not None:
                        total[i] += part[0]
        return tuple(out)

    def intervals(self, local, p: float):
        mean, sd = self.moments(local)
        return hdi_by_newton(lambda x: self.cdf(local, x), mean, sd, p, density=lambda x: self.cdf(local, x, density_only=True)[1])

    def prob_above(self, local, sign: float, threshold: float):
        F = np.clip(self.cdf(local, np.full((len(local), 1), sign * threshold))[0][:, 0], 0.0, 1.0)
        return 1 - F if sign > 0 else F


class CellsPosterior(TwoRules):
    """The exact posterior of a block with censored observations in several clusters (the module docstring):
    the default rules' answer and the coarse rules', as :class:`~metaeval.exact_core.BlockPosterior`."""

    def __init__(self, block: Block):
        self.block = block
        self.prep = CellsPrepared(block)
        grid = Grid(self.prep)
        self.axes = grid.axes
        self.fine = CellsLevel(self.prep, grid.level(coarse=False))
        self.coarse = CellsLevel(self.prep, grid.level(coarse=True))

    def draws(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.fine.draws(n, rng)


def block_posterior(block: Block):
    """The exact posterior of ``block``: :class:`CellsPosterior` when its censored observations sit in
    several clusters, else :class:`~metaeval.exact_core.BlockPosterior`."""
    key = block.c_cluster * (block.offset_cluster.size + 1) + block.c_offset + 1
    return CellsPosterior(block) if np.unique(key).size > 1 else BlockPosterior(block)
