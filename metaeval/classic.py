"""Classical (frequentist) random-effects meta-analysis, as metafor's ``rma.uni``.

The normal–normal model ``yi ~ N(X beta, vi + tau2)`` with the tau² estimators of metafor (FE, DL, REML, PM,
ML, HS, SJ, EB), Wald (``test="z"``) or Knapp–Hartung (``test="knha"``) inference, Q/I²/H², prediction
intervals, BLUPs, meta-regression with an omnibus QM test, Egger's regression test and the data of a funnel
plot. It is the frequentist cross-check beside the Bayesian model (``metaeval classic``), and it is tested
against metafor 3.8 to 1e-6 (``tests/reference/``).

Definitions follow metafor (Viechtbauer 2010, ``rma.uni`` source and help pages), including each estimator's
starting value and iteration rule. Two differences, both only in numerical detail: the Fisher-scoring stop
rule is scale-free (a tau² step below ``threshold`` times max(tau², smallest vi) instead of an absolute 1e-5;
an estimate that converges below threshold × smallest vi is reported as exactly 0; one study with a huge
variance cannot loosen either), and Paule–Mandel widens its
search interval instead of failing when metafor's ``tau2.max`` is too small.

Only numpy, scipy and pandas are used; nothing heavy is imported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from metaeval.cells import flag
from metaeval.classic_result import DEFAULT_CONTROL, FE_ALIASES, FunnelData, RegtestResult, RMAResult, check_level

__all__ = [
    "METHODS",
    "TESTS",
    "FunnelData",
    "RMAResult",
    "RegtestResult",
    "classic_by_domain",
    "funnel_data",
    "regtest",
    "rma",
]

#: tau² estimators, metafor's names. "EE" and "CE" are accepted as aliases of "FE" (no tau²).
METHODS = ("FE", "DL", "REML", "PM", "ML", "HS", "SJ", "EB")
TESTS = ("z", "knha")


# --------------------------------------------------------------------------------------------------------
# Input checks


def _check_options(method, test, level) -> tuple[str, float]:
    """The estimator name (upper case) and confidence level, or a ValueError naming what was expected."""
    if not isinstance(method, str) or method.upper() not in set(METHODS) | FE_ALIASES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose 'z' (Wald) or 'knha' (Knapp-Hartung)")
    return method.upper(), check_level(level)



def _as_vector(x, name: str) -> np.ndarray:
    try:
        if isinstance(x, (pd.Series, pd.Index)):
            arr = x.to_numpy(dtype=float, na_value=np.nan)
        else:
            arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has NaN or infinite values at position(s) {bad.tolist()}")
    return arr.copy()


def _design(mods, k: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Model matrix with an intercept column first, and the coefficient names."""
    if mods is None:
        return np.ones((k, 1)), ("intrcpt",)
    if isinstance(mods, pd.Series):
        mods = mods.to_frame()
    if isinstance(mods, pd.DataFrame):
        names = tuple(str(c) for c in mods.columns)
        try:
            M = mods.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"mods must hold numeric moderator columns: {exc}") from None
    else:
        try:
            M = np.asarray(mods, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"mods must be numeric: {exc}") from None
        if M.ndim == 1:
            M = M.reshape(-1, 1)
        names = tuple(f"mod{j + 1}" for j in range(M.shape[1])) if M.ndim == 2 else ()
    if M.ndim != 2:
        raise ValueError(f"mods must be a 2-D array or DataFrame (rows = studies); got shape {M.shape}")
    if M.shape[0] != k:
        raise ValueError(f"mods has {M.shape[0]} rows but there are {k} estimates")
    if M.shape[1] == 0:
        return np.ones((k, 1)), ("intrcpt",)
    if not np.all(np.isfinite(M)):
        raise ValueError("mods has NaN or infinite values")
    X = np.column_stack([np.ones(k), M])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("model matrix (intercept + mods) is not of full rank: a moderator is constant or "
                         "a linear combination of the others")
    return X, ("intrcpt", *names)


