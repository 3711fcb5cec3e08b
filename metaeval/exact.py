"""``fit --engine exact``: the exact posterior of the one-level normal–normal model.

Model, per domain (the MCMC engine's model without bias terms, direction-only
findings or estimate-level residuals)::

    yi ~ Normal(theta_i, sei)      theta_i ~ Normal(mu, tau)
    mu ~ Normal(m0, s0) or flat    tau ~ any prior on tau > 0

As in bayesmeta (Röver 2020): given tau, mu is conjugate normal and is integrated
out analytically, so the posterior of tau is one-dimensional and is computed on a
grid; mu, the effect of a new study theta_new and the study effects theta_i are
then mixtures of normals over that grid. No sampling, no seed: same inputs, same
numbers, in milliseconds.

The tau grid. Work in z = log(tau) (z = logit of tau's position in (lower, upper)
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

Moments that do not exist are reported as null with a note: with a heavy-tailed
tau prior (halfcauchy, halfstudentt, an improper flat prior) and few studies the
posterior of tau decays like tau^-a with a = (prior tail exponent) + k (normal mu
prior) or + k - 1 (flat mu prior); E[tau] needs a > 2 and SD(tau) a > 3, and the
same holds for mu under a flat prior and for theta_new.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from metaeval.cells import finite, present
from metaeval.priors import Prior, parse_prior

#: Prior tail exponents of tau's density (p(tau) ~ tau^-e); absent: lighter than any power.
_TAIL_EXPONENT = {"halfcauchy": 2.0, "flat": 0.0}
#: Families accepted for tau (uniform only with lower >= 0; flat is the improper uniform on tau > 0).
_TAU_FAMILIES = ("halfnormal", "halfcauchy", "halfstudentt", "exponential", "lognormal", "uniform", "flat")

_H_T = 0.05  # step of the uniform grid in t (tests: halving it moves no summary by 1e-6 of its SD)
_DROP = 46.0  # a log-density this far below the maximum is negligible (e^-46 ~ 1e-20)
_REACH = 300.0  # how far (in z) the grid may go from the mode
_WEIGHT_FLOOR = 1e-14  # grid nodes lighter than this are left out of mixture CDFs (not of moments)
_X_STEP = 0.25  # x-grid step for mixture CDFs where the mass is, in narrowest-component SDs
_FULL_GRID_BUDGET = 20_000  # rows x nodes above which study-effect mixtures are compressed
_COMPRESS_TOL = 1e-8  # max CDF error allowed for a compressed study-effect mixture


# ---------------------------------------------------------------------------- the posterior


@dataclass(frozen=True, eq=False)
class ExactPosterior:
    """The posterior of one domain: tau on a grid, everything else conditional on it.

    ``tau``, ``weight`` are quadrature nodes and weights of the posterior of tau
    (``sum(weight * g(tau))`` is E[g(tau) | y] for smooth g, up to the analytic tail
    remainder added by the moment methods); ``density``, ``density_slope`` and ``cdf``
    are the posterior density of tau, its derivative and the CDF at the nodes;
    ``mu_mean``/``mu_var`` are the mean and variance of mu given tau and the data, and
    ``z`` the grid's working variable (log tau, or logit for a uniform prior).
    ``summary()`` gives the domain's entry of the summary JSON; ``cdf_of`` the CDF of
    any reported quantity (for checking other engines against this one).
    """

    yi: np.ndarray = field(repr=False)
    sei: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    tau_prior: Prior
    mu_prior: Prior
    hdi_prob: float
    beneficial: str
    mid: float | None
    tau: np.ndarray = field(repr=False)
    weight: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    density_slope: np.ndarray = field(repr=False)
    cdf: np.ndarray = field(repr=False)
    mu_mean: np.ndarray = field(repr=False)
    mu_var: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    tail_exponent: float  # the posterior of tau decays like tau^-tail_exponent (inf: faster)
    tail_density: float  # posterior density in z at the last node if the grid was cut short, else 0
    notes: tuple[str, ...]
    #: The unit everything above is in (yi, sei, the priors, mid, the tau grid): a power of two near the SEs, and 1
    #: for data of ordinary size. ``summary`` and ``cdf_of`` speak the data's own units.
    scale: float = 1.0

    # -- moments ---------------------------------------------------------------------------

    def _expect(self, values: np.ndarray, growth: float) -> np.ndarray:
        """E[values(tau)] over the tau posterior; ``values`` grows like tau^growth (last axis = grid)."""
        total = np.asarray(values, dtype=float) @ self.weight
        if self.tail_density > 0.0:  # analytic remainder of a power-law tail beyond the grid
            total = total + self.tail_density * np.asarray(values)[..., -1] / (self.tail_exponent - 1.0 - growth)
        return total

    def _exists(self, power: int) -> bool:
        """Whether E[tau^power] is finite."""
        return self.tail_exponent > power + 1.0

    def _mu_moment_exists(self, power: int) -> bool:
        # mu | tau has variance ~ tau^2 / k under a flat mu prior, bounded under a normal one
        return self.mu_prior.family == "normal" or self._exists(power)

    @property
    def k(self) -> int:
        return len(self.yi)

    def _theta_components(self, tau: np.ndarray, mu_mean: np.ndarray, mu_var: np.ndarray):
        """Mean and SD of each theta_i given each tau (rows: studies) and the shrinkage factors."""
        s2 = self.sei[:, None] ** 2
        shrink = s2 / (s2 + tau[None, :] ** 2)  # B_i(tau) = sei^2 / (sei^2 + tau^2)
        mean = shrink * mu_mean[None, :] + (1.0 - shrink) * self.yi[:, None]
        var = (1.0 - shrink) * s2 + shrink**2 * mu_var[None, :]
        return mean, np.sqrt(var), shrink

    # -- CDFs -------------------------------------------------------------------------------

    def cdf_of(self, name: str, x) -> np.ndarray:
        """Posterior CDF of ``"mu"``, ``"tau"``, ``"theta_new"`` or a study label at ``x``.

        For checking other engines against this one (e.g. quantiles of MCMC draws).
        """
        x = np.atleast_1d(np.asarray(x, dtype=float)) / self.scale
        if name == "tau":
            return _hermite_eval(self.tau, self.cdf, self.density, self.density_slope, x)
        if name == "mu":
            m, s = self.mu_mean, np.sqrt(self.mu_var)
        elif name == "theta_new":
            m, s = self.mu_mean, np.sqrt(self.mu_var + self.tau**2)
        elif name in self.labels:
            i = self.labels.index(name)
            mean, sd, _ = self._theta_components(self.tau, self.mu_mean, self.mu_var)
            m, s = mean[i], sd[i]
        else:
            raise ValueError(f"unknown quantity {name!r}: expected mu, tau, theta_new or a study label")
        return np.clip(self._expect(special.ndtr((x[:, None] - m[None, :]) / s[None, :]), 0.0), 0.0, 1.0)

    # -- the summary ------------------------------------------------------------------------

    def _beyond(self, m: np.ndarray, s: np.ndarray, threshold: float) -> float:
        """P(effect beyond ``threshold`` in the beneficial direction) for a normal mixture."""
        sign = 1.0 if self.beneficial == "increase" else -1.0
        return min(max(float(self._expect(special.ndtr(sign * (m - threshold) / s), 0.0)), 0.0), 1.0)

    def summary(self) -> dict:
        """One domain entry of the summary JSON, in the data's units (see :meth:`_unit_summary`)."""
        out = self._unit_summary()
        if self.scale == 1.0:
            return out
        c = self.scale
        for name in ("mu", "tau", "theta_new"):
            out[name] = _rescaled(out[name], c, ("mean", "sd", "hdi_low", "hdi_high"))
        out["projects"] = {label: _rescaled(entry, c, ("raw", "raw_se", "mean", "sd", "hdi_low", "hdi_high"))
                           for label, entry in out["projects"].items()}
        out["mid"] = _num(None if self.mid is None else self.mid * c)
        out["priors"] = {"mu": str(self.mu_prior.scaled(c)), "tau": str(self.tau_prior.scaled(c))}
        return out

    def _unit_summary(self) -> dict:
        """One domain entry of the summary JSON (plain floats; null where a value does not exist), in units of ``scale``.

        Intervals are the shortest intervals holding ``hdi_prob`` of the posterior mass:
        the HDI of a unimodal density, and what ArviZ's ``hdi`` computes from draws.
        They come from each mixture's CDF tabulated on a fine grid, not from samples:
        drawing enough samples would cost the milliseconds this engine exists to save.
        ``pooling`` is baggr's pooling factor averaged over the posterior of tau:
        E[sei^2 / (sei^2 + tau^2) | y], 0 = no pooling (the raw estimate), 1 = complete
        pooling (the domain mean).
        """
        p = self.hdi_prob
        sign = 1.0 if self.beneficial == "increase" else -1.0
        notes = list(self.notes)
        support_low = self.tau_prior.params[0] if self.tau_prior.family == "uniform" else 0.0

        # tau
        tau_mean = self._expect(self.tau, 1.0) if self._exists(1) else None
        tau_sd = math.sqrt(max(self._expect(self.tau**2, 2.0) - tau_mean**2, 0.0)) if self._exists(2) else None
        lo, hi = _shortest_interval(self.tau[None, :], self.cdf[None, :], self.density[None, :], self.density_slope[None, :], p)
        # an interval starting in the grid's first cell (where the density is negligible)
        # starts at the support's end: the density of tau is highest there
        tau_lo = support_low if lo[0] <= self.tau[1] else float(lo[0])
        tau_entry = _entry(tau_mean, tau_sd, tau_lo, hi[0], p)

        # mu and theta_new: normal mixtures over the tau grid
        mu_sd_k = np.sqrt(self.mu_var)
        new_sd_k = np.sqrt(self.mu_var + self.tau**2)
        mu_mean = self._expect(self.mu_mean, 0.0) if self._mu_moment_exists(1) else None
        mu_sd = None
        if self._mu_moment_exists(2):
            growth = 0.0 if self.mu_prior.family == "normal" else 2.0
            second = self._expect(self.mu_var + self.mu_mean**2, growth)
            mu_sd = math.sqrt(max(second - mu_mean**2, 0.0))
        new_mean = self._expect(self.mu_mean, 0.0) if self._exists(1) else None
        new_sd = None
        if self._exists(2):
            second = self._expect(self.mu_var + self.tau**2 + self.mu_mean**2, 2.0)
            new_sd = math.sqrt(max(second - new_mean**2, 0.0))

        # study effects: exact moments over the whole grid
        mean_ik, sd_ik, shrink = self._theta_components(self.tau, self.mu_mean, self.mu_var)
        th_mean = self._expect(mean_ik, 0.0)
        th_sd = np.sqrt(np.maximum(self._expect(sd_ik**2 + mean_ik**2, 0.0) - th_mean**2, 0.0))
        pooling = self._expect(shrink, 0.0)

        # intervals (one batch when the study effects use the full grid too)
        keep = self.weight > _WEIGHT_FLOOR
        m_rows = np.vstack([self.mu_mean, self.mu_mean])
        s_rows = np.vstack([mu_sd_k, new_sd_k])
        if self.k * int(keep.sum()) <= _FULL_GRID_BUDGET:
            lo, hi = _mixture_interval(np.vstack([m_rows, mean_ik]), np.vstack([s_rows, sd_ik]), self.weight, p)
            th_lo, th_hi = lo[2:], hi[2:]
        else:
            lo, hi = _mixture_interval(m_rows, s_rows, self.weight, p)
            th_lo, th_hi = self._compressed_intervals(mean_ik, sd_ik)
        mu_entry = _entry(mu_mean, mu_sd, lo[0], hi[0], p)
        mu_entry["p_beneficial"] = self._beyond(self.mu_mean, mu_sd_k, 0.0)
        mu_entry["p_mid"] = None if self.mid is None else self._beyond(self.mu_mean, mu_sd_k, sign * self.mid)
        new_entry = _entry(new_mean, new_sd, lo[1], hi[1], p)
        new_entry["p_beneficial"] = self._beyond(self.mu_mean, new_sd_k, 0.0)

        missing = [name for name, value in (("tau mean", tau_mean), ("tau sd", tau_sd), ("mu mean", mu_mean),
                                            ("mu sd", mu_sd), ("theta_new mean", new_mean), ("theta_new sd", new_sd))
                   if value is None]
        if missing:
            notes.append(
                f"{', '.join(missing)}: not finite (the posterior of tau has a tail like tau^-{self.tail_exponent:g}, "
                "from a heavy-tailed tau prior and few estimates), reported as null; the intervals and probabilities are exact"
            )

        columns = {
            key: [v if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]
            for key, values in (("raw", self.yi), ("raw_se", self.sei), ("mean", th_mean), ("sd", th_sd),
                                ("hdi_low", th_lo), ("hdi_high", th_hi), ("pooling", pooling))
        }
        projects = {label: {key: values[i] for key, values in columns.items()} for i, label in enumerate(self.labels)}
        return {
            "beneficial": self.beneficial,
            "mid": _num(self.mid),
            "n_estimates": self.k,
            "mu": mu_entry,
            "tau": tau_entry,
            "theta_new": new_entry,
            "projects": projects,
            "priors": {"mu": str(self.mu_prior), "tau": str(self.tau_prior)},
            "notes": notes,
        }

    def _compressed_intervals(self, mean_ik: np.ndarray, sd_ik: np.ndarray):
        """Shortest intervals of the study effects over an n-point Gauss rule instead of the grid.

        For many studies, where rows x grid nodes x x-points would cost too much: the rule is
        the n-point Gauss rule of the grid's discrete measure for z (Lanczos), with n raised
        (3, 4, 6, ... 48) until the compressed CDFs agree with the full grid to
        ``_COMPRESS_TOL`` at the mean and mean +- 2 SD of the 16 studies whose conditional
        distributions vary most with tau (else the full grid is used). Many studies make the
        posterior of tau sharp, so a handful of nodes suffices (6 for 1,000 studies).
        """
        p = self.hdi_prob
        keep = self.weight > _WEIGHT_FLOOR
        # the studies whose conditional mean moves most relative to their conditional SD
        m, s, w = mean_ik[:, keep], sd_ik[:, keep], self.weight[keep]
        spread = (m.max(1) - m.min(1)) / s.min(1) + s.max(1) / s.min(1)
        probe_rows = np.argsort(spread)[-16:]
        centre = m[probe_rows] @ w
        scale = np.sqrt(np.maximum((s[probe_rows] ** 2 + m[probe_rows] ** 2) @ w - centre**2, 0.0))
        probes = centre[:, None] + scale[:, None] * np.array([-2.0, 0.0, 2.0])[None, :]
        exact = _mixture_cdf(probes, m[probe_rows], s[probe_rows], w)
        z_keep = self.z[keep]
        for n in (3, 4, 6, 8, 12, 16, 24, 32, 48):
            nodes, node_w = _gauss_rule(z_keep, w / w.sum(), n)
            tau_n = _tau_from_z(nodes, self.tau_prior)
            mu_mean_n, mu_var_n, _ = _conditional(tau_n**2, self.yi, self.sei**2, self.mu_prior)
            mean_n, sd_n, _ = self._theta_components(tau_n, mu_mean_n, mu_var_n)
            approx = _mixture_cdf(probes, mean_n[probe_rows], sd_n[probe_rows], node_w) * w.sum()
            if np.max(np.abs(approx - exact)) <= _COMPRESS_TOL:
                return _mixture_interval(mean_n, sd_n, node_w, p)
        return _mixture_interval(m, s, w, p)


