"""Normal mixtures: their CDFs, shortest intervals from a tabulated CDF (quintic Hermite interpolation), and
Gauss rules of a discrete measure; for the exact engines (:mod:`metaeval.exact`, :mod:`metaeval.exact_core`).
NumPy/SciPy only."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

WEIGHT_FLOOR = 1e-14  # grid nodes lighter than this are left out of mixture CDFs (not of moments)
_X_STEP = 0.25  # x-grid step for mixture CDFs where the mass is, in narrowest-component SDs


def gauss_rule(z: np.ndarray, w: np.ndarray, n: int):
    """The n-point Gauss rule of the discrete measure sum_j w_j delta(z_j) (Lanczos, full reorthogonalisation)."""
    mean = float(w @ z)
    sd = math.sqrt(max(float(w @ (z - mean) ** 2), 1e-300))
    x = (z - mean) / sd
    n = min(n, int(np.count_nonzero(w > 0)))
    basis = np.zeros((n, z.size))
    alpha, beta = np.zeros(n), np.zeros(max(n - 1, 0))
    basis[0] = np.sqrt(w)
    size = n
    for j in range(n):
        u = x * basis[j]
        if j > 0:
            u -= beta[j - 1] * basis[j - 1]
        alpha[j] = basis[j] @ u
        for _ in range(2):
            u -= basis[: j + 1].T @ (basis[: j + 1] @ u)
        if j == n - 1:
            break
        beta[j] = np.linalg.norm(u)
        if beta[j] < 1e-12:
            size = j + 1
            break
        basis[j + 1] = u / beta[j]
    jacobi = np.diag(alpha[:size]) + np.diag(beta[: size - 1], 1) + np.diag(beta[: size - 1], -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    return mean + sd * nodes, vectors[0] ** 2


def mixture_cdf(x: np.ndarray, m: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """CDF at x (rows x points) of per-row normal mixtures with components m, s (rows x n) and weights w (n)."""
    return np.einsum("rgn,n->rg", special.ndtr((x[:, :, None] - m[:, None, :]) / s[:, None, :]), w)


def _mixture_grid(m: np.ndarray, s: np.ndarray, w: np.ndarray):
    """An x-grid per row for tabulating a normal mixture: x = c + scale * sinh(xi), xi uniform.

    ``scale`` is the component SD at the median of tau. The grid reaches 7.5 component SDs
    beyond the outermost non-negligible component, finely in the middle and ever more
    coarsely in heavy tails; within 3 SDs of each main component its step is at most
    _X_STEP times that component's SD. The CDF's first two derivatives are known exactly,
    so quintic Hermite interpolation errs by about 1e-7 SD at this step (1e-9 at half of it).
    """
    cum = np.cumsum(w) / w.sum()
    median = int(np.searchsorted(cum, 0.5))
    centre = m @ w / w.sum()
    scale = s[:, median]
    low = (m - 7.5 * s).min(1)  # Phi(-7.5) ~ 3e-14
    high = (m + 7.5 * s).max(1)
    main = w >= 1e-9 * w.max()
    mm, sm = m[:, main], s[:, main]
    need = sm / np.hypot(scale[:, None], np.abs(mm - centre[:, None]) + 3.0 * sm)
    step = float(np.clip(_X_STEP * need.min(), 2e-4, 0.1))
    xi_lo = float(np.min(np.arcsinh((low - centre) / scale)))
    xi_hi = float(np.max(np.arcsinh((high - centre) / scale)))
    xi = np.arange(xi_lo, xi_hi + step, step)
    return centre[:, None] + scale[:, None] * np.sinh(xi)[None, :]


def mixture_interval(m: np.ndarray, s: np.ndarray, w: np.ndarray, p: float):
    """Shortest intervals holding mass p of per-row normal mixtures (rows x components, weights w)."""
    keep = w > WEIGHT_FLOOR
    m, s, w = m[:, keep], s[:, keep], w[keep] / w[keep].sum()
    x = _mixture_grid(m, s, w)
    F, f, df = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    if m.shape[1] <= 64:  # few components: accumulate them one by one on the (rows, x) table
        zz, tmp = np.empty_like(x), np.empty_like(x)
        for j in range(m.shape[1]):
            inv = 1.0 / s[:, j : j + 1]
            np.subtract(x, m[:, j : j + 1], out=zz)
            zz *= inv
            special.ndtr(zz, out=tmp)
            tmp *= w[j]
            F += tmp
            np.multiply(zz, zz, out=tmp)
            tmp *= -0.5
            np.exp(tmp, out=tmp)
            tmp *= w[j] * inv  # the component's weighted density
            f += tmp
            tmp *= zz
            tmp *= inv
            df -= tmp
    else:  # many components (the full tau grid): in blocks of rows
        rows, size = x.shape
        chunk = max(1, int(2_000_000 // max(1, size * m.shape[1])))
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            sj = s[r0:r1, None, :]
            zz = (x[r0:r1, :, None] - m[r0:r1, None, :]) / sj
            F[r0:r1] = special.ndtr(zz) @ w
            dens = np.exp(-0.5 * zz * zz) / sj
            f[r0:r1] = dens @ w
            df[r0:r1] = -(dens * zz / sj) @ w
    f /= math.sqrt(2.0 * math.pi)
    df /= math.sqrt(2.0 * math.pi)
    return shortest_interval(x, F, f, df, p)


def hermite_eval(x: np.ndarray, F: np.ndarray, f: np.ndarray, df: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """The quintic Hermite interpolant of (x, F, f, df) at xq (0 below x[0], F[-1] above x[-1])."""
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    h = x[i + 1] - x[i]
    u = np.clip((xq - x[i]) / h, 0.0, 1.0)
    out = _quintic(u, F[i], F[i + 1], f[i] * h, f[i + 1] * h, df[i] * h * h, df[i + 1] * h * h)[0]
    return np.where(xq < x[0], 0.0, out)


def _quintic(u, F0, F1, d0, d1, e0, e1):
    """Quintic Hermite interpolant on [0, 1] (values F, first derivatives d, second e) and its derivative."""
    u2 = u * u
    u3 = u2 * u
    jump = F1 - F0
    # value: F0 + jump*(10u^3 - 15u^4 + 6u^5) + d0*(u - 6u^3 + 8u^4 - 3u^5) + d1*(-4u^3 + 7u^4 - 3u^5)
    #        + e0*(u^2 - 3u^3 + 3u^4 - u^5)/2 + e1*(u^3 - 2u^4 + u^5)/2
    s = u3 * (10.0 - 15.0 * u + 6.0 * u2)
    ds = 30.0 * u2 * (1.0 - u) ** 2
    value = (F0 + jump * s + d0 * (u - u3 * (6.0 - 8.0 * u + 3.0 * u2)) + d1 * (u3 * (-4.0 + 7.0 * u - 3.0 * u2))
             + 0.5 * e0 * u2 * (1.0 - u) ** 3 + 0.5 * e1 * u3 * (1.0 - u) ** 2)
    slope = (jump * ds + d0 * (1.0 - u2 * (18.0 - 32.0 * u + 15.0 * u2)) + d1 * (u2 * (-12.0 + 28.0 * u - 15.0 * u2))
             + 0.5 * e0 * u * (1.0 - u) ** 2 * (2.0 - 5.0 * u) + 0.5 * e1 * u2 * (1.0 - u) * (3.0 - 5.0 * u))
    return value, slope


def quintic_coefficients(F0, F1, d0, d1, e0, e1):
    """The interpolant of :func:`_quintic` in powers of u, c0 + c1 u + ... + c5 u^5 (stacked on a new axis 1):
    for tables read many times, where the coefficients are computed once an interval."""
    a = F1 - F0 - d0 - 0.5 * e0
    b = d1 - d0 - e0
    c = e1 - e0
    return np.stack([F0, d0, 0.5 * e0, 10 * a - 4 * b + 0.5 * c, -15 * a + 7 * b - c, 6 * a - 3 * b + 0.5 * c], 1)


class _Table:
    """A CDF F with its density f and the density's derivative df tabulated at x (rows x points),
    flattened once for fast lookups."""

    def __init__(self, x: np.ndarray, F: np.ndarray, f: np.ndarray, df: np.ndarray):
        R, G = x.shape
        self.size = G
        self.rows = np.arange(R)[:, None]
        self.offset = 2.0 * self.rows  # rows of F lie in [0, 1]: shifted, they sort as one array
        self.key = (F + self.offset).ravel()
        self.x, self.F, self.f, self.df = x.ravel(), F.ravel(), f.ravel(), df.ravel()


def _hermite_inverse(t: _Table, q: np.ndarray, newton: int = 2):
    """Per row, the x with H(x) = q and the density H'(x) there, where H is the quintic Hermite
    interpolant of (x, F, f, df) in that row; q: (R, M)."""
    at = np.searchsorted(t.key, (q + t.offset).ravel(), side="right").reshape(q.shape) - 1
    at = np.minimum(np.maximum(at, t.rows * t.size), t.rows * t.size + t.size - 2)  # flat index of the cell
    xl = t.x.take(at)
    h = t.x.take(at + 1) - xl
    F0, F1 = t.F.take(at), t.F.take(at + 1)
    d0, d1 = t.f.take(at) * h, t.f.take(at + 1) * h
    e0, e1 = t.df.take(at) * h * h, t.df.take(at + 1) * h * h
    jump = F1 - F0
    u = np.minimum(np.maximum((q - F0) / np.where(jump > 0, jump, np.inf), 0.0), 1.0)
    # Newton from the linear guess: the grid resolves F, so 2 steps reach ~1e-12 of a cell
    for step in range(newton + 1):
        value, slope = _quintic(u, F0, F1, d0, d1, e0, e1)
        if step == newton:
            break
        u = np.minimum(np.maximum(u - (value - q) / np.maximum(slope, 1e-300), 0.0), 1.0)
    return xl + u * h, slope / np.where(h > 0, h, np.inf)


def shortest_interval(x: np.ndarray, F: np.ndarray, f: np.ndarray, df: np.ndarray, p: float):
    """Shortest interval [a, b] with F(b) - F(a) = p per row, from a CDF F, its density f and
    the density's derivative df tabulated at x.

    With q the mass left of the interval, the width w(q) = Q(q + p) - Q(q) has w'(q) =
    1/f(b) - 1/f(a), so its minima are where g(q) = f(a) - f(b) crosses zero upwards. g
    is scanned on 13 values of q in [0, 1 - p]; the narrowest crossing (a unimodal density
    has one) is refined by regula falsi (Illinois). Without a crossing the optimum is an
    end: q = 0 when the density is highest at the lower end of the support (tau), q = 1 - p
    when at the upper end.
    """
    F = np.clip(np.maximum.accumulate(F, axis=1), 0.0, 1.0)
    F = F / F[:, -1:]
    R = x.shape[0]
    table = _Table(x, F, f, df)

    def ends(q, newton=2):
        xs, fs = _hermite_inverse(table, np.concatenate([q, q + p], axis=1), newton)
        m = q.shape[1]
        return xs[:, :m], xs[:, m:], fs[:, :m] - fs[:, m:]

    q_min, q_max = F[:, :1], 1.0 - p
    cand = q_min + (q_max - q_min) * np.linspace(0.0, 1.0, 13)[None, :]
    a, b, g = ends(cand, newton=1)
    width = b - a
    r = np.arange(R)
    crossing = (g[:, :-1] < 0) & (g[:, 1:] >= 0)
    score = np.where(crossing, np.minimum(width[:, :-1], width[:, 1:]), np.inf)
    j = np.argmin(score, axis=1)
    bracketed = np.isfinite(score[r, j])[:, None]
    lo, hi = cand[r, j][:, None], cand[r, j + 1][:, None]
    g_lo, g_hi = g[r, j][:, None], g[r, j + 1][:, None]
    end = np.where(width[:, 0] <= width[:, -1], 0, cand.shape[1] - 1)  # no crossing: the better end
    q_best = cand[r, end][:, None]
    side = np.zeros_like(lo)
    for _ in range(8):  # Illinois: superlinear; g is nearly linear over a bracket of (1 - p) / 12
        q = np.where(g_hi != g_lo, (lo * g_hi - hi * g_lo) / np.where(g_hi != g_lo, g_hi - g_lo, 1.0), 0.5 * (lo + hi))
        q = np.where(bracketed, np.clip(q, lo, hi), q_best)
        _, _, g = ends(q)
        up = g > 0
        hi, g_hi_new = np.where(up, q, hi), np.where(up, g, g_hi)
        lo, g_lo_new = np.where(up, lo, q), np.where(up, g_lo, g)
        # Illinois: halve the stale end's value when the same end survives twice
        g_lo_new = np.where(up & (side > 0), 0.5 * g_lo_new, g_lo_new)
        g_hi_new = np.where(~up & (side < 0), 0.5 * g_hi_new, g_hi_new)
        side = np.where(up, 1.0, -1.0)
        g_lo, g_hi = g_lo_new, g_hi_new
    q = np.where(bracketed, np.where(g_hi != g_lo, (lo * g_hi - hi * g_lo) / np.where(g_hi != g_lo, g_hi - g_lo, 1.0), lo), q_best)
    q = np.where(bracketed, np.clip(q, lo, hi), q_best)
    a, b, _ = ends(q)
    return a[:, 0], b[:, 0]
