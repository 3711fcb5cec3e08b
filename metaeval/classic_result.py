"""The results of :mod:`metaeval.classic`: a fitted ``rma`` model, Egger's test and a funnel plot's data, with
metafor's printed layout."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

#: Method names of a fixed/equal-effects model (no tau²).
FE_ALIASES = {"FE", "EE", "CE"}

#: Default iteration control: tau² step (relative to max(tau², mean vi)) at which iteration stops, and the
#: most iterations allowed before giving up with an error.
DEFAULT_CONTROL = {"threshold": 1e-10, "maxiter": 1000}


def check_level(level: float) -> float:
    """A confidence level as a float strictly between 0 and 1, or a ValueError saying so."""
    level = float(level)
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be a probability strictly between 0 and 1 (e.g. 0.95); got {level}")
    return level


# --------------------------------------------------------------------------------------------------------
# Result objects


@dataclass(frozen=True, eq=False)
class RMAResult:
    """A fitted ``rma`` model: coefficients, heterogeneity and the data it was fitted to.

    Arrays are read-only. ``beta``, ``se``, ``zval``, ``pval``, ``ci_lb`` and ``ci_ub`` have one entry per
    coefficient (``coef_names``; the intercept is ``"intrcpt"`` as in metafor). Under ``test="knha"`` the
    ``zval`` are t statistics on ``ddf`` degrees of freedom and ``QM`` is an F statistic on ``QMdf``.
    """

    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    coef_names: tuple[str, ...]
    slab: tuple[str, ...]
    method: str
    test: str
    level: float
    beta: np.ndarray
    se: np.ndarray
    vb: np.ndarray
    zval: np.ndarray
    pval: np.ndarray
    ci_lb: np.ndarray
    ci_ub: np.ndarray
    tau2: float
    QE: float
    QEp: float
    I2: float
    H2: float
    QM: float
    QMp: float
    QMdf: tuple[int, int | None]
    ddf: int | None
    s2w: float = 1.0
    iterations: int = 0
    control: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CONTROL))

    # -- basic properties ----------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of estimates."""
        return int(self.yi.shape[0])

    @property
    def p(self) -> int:
        """Number of coefficients (intercept included)."""
        return int(self.X.shape[1])

    @property
    def tau(self) -> float:
        """Square root of tau²."""
        return math.sqrt(self.tau2)

    @property
    def is_fixed(self) -> bool:
        """True for a fixed/equal-effects model (no tau²)."""
        return self.method in FE_ALIASES

    @property
    def int_only(self) -> bool:
        """True when the model has no moderators."""
        return self.p == 1

    @property
    def sei(self) -> np.ndarray:
        """Standard errors of the estimates, sqrt(vi)."""
        return np.sqrt(self.vi)

    def _crit(self, level: float) -> float:
        alpha = 1.0 - level
        if self.test == "knha":
            return float(stats.t.isf(alpha / 2, self.ddf))
        return float(stats.norm.isf(alpha / 2))

    # -- predictions ---------------------------------------------------------------------------------
    def predict(self, newmods=None, *, level: float | None = None) -> pd.DataFrame:
        """Predicted average effect with CI and prediction interval, as metafor's ``predict.rma``.

        Without moderators: one row (the pooled effect). With moderators and no ``newmods``: the fitted value
        of each study. ``newmods`` holds moderator values without the intercept column (a 1-D sequence is
        several values of a single moderator, or one row when the model has several moderators). The
        prediction interval is ``pred ± crit * sqrt(se² + tau²)`` with crit from N(0, 1), or from t(k - p)
        under Knapp–Hartung; a fixed-effects model has none (metafor reports none), so those columns are
        absent.
        """
        level = self.level if level is None else check_level(level)
        if newmods is None:
            Xn = np.ones((1, 1)) if self.int_only else self.X
            index = ["pred"] if self.int_only else list(self.slab)
        else:
            if self.int_only:
                raise ValueError("cannot give new moderator values for a model without moderators")
            m = self.p - 1
            arr = np.asarray(newmods, dtype=float)
            if arr.ndim == 0:
                arr = arr.reshape(1, 1)
            elif arr.ndim == 1:
                arr = arr.reshape(-1, 1) if m == 1 else arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[1] != m:
                raise ValueError(f"newmods must have {m} column(s), one per moderator; got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError("newmods contains NaN or infinite values")
            Xn = np.column_stack([np.ones(arr.shape[0]), arr])
            index = list(range(arr.shape[0]))
        pred = Xn @ self.beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", Xn, self.vb, Xn))
        crit = self._crit(level)
        out = {"pred": pred, "se": se, "ci_lb": pred - crit * se, "ci_ub": pred + crit * se}
        if not self.is_fixed:
            half = crit * np.sqrt(se**2 + self.tau2)
            out["pi_lb"] = pred - half
            out["pi_ub"] = pred + half
        return pd.DataFrame(out, index=index)

    def blup(self, *, level: float | None = None) -> pd.DataFrame:
        """Best linear unbiased predictions of the study effects, as metafor's ``blup.rma.uni``.

        ``pred = l*yi + (1-l)*x'beta`` with ``l = tau²/(tau² + vi)``, variance ``l*vi + (1-l)² x' vb x``,
        interval ``pred ± crit*se`` (t(k - p) under Knapp–Hartung). One row per study, indexed by label.
        """
        level = self.level if level is None else check_level(level)
        li = self.tau2 / (self.tau2 + self.vi)
        fitted = self.X @ self.beta
        pred = li * self.yi + (1 - li) * fitted
        xvx = np.einsum("ij,jk,ik->i", self.X, self.vb, self.X)
        se = np.sqrt(li * self.vi + (1 - li) ** 2 * xvx)
        crit = self._crit(level)
        return pd.DataFrame(
            {"pred": pred, "se": se, "pi_lb": pred - crit * se, "pi_ub": pred + crit * se},
            index=pd.Index(list(self.slab), name="study"),
        )

    # -- output --------------------------------------------------------------------------------------
    def coef_table(self) -> pd.DataFrame:
        """Coefficient table (estimate, se, zval or tval, pval, ci_lb, ci_ub), one row per coefficient."""
        stat = "tval" if self.test == "knha" else "zval"
        return pd.DataFrame(
            {"estimate": self.beta, "se": self.se, stat: self.zval, "pval": self.pval,
             "ci_lb": self.ci_lb, "ci_ub": self.ci_ub},
            index=pd.Index(list(self.coef_names), name="coefficient"),
        )

    def to_dict(self) -> dict:
        """Plain-Python summary for JSON (floats, ints, str, None; no numpy types)."""
        coefs = {
            name: {"estimate": float(b), "se": float(s), "zval": float(z), "pval": float(pv),
                   "ci_lb": float(lo), "ci_ub": float(hi)}
            for name, b, s, z, pv, lo, hi in zip(
                self.coef_names, self.beta, self.se, self.zval, self.pval, self.ci_lb, self.ci_ub, strict=True)
        }
        out = {
            "model": "fixed" if self.is_fixed else ("random" if self.int_only else "mixed"),
            "method": self.method,
            "test": self.test,
            "level": float(self.level),
            "k": self.k,
            "p": self.p,
            "coefficients": coefs,
            "tau2": float(self.tau2),
            "tau": float(self.tau),
            "I2": float(self.I2),
            "H2": float(self.H2),
            "QE": float(self.QE),
            "QEdf": self.k - self.p,
            "QEp": float(self.QEp),
            "QM": float(self.QM),
            "QMdf": [int(self.QMdf[0]), None if self.QMdf[1] is None else int(self.QMdf[1])],
            "QMp": float(self.QMp),
            "ddf": None if self.ddf is None else int(self.ddf),
            "iterations": int(self.iterations),
        }
        if self.int_only:
            pr = self.predict().iloc[0]
            out["prediction"] = {
                "pred": float(pr["pred"]), "se": float(pr["se"]),
                "ci_lb": float(pr["ci_lb"]), "ci_ub": float(pr["ci_ub"]),
                "pi_lb": None if self.is_fixed else float(pr["pi_lb"]),
                "pi_ub": None if self.is_fixed else float(pr["pi_ub"]),
            }
        return out

    def __str__(self) -> str:
        lines: list[str] = []
        if self.is_fixed:
            title = "Fixed-Effects Model" if self.int_only else "Fixed-Effects with Moderators Model"
            lines.append(f"{title} (k = {self.k})")
        else:
            title = "Random-Effects Model" if self.int_only else "Mixed-Effects Model"
            lines.append(f"{title} (k = {self.k}; tau^2 estimator: {self.method})")
        lines.append("")
        if self.is_fixed:
            if self.int_only:
                lines.append(f"I^2 (total heterogeneity / total variability):  {self.I2:.2f}%")
                lines.append(f"H^2 (total variability / sampling variability): {self.H2:.2f}")
        else:
            if self.int_only:
                lines.append(f"tau^2 (estimated amount of total heterogeneity): {_fmt(self.tau2)}")
                lines.append(f"tau (square root of estimated tau^2 value):      {_fmt(self.tau)}")
                lines.append(f"I^2 (total heterogeneity / total variability):   {self.I2:.2f}%")
                lines.append(f"H^2 (total variability / sampling variability):  {self.H2:.2f}")
            else:
                lines.append(f"tau^2 (estimated amount of residual heterogeneity):     {_fmt(self.tau2)}")
                lines.append(f"tau (square root of estimated tau^2 value):             {_fmt(self.tau)}")
                lines.append(f"I^2 (residual heterogeneity / unaccounted variability): {self.I2:.2f}%")
                lines.append(f"H^2 (unaccounted variability / sampling variability):   {self.H2:.2f}")
        if len(lines) > 2:
            lines.append("")
        df = self.k - self.p
        if self.int_only:
            lines.append("Test for Heterogeneity:")
            lines.append(f"Q(df = {df}) = {_fmt(self.QE)}, p-val {_fmt_p(self.QEp)}")
        else:
            lines.append("Test for Residual Heterogeneity:")
            lines.append(f"QE(df = {df}) = {_fmt(self.QE)}, p-val {_fmt_p(self.QEp)}")
            lines.append("")
            coefs = "2" if self.p == 2 else f"2:{self.p}"
            lines.append(f"Test of Moderators (coefficient{'s' if self.p > 2 else ''} {coefs}):")
            if self.test == "knha":
                lines.append(f"F(df1 = {self.QMdf[0]}, df2 = {self.QMdf[1]}) = {_fmt(self.QM)}, "
                             f"p-val {_fmt_p(self.QMp)}")
            else:
                lines.append(f"QM(df = {self.QMdf[0]}) = {_fmt(self.QM)}, p-val {_fmt_p(self.QMp)}")
        lines.append("")
        lines.append("Model Results:")
        lines.append("")
        tab = self.coef_table()
        stat = tab.columns[2]
        cells = [["", "estimate", "se", stat] + (["df"] if self.test == "knha" else [])
                 + ["pval", "ci.lb", "ci.ub", ""]]
        for name, row in tab.iterrows():
            cells.append(
                [name, _fmt(row["estimate"]), _fmt(row["se"]), _fmt(row[stat])]
                + ([str(self.ddf)] if self.test == "knha" else [])
                + [_fmt_p(row["pval"], bare=True), _fmt(row["ci_lb"]), _fmt(row["ci_ub"]), _stars(row["pval"])]
            )
        if self.int_only:  # metafor prints no coefficient name for a model without moderators
            cells = [r[1:] for r in cells]
        widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
        for r in cells:
            text = "  ".join(c.ljust(w) if j == 0 and not self.int_only else c.rjust(w)
                             for j, (c, w) in enumerate(zip(r, widths, strict=True)))
            lines.append(text.rstrip())
        lines.append("")
        lines.append("---")
        lines.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        if not self.is_fixed and self.int_only:
            pr = self.predict().iloc[0]
            lines.append("")
            lines.append(f"Prediction interval ({self.level:.0%}): [{_fmt(pr['pi_lb'])}, {_fmt(pr['pi_ub'])}]")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class RegtestResult:
    """Egger's regression test for funnel-plot asymmetry (metafor ``regtest``, model="rma", predictor="sei").

    ``zval``/``pval`` test the coefficient of sei in the model refitted with sei as an extra moderator (a t
    statistic on ``ddf`` degrees of freedom under Knapp–Hartung). ``est``, ``ci_lb``, ``ci_ub`` are the
    limit estimate (the intercept: the effect as sei → 0), given for models without other moderators.
    """

    zval: float
    pval: float
    ddf: int | None
    est: float | None
    ci_lb: float | None
    ci_ub: float | None
    fit: RMAResult

    def to_dict(self) -> dict:
        """Plain-Python summary for JSON."""
        return {"model": "rma", "predictor": "sei", "method": self.fit.method, "test": self.fit.test,
                "zval": float(self.zval), "pval": float(self.pval), "ddf": self.ddf,
                "est": self.est, "ci_lb": self.ci_lb, "ci_ub": self.ci_ub}

    def __str__(self) -> str:
        stat = f"t = {_fmt(self.zval)}, df = {self.ddf}" if self.ddf is not None else f"z = {_fmt(self.zval)}"
        text = [
            "Regression Test for Funnel Plot Asymmetry",
            "",
            f"Model:     {'fixed-effects' if self.fit.is_fixed else 'mixed-effects'} meta-regression model",
            "Predictor: standard error",
            "",
            f"Test for Funnel Plot Asymmetry: {stat}, p = {_fmt_p(self.pval, bare=True)}",
        ]
        if self.est is not None:
            text.append(f"Limit Estimate (as sei -> 0):   b = {_fmt(self.est)} "
                        f"(CI: {_fmt(self.ci_lb)}, {_fmt(self.ci_ub)})")
        return "\n".join(text)


@dataclass(frozen=True, eq=False)
class FunnelData:
    """What a funnel plot draws (metafor ``funnel.rma`` with yaxis="sei"), for plotting elsewhere.

    ``points``: one row per study (``yi``, ``sei``). ``lines``: a grid of sei from 0 to 1.1·max(sei) with the
    pseudo confidence limits ``refline ± z_(1-α/2)·sqrt(sei² + tau²·addtau2)``.
    """

    points: pd.DataFrame
    lines: pd.DataFrame
    refline: float
    level: float
    addtau2: bool


# --------------------------------------------------------------------------------------------------------
# Formatting helpers


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def _fmt_p(p: float, *, bare: bool = False) -> str:
    if p < 1e-4:
        return "<.0001" if bare else "< .0001"
    return f"{p:.4f}" if bare else f"= {p:.4f}"


def _stars(p: float) -> str:
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""