def _entry(mean, sd, lo, hi, p) -> dict:
    return {"mean": _num(mean), "sd": _num(sd), "hdi_low": _num(lo), "hdi_high": _num(hi), "hdi_prob": float(p)}


def _num(x) -> float | None:
    """A plain JSON float; None for a missing or non-finite value."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _rescaled(entry: dict, factor: float, keys: tuple[str, ...]) -> dict:
    """``entry`` with the values at ``keys`` (in units of ``scale``) multiplied by ``factor``."""
    return {k: (_num(v * factor) if k in keys and v is not None else v) for k, v in entry.items()}


# ---------------------------------------------------------------------------- the public API


def exact_posterior(
    yi,
    sei,
    *,
    tau_prior: Prior,
    mu_prior: Prior | None = None,
    hdi_prob: float = 0.95,
    beneficial: str = "increase",
    mid: float | None = None,
    labels: Sequence[str] | None = None,
) -> ExactPosterior:
    """The exact posterior of the normal–normal model for estimates ``yi`` with SEs ``sei``.

    ``mu_prior``: ``normal(m0, s0)``, or None / ``flat()`` for a flat prior. ``tau_prior``: a
    prior on tau > 0 (``flat()`` is the improper uniform on tau > 0, as bayesmeta's
    default). ``beneficial`` ("increase" | "decrease") and ``mid`` (> 0, in the metric's
    units) set the direction of ``p_beneficial`` and ``p_mid``. Raises ValueError for bad
    input and for an improper posterior (a flat tau prior needs k >= 3 estimates under a
    flat mu prior and k >= 2 under a normal one).
    """
    y = np.asarray(yi, dtype=float).ravel()
    s = np.asarray(sei, dtype=float).ravel()
    if y.size == 0:
        raise ValueError("no estimates: the exact engine needs at least one (yi, sei) pair")
    if y.shape != s.shape:
        raise ValueError(f"yi and sei differ in length ({y.size} and {s.size})")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"yi must be finite; not at position(s) {_positions(~np.isfinite(y))}")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"sei must be finite and positive; not at position(s) {_positions(~(np.isfinite(s) & (s > 0)))}")
    if not 0.0 < hdi_prob < 1.0:
        raise ValueError(f"hdi_prob must be between 0 and 1, got {hdi_prob}")
    if beneficial not in ("increase", "decrease"):
        raise ValueError(f"beneficial must be 'increase' or 'decrease', got {beneficial!r}")
    if mid is not None and not (math.isfinite(mid) and mid > 0):
        raise ValueError(f"mid must be a positive number (or None), got {mid}")
    labels = tuple(str(i + 1) for i in range(y.size)) if labels is None else tuple(str(x) for x in labels)
    if len(labels) != y.size or len(set(labels)) != y.size:
        raise ValueError("labels must be unique, one per estimate")
    mu_prior = Prior("flat", ()) if mu_prior is None else mu_prior
    _check_priors(tau_prior, mu_prior)
    check_scales(y, s, tau_prior, mu_prior, mid, labels)
    scale = _unit(s)
    if scale != 1.0:  # solved in units near the SEs (exact: a power of two), reported in the data's units
        y, s, tau_prior, mu_prior = y / scale, s / scale, tau_prior.scaled(1 / scale), mu_prior.scaled(1 / scale)
        mid = None if mid is None else mid / scale

    k = y.size
    tail = _TAIL_EXPONENT.get(tau_prior.family, math.inf)
    if tau_prior.family == "halfstudentt":
        tail = tau_prior.params[0] + 1.0
    tail += k if mu_prior.family == "normal" else k - 1
    if tail <= 1.0:
        raise ValueError(
            f"improper posterior: a flat tau prior with {k} estimate(s) and a "
            f"{'normal' if mu_prior.family == 'normal' else 'flat'} mu prior does not integrate "
            f"(it needs at least {2 if mu_prior.family == 'normal' else 3} estimates); use a proper tau prior such as halfnormal(...)"
        )

    grid = _tau_grid(y, s, tau_prior, mu_prior, tail)
    notes = []
    if k == 1:
        notes.append(
            "one estimate: the data say nothing about tau, so its posterior is its prior"
            + (" (exactly so under the flat mu prior)" if mu_prior.family == "flat" else
               " (up to the little the informative mu prior adds)")
            + "; the study effect is not shrunk by data from other studies"
        )
    return ExactPosterior(
        yi=y, sei=s, labels=labels, tau_prior=tau_prior, mu_prior=mu_prior, hdi_prob=float(hdi_prob),
        beneficial=beneficial, mid=None if mid is None else float(mid), notes=tuple(notes),
        tail_exponent=tail, scale=scale, **grid,
    )


def fit_exact(
    evidence,
    *,
    priors: Mapping[str, Prior],
    hdi_prob: float = 0.95,
    overrides: Mapping[str, Prior] | None = None,
):
    """The :class:`~metaeval.result.Result` (engine "exact") of the one-level model for every domain of
    the harmonised evidence: the table (:func:`metaeval.load_evidence`) or its rows
    (:func:`metaeval.harmonise.evidence_records`).

    Priors, as in the MCMC engine's model spec: ``priors["mu"]`` and ``priors["tau"]`` are in
    units of each domain's ``domain_scale`` (the model TOML's convention) and are multiplied
    by it (``Prior.scaled``); ``overrides`` (keys ``mu``, ``tau``, ``mu.<domain>``,
    ``tau.<domain>``; a ``--prior`` on the command line) are absolute and used as given, the
    per-domain key first. A missing mu prior is flat. Other keys (omega, se, bias.*) have no
    counterpart in this model and are ignored.

    Rows used: ``poolable`` and finite ``yi`` and ``sei``, except an outcome whose beneficial direction the
    curator inferred (``benefit_basis: curator``), left out as the default model leaves it out. Every other
    row is an exclusion with its reason (direction-only findings: the exact engine has no censored likelihood). A
    project effect is of one estimate (``estimate_id`` set) where a project has several in a
    domain: the one-level model then treats them as independent studies, and a note says so.
    """
    from metaeval.harmonise import evidence_digest
    from metaeval.result import BiasModel, DirectionOnly, ModelRecord, Provenance, Result
    from metaeval.sampling import package_versions

    overrides = dict(overrides or {})
    domains, exclusions = _exact_domains(evidence, priors, hdi_prob, overrides)
    model = ModelRecord(
        name="one_level",
        description=("one-level normal-normal random-effects model per domain (no design-bias terms, no estimate-level "
                     "residual, direction-only findings left out); tau on a grid, mu integrated analytically"),
        source=None, units="priors in units of each domain's scale; overrides (--prior) are absolute",
        priors={k: str(v) for k, v in sorted(priors.items()) if k in ("mu", "tau")},
        bias=BiasModel(mode="none"), direction_only=DirectionOnly(mode="exclude"), effects="latent", designs=(),
        target_accept=None, hdi_prob=float(hdi_prob),
        overrides={k: str(v) for k, v in sorted(overrides.items()) if k.partition(".")[0] in ("mu", "tau")},
        inferred_benefit="exclude" if any(present(r.get("benefit_basis")) for r in _rows(evidence)) else None,
    )
    return Result(engine="exact", domains=domains, exclusions=exclusions, diagnostics=None, model=model, seed=None,
                  provenance=Provenance(versions=package_versions(), evidence_sha256=evidence_digest(evidence),
                                        model_sha256=None, seed=None))


def _rows(evidence):
    return evidence.to_dict("records") if hasattr(evidence, "to_dict") else evidence


def _exact_domains(evidence, priors: Mapping[str, Prior], hdi_prob: float, overrides: dict):
    """The domain results and exclusions of :func:`fit_exact`."""
    rows = _rows(evidence)
    if not isinstance(rows, Sequence) or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("evidence must be a DataFrame (metaeval.load_evidence) or a list of row dicts "
                         "(metaeval.harmonise.evidence_records)")
    if len(rows) == 0:
        raise ValueError("the evidence table is empty")
    missing = [c for c in ("domain", "yi", "sei", "poolable") if any(c not in r for r in rows)]
    if missing:
        raise ValueError(f"the evidence table lacks column(s) {', '.join(missing)}")
    if "tau" not in priors and not any(key.partition(".")[0] == "tau" for key in overrides):
        raise ValueError("fit_exact needs a tau prior (priors['tau'])")

    estimate_ids = [str(r["estimate_id"]) if "estimate_id" in r else str(i + 1) for i, r in enumerate(rows)]
    project_ids = [str(r["project_id"]) if present(r.get("project_id")) else estimate_ids[i] for i, r in enumerate(rows)]
    yi = np.array([_float(r["yi"]) for r in rows])
    sei = np.array([_float(r["sei"]) for r in rows])
    poolable = [_truthy(r["poolable"]) for r in rows]
    direction_only = [_truthy(r.get("direction_only")) for r in rows]
    reasons = [r.get("exclusion_reason") for r in rows]
    inferred = [present(r.get("benefit_basis")) and str(r["benefit_basis"]) == "curator" for r in rows]
    designs = [str(r["design"]) if present(r.get("design")) else "unspecified" for r in rows]
    domains = [str(r["domain"]) for r in rows]
    n = len(rows)

    from metaeval.certainty import prior_influence
    from metaeval.model import INFERRED_BENEFIT
    from metaeval.result import DomainResult, Exclusion, Posterior, ProjectEffect

    out_domains: dict[str, DomainResult] = {}
    exclusions: list[Exclusion] = []
    for domain in sorted(dict.fromkeys(domains)):
        members = [i for i in range(n) if domains[i] == domain]
        meta = _domain_meta([rows[i] for i in members], domain)
        used = []
        for i in members:
            if inferred[i] and poolable[i]:
                exclusions.append(Exclusion(estimate_id=estimate_ids[i], project=project_ids[i], domain=domain, design=designs[i],
                                            reason=f"{INFERRED_BENEFIT}; the one-level model leaves such outcomes out", stage="model"))
                continue
            if poolable[i] and math.isfinite(yi[i]) and math.isfinite(sei[i]):
                if sei[i] <= 0:
                    raise ValueError(f"estimate {estimate_ids[i]!r} (domain {domain!r}): sei must be positive, got {sei[i]:g}")
                used.append(i)
                continue
            if direction_only[i]:
                why, stage = "direction and significance only: the exact engine has no censored likelihood for it", "engine"
            elif not poolable[i]:
                why, stage = (str(reasons[i]) if present(reasons[i]) and str(reasons[i]).strip() else "not poolable"), "evidence"
            else:
                why, stage = "yi or sei missing", "evidence"
            exclusions.append(Exclusion(estimate_id=estimate_ids[i], project=project_ids[i], domain=domain, design=designs[i],
                                        reason=why, stage=stage))
        if not used:
            continue  # as in the MCMC engine, a domain enters the result only with something to pool
        mu_prior, _ = _resolve_prior("mu", domain, priors, overrides, meta["scale"])
        tau_prior, _ = _resolve_prior("tau", domain, priors, overrides, meta["scale"])
        projects_in = list(dict.fromkeys(project_ids[i] for i in used))
        design_counts: dict[str, int] = {}
        for i in used:
            design_counts[designs[i]] = design_counts.get(designs[i], 0) + 1
        by_project = len(projects_in) == len(used)
        notes: list[str] = []
        if not by_project:
            notes.append(
                f"{len(used)} estimates from {len(projects_in)} project(s): the exact engine's one-level model treats "
                "them as independent studies (the MCMC model nests estimates in projects); keyed by estimate"
            )
        try:
            post = exact_posterior(
                yi[used], sei[used], tau_prior=tau_prior, mu_prior=mu_prior, hdi_prob=hdi_prob,
                beneficial=meta["beneficial"], mid=meta["mid"], labels=[estimate_ids[i] for i in used],
            )
        except ValueError as err:
            raise ValueError(f"domain {domain!r}: {err}") from None
        summary = post.summary()
        projects = tuple(sorted((ProjectEffect(project=project_ids[i], estimate_id=None if by_project else estimate_ids[i],
                                               design=designs[i], **summary["projects"][estimate_ids[i]]) for i in used),
                                key=lambda e: e.key))
        mu, tau = Posterior(**summary["mu"]), Posterior(**summary["tau"])
        domain_priors = {"mu": str(mu_prior), "tau": str(tau_prior)}
        out_domains[domain] = DomainResult(
            id=domain, label=meta["label"], metric=meta["metric"], beneficial=meta["beneficial"], mid=meta["mid"],
            scale=meta["scale"], assumed=meta["assumed"], n_projects=len(projects_in), n_estimates=len(used),
            designs=dict(sorted(design_counts.items())), mu=mu, tau=tau, theta_new=Posterior(**summary["theta_new"]),
            projects=projects, pairwise={}, priors=domain_priors, prior_influence=prior_influence(mu, tau, domain_priors),
            notes=tuple(summary["notes"] + notes),
        )
    return out_domains, tuple(exclusions)


def not_exact(layout, spec) -> str | None:
    """Why this engine cannot compute the model ``spec`` makes of this evidence (``layout``, from
    :func:`metaeval.model.prepare`), or None when it computes that very model: one estimate per
    project and domain, no design-bias terms, no direction-only findings, equal weights, a normal
    or flat mu prior and a tau prior on tau > 0."""
    if layout.bias_terms:
        return "the model has design-bias terms"
    if layout.findings:
        return "the model has direction-only findings"
    if layout.omega_domains:
        return "a project has several estimates in a domain"
    if any(e["weight"] != 1.0 for e in layout.estimates):
        return "the model down-weights designs"
    for param in ("mu", "tau"):
        for text in layout.priors.get(param, {}).values():
            prior = parse_prior(text)
            if (param == "mu" and prior.family not in ("normal", "flat")) or (param == "tau" and prior.family not in _TAU_FAMILIES):
                return f"the {param} prior {prior} has no exact treatment here"
    return None


# ---------------------------------------------------------------------------- fit_exact helpers


def _float(x) -> float:
    """A cell as a float; NaN when it is missing or not a number."""
    value = finite(x)
    return math.nan if value is None else value


def _truthy(x) -> bool:
    return bool(x) if present(x) else False


def _domain_meta(rows: list[Mapping], domain: str) -> dict:
    """The domain's label, metric, direction, MID and scale, which every row of it must agree on."""

    def one(column, default):
        values = {r[column] for r in rows if present(r.get(column))}
        if len(values) > 1:
            raise ValueError(f"domain {domain!r}: rows disagree on {column} ({', '.join(sorted(map(str, values)))})")
        return values.pop() if values else default

    beneficial = str(one("domain_beneficial", "increase"))
    if beneficial not in ("increase", "decrease"):
        raise ValueError(f"domain {domain!r}: domain_beneficial must be 'increase' or 'decrease', got {beneficial!r}")
    mid = one("domain_mid", None)
    mid = float(mid) if mid is not None and math.isfinite(float(mid)) and float(mid) > 0 else None
    scale = float(one("domain_scale", 1.0))
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"domain {domain!r}: domain_scale must be positive, got {scale}")
    assumed = next((r["domain_assumed"] for r in rows if isinstance(r.get("domain_assumed"), dict)), {})
    return {
        "label": str(one("domain_label", domain)), "metric": _str_or_none(one("domain_metric", None)),
        "beneficial": beneficial, "mid": mid, "scale": scale, "assumed": {str(k): str(v) for k, v in assumed.items()},
    }


