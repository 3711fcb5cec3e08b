"""The posterior of tau in the one-level normal–normal model (:mod:`metaeval.exact`), mu integrated out:
a grid in z = log(tau), and the priors and scales it integrates accurately (NumPy/SciPy only).

Work in z = log(tau) (z = logit of tau's position in (lower, upper)
for a uniform prior), where the posterior decays at least exponentially on both
sides, then map z = c + a*sinh(t) with c the posterior mode and a the posterior
SD in z, and take a uniform grid in t. Points cluster where the mass is (a sharp
posterior from 1,000 studies or a point-like prior is resolved as well as a
vague one) and the grid reaches ever further out at a logarithmic cost in points,
so both tau -> 0 and heavy tails are covered; the integrand decays
double-exponentially in t, so the trapezoid rule on it converges geometrically.
The grid ends where the density (times tau^2 when the mean and SD of tau exist)
has fallen by e^-46. A power-law tail that has not fallen by that much 300
units of z from the mode (halfstudentt priors with nu close to a moment's
existence threshold) gets its analytic power-law remainder added.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from metaeval.priors import Prior

#: Prior tail exponents of tau's density (p(tau) ~ tau^-e); absent: lighter than any power.
TAIL_EXPONENT = {"halfcauchy": 2.0, "flat": 0.0}
#: Families accepted for tau (uniform only with lower >= 0; flat is the improper uniform on tau > 0).
TAU_FAMILIES = ("halfnormal", "halfcauchy", "halfstudentt", "exponential", "lognormal", "uniform", "flat")

_H_T = 0.05  # step of the uniform grid in t (tests: halving it moves no summary by 1e-6 of its SD)
_DROP = 46.0  # a log-density this far below the maximum is negligible (e^-46 ~ 1e-20)
_REACH = 300.0  # how far (in z) the grid may go from the mode


def check_priors(tau_prior: Prior, mu_prior: Prior) -> None:
    """Refuse (ValueError) a mu prior not conjugate given tau, or a tau prior not on tau > 0."""
    if mu_prior.family not in ("normal", "flat"):
        raise ValueError(f"the exact engine needs a normal or flat mu prior (conjugate given tau), got {mu_prior}")
    if tau_prior.family not in TAU_FAMILIES or (tau_prior.family == "uniform" and tau_prior.params[0] < 0):
        raise ValueError(
            f"tau is a standard deviation: expected a prior on tau > 0 (halfnormal, halfcauchy, halfstudentt, "
            f"exponential, lognormal, uniform(>=0, b), flat), got {tau_prior}"
        )


#: How far apart (as a ratio) the SEs, the estimates' distance from zero, the priors' scales and the MID may be from
#: the median SE. Within it, the tau grid and the mixture intervals are accurate (tests/test_hostile.py checks both
#: ends against independent quadrature); beyond it, double precision cannot hold the problem, and the engine says
#: so rather than returning a wrong number.
SCALE_RANGE = 1e12
#: Student-t degrees of freedom the tau grid's tail treatment is checked for.
_NU_RANGE = (0.01, 1e6)


def working_unit(s: np.ndarray) -> float:
    """The unit a problem is solved in: 1 when the median SE is within 2^±20 (about 1e±6) of 1, else the power of
    two nearest it (so scaling is exact, and results for data of ordinary size are what they always were)."""
    k = round(math.log2(float(np.median(s))))
    return 1.0 if abs(k) <= 20 else math.ldexp(1.0, k)


def scale_problems(yi, sei, labels) -> list[tuple[int, str, str]]:
    """(position, "yi" or "sei", why) for each estimate or SE too far from the median SE (``SCALE_RANGE``) to be
    computed with in double precision: the rule every engine shares for the data themselves."""
    y, s = np.asarray(yi, dtype=float), np.asarray(sei, dtype=float)
    if s.size == 0:
        return []
    unit = float(np.median(s))
    out = []
    for i, (label, se, estimate) in enumerate(zip(labels, s, y)):
        if not unit / SCALE_RANGE <= se <= unit * SCALE_RANGE:
            out.append((i, "sei", f"the SE of {label!r} is {se:g}, more than {SCALE_RANGE:g} times {'smaller' if se < unit else 'larger'} "
                                  f"than the median SE ({unit:g}): beyond what double precision computes with"))
        if abs(estimate) > unit * SCALE_RANGE:
            out.append((i, "yi", f"the estimate of {label!r} is {estimate:g}, more than {SCALE_RANGE:g} times the median SE "
                                 f"({unit:g}): beyond what double precision computes with"))
    return out


def check_scales(y: np.ndarray, s: np.ndarray, tau_prior: Prior, mu_prior: Prior, mid: float | None, labels) -> None:
    """Refuse numbers too far from the data's scale to integrate accurately, naming the value and why (ValueError)."""
    problems = scale_problems(y, s, labels)
    if problems:
        raise ValueError(problems[0][2])
    unit = float(np.median(s))
    low, high = unit / SCALE_RANGE, unit * SCALE_RANGE
    reason = (f"more than {SCALE_RANGE:g} times {{}} the median SE ({unit:g}), beyond what the exact engine integrates "
              "accurately in double precision")

    def check(what: str, value: float, small_too: bool = True) -> None:
        if abs(value) > high:
            raise ValueError(f"{what} is {value:g}: {reason.format('larger than')}")
        if small_too and abs(value) < low:
            raise ValueError(f"{what} is {value:g}: {reason.format('smaller than')}")

    for name, prior in (("tau", tau_prior), ("mu", mu_prior)):
        k = prior.kwargs()
        for param, value in k.items():
            if param in ("sigma", "beta") and not (prior.family == "lognormal"):
                check(f"the {name} prior {prior}: {param}", value)
            elif param == "lam":
                check(f"the {name} prior {prior}: 1/lam", 1.0 / value)
            elif param in ("mu", "upper", "lower") and prior.family != "lognormal":
                check(f"the {name} prior {prior}: {param}", value, small_too=False)
        if prior.family == "uniform" and k["upper"] - k["lower"] < low:
            check(f"the {name} prior {prior}: its width", k["upper"] - k["lower"])
        if prior.family == "lognormal":
            check(f"the {name} prior {prior}: exp(mu)", math.exp(min(k["mu"], 709.0)))
            if k["sigma"] > math.log(SCALE_RANGE):
                raise ValueError(f"the {name} prior {prior}: sigma is {k['sigma']:g}, spreading tau over more than "
                                 f"{SCALE_RANGE:g} times the median SE either way; use sigma <= {math.log(SCALE_RANGE):.1f}")
            if k["sigma"] < 1 / SCALE_RANGE:
                raise ValueError(f"the {name} prior {prior}: sigma is {k['sigma']:g}, a point mass for double precision; "
                                 f"use sigma >= {1 / SCALE_RANGE:g}, or fix tau")
        if prior.family == "halfstudentt" and not _NU_RANGE[0] <= k["nu"] <= _NU_RANGE[1]:
            raise ValueError(f"the {name} prior {prior}: nu is {k['nu']:g}; the exact engine's tail treatment is checked "
                             f"for nu from {_NU_RANGE[0]:g} to {_NU_RANGE[1]:g} (above that, use halfnormal)")
    if mid is not None:
        check("the MID", float(mid))


