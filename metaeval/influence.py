"""How much each project moves its domain's pooled result: leave-it-out shifts without refitting.

For project p in domain d, the posterior without p's data is the posterior reweighted by
``1 / p(y_p | φ)`` (Gelfand's identity, as in leave-one-group-out cross-validation), where φ
are the domain's parameters (mu, tau, omega, the direction-only findings' SEs, a hierarchical
bias level) and p's own effect and design bias are integrated out, so the weights do not
collapse onto the few draws whose θ_p happens to fit p's data. With u = θ_p + bias_p ~ Normal(mu
+ m_b, sqrt(tau² + s_b²)) (the bias term's prior mean and SD; 0 without one) and p's estimates
``Normal(y; u, sqrt(se² / weight + ω²))``, the estimates integrate in closed form
(``metaeval.model.collapse``, as the marginal model does); a direction-only finding, whose
censored likelihood (the model's) is a difference of normal CDFs, in closed form too, and
several findings by Gauss–Hermite quadrature over u's conditional distribution given the
estimates. A project whose estimates in a domain carry
several bias terms (several weak designs) is reweighted by its likelihood given the drawn θ_p
and biases instead, and says so. The weighted draws of ``mu`` give the pooled mean without p,
its shift and P(beneficial).

The Kish effective sample size of the weights is reported, and a shift resting on fewer than
:data:`ESS_RELIABLE` draws is marked unreliable; ``metaeval sensitivity`` refits without each
project instead.
"""

from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from metaeval.result import Frozen

#: A leave-it-out shift whose weights have fewer effective draws than this is marked unreliable.
ESS_RELIABLE = 100
#: Gauss–Hermite nodes for integrating several direction-only findings over a project's effect: the log-likelihood
#: within 4e-6 of exact while a finding's SE is at least a quarter of the effect's spread (measured against the
#: one-finding closed form; 40 nodes: 6e-3), typical of the bundled fit (about a half).
_GH_NODES = 100


#: A Shift's note where the project is alone in its domain.
ONLY_PROJECT = "the only project in this domain: without it nothing is left to pool"
#: A Shift's note where the draws have no SEs for the project's direction-only findings (the exact engine's draws).
SE_NOT_DRAWN = ("its direction-only findings' SEs are integrated out by the exact engine, not drawn, so its data cannot be "
                "reweighted away; `metaeval sensitivity --engine exact` leaves it out exactly")


class Shift(Frozen):
    """A domain's pooled mean with and without one project's data."""

    domain: str
    project: str
    mu_without: float | None
    shift: float | None = Field(description="mu without the project minus mu with it, in the domain's metric")
    shift_in_sd: float | None = Field(description="the shift in units of mu's posterior SD")
    p_beneficial_without: float | None
    ess: float | None = Field(description="effective number of draws behind the estimate (importance weights)")
    reliable: bool
    note: str


def project_loglik(posterior) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], str]]:
    """Per (domain, project): log p(the project's data in the domain | the domain's parameters), (chain, draw),
    the project's effect and bias integrated out (see the module docstring); and the cells where they
    could not be, with how their weights were made instead."""
    from metaeval.model import LOG_2PI, Layout, collapse, segsum_np

    layout = Layout.from_dict(json.loads(posterior.attrs["metaeval_layout"]))
    post = posterior["posterior"].to_dataset()
    get = lambda name, dim, key: post[name].sel({dim: key}).transpose("chain", "draw").values  # noqa: E731
    cells: dict[tuple[str, str], dict] = {}
    for kind, rows in (("estimates", layout.estimates), ("findings", layout.findings)):
        for f, row in enumerate(rows):
            cell = cells.setdefault((row["domain"], row["project"]), {"estimates": [], "findings": [], "terms": set(), "index": row["project_index"]})
            cell[kind].append((f, row))
            if row["bias_index"] >= 0:
                cell["terms"].add(row["bias_index"])
    out, fallback = {}, {}
    for (d, project), cell in cells.items():
        if cell["findings"] and "se_finding" not in post:  # the exact engine's draws: leave_out says why there is no shift
            continue
        mu, tau = get("mu", "domain", d), get("tau", "domain", d)
        rows = [r for _, r in cell["estimates"]] + [r for _, r in cell["findings"]]
        omega = get("omega", "omega_domain", d) if any(r["replicate_index"] >= 0 for r in rows) and "omega" in post else 0.0
        if len(cell["terms"]) > 1:
            out[(d, project)] = _conditional_loglik(post, layout, cell, omega)
            fallback[(d, project)] = "several bias terms: weights from the likelihood given the drawn effect and biases"
            continue
        m_b, s_b = _bias_prior(post, layout, next(iter(cell["terms"]))) if cell["terms"] else (0.0, 0.0)
        centre, var = mu + m_b, tau**2 + np.square(s_b)
        total = np.zeros(mu.shape)
        if cell["estimates"]:
            y = np.array([r["yi"] for _, r in cell["estimates"]])
            v = np.stack(np.broadcast_arrays(*[r["sei"] ** 2 / r["weight"] + (np.square(omega) if r["replicate_index"] >= 0 else 0.0)
                                               for _, r in cell["estimates"]]), axis=-1)
            precision, ybar, l_rows = collapse(y, v, np.zeros(len(y), dtype=int), 1, segsum_np, np.log)
            precision, ybar = precision[..., 0], ybar[..., 0]
            total += l_rows.sum(axis=-1) + 0.5 * (LOG_2PI - np.log(precision))
            total += -0.5 * (LOG_2PI + np.log(1 / precision + var) + (ybar - centre) ** 2 / (1 / precision + var))
            # u given the estimates, for the findings below
            var_u = 1 / (precision + 1 / var)
            centre, var = var_u * (precision * ybar + centre / var), var_u
        if len(cell["findings"]) == 1:  # closed form: z ~ N(u / s, spread²) with u ~ N(centre, var)
            f, row = cell["findings"][0]
            s, spread = _finding_scale(post, f, row, omega)
            sd = np.sqrt(spread**2 + var / s**2)
            total += _log_ndtr_diff((row["z_low"] - centre / s) / sd, (row["z_high"] - centre / s) / sd)
        elif cell["findings"]:
            nodes, weights = np.polynomial.hermite.hermgauss(_GH_NODES)
            u = centre[..., None] + np.sqrt(2 * var)[..., None] * nodes
            log_p = np.zeros(u.shape)
            for f, row in cell["findings"]:
                log_p += _finding_loglik(post, f, row, u, omega)
            peak = log_p.max(axis=-1, keepdims=True)
            total += peak[..., 0] + np.log(np.exp(log_p - peak) @ (weights / np.sqrt(np.pi)))
        out[(d, project)] = total
    return out, fallback