def _str_or_none(x):
    return None if x is None else str(x)


def _resolve_prior(param: str, domain: str, priors: Mapping[str, Prior], overrides: Mapping[str, Prior], scale: float):
    """The prior of ``param`` in ``domain`` and its units: an override as given, else the spec's prior scaled."""
    for key in (f"{param}.{domain}", param):
        if key in overrides:
            return overrides[key], "absolute"
    if param in priors:
        return priors[param].scaled(scale), f"x domain_scale ({scale:g})"
    if param == "mu":
        return Prior("flat", ()), "flat"
    raise ValueError(f"domain {domain!r}: no tau prior (give priors['tau'] or an override tau / tau.{domain})")


# ---------------------------------------------------------------------------- the tau grid


def _check_priors(tau_prior: Prior, mu_prior: Prior) -> None:
    if mu_prior.family not in ("normal", "flat"):
        raise ValueError(f"the exact engine needs a normal or flat mu prior (conjugate given tau), got {mu_prior}")
    if tau_prior.family not in _TAU_FAMILIES or (tau_prior.family == "uniform" and tau_prior.params[0] < 0):
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


def _unit(s: np.ndarray) -> float:
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


def _prior_scales(prior: Prior) -> list[float]:
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


def _tau_from_z(z: np.ndarray, prior: Prior) -> np.ndarray:
    if prior.family == "uniform":
        lower, upper = prior.params
        return lower + (upper - lower) * special.expit(z)
    return np.exp(z)