def prior_scales(prior: Prior) -> list[float]:
    """Where a tau prior puts its mass (for the first scan of the grid)."""
    k = prior.kwargs()
    if prior.family == "exponential":
        return [1.0 / k["lam"]]
    if prior.family == "lognormal":
        return [math.exp(k["mu"] - 5.0 * k["sigma"]), math.exp(k["mu"] + 5.0 * k["sigma"])]
    if prior.family == "halfstudentt":
        return [k["sigma"]]
    if prior.family == "uniform":
        return [k["upper"] - k["lower"]]
    return [abs(v) for v in k.values()]


def tau_from_z(z: np.ndarray, prior: Prior) -> np.ndarray:
    if prior.family == "uniform":
        lower, upper = prior.params
        return lower + (upper - lower) * special.expit(z)
    return np.exp(z)


def log_dtau_dz(z: np.ndarray, prior: Prior) -> np.ndarray:
    if prior.family == "uniform":
        lower, upper = prior.params
        return math.log(upper - lower) + special.log_expit(z) + special.log_expit(-z)
    return z


def conditional(tau2: np.ndarray, y: np.ndarray, s2: np.ndarray, mu_prior: Prior):
    """Given each tau^2: the mean and variance of mu | tau, y and log p(y | tau) up to a constant."""
    if mu_prior.family == "normal":
        m0, prec0 = mu_prior.params[0], 1.0 / mu_prior.params[1] ** 2
    else:
        m0, prec0 = 0.0, 0.0
    v = tau2[:, None] + s2[None, :]
    w = 1.0 / v
    precision = w.sum(1) + prec0
    mean = (w @ y + prec0 * m0) / precision
    resid = y[None, :] - mean[:, None]
    quad = np.einsum("ij,ij->i", w, resid * resid) + prec0 * (mean - m0) ** 2
    loglik = -0.5 * (np.log(v).sum(1) + np.log(precision) + quad)
    return mean, 1.0 / precision, loglik


