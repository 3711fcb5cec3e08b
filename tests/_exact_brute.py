"""A brute-force reference for ``metaeval.exact_core``: the same model, computed another way.

Nothing of the engine is reused but the ``Block`` container (plain arrays). Given (tau, omega) and the
direction-only findings' SEs, the latent vector x = (mu, theta_1..C, b_1..T), the estimates y and the
findings' unreported estimates yhat are jointly Gaussian: their covariance is written out as a dense
matrix from the model's definition and conditioned by matrix algebra (no collapsing, no recursion).
The findings enter as P(yhat / s in their regions | y), a normal CDF difference for one finding and a
Gauss-Legendre integral over the first of two. (tau, omega) and each finding's SE are integrated on
plain trapezoid grids in log scale, wide and fine, fixed in advance (nothing adaptive).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

_GL_X, _GL_W = np.polynomial.legendre.leggauss(80)


def _log_grid(low: float, high: float, n: int):
    """Nodes and trapezoid weights (in log scale) on [exp(low), exp(high)]."""
    z = np.linspace(low, high, n)
    w = np.full(n, z[1] - z[0])
    w[[0, -1]] *= 0.5
    return np.exp(z), w


def _prior_density(prior, x):
    return np.exp(prior.logpdf(x))


def _latent_prior(block, tau):
    """Prior mean (D,) and covariances (N, D, D) of x = (mu, theta, b) at each tau (N,), and the rows
    mapping x to each estimate (A) and each finding (B)."""
    C, T = block.n_clusters, block.offset_cluster.size
    D = 1 + C + T
    m0, s0 = block.mu_prior.params
    mean = np.concatenate([[m0], np.full(C, m0), block.offset_mean])
    cov = np.zeros((tau.size, D, D))
    cov[:, : 1 + C, : 1 + C] = s0**2
    idx = np.arange(1, 1 + C)
    cov[:, idx, idx] += (tau**2)[:, None]
    j = np.arange(1 + C, D)
    cov[:, j, j] = block.offset_sd**2

    def rows(clusters, offsets):
        out = np.zeros((len(clusters), D))
        for r, (c, o) in enumerate(zip(clusters, offsets)):
            out[r, 1 + c] = 1.0
            if o >= 0:
                out[r, 1 + C + o] = 1.0
        return out

    return mean, cov, rows(block.cluster, block.offset), rows(block.c_cluster, block.c_offset)


def brute_force(block, *, tau_range, omega_range=None, n_tau=120, n_omega=80, n_se=32, se_sds=6.0, chunk=20_000):
    """Posterior moments of x = (mu, theta, b), tau and omega, and a CDF function, by dense quadrature.

    Returns a dict: ``mean``/``sd`` of x (arrays), ``tau``/``omega`` (mean, sd), and ``cdf(i, t)``:
    P(x_i <= t), for blocks with at most one finding.
    """
    taus, w_tau = _log_grid(*tau_range, n_tau)
    w_tau = w_tau * taus * _prior_density(block.tau_prior, taus)
    if block.omega_prior is not None:
        omegas, w_om = _log_grid(*omega_range, n_omega)
        w_om = w_om * omegas * _prior_density(block.omega_prior, omegas)
    else:
        omegas, w_om = np.zeros(1), np.ones(1)
    F = block.lo.size
    se_grids = []
    for f in range(F):
        mu_s, sd_s = block.se_prior[f].params  # lognormal
        se, w_se = _log_grid(mu_s - se_sds * sd_s, mu_s + se_sds * sd_s, n_se)
        se_grids.append((se / math.sqrt(block.c_weight[f]), w_se * se * _prior_density(block.se_prior[f], se)))
    axes = [np.arange(n_tau), np.arange(omegas.size)] + [np.arange(n_se)] * F
    index = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], 1)
    D = 1 + block.n_clusters + block.offset_cluster.size
    keep = {key: [] for key in ("w", "prob", "mx", "K", "cvar", "m_h", "S_h", "lo", "hi", "mean", "xx", "tau", "om")}
    for start in range(0, len(index), chunk):
        ix = index[start:start + chunk]
        tau, om = taus[ix[:, 0]], omegas[ix[:, 1]]
        s = np.stack([se_grids[f][0][ix[:, 2 + f]] for f in range(F)], 1) if F else np.zeros((len(ix), 0))
        w = w_tau[ix[:, 0]] * w_om[ix[:, 1]] * np.prod([se_grids[f][1][ix[:, 2 + f]] for f in range(F)], 0)
        mean0, cov, A, B = _latent_prior(block, tau)
        R = block.v[None, :] + block.residual[None, :] * (om**2)[:, None]
        Syy = np.einsum("kd,nde,le->nkl", A, cov, A) + np.eye(A.shape[0])[None] * R[:, None, :]
        Sxy = np.einsum("nde,ke->ndk", cov, A)
        gain = np.swapaxes(np.linalg.solve(Syy, np.swapaxes(Sxy, 1, 2)), 1, 2)  # (N, D, K)
        resid = block.y - A @ mean0
        mx = mean0 + np.einsum("ndk,k->nd", gain, resid)
        Sx = cov - np.einsum("ndk,nek->nde", gain, Sxy)
        quad = np.einsum("k,nk->n", resid, np.linalg.solve(Syy, np.broadcast_to(resid, (len(ix), resid.size))[..., None])[..., 0])
        log_lik = -0.5 * (quad + np.linalg.slogdet(2 * np.pi * Syy)[1])
        m_h = np.einsum("fd,nd->nf", B, mx)
        S_h = np.einsum("fd,nde,ge->nfg", B, Sx, B) + np.eye(F)[None] * (s**2 + block.c_residual * (om**2)[:, None])[:, None, :]
        K = np.swapaxes(np.linalg.solve(S_h, np.einsum("fd,nde->nfe", B, Sx)), 1, 2) if F else np.zeros((len(ix), D, 0))
        lo, hi = block.lo * s, block.hi * s
        prob, e1, e2 = _box_moments(m_h, S_h, lo, hi)
        with np.errstate(divide="ignore"):
            w = np.log(w) + log_lik + np.log(prob)  # log weights: normalised at the end
        post = mx + np.einsum("ndf,nf->nd", K, e1 - m_h)
        cvar = np.diagonal(Sx - np.einsum("ndf,nfg,neg->nde", K, S_h, K), axis1=1, axis2=2)
        spread = np.einsum("ndf,nfg,ndg->nd", K, e2 - e1[:, :, None] * e1[:, None, :], K)
        for key, value in (("w", w), ("prob", prob), ("mx", mx), ("K", K), ("cvar", cvar), ("m_h", m_h), ("S_h", S_h), ("lo", lo), ("hi", hi),
                           ("mean", post), ("xx", post**2 + cvar + spread), ("tau", tau), ("om", om)):
            keep[key].append(value)
    v = {key: np.concatenate(parts) for key, parts in keep.items()}
    v["w"] = np.exp(v["w"] - v["w"].max())
    W = v["w"].sum()

    def moment(x):
        m1 = v["w"] @ x / W
        return m1, math.sqrt(max(v["w"] @ x**2 / W - m1**2, 0.0))

    mean = v["w"] @ v["mean"] / W
    sd = np.sqrt(v["w"] @ v["xx"] / W - mean**2)
    live = v["w"] > 1e-13 * v["w"].max()

    def cdf(i, t):
        """P(x_i <= t) at points t (blocks with at most one finding)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        w, mx, cvar = v["w"][live], v["mx"][live, i], v["cvar"][live, i]
        sd_x = np.sqrt(np.maximum(cvar, 0.0))[:, None, None]
        if F == 0:
            return w @ special.ndtr((t[None, :] - mx[:, None]) / sd_x[:, :, 0]) / W
        K = v["K"][live, i, 0]
        a, b = v["lo"][live, 0], v["hi"][live, 0]
        m_h, s_h = v["m_h"][live, 0], np.sqrt(v["S_h"][live, 0, 0])
        a, b = np.maximum(a, m_h - 12 * s_h), np.minimum(b, m_h + 12 * s_h)
        y = 0.5 * (b - a)[:, None] * _GL_X + 0.5 * (a + b)[:, None]
        dens = 0.5 * (b - a)[:, None] * _GL_W * np.exp(-0.5 * ((y - m_h[:, None]) / s_h[:, None]) ** 2) / (math.sqrt(2 * math.pi) * s_h[:, None])
        cond = mx[:, None] + K[:, None] * (y - m_h[:, None])  # (N, G)
        inner = np.einsum("ng,ngt->nt", dens, special.ndtr((t[None, None, :] - cond[:, :, None]) / sd_x))
        return w @ (inner / v["prob"][live][:, None]) / W  # the node's weight holds P(box); its integral here too

    return {"mean": mean, "sd": sd, "tau": moment(v["tau"]), "omega": moment(v["om"]), "cdf": cdf}