def _log_dtau_dz(z: np.ndarray, prior: Prior) -> np.ndarray:
    if prior.family == "uniform":
        lower, upper = prior.params
        return math.log(upper - lower) + special.log_expit(z) + special.log_expit(-z)
    return z


def _conditional(tau2: np.ndarray, y: np.ndarray, s2: np.ndarray, mu_prior: Prior):
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


def _scan_mode(log_post_z, z_scan: np.ndarray, *, widen: bool = True):
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


def _tau_grid(y: np.ndarray, s: np.ndarray, tau_prior: Prior, mu_prior: Prior, tail: float) -> dict:
    s2 = s * s
    uniform = tau_prior.family == "uniform"

    def log_post_z(z):
        """Unnormalised log posterior density of z."""
        tau = _tau_from_z(z, tau_prior)
        out = _conditional(tau * tau, y, s2, mu_prior)[2] + tau_prior.logpdf(tau) + _log_dtau_dz(z, tau_prior)
        return np.where(np.isfinite(out), out, -np.inf)

    # 1-2. scan a wide range of z in steps of 0.5 (widened while the maximum sits on an edge), zoom in on the mode
    scales = [x for x in (s.min(), s.max(), np.ptp(y), *_prior_scales(tau_prior)) if x > 0 and math.isfinite(x)]
    if uniform:
        width = tau_prior.params[1] - tau_prior.params[0]
        z_lo, z_hi = min(-15.0, math.log(min(scales) / width) - 15.0), 45.0
    else:
        z_lo, z_hi = math.log(min(scales)) - 15.0, math.log(max(scales)) + 15.0
    centre, spread, z_scan, lp_scan = _scan_mode(log_post_z, np.arange(z_lo, z_hi + 0.25, 0.5), widen=not uniform)

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
    log_tau = np.log(_tau_from_z(z_all, tau_prior))
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
    tau = _tau_from_z(z, tau_prior)
    mu_mean, mu_var, loglik = _conditional(tau * tau, y, s2, mu_prior)
    log_z = loglik + tau_prior.logpdf(tau) + _log_dtau_dz(z, tau_prior)  # log density in z
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
    dtau_dt = np.exp(_log_dtau_dz(z, tau_prior)) * spread * np.cosh(t)
    density = g / total / dtau_dt
    slope = np.gradient(density, h, edge_order=2)
    slope[2:-2] = (density[:-4] - 8.0 * density[1:-3] + 8.0 * density[3:-1] - density[4:]) / (12.0 * h)
    slope /= dtau_dt  # d density / d tau
    return {
        "tau": tau, "weight": weight, "density": density, "density_slope": slope, "cdf": cdf, "mu_mean": mu_mean, "mu_var": mu_var,
        "z": z, "tail_density": tail_density,
    }


# ---------------------------------------------------------------------------- mixtures and intervals


def _gauss_rule(z: np.ndarray, w: np.ndarray, n: int):
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


def _mixture_cdf(x: np.ndarray, m: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
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


def _mixture_interval(m: np.ndarray, s: np.ndarray, w: np.ndarray, p: float):
    """Shortest intervals holding mass p of per-row normal mixtures (rows x components, weights w)."""
    keep = w > _WEIGHT_FLOOR
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
    return _shortest_interval(x, F, f, df, p)


def _hermite_eval(x: np.ndarray, F: np.ndarray, f: np.ndarray, df: np.ndarray, xq: np.ndarray) -> np.ndarray:
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


def _shortest_interval(x: np.ndarray, F: np.ndarray, f: np.ndarray, df: np.ndarray, p: float):
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


def _positions(mask: np.ndarray) -> str:
    return ", ".join(str(i) for i in np.flatnonzero(mask)[:10])
