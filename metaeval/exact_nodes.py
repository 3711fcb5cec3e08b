"""The exact core's Gaussian algebra (:mod:`metaeval.exact_core`): given the variance parameters (tau, omega),
a block's latent effects integrated in closed form, the censored observations' factors over their SE rules, and
the quadrature over eta they leave; plus the one-dimensional rules the grid is built from (NumPy/SciPy only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import special

from metaeval.exact_block import COARSE, DROP, ETA_STEP, REACH, SE_STEP, Block, NoExactForm
from metaeval.mixtures import quintic_coefficients
from metaeval.priors import Prior
from metaeval.tau_grid import log_dtau_dz, prior_scales, scan_mode, tau_from_z

_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------- rules


def find_mode(logdens, z0: float, z1: float) -> tuple[float, float]:
    """Mode and SD (from the curvature) of a unimodal log density in z, from a scan of [z0, z1] widened as
    needed (the one-level engine's search)."""
    return scan_mode(logdens, np.arange(z0, z1 + 0.25, 0.5))[:2]


def t_reach(logdens, centre: float, spread: float, step: float) -> tuple[float, float]:
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
        return np.where(np.isfinite(z), prior.logpdf(tau_from_z(z, prior)) + log_dtau_dz(z, prior), -np.inf)

    scales = [s for s in prior_scales(prior) if s > 0]
    c, a = find_mode(logdens, math.log(min(scales)) - 10, math.log(max(scales)) + 10)
    t0, t1 = t_reach(logdens, c, a, step)
    t = np.arange(math.ceil(t0 / step), math.floor(t1 / step) + 1) * step
    z = c + a * np.sinh(t)
    lw = logdens(z) + np.log(a * np.cosh(t))
    w = np.exp(lw - lw.max())
    return tau_from_z(z, prior), w / w.sum()


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


#: Elements (rows x eta nodes x SE nodes) of one chunk of :func:`_censored_terms`' arrays: chunks that stay
#: in the core's cache made the bundled exact fit's censored factors 2.6 times faster than whole arrays.
CHUNK = 16_384


def _censored_terms(eta, lo, hi, s, log_w, omega2, derivatives: bool, tails: bool = False):
    """log P(lo < yhat/s_j < hi | eta), averaged over SE nodes s_j with log weights log_w; with
    ``derivatives`` also its first and second derivatives in eta. eta: (N, P); omega2: (N,). ``tails``:
    in log space throughout (for probabilities too small to sum directly). Computed in chunks of rows
    (:data:`CHUNK`); each row's numbers are the same whatever the chunk."""
    rows = max(1, CHUNK // max(1, eta.shape[1] * s.size))
    if eta.shape[0] <= rows:
        return _censored_chunk(eta, lo, hi, s, log_w, omega2, derivatives, tails)
    parts = [_censored_chunk(eta[i:i + rows], lo, hi, s, log_w, omega2[i:i + rows], derivatives, tails)
             for i in range(0, eta.shape[0], rows)]
    return tuple(None if part[0] is None else np.concatenate(part) for part in zip(*parts))


def _censored_chunk(eta, lo, hi, s, log_w, omega2, derivatives: bool, tails: bool):
    """:func:`_censored_terms` for one chunk of rows."""
    sigma = np.sqrt(s[None, None, :] ** 2 + omega2[:, None, None])
    a = (lo * s[None, None, :] - eta[..., None]) / sigma
    b = (hi * s[None, None, :] - eta[..., None]) / sigma
    if not (derivatives or tails):  # the common case first: probabilities summed directly, logs where they underflow
        upper = a > 0  # both ends in the upper tail: the difference of upper-tail probabilities keeps its digits
        d = special.ndtr(np.where(upper, -a, b))
        d -= special.ndtr(np.where(upper, -b, a))
        total = d @ np.exp(log_w)
        low = ~(total > 1e-250)
        with np.errstate(divide="ignore"):
            out = np.log(total)
        if low.any():
            rows = np.nonzero(low)[0]
            out[low] = _censored_chunk(eta[low][:, None], lo, hi, s, log_w, omega2[rows], False, tails=True)[0][:, 0]
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
        a_ra = np.where(np.isinf(a), 0.0, a * ra)  # an open end (lo = -inf or hi = inf): its density term is 0
        b_rb = np.where(np.isinf(b), 0.0, b * rb)
        d2 = np.nan_to_num(np.where(pi > 0, (a_ra - b_rb) / sigma**2 * pi, 0.0).sum(-1) - d1 * d1)
    return total, d1, d2


#: Lattice step of a censored observation's :class:`Table` near eta = 0, in its narrowest SD (the smallest SE node of
#: weight at least 1e-5 of the largest, omega added). Further out the lattice widens with |eta| (see :class:`Table`).
TABLE_STEP = 0.5
#: Beyond the reported region's largest finite end |z| (at least 1), this many SDs: a component j of the SE rule
#: turns its step at eta = z s_j, over a width of at least s_j, so steps of TABLE_STEP |eta| / (|z| + TABLE_MARGIN)
#: resolve every component to TABLE_STEP of its SD within TABLE_MARGIN SDs of its step.
TABLE_MARGIN = 6.0
#: A table's lattice is built in blocks of this many intervals, a block when a query falls in it.
TABLE_BLOCK = 16
#: Queries further than this many times TABLE_STEP narrowest SDs from 0 are evaluated directly (there the direct
#: second derivative loses its digits, and the lattice would spread them).
TABLE_REACH = 2**16
#: A node whose log density before the tilt, plus the most its tilt can add (log C <= _LOG_C_MAX: C's curvature
#: floor, 1e-6; f* <= 0), is this far below the best node's log density at u = 0 keeps u = 0 as its rule's centre:
#: its weight is below e^-900 of the best's (unless the best's likelihood is narrower than e^-50 of its u's SD), zero
#: in double precision either way. The scans that place the grid reach such nodes (log densities of -1e11 to -1e32
#: on the bundled evidence), where Newton took up to 150 evaluations for nothing: the bundled results are the same.
HOPELESS = 1000.0
_LOG_C_MAX = 0.5 * math.log(1e6)
#: Block keys: omega's index times this, plus the block's number shifted to be positive (|j| well below this / 2).
BLOCK_KEYS = 2**20


class Table:
    """log P(lo < yhat/s < hi | eta) of one censored observation (:func:`_censored_terms`) and its first two
    derivatives, at any omega: per value of omega, on the lattice eta = c sinh(k dt) (built a block of intervals at
    a time, where queries fall), by quintic Hermite interpolation in t = asinh(eta / c) between lattice points.

    The lattice's step is TABLE_STEP narrowest SDs near zero and TABLE_STEP |eta| / Z far out (Z = the region's
    largest finite |z| + TABLE_MARGIN): each component of the SE rule changes on the scale of its own SD, which
    grows with the eta where it changes, so the lattice need not be as fine far out as at zero (a uniform lattice of
    TABLE_STEP narrowest SDs built 11.7 million SE-rule terms for the bundled cross-check's queries, a third of its
    time). Quintic Hermite in t between lattice points is within 1e-6 of the direct value in log l where l > e^-5
    and 2e-5 relative below, its derivatives within 1e-4 and 1e-3, for the SE rule of tests/test_exact_full.py out
    to the lattice's reach; over the bundled evidence's own queries (wider SE rules, omega up to 20), within 1.6e-5
    where l > e^-5 and 6e-4 relative below (the uniform lattice: 1.0e-5 and 5.8e-4), leaving its exact result the
    same to its rounding but for the stated errors and, by up to 4e-5, P(best) and the pairwise probabilities.
    The core asks for it at millions of (tau, omega, eta) nodes but only a few values of omega: a table makes that
    a few thousand evaluations of the SE rule a value, and one call reads every value of omega its rows hold."""

    def __init__(self, lo: float, hi: float, s: np.ndarray, log_w: np.ndarray, step: float):
        self.args = (lo, hi, s, log_w)
        weighty = s[log_w >= log_w.max() - 5 * math.log(10)]
        self.narrowest2 = float(weighty.min()) ** 2
        z = max([1.0] + [abs(e) for e in (lo, hi) if math.isfinite(e)]) + TABLE_MARGIN
        self.dt, self.width = step / z, z  # the lattice step in t; c = width x the narrowest SD
        self.omega: dict[float, int] = {}  # omega^2 -> its index
        self.c, self.reach, self.omega2 = np.zeros(0), np.zeros(0), np.zeros(0)  # per index: the scale c, the reach, omega^2
        self.step = step
        # block keys (omega's index, block j: intervals j B .. j B + B - 1), sorted, and each block's row in coef
        self.keys, self.rows = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        self.coef = np.zeros((64, 6, TABLE_BLOCK))  # per block and interval: the quintic's coefficients in x - k, x = t / dt (rows past len(keys): room)

    def _index(self, omega2: np.ndarray) -> np.ndarray:
        """The index of each value of omega^2 (per row), registering new values."""
        values, which = np.unique(omega2, return_inverse=True)
        new = [float(v) for v in values if float(v) not in self.omega]
        if new:
            self.omega.update({v: len(self.omega) + n for n, v in enumerate(new)})
            self.omega2 = np.concatenate([self.omega2, new])
            sd = np.sqrt(self.narrowest2 + np.asarray(new))
            self.c, self.reach = np.concatenate([self.c, self.width * sd]), np.concatenate([self.reach, TABLE_REACH * self.step * sd])
        return np.array([self.omega[float(v)] for v in values], dtype=np.int64)[which]

    def _blocks(self, keys: np.ndarray) -> np.ndarray:
        """The rows in ``coef`` of blocks ``keys`` (any shape, repeats welcome), built where missing (each interval's
        numbers the same whatever the blocks built with it). Looked up by binary search: a dict read key by key in
        Python was a tenth of the bundled cross-check's time, and sorting the keys first (np.unique) a tenth of a
        block posterior's where most are known."""
        at = np.searchsorted(self.keys, keys)
        known = at < self.keys.size
        known[known] = self.keys[at[known]] == keys[known]
        if not known.all():
            missing = np.unique(keys[~known])
            om, j = np.divmod(missing, BLOCK_KEYS)
            j -= BLOCK_KEYS // 2
            k = j[:, None] * TABLE_BLOCK + np.arange(TABLE_BLOCK + 1)
            c, t = self.c[om][:, None], k * self.dt
            with np.errstate(over="ignore"):  # beyond the largest float, far out: read directly (see _at)
                eta, jac = c * np.sinh(t), c * np.cosh(t)  # eta and d eta / dt
            got = _censored_terms(eta.reshape(-1, 1), *self.args, np.repeat(self.omega2[om], TABLE_BLOCK + 1), True)
            f, d, s = (x[:, 0].reshape(len(missing), TABLE_BLOCK + 1) for x in got)
            with np.errstate(invalid="ignore", over="ignore"):  # derivatives near the largest float, far out: read directly
                d, s = d * jac * self.dt, (s * jac * jac + d * eta) * self.dt**2  # in x = t / dt, the lattice step 1
                new = quintic_coefficients(f[:, :-1], f[:, 1:], d[:, :-1], d[:, 1:], s[:, :-1], s[:, 1:])
            used = self.keys.size
            if used + len(missing) > self.coef.shape[0]:  # room doubled: appends cost amortised constant time
                grown = np.empty((max(2 * self.coef.shape[0], used + len(missing)), 6, TABLE_BLOCK))
                grown[:used] = self.coef[:used]
                self.coef = grown
            self.coef[used:used + len(missing)] = new
            merged = np.concatenate([self.keys, missing])
            order = np.argsort(merged, kind="stable")
            self.keys, self.rows = merged[order], np.concatenate([self.rows, used + np.arange(missing.size)])[order]
            at = np.searchsorted(self.keys, keys)
        return self.rows[at]

    def at(self, eta: np.ndarray, omega2: np.ndarray, derivatives: bool):
        """log l at ``eta`` (rows x points) given omega^2 per row and, with ``derivatives``, its first and second
        derivatives (None for the derivatives without); directly where eta is beyond the lattice's reach or the
        quintic overflows. In chunks of rows (four times :data:`CHUNK` elements), so that the temporaries stay small."""
        rows = max(1, 4 * CHUNK // max(1, eta.shape[1]))
        if eta.shape[0] <= rows:
            return self._at(eta, omega2, derivatives)
        parts = [self._at(eta[i:i + rows], omega2[i:i + rows], derivatives) for i in range(0, eta.shape[0], rows)]
        return tuple(None if part[0] is None else np.concatenate(part) for part in zip(*parts))

    def _at(self, eta: np.ndarray, omega2: np.ndarray, derivatives: bool):
        """:meth:`at` for one chunk of rows."""
        om = self._index(omega2)
        c = self.c[om][:, None]
        with np.errstate(invalid="ignore"):
            inside = np.abs(eta) < self.reach[om][:, None]
            x = np.arcsinh(np.where(inside, eta, 0.0) / c) / self.dt
        k = np.floor(np.where(inside, x, 0.0)).astype(np.int64)
        j, offset = np.divmod(k, TABLE_BLOCK)
        at = self._blocks(om[:, None] * BLOCK_KEYS + j + BLOCK_KEYS // 2) * (6 * TABLE_BLOCK) + offset
        flat = self.coef.reshape(-1)  # a gather from the flat array: a quarter of the time of coef[row, q, offset]
        c0, c1, c2, c3, c4, c5 = (flat.take(at + q * TABLE_BLOCK) for q in range(6))
        t = np.where(inside, x - k, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            out = [c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))))]
            if derivatives:  # from x back to eta: d eta / dt = sqrt(c^2 + eta^2), d2 eta / dt2 = eta
                jac = np.hypot(c, eta)
                d1 = (c1 + t * (2 * c2 + t * (3 * c3 + t * (4 * c4 + t * 5 * c5)))) / (self.dt * jac)
                d2 = ((2 * c2 + t * (6 * c3 + t * (12 * c4 + t * 20 * c5))) / self.dt**2 - d1 * eta) / (jac * jac)
                out += [d1, d2]
        direct = ~inside
        for o in out:
            direct |= ~np.isfinite(o)
        if direct.any():
            lo, hi, s, log_w = self.args
            r, p = np.nonzero(direct)
            got = _censored_terms(eta[r, p][:, None], lo, hi, s, log_w, omega2[r], derivatives)
            for o, g in zip(out, got):
                o[r, p] = g[:, 0]
        return (*out, None, None) if not derivatives else tuple(out)


# ---------------------------------------------------------------------------- the Gaussian algebra


def sum_by(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Sum the last axis of ``values`` (rows x items) by ``index`` into ``n`` slots."""
    rows = values.reshape(int(np.prod(values.shape[:-1])), values.shape[-1])
    out = np.zeros((rows.shape[0], n))
    for r in range(rows.shape[0] if values.shape[-1] else 0):
        out[r] = np.bincount(index, weights=rows[r], minlength=n)
    return out.reshape(*values.shape[:-1], n)


@dataclass
class Nodes:
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
    def concat(cls, parts: list[Nodes]) -> Nodes:
        """One set of nodes from several (eta node lists padded both sides with weightless nodes)."""
        P = max(p.u.shape[1] for p in parts)
        padded = []
        for p in parts:
            side = (P - p.u.shape[1]) // 2
            padded.append(cls(**{**p.__dict__, "u": np.pad(p.u, ((0, 0), (side, side), (0, 0))),
                                 "u_weight": np.pad(p.u_weight, ((0, 0), (side, side)))}))
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in padded]) for f in fields(cls)})

    def take(self, index) -> Nodes:
        return Nodes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class Prepared:
    """A block's index structure, and the Gaussian algebra at any (tau, omega) nodes."""

    def __init__(self, block: Block, many: bool = False):
        """``many``: censored observations may sit in several groups (for :mod:`metaeval.exact_cells`, which
        integrates them given mu; :meth:`nodes` integrates one group)."""
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
        if self.H > 1 and not many:
            raise NoExactForm(f"censored observations in {self.H} (cluster, offset) groups of one block: the exact engine "
                              "integrates them in one group only")
        self.prec0, self.m0 = (1 / block.mu_prior.params[1] ** 2, block.mu_prior.params[0]) if block.mu_prior.family == "normal" else (0.0, 0.0)
        self._rules: dict = {}
        self._tables: dict = {}

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
        P = sum_by(inv, self.group, self.G)
        ybar = sum_by(b.y * inv, self.group, self.G) / np.where(P > 0, P, 1.0)
        lrow = -0.5 * (_LOG_2PI + np.log(v) + (b.y - ybar[:, self.group]) ** 2 * inv)
        ll_g = sum_by(lrow, self.group, self.G) + 0.5 * (_LOG_2PI - np.log(P))
        x, vg = ybar - self.m_g, 1 / P + self.s2_g
        p_c = sum_by(1 / vg, self.group_cluster, self.C)
        safe = np.where(self.has_data, p_c, 1.0)
        xbar = np.where(self.has_data, sum_by(x / vg, self.group_cluster, self.C) / safe, 0.0)
        lg = -0.5 * (_LOG_2PI + np.log(vg) + (x - xbar[:, self.group_cluster]) ** 2 / vg)
        ll = sum_by(ll_g + lg, self.group_cluster, self.C) + np.where(self.has_data, 0.5 * (_LOG_2PI - np.log(safe)), 0.0)
        return {"P": P, "ybar": ybar, "p_c": p_c, "xbar": xbar, "ll": ll.sum(-1)}

    def nodes(self, tau: np.ndarray, omega: np.ndarray, coarse: bool = False, floor=-np.inf, density_only: bool = False) -> Nodes:
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
            return Nodes(tau, omega, log_post, empty, empty, np.zeros((N, 0, 0)), empty, np.zeros((N, 1, 0)), np.ones((N, 1)), np.zeros(N),
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
            return Nodes(tau, omega, log_post, mean, var, np.zeros((N, 1 + C + T, 0)), cov_mu, np.zeros((N, 1, 0)), np.ones((N, 1)),
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
        u_ok, w_ok, z_ok, centre_ok, scale_ok = self.eta_rule(E[ok], root[ok], omega[ok], coarse, laplace=density_only,
                                                              log_base=log_post[ok])
        u, u_w = np.zeros((N, u_ok.shape[1], 1)), np.zeros((N, u_ok.shape[1]))
        u[ok, :, 0], u_w[ok], u_w[~ok, u_ok.shape[1] // 2] = u_ok, w_ok, 1.0
        centre, scale = np.zeros(N), np.ones(N)
        centre[ok], scale[ok] = centre_ok, scale_ok
        log_post = np.where(ok, log_post, -np.inf)
        log_post[ok] += z_ok
        return Nodes(tau, omega, log_post, mean, var, cov_u, cov_mu, u, u_w, centre, scale, beta, E, root)

    def censored_log_lik(self, eta: np.ndarray, omega: np.ndarray, coarse: bool, derivatives: bool, extra_var=0.0):
        """The censored observations' log likelihood at eta (N, P); with ``derivatives`` also its first
        and second derivatives in eta. ``extra_var`` (N,): variance added to each observation's (eta's own
        where eta is known only as a normal: :mod:`metaeval.exact_cells`)."""
        b = self.b
        total, d1, d2 = np.zeros(eta.shape), np.zeros(eta.shape), np.zeros(eta.shape)
        seen = {}  # observations alike (a project's findings reported the same way) are computed once
        for f in range(b.lo.size):
            alike = (self._alike(f), bool(b.c_residual[f]))
            if alike in seen:
                lf, g1, g2 = seen[alike]
            else:
                om2 = omega**2 if b.c_residual[f] else np.zeros_like(omega)
                if np.ndim(extra_var) == 0 and extra_var == 0:  # a few values of omega: from the tables
                    lf, g1, g2 = self._tabled(f, eta, om2, coarse, derivatives)
                else:
                    lf, g1, g2 = _censored_terms(eta, b.lo[f], b.hi[f], *self.se_rule(f, coarse), om2 + extra_var, derivatives)
                seen[alike] = lf, g1, g2
            total += lf
            if derivatives:
                d1 += g1
                d2 += g2
        return total, d1, d2

    def _alike(self, f: int) -> tuple:
        """What censored observation f's likelihood depends on but eta and omega: its region and SE rule."""
        b = self.b
        return float(b.lo[f]), float(b.hi[f]), b.se_prior[f], float(b.c_weight[f])

    def _tabled(self, f: int, eta: np.ndarray, om2: np.ndarray, coarse: bool, derivatives: bool):
        """:func:`_censored_terms` of censored observation f at eta (N, P), from its :class:`Table` (the coarse
        rules' has the coarse step, so the stated error covers its own), shared by observations alike."""
        key = (self._alike(f), coarse)
        if key not in self._tables:
            self._tables[key] = Table(self.b.lo[f], self.b.hi[f], *self.se_rule(f, coarse), TABLE_STEP * (COARSE if coarse else 1))
        return self._tables[key].at(eta, om2, derivatives)

    def eta_rule(self, E, root, omega, coarse, laplace: bool = False, log_lik=None, log_base=None):
        """Per (tau, omega) node, the rule over u (eta = E + root u, u ~ N(0, 1)) for the tilted density
        N(u; 0, 1) L(eta): nodes u = u* + C sinh(t) (t on a lattice, step ETA_STEP) around the mode u*,
        scaled by the curvature there, reaching until the density has fallen by e^-DROP; a trapezoid rule
        in t converges geometrically for skewed and sharp likelihoods alike. Returns the nodes (N, P),
        their normalised weights, log E[L(eta)], u* and C. With ``laplace``, log E[L(eta)] is Laplace's
        approximation and there are no nodes (for the scans that place the grid, not for the posterior).
        ``log_lik(eta, idx, derivatives)``: the log likelihood at eta (rows: the nodes ``idx``) and, with
        ``derivatives``, its first two derivatives; by default the block's censored observations'.
        ``log_base``: each node's log density before the tilt; nodes :data:`HOPELESS` below the best skip the
        search for u* (see there)."""
        N = E.size
        if log_lik is None:
            def log_lik(eta, idx, derivatives):
                return self.censored_log_lik(eta, omega[idx], coarse, derivatives)
        if N == 0:
            return np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0), np.zeros(0), np.ones(0)

        def objective(u, idx=slice(None), derivatives=True):  # log of the tilted density (unnormalised)
            ll, g, d2 = log_lik(E[idx, None] + root[idx, None] * u, idx, derivatives)
            return -0.5 * u * u + ll, g, d2

        u = np.zeros(N)
        f, g, d2 = (x[:, 0] for x in objective(u[:, None]))
        active = np.arange(N)
        lower = -np.inf if log_base is None else log_base + f  # the tilted density's log at u = 0: below its maximum
        if np.isfinite(lower).any():  # f* <= 0 (L is a probability): such a node's weight is below e^-900 of the best's
            active = np.flatnonzero(log_base + _LOG_C_MAX >= lower[np.isfinite(lower)].max() - HOPELESS)
        for _ in range(100):  # Newton, the curvature kept negative, steps halved until f rises
            if not active.size:
                break
            ra = root[active]
            step = (-u[active] + ra * g[active]) / (1 + ra * ra * np.maximum(-d2[active], 0.0))
            todo, scale = np.arange(active.size), np.ones(active.size)
            f_before = f[active]
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
            stuck = np.zeros(active.size, dtype=bool)
            stuck[todo] = True  # no step of 50 halvings raised f: the next round would try the very same steps
            # done: a step below 1e-9, or a round that raised f by less than 1e-13 of it (where f is concave, u is then
            # within sqrt(2e-13 |f|) of the mode: ample for a rule's centre). Without the second, nodes on flat ground
            # went on for up to 100 rounds of steps near 1e-4 that f could not tell apart, one call a round; the
            # bundled exact summary is the same with it but for two stated errors (error_sd) in their seventh digit,
            # its cross-check's moments 4% quicker.
            with np.errstate(invalid="ignore"):  # -inf at a far node both times: not flat, it stops by its step
                flat = f[active] - f_before <= 1e-13 * np.maximum(np.abs(f_before), 1.0)
            active = active[(np.abs(scale * step) >= 1e-9) & ~stuck & ~flat]
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