def _bias_prior(post, layout, term: int):
    """The prior mean and SD of a bias term in its domain's metric (per draw under a hierarchical bias model)."""
    t = layout.bias_terms[term]
    if "mean" in t:  # additive: fixed, already in the metric and signed by sign below
        return t["sign"] * t["mean"], t["sd"]
    delta = post["bias_design"].sel(design=t["design"]).transpose("chain", "draw").values
    sd = post["bias_project_sd"].transpose("chain", "draw").values
    return t["sign"] * t["scale"] * delta, t["scale"] * sd


def _finding_scale(post, f: int, row: dict, omega) -> tuple[np.ndarray, np.ndarray]:
    """A direction-only finding's SE s and the SD of its z-statistic around effect / s, (chain, draw): the model's
    ``z ~ N(effect / s, 1 + omega² / s²)``."""
    s = post["se_finding"].isel(finding=f).transpose("chain", "draw").values / np.sqrt(row["weight"])
    extra = np.square(omega) if row["replicate_index"] >= 0 else 0.0
    return s, np.sqrt(1 + extra / s**2)


def _finding_loglik(post, f: int, row: dict, effect, omega) -> np.ndarray:
    """The model's censored likelihood of direction-only finding ``f`` given the effect it measures (any shape
    broadcasting against (chain, draw) with trailing axes)."""
    s, spread = _finding_scale(post, f, row, omega)
    expand = (...,) + (None,) * (np.ndim(effect) - 2)
    x = effect / s[expand]
    return _log_ndtr_diff((row["z_low"] - x) / spread[expand], (row["z_high"] - x) / spread[expand])


def _log_ndtr_diff(a, b):
    """log(Φ(b) − Φ(a)) for a < b, accurate in both tails (in the upper tail as log(Φ(−a) − Φ(−b)))."""
    from scipy.special import log_ndtr

    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    top, bottom = log_ndtr(hi), log_ndtr(lo)
    with np.errstate(divide="ignore"):
        return top + np.log1p(-np.exp(np.minimum(bottom - top, 0.0)))


def _conditional_loglik(post, layout, cell: dict, omega) -> np.ndarray:
    """log p(a cell's data | its drawn effect and biases): the fallback for cells with several bias terms."""
    theta = post["theta_project"].isel(project=cell["index"]).transpose("chain", "draw").values
    bias = post["bias"].transpose("chain", "draw", "bias_term").values if "bias" in post else None
    effect = lambda r: theta + (bias[..., r["bias_index"]] if r["bias_index"] >= 0 and bias is not None else 0.0)  # noqa: E731
    total = np.zeros(theta.shape)
    for _, r in cell["estimates"]:
        var = r["sei"] ** 2 / r["weight"] + (np.square(omega) if r["replicate_index"] >= 0 else 0.0)
        total += -0.5 * (np.log(2 * np.pi * var) + (r["yi"] - effect(r)) ** 2 / var)
    for f, r in cell["findings"]:
        total += _finding_loglik(post, f, r, effect(r), omega)
    return total


def leave_out(posterior) -> dict[str, dict[str, Shift]]:
    """Per domain and project: the pooled mean without the project's data (see the module docstring)."""
    from metaeval.draws import domain_draws
    from metaeval.result import round_significant

    draws = domain_draws(posterior)
    loglik, fallback = project_loglik(posterior)
    out: dict[str, dict[str, Shift]] = {}
    for d, dd in draws.items():
        mu = dd.mu.ravel()
        sd = float(mu.std(ddof=1))
        for p in dd.projects:
            if len(dd.projects) == 1 or (d, p) not in loglik:
                shift = Shift(domain=d, project=p, mu_without=None, shift=None, shift_in_sd=None, p_beneficial_without=None, ess=None,
                              reliable=False, note=ONLY_PROJECT if len(dd.projects) == 1 else SE_NOT_DRAWN)
            else:
                log_w = -loglik[(d, p)].ravel()
                w = np.exp(log_w - log_w.max())
                w /= w.sum()
                ess = float(1.0 / np.sum(w**2))
                without = float(w @ mu)
                reliable = ess >= ESS_RELIABLE
                note = "importance-sampling estimate (no refit)" + (f"; {fallback[(d, p)]}" if (d, p) in fallback else "")
                if not reliable:
                    note = f"unreliable: only {ess:.0f} effective draws; `metaeval sensitivity` refits without the project"
                shift = Shift(domain=d, project=p, mu_without=round_significant(without), shift=round_significant(without - mu.mean()),
                              shift_in_sd=round_significant((without - mu.mean()) / sd) if sd > 0 else None,
                              p_beneficial_without=round_significant(w @ (dd.sign * mu > 0)), ess=round_significant(ess), reliable=reliable, note=note)
            out.setdefault(d, {})[p] = shift
    return out
