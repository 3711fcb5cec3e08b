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

The tau grid, and the priors and scales it integrates accurately: :mod:`metaeval.tau_grid`;
the mixtures' shortest intervals: :mod:`metaeval.mixtures`.

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
from metaeval.mixtures import WEIGHT_FLOOR, gauss_rule, hermite_eval, mixture_cdf, mixture_interval, shortest_interval
from metaeval.priors import Prior
from metaeval.tau_grid import (
    TAIL_EXPONENT,
    check_priors,
    check_scales,
    conditional,
    tau_from_z,
    tau_grid,
    working_unit,
)

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
            return hermite_eval(self.tau, self.cdf, self.density, self.density_slope, x)
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
        lo, hi = shortest_interval(self.tau[None, :], self.cdf[None, :], self.density[None, :], self.density_slope[None, :], p)
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
        keep = self.weight > WEIGHT_FLOOR
        m_rows = np.vstack([self.mu_mean, self.mu_mean])
        s_rows = np.vstack([mu_sd_k, new_sd_k])
        if self.k * int(keep.sum()) <= _FULL_GRID_BUDGET:
            lo, hi = mixture_interval(np.vstack([m_rows, mean_ik]), np.vstack([s_rows, sd_ik]), self.weight, p)
            th_lo, th_hi = lo[2:], hi[2:]
        else:
            lo, hi = mixture_interval(m_rows, s_rows, self.weight, p)
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
        keep = self.weight > WEIGHT_FLOOR
        # the studies whose conditional mean moves most relative to their conditional SD
        m, s, w = mean_ik[:, keep], sd_ik[:, keep], self.weight[keep]
        spread = (m.max(1) - m.min(1)) / s.min(1) + s.max(1) / s.min(1)
        probe_rows = np.argsort(spread)[-16:]
        centre = m[probe_rows] @ w
        scale = np.sqrt(np.maximum((s[probe_rows] ** 2 + m[probe_rows] ** 2) @ w - centre**2, 0.0))
        probes = centre[:, None] + scale[:, None] * np.array([-2.0, 0.0, 2.0])[None, :]
        exact = mixture_cdf(probes, m[probe_rows], s[probe_rows], w)
        z_keep = self.z[keep]
        for n in (3, 4, 6, 8, 12, 16, 24, 32, 48):
            nodes, node_w = gauss_rule(z_keep, w / w.sum(), n)
            tau_n = tau_from_z(nodes, self.tau_prior)
            mu_mean_n, mu_var_n, _ = conditional(tau_n**2, self.yi, self.sei**2, self.mu_prior)
            mean_n, sd_n, _ = self._theta_components(tau_n, mu_mean_n, mu_var_n)
            approx = mixture_cdf(probes, mean_n[probe_rows], sd_n[probe_rows], node_w) * w.sum()
            if np.max(np.abs(approx - exact)) <= _COMPRESS_TOL:
                return mixture_interval(mean_n, sd_n, node_w, p)
        return mixture_interval(m, s, w, p)


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
    check_priors(tau_prior, mu_prior)
    check_scales(y, s, tau_prior, mu_prior, mid, labels)
    scale = working_unit(s)
    if scale != 1.0:  # solved in units near the SEs (exact: a power of two), reported in the data's units
        y, s, tau_prior, mu_prior = y / scale, s / scale, tau_prior.scaled(1 / scale), mu_prior.scaled(1 / scale)
        mid = None if mid is None else mid / scale

    k = y.size
    tail = TAIL_EXPONENT.get(tau_prior.family, math.inf)
    if tau_prior.family == "halfstudentt":
        tail = tau_prior.params[0] + 1.0
    tail += k if mu_prior.family == "normal" else k - 1
    if tail <= 1.0:
        raise ValueError(
            f"improper posterior: a flat tau prior with {k} estimate(s) and a "
            f"{'normal' if mu_prior.family == 'normal' else 'flat'} mu prior does not integrate "
            f"(it needs at least {2 if mu_prior.family == 'normal' else 3} estimates); use a proper tau prior such as halfnormal(...)"
        )

    grid = tau_grid(y, s, tau_prior, mu_prior, tail)
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


def _positions(mask: np.ndarray) -> str:
    return ", ".join(str(i) for i in np.flatnonzero(mask)[:10])