def _control(control: Mapping | None) -> dict:
    con = dict(DEFAULT_CONTROL)
    if control:
        unknown = set(control) - set(con)
        if unknown:
            raise ValueError(f"unknown control setting(s) {sorted(unknown)}; known: {sorted(con)}")
        con.update(control)
    if not (con["threshold"] > 0):
        raise ValueError("control threshold must be positive")
    if int(con["maxiter"]) < 1:
        raise ValueError("control maxiter must be at least 1")
    con["maxiter"] = int(con["maxiter"])
    return con


# --------------------------------------------------------------------------------------------------------
# Linear algebra for weighted least squares


def _pmat(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """P = W - W X (X'WX)^-1 X'W, the residual-forming matrix of weighted least squares."""
    WX = X * w[:, None]
    A = X.T @ WX
    return np.diag(w) - WX @ np.linalg.solve(A, WX.T)


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares coefficients and (X'WX)^-1."""
    WX = X * w[:, None]
    vb = np.linalg.inv(X.T @ WX)
    vb = (vb + vb.T) / 2
    return vb @ (WX.T @ y), vb


def _qgen(tau2: float, X: np.ndarray, y: np.ndarray, vi: np.ndarray) -> float:
    """Generalised Q statistic y'P(tau2)y with weights 1/(vi + tau2)."""
    w = 1.0 / (vi + tau2)
    b, _ = _wls(X, y, w)
    r = y - X @ b
    return float(np.sum(w * r * r))


def _loglik(tau2: float, X: np.ndarray, y: np.ndarray, vi: np.ndarray, reml: bool) -> float:
    """ML or REML log-likelihood at tau2 (beta profiled out), as metafor's ll0check."""
    k, p = X.shape
    w = 1.0 / (vi + tau2)
    b, vb0 = _wls(X, y, w)
    rss = float(np.sum(w * (y - X @ b) ** 2))
    logdet_v = float(np.sum(np.log(vi + tau2)))
    if reml:
        _, logdet = np.linalg.slogdet(np.linalg.inv(vb0))
        return -0.5 * (k - p) * math.log(2 * math.pi) - 0.5 * logdet_v - 0.5 * logdet - 0.5 * rss
    return -0.5 * k * math.log(2 * math.pi) - 0.5 * logdet_v - 0.5 * rss


# --------------------------------------------------------------------------------------------------------
# tau² estimators


def _tau2_he(X, y, vi) -> float:
    """Hedges (HE) method-of-moments estimate from OLS residuals; metafor's start for ML/REML/EB."""
    k, p = X.shape
    P = np.eye(k) - X @ np.linalg.solve(X.T @ X, X.T)
    return float((y @ P @ y - np.sum(np.diag(P) * vi)) / (k - p))


def _estimate_tau2(method: str, X: np.ndarray, y: np.ndarray, vi: np.ndarray, con: dict) -> tuple[float, int]:
    """tau² by the named estimator; returns (tau2, iterations). y is centred (metafor's Ymc)."""
    k, p = X.shape
    # Tolerances are relative to the smallest sampling variance: a tau^2 that small next to every vi moves
    # no weight, whatever the units, and one huge vi (a study with sei = 1e6) cannot loosen them.
    floor = float(np.min(vi))
    threshold = con["threshold"]
    maxiter = con["maxiter"]

    if method == "FE":
        return 0.0, 0
    if method == "DL":
        w = 1.0 / vi
        P = _pmat(X, w)
        return max(0.0, float((y @ P @ y - (k - p)) / np.trace(P))), 0
    if method == "HS":
        w = 1.0 / vi
        P = _pmat(X, w)
        return max(0.0, float((y @ P @ y - k) / np.sum(w))), 0
    if method == "SJ":
        # Sidik–Jonkman: one step from the (biased) sample variance of the estimates.
        tau2_0 = float(np.var(y))
        if tau2_0 <= 0:
            return 0.0, 0
        return max(0.0, tau2_0 * _qgen(tau2_0, X, y, vi) / (k - p)), 0
    if method == "PM":
        # Paule–Mandel: generalised Q(tau2) = k - p. Q is decreasing in tau2.
        target = k - p
        if _qgen(0.0, X, y, vi) < target:
            return 0.0, 0
        mad = float(stats.median_abs_deviation(y, scale="normal"))
        upper = max(100.0, 10 * mad**2, 10 * float(np.mean(vi)))  # metafor's tau2.max, widened if needed
        for _ in range(200):
            if _qgen(upper, X, y, vi) <= target:
                break
            upper *= 10
        else:  # pragma: no cover - Q -> 0 as tau2 -> inf, so this cannot happen for finite data
            raise ValueError("Paule-Mandel estimator: no upper bound found for tau^2")
        res = optimize.brentq(lambda t: _qgen(t, X, y, vi) - target, 0.0, upper,
                              xtol=threshold * floor * 1e-2, rtol=1e-14, maxiter=maxiter, full_output=True)
        root, info = res
        if not info.converged:
            raise ValueError(f"Paule-Mandel estimator did not converge in {maxiter} iterations")
        return max(0.0, float(root)), int(info.iterations)

    if method in ("ML", "REML", "EB"):
        # Fisher scoring from the HE estimate (truncated at 0), halving a step that would cross 0 (metafor).
        tau2 = max(0.0, _tau2_he(X, y, vi))
        for it in range(1, maxiter + 1):  # noqa: B007 - the count of iterations is returned
            w = 1.0 / (vi + tau2)
            P = _pmat(X, w)
            Py = P @ y
            if method == "ML":
                adj = (Py @ Py - np.sum(w)) / np.sum(w * w)
            elif method == "REML":
                adj = (Py @ Py - np.trace(P)) / np.sum(P * P)
            else:  # EB (Morris 1983)
                adj = (y @ Py * k / (k - p) - k) / np.sum(w)
            adj = float(adj)
            if not math.isfinite(adj):
                raise ValueError(f"{method} estimator: Fisher scoring produced a non-finite step")
            while tau2 + adj < 0:
                adj /= 2
            tau2 += adj
            if abs(adj) <= threshold * max(tau2, floor):
                break
        else:
            raise ValueError(f"{method} estimator: Fisher scoring did not converge in {maxiter} iterations "
                             f"(raise control['maxiter'] or use another method)")
        if tau2 <= threshold * floor:
            tau2 = 0.0  # converged onto the boundary
        if method in ("ML", "REML") and tau2 > 0:
            # metafor's ll0check: if the likelihood is higher at tau2 = 0, scoring found a local maximum.
            reml = method == "REML"
            ll0 = _loglik(0.0, X, y, vi, reml)
            ll = _loglik(tau2, X, y, vi, reml)
            if ll0 - ll > 1e-10 * max(1.0, abs(ll)):
                warnings.warn(f"{method}: Fisher scoring stopped at a local maximum; the likelihood is higher "
                              "at tau^2 = 0, so tau^2 is set to 0", RuntimeWarning, stacklevel=3)
                tau2 = 0.0
        return tau2, it
    raise ValueError(f"unknown method {method!r}")  # pragma: no cover - checked by the caller


# --------------------------------------------------------------------------------------------------------
# Fitting


def _fit(yi: np.ndarray, vi: np.ndarray, X: np.ndarray, coef_names: tuple[str, ...], slab: tuple[str, ...],
         method: str, test: str, level: float, con: dict) -> RMAResult:
    k, p = X.shape
    fixed = method in FE_ALIASES
    if not fixed and k <= p:
        if p == 1:
            raise ValueError(f"the {method} estimator of tau^2 needs at least 2 studies; got {k}")
        raise ValueError(f"the {method} estimator of tau^2 needs more studies than coefficients; "
                         f"got {k} studies for {p} coefficients")
    if k < p:
        raise ValueError(f"more coefficients ({p}) than studies ({k})")
    if test == "knha" and k <= p:
        raise ValueError(f"Knapp-Hartung inference needs more studies than coefficients (k - p > 0); "
                         f"got k = {k}, p = {p}")

    y = yi - yi.mean()
    tau2, iterations = _estimate_tau2("FE" if fixed else method, X, y, vi, con)

    w = 1.0 / (vi + tau2)
    beta, vb = _wls(X, yi, w)
    s2w = 1.0
    ddf = None
    if test == "knha":
        rss = float(np.sum(w * (yi - X @ beta) ** 2))
        if rss <= np.finfo(float).eps:
            raise ValueError("Knapp-Hartung: the weighted residual sum of squares is zero (every estimate lies "
                             "on the fitted line), so the KH standard error would be 0; use test='z'")
        s2w = rss / (k - p)
        ddf = k - p
        if fixed:
            warnings.warn("the Knapp & Hartung method is not meant for fixed-effects models", UserWarning,
                          stacklevel=3)
    vb = s2w * vb
    se = np.sqrt(np.diag(vb))
    zval = beta / se
    alpha = 1.0 - level
    if test == "knha":
        pval = 2 * stats.t.sf(np.abs(zval), ddf)
        crit = stats.t.isf(alpha / 2, ddf)
    else:
        pval = 2 * stats.norm.sf(np.abs(zval))
        crit = stats.norm.isf(alpha / 2)
    ci_lb = beta - crit * se
    ci_ub = beta + crit * se

    # Omnibus test: the moderators, or the intercept when there are none.
    btt = np.arange(1, p) if p > 1 else np.array([0])
    m = btt.size
    b_t = beta[btt]
    QM = float(b_t @ np.linalg.solve(vb[np.ix_(btt, btt)], b_t))
    if test == "knha":
        QM /= m
        QMdf: tuple[int, int | None] = (m, k - p)
        QMp = float(stats.f.sf(QM, m, k - p))
    else:
        QMdf = (m, None)
        QMp = float(stats.chi2.sf(QM, m))

    # Heterogeneity: Q with fixed-effects weights; I² and H² via the typical within-study variance.
    if k > p:
        P = _pmat(X, 1.0 / vi)
        QE = max(0.0, float(y @ P @ y))
        QEp = float(stats.chi2.sf(QE, k - p))
        vt = (k - p) / float(np.trace(P))
        if fixed:
            I2 = max(0.0, 100 * (QE - (k - p)) / QE) if QE > 0 else 0.0
            H2 = QE / (k - p)
        else:
            I2 = 100 * tau2 / (vt + tau2)
            H2 = tau2 / vt + 1
    else:
        QE, QEp, I2, H2 = 0.0, 1.0, 0.0, 1.0

    def ro(a):
        a = np.array(a, dtype=float)
        a.setflags(write=False)
        return a

    return RMAResult(
        yi=ro(yi), vi=ro(vi), X=ro(X), coef_names=coef_names, slab=slab, method=method, test=test,
        level=level, beta=ro(beta), se=ro(se), vb=ro(vb), zval=ro(zval), pval=ro(pval), ci_lb=ro(ci_lb),
        ci_ub=ro(ci_ub), tau2=float(tau2), QE=QE, QEp=QEp, I2=float(I2), H2=float(H2), QM=QM, QMp=QMp,
        QMdf=QMdf, ddf=ddf, s2w=float(s2w), iterations=int(iterations), control=dict(con),
    )


def rma(yi, vi=None, *, sei=None, method: str = "REML", test: str = "z", mods=None, level: float = 0.95,
        slab: Sequence[str] | None = None, control: Mapping | None = None) -> RMAResult:
    """Fit the normal–normal random-effects (or fixed-effects) model, as metafor's ``rma.uni``.

    Parameters
    ----------
    yi : observed effect sizes, one per study.
    vi, sei : sampling variances or standard errors (exactly one of the two), all positive.
    method : tau² estimator: "FE" (also "EE"/"CE"), "DL", "REML", "PM", "ML", "HS", "SJ", "EB"; any case.
    test : "z" (Wald, normal quantiles) or "knha" (Knapp–Hartung: scaled variance, t(k - p) quantiles).
    mods : moderators for a meta-regression, a 2-D array or DataFrame with one row per study (a 1-D array is
        one moderator); the intercept is added. The omnibus QM tests all moderators.
    level : confidence level of the intervals, in (0, 1).
    slab : study labels (default "1", "2", ...).
    control : {"threshold": tau² step to stop iterating, relative to max(tau², mean vi) (default 1e-10),
        "maxiter": most iterations (default 1000)}.

    Raises ValueError for unusable input (NaN, non-positive variances, mismatched lengths, fewer than 2
    studies for a random-effects estimator, rank-deficient moderators, non-convergence).
    """
    method, level = _check_options(method, test, level)
    con = _control(control)

    yi = _as_vector(yi, "yi")
    if (vi is None) == (sei is None):
        raise ValueError("give exactly one of vi (sampling variances) or sei (standard errors)")
    if vi is not None:
        vi = _as_vector(vi, "vi")
        name = "vi"
    else:
        sei_arr = _as_vector(sei, "sei")
        name = "sei"
        if sei_arr.shape != yi.shape:
            raise ValueError(f"yi has {yi.size} values but sei has {sei_arr.size}")
        bad = np.flatnonzero(sei_arr <= 0)
        if bad.size:
            raise ValueError(f"sei must be positive; non-positive at position(s) {bad.tolist()}")
        vi = sei_arr**2
    if vi.shape != yi.shape:
        raise ValueError(f"yi has {yi.size} values but {name} has {vi.size}")
    if yi.size == 0:
        raise ValueError("no studies: yi is empty")
    bad = np.flatnonzero(vi <= 0)
    if bad.size:
        raise ValueError(f"{name} must be positive; non-positive at position(s) {bad.tolist()}")
    k = yi.size
    if slab is None:
        slab_t = tuple(str(i + 1) for i in range(k))
    else:
        slab_t = tuple(str(s) for s in slab)
        if len(slab_t) != k:
            raise ValueError(f"slab has {len(slab_t)} labels but there are {k} estimates")
    X, names = _design(mods, k)
    return _fit(yi, vi, X, names, slab_t, method, test, level, con)


def regtest(fit: RMAResult) -> RegtestResult:
    """Egger's regression test for funnel asymmetry, metafor's ``regtest`` default (model="rma",
    predictor="sei"): refit ``fit`` with sei as an extra moderator (same method, test, level and control)
    and test its coefficient."""
    X = np.column_stack([fit.X, np.sqrt(fit.vi)])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ValueError("model matrix is no longer of full rank after adding sei as a predictor "
                         "(are all standard errors equal?)")
    refit = _fit(np.array(fit.yi), np.array(fit.vi), X, (*fit.coef_names, "sei"), fit.slab, fit.method,
                 fit.test, fit.level, dict(fit.control))
    j = X.shape[1] - 1
    if fit.int_only:
        est, lo, hi = float(refit.beta[0]), float(refit.ci_lb[0]), float(refit.ci_ub[0])
    else:
        est = lo = hi = None
    return RegtestResult(zval=float(refit.zval[j]), pval=float(refit.pval[j]), ddf=refit.ddf, est=est,
                         ci_lb=lo, ci_ub=hi, fit=refit)


def funnel_data(fit: RMAResult, *, level: float | None = None, addtau2: bool = False,
                n_points: int = 100) -> FunnelData:
    """The data of a funnel plot (yi against sei) with its pseudo confidence region, as metafor's
    ``funnel.rma`` for a model without moderators (metafor plots residuals for meta-regressions; that is not
    implemented here)."""
    if not fit.int_only:
        raise ValueError("funnel data are available for models without moderators only")
    level = fit.level if level is None else check_level(level)
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    sei = np.sqrt(np.asarray(fit.vi))
    refline = float(fit.beta[0])
    grid = np.linspace(0.0, 1.1 * float(sei.max()), n_points)
    tau2 = fit.tau2 if addtau2 else 0.0
    half = stats.norm.isf((1 - level) / 2) * np.sqrt(grid**2 + tau2)
    points = pd.DataFrame({"yi": np.asarray(fit.yi), "sei": sei}, index=pd.Index(list(fit.slab), name="study"))
    lines = pd.DataFrame({"sei": grid, "ci_lb": refline - half, "ci_ub": refline + half})
    return FunnelData(points=points, lines=lines, refline=refline, level=level, addtau2=addtau2)


# --------------------------------------------------------------------------------------------------------
# Per-domain table for the CLI


_BY_DOMAIN_COLUMNS = ["domain", "k", "method", "test", "estimate", "se", "zval", "pval", "ci_lb", "ci_ub",
                      "pi_lb", "pi_ub", "tau2", "tau", "I2", "H2", "QE", "QEp", "note"]


def _truthy(series: pd.Series) -> np.ndarray:
    """A poolable column as booleans (:func:`metaeval.cells.flag`); missing counts as False."""
    out = np.zeros(len(series), dtype=bool)
    for i, v in enumerate(series.tolist()):
        try:
            out[i] = bool(flag(v))
        except ValueError:
            raise ValueError(f"poolable must be true/false; row {i} has {v!r}") from None
    return out


def classic_by_domain(evidence: pd.DataFrame, method: str = "REML", test: str = "z",
                      level: float = 0.95) -> pd.DataFrame:
    """One classical meta-analysis per domain of an evidence table: the ``metaeval classic`` table.

    ``evidence`` needs columns ``domain``, ``estimate_id``, ``yi``, ``sei`` and ``poolable``. Only rows that
    are poolable with finite yi and positive finite sei are used. A domain that cannot be analysed (fewer
    than 2 usable estimates for a random-effects estimator, or none for FE) gets a row whose ``note`` says
    why and whose numbers are missing. Domains appear in order of first appearance.
    """
    required = ["domain", "estimate_id", "yi", "sei", "poolable"]
    missing = [c for c in required if c not in evidence.columns]
    if missing:
        raise ValueError(f"evidence table lacks column(s) {missing}; needs {required}")
    method, level = _check_options(method, test, level)

    yi = pd.to_numeric(evidence["yi"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    sei = pd.to_numeric(evidence["sei"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    poolable = _truthy(evidence["poolable"])
    usable = poolable & np.isfinite(yi) & np.isfinite(sei) & (sei > 0)
    domains = evidence["domain"].astype(object).to_numpy()
    ids = evidence["estimate_id"].astype(str).to_numpy()

    # An RE estimator needs 2 estimates; so does Knapp-Hartung (k - p > 0); FE with Wald works with 1.
    needed = 1 if (method in FE_ALIASES and test == "z") else 2
    rows = []
    for dom in pd.unique(pd.Series(domains)):
        in_dom = domains == dom
        use = in_dom & usable
        k = int(use.sum())
        row: dict = {c: np.nan for c in _BY_DOMAIN_COLUMNS}
        row.update({"domain": dom, "k": k, "method": method, "test": test, "note": ""})
        n_pool = int((in_dom & poolable).sum())
        if k < needed:
            row["note"] = (f"{k} usable estimate{'s' if k != 1 else ''} ({int(in_dom.sum())} in domain, "
                           f"{n_pool} poolable); {method} with test={test} needs at least {needed}")
            rows.append(row)
            continue
        try:
            res = rma(yi[use], sei=sei[use], method=method, test=test, level=level, slab=list(ids[use]))
        except ValueError as exc:
            row["note"] = f"not estimable: {exc}"
            rows.append(row)
            continue
        pr = res.predict().iloc[0]
        row.update({
            "estimate": float(res.beta[0]), "se": float(res.se[0]), "zval": float(res.zval[0]),
            "pval": float(res.pval[0]), "ci_lb": float(res.ci_lb[0]), "ci_ub": float(res.ci_ub[0]),
            "tau2": res.tau2, "tau": res.tau, "I2": res.I2, "H2": res.H2, "QE": res.QE, "QEp": res.QEp,
        })
        if not res.is_fixed:
            row["pi_lb"], row["pi_ub"] = float(pr["pi_lb"]), float(pr["pi_ub"])
        else:
            row["note"] = "fixed-effects model: no prediction interval"
        rows.append(row)
    out = pd.DataFrame(rows, columns=_BY_DOMAIN_COLUMNS)
    out["k"] = out["k"].astype(int)
    return out