def scan_mode(log_post_z, z_scan: np.ndarray, *, widen: bool = True):
    """The mode ``centre`` and SD ``spread`` (from the curvature there) of a unimodal log density in z: a scan
    on ``z_scan`` (``widen``: widened while its maximum sits on an edge), then parabolas through ever
    narrower zooms. Returns them with the scan's points and values."""
    lp_scan = log_post_z(z_scan)
    for _ in range(20):
        j = int(np.argmax(lp_scan))
        if 0 < j < z_scan.size - 1 or not widen:
            break
        extra = np.arange(1, 61) * 0.5
        new = z_scan[0] - extra[::-1] if j == 0 else z_scan[-1] + extra
        lp_new = log_post_z(new)
        z_scan, lp_scan = (np.concatenate([new, z_scan]), np.concatenate([lp_new, lp_scan])) if j == 0 else \
            (np.concatenate([z_scan, new]), np.concatenate([lp_scan, lp_new]))
    if not np.isfinite(lp_scan.max()):
        raise ValueError("the posterior of tau vanishes everywhere: check the tau prior against the data's scale")

    # zoom in on the mode and its curvature: c and a of z = c + a sinh(t)
    j = int(np.clip(np.argmax(lp_scan), 1, z_scan.size - 2))
    lo, hi = z_scan[j - 1], z_scan[j + 1]
    centre, spread = z_scan[j], 1.0
    for _ in range(30):
        zz = np.linspace(lo, hi, 21)
        ll = log_post_z(zz)
        j = int(np.clip(np.argmax(ll), 1, 19))
        step = zz[1] - zz[0]
        curvature = (ll[j - 1] - 2.0 * ll[j] + ll[j + 1]) / step**2
        centre = zz[j]
        if curvature < 0 and np.isfinite(curvature):
            vertex = 0.5 * step * (ll[j - 1] - ll[j + 1]) / (ll[j - 1] - 2.0 * ll[j] + ll[j + 1])
            centre = zz[j] + vertex
            spread = 1.0 / math.sqrt(-curvature)
        lo, hi = zz[j - 1], zz[j + 1]
        if hi - lo < 0.25 * spread:
            break
    return float(centre), float(np.clip(spread, 1e-12, 5.0)), z_scan, lp_scan