def _box_moments(m, S, lo, hi):
    """P(lo < Y < hi), E[Y | box] and E[Y Y' | box] per node, for Y ~ N(m, S) in 0, 1 or 2 dimensions."""
    N, F = m.shape
    if F == 0:
        return np.ones(N), np.zeros((N, 0)), np.zeros((N, 0, 0))
    if F == 1:
        s = np.sqrt(S[:, 0, 0])
        a, b = (lo[:, 0] - m[:, 0]) / s, (hi[:, 0] - m[:, 0]) / s
        p = special.ndtr(b) - special.ndtr(a)
        pa, pb = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi), np.exp(-0.5 * b * b) / math.sqrt(2 * math.pi)
        e1 = m[:, 0] + s * (pa - pb) / p
        e2 = m[:, 0] ** 2 + s**2 + s * ((m[:, 0] + lo[:, 0]) * pa - (m[:, 0] + hi[:, 0]) * pb) / p
        return p, e1[:, None], e2[:, None, None]
    # two: Gauss-Legendre over Y1 on its interval, closed-form truncated-normal moments of Y2 given Y1
    s1 = np.sqrt(S[:, 0, 0])
    a, b = np.maximum(lo[:, 0], m[:, 0] - 12 * s1), np.minimum(hi[:, 0], m[:, 0] + 12 * s1)
    b = np.maximum(a, b)
    y1 = 0.5 * (b - a)[:, None] * _GL_X + 0.5 * (a + b)[:, None]
    w1 = 0.5 * (b - a)[:, None] * _GL_W * np.exp(-0.5 * ((y1 - m[:, 0, None]) / s1[:, None]) ** 2) / (math.sqrt(2 * math.pi) * s1[:, None])
    c_m = m[:, 1, None] + (S[:, 0, 1] / S[:, 0, 0])[:, None] * (y1 - m[:, 0, None])
    c_s = np.sqrt(S[:, 1, 1] - S[:, 0, 1] ** 2 / S[:, 0, 0])[:, None]
    al, be = (lo[:, 1, None] - c_m) / c_s, (hi[:, 1, None] - c_m) / c_s
    dp = special.ndtr(be) - special.ndtr(al)
    pa, pb = np.exp(-0.5 * al * al) / math.sqrt(2 * math.pi), np.exp(-0.5 * be * be) / math.sqrt(2 * math.pi)
    m1 = c_m * dp + c_s * (pa - pb)  # E[Y2 1(box) | Y1]
    m2 = (c_m**2 + c_s**2) * dp + c_s * ((c_m + lo[:, 1, None]) * pa - (c_m + hi[:, 1, None]) * pb)
    p = (w1 * dp).sum(1)
    e1 = np.stack([(w1 * y1 * dp).sum(1), (w1 * m1).sum(1)], 1) / p[:, None]
    cross = (w1 * y1 * m1).sum(1)
    e2 = np.stack([np.stack([(w1 * y1**2 * dp).sum(1), cross], 1), np.stack([cross, (w1 * m2).sum(1)], 1)], 1) / p[:, None, None]
    return p, e1, e2