def tau_grid(y: np.ndarray, s: np.ndarray, tau_prior: Prior, mu_prior: Prior, tail: float) -> dict:
    s2 = s * s
    uniform = tau_prior.family == "uniform"

    def log_post_z(z):
        """Unnormalised log posterior density of z."""
        tau = tau_from_z(z, tau_prior)
        out = conditional(tau * tau, y, s2, mu_prior)[2] + tau_prior.logpdf(tau) + log_dtau_dz(z, tau_prior)
        return np.where(np.isfinite(out), out, -np.inf)

    # 1-2. scan a wide range of z in steps of 0.5 (widened while the maximum sits on an edge), zoom in on the mode
    scales = [x for x in (s.min(), s.max(), np.ptp(y), *prior_scales(tau_prior)) if x > 0 and math.isfinite(x)]
    if uniform:
        width = tau_prior.params[1] - tau_prior.params[0]
        z_lo, z_hi = min(-15.0, math.log(min(scales) / width) - 15.0), 45.0
    else:
        z_lo, z_hi = math.log(min(scales)) - 15.0, math.log(max(scales)) + 15.0
    centre, spread, z_scan, lp_scan = scan_mode(log_post_z, np.arange(z_lo, z_hi + 0.25, 0.5), widen=not uniform)

    # 3. how far the grid must reach: until the density (and tau^2 times it, when E[tau^2]
    #    exists) has dropped by e^-_DROP, seen both on the scan and on rays out from the mode
    power = 2.0 if tail > 3.0 else (1.0 if tail > 2.0 else 0.0)
    if uniform:
        power = 0.0  # tau is bounded: no moment can diverge
    z_min, z_max = centre - _REACH, centre + _REACH
    if not uniform:
        z_max = min(z_max, 340.0)  # keeps tau^2 finite
        z_min = max(z_min, -680.0)
    reach = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, _REACH])
    z_rays = np.concatenate([centre - reach[::-1], [centre], centre + reach])
    z_rays = np.clip(z_rays, z_min, z_max)
    z_all = np.concatenate([z_scan, z_rays])
    lp_all = log_post_z(z_all)
    log_tau = np.log(tau_from_z(z_all, tau_prior))
    wanted = lp_all >= lp_all.max() - _DROP
    if power:
        lm = lp_all + power * log_tau
        wanted |= lm >= lm.max() - _DROP
    ordered = np.sort(z_all)
    z_first, z_last = z_all[wanted].min(), z_all[wanted].max()
    # one more step past the last point still wanted (to a point already known negligible)
    below, above = ordered[ordered < z_first], ordered[ordered > z_last]
    z_first = below.max() if below.size else z_min
    z_last = above.min() if above.size else z_max
    z_first, z_last = max(z_first, z_min), min(z_last, z_max)

    # 4. the grid: uniform in t
    t_first, t_last = math.asinh((z_first - centre) / spread), math.asinh((z_last - centre) / spread)
    n = int(math.ceil((t_last - t_first) / _H_T)) + 1
    t = np.linspace(t_first, t_last, n)
    h = t[1] - t[0]
    z = centre + spread * np.sinh(t)
    tau = tau_from_z(z, tau_prior)
    mu_mean, mu_var, loglik = conditional(tau * tau, y, s2, mu_prior)
    log_z = loglik + tau_prior.logpdf(tau) + log_dtau_dz(z, tau_prior)  # log density in z
    log_z = np.where(np.isfinite(log_z), log_z, -np.inf)
    log_t = log_z + np.log(spread * np.cosh(t))  # log density in t
    top = log_t.max()
    g = np.exp(log_t - top)
    gz_end = float(np.exp(log_z[-1] - top))
    # a power-law tail cut off at the reach limit: add its analytic remainder
    cut = math.isfinite(tail) and not uniform and z_last >= z_max - 1e-9 and (
        (log_z[-1] + power * z[-1]) - (log_z + power * z).max() > -_DROP
    )
    tail_raw = gz_end / (tail - 1.0) if cut else 0.0
    total = h * g.sum() + tail_raw
    weight = h * g / total
    tail_density = gz_end / total if cut else 0.0

    # CDF: trapezoid in t with the Euler-Maclaurin end correction, O(h^4)
    dg = np.gradient(g, h, edge_order=2)
    dg[2:-2] = (g[:-4] - 8.0 * g[1:-3] + 8.0 * g[3:-1] - g[4:]) / (12.0 * h)  # 4th order inside
    pieces = 0.5 * h * (g[:-1] + g[1:]) + h * h / 12.0 * (dg[:-1] - dg[1:])
    cdf = np.concatenate([[0.0], np.cumsum(pieces)]) / total
    cdf = np.clip(np.maximum.accumulate(cdf), 0.0, 1.0)
    dtau_dt = np.exp(log_dtau_dz(z, tau_prior)) * spread * np.cosh(t)
    density = g / total / dtau_dt
    slope = np.gradient(density, h, edge_order=2)
    slope[2:-2] = (density[:-4] - 8.0 * density[1:-3] + 8.0 * density[3:-1] - density[4:]) / (12.0 * h)
    slope /= dtau_dt  # d density / d tau
    return {
        "tau": tau, "weight": weight, "density": density, "density_slope": slope, "cdf": cdf, "mu_mean": mu_mean, "mu_var": mu_var,
        "z": z, "tail_density": tail_density,
    }