def weighted_draws(block, n: int, seed: int, chunk: int = 100_000):
    """Importance-weighted draws of x = (mu, theta, b): tau, omega and the SEs from their priors, x from
    its Gaussian posterior given the estimates (dense algebra), weighted by the estimates' marginal
    likelihood and the findings' probabilities given x. For CDFs where the quadrature above has none
    (two findings); returns (draws (n, D), normalised weights)."""
    from scipy import stats

    rng = np.random.default_rng(seed)

    def draw(prior, size):
        k = prior.kwargs()
        if prior.family == "halfnormal":
            return np.abs(rng.normal(0.0, k["sigma"], size))
        if prior.family == "lognormal":
            return rng.lognormal(k["mu"], k["sigma"], size)
        raise ValueError(prior)

    xs, log_ws = [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        tau = draw(block.tau_prior, m)
        om = draw(block.omega_prior, m) if block.omega_prior is not None else np.zeros(m)
        mean0, cov, A, B = _latent_prior(block, tau)
        R = block.v[None, :] + block.residual[None, :] * (om**2)[:, None]
        Syy = np.einsum("kd,nde,le->nkl", A, cov, A) + np.eye(A.shape[0])[None] * R[:, None, :]
        Sxy = np.einsum("nde,ke->ndk", cov, A)
        gain = np.swapaxes(np.linalg.solve(Syy, np.swapaxes(Sxy, 1, 2)), 1, 2)
        resid = block.y - A @ mean0
        mx = mean0 + np.einsum("ndk,k->nd", gain, resid)
        Sx = cov - np.einsum("ndk,nek->nde", gain, Sxy)
        log_w = np.array([stats.multivariate_normal(np.zeros(resid.size), S).logpdf(resid) for S in Syy]) if A.size else np.zeros(m)
        x = mx + np.einsum("nde,ne->nd", np.linalg.cholesky(Sx + 1e-14 * np.eye(Sx.shape[1])), rng.standard_normal(mx.shape))
        eta = x @ B.T
        for f in range(block.lo.size):
            s = draw(block.se_prior[f], m) / math.sqrt(block.c_weight[f])
            sig = np.sqrt(s**2 + block.c_residual[f] * om**2)
            p = special.ndtr((block.hi[f] * s - eta[:, f]) / sig) - special.ndtr((block.lo[f] * s - eta[:, f]) / sig)
            log_w = log_w + np.log(np.maximum(p, 1e-300))
        xs.append(x)
        log_ws.append(log_w)
    log_w = np.concatenate(log_ws)
    w = np.exp(log_w - log_w.max())
    return np.concatenate(xs), w / w.sum()
