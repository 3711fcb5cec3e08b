"""Plan the next evaluation: what would a new randomised study do to each domain's verdict?

For each domain and each size of a new two-arm randomised evaluation (n per arm), a
preposterior simulation from the fitted model answers: how much narrower would the interval of
the average effect ``mu`` be, and how likely is its verdict ("Likely beneficial", "Unclear", ...,
:func:`metaeval.words.verdict`) to change? It is the value-of-information question asked in the
units a policy analyst reads.

Method: importance reweighting of the existing posterior draws, so nothing is refitted. A
simulated study is drawn from the posterior predictive: a posterior draw s, a new initiative's
true effect ``theta = mu_s + tau_s z`` (a new project: randomised, so no bias term), its estimate
``y = theta + se e``. Given y, the updated posterior is the current one reweighted by the new
study's marginal likelihood, ``w_s ∝ Normal(y; mu_s, sqrt(tau_s² + se²))``: exact for the
model (the new project's effect integrated out), and bounded (w ≤ 1 / se). The same simulated
draws, z and e are used for every n (common random numbers), so the curves over n are smooth and
comparable. The update is a smooth function of the study's result y, so it is worked out at results
spaced a fraction of the SE apart across the simulated ones and interpolated between them
(:data:`RESULTS_PER_SE`). Reweighting is checked against exact numerical integration of the one-level model
(``tests/test_planning.py``: the posterior SD of mu within 5% rms and P(beneficial) within its
Monte Carlo error, for new studies from half to twice as precise as the most precise existing
one). ArviZ's Pareto-k̂ exceeds 0.7 for most of these weights once se is small (they spike where
tau ≈ 0; measured on the bundled fit), yet the estimates stay accurate there, so the plain
(Kish) effective sample size is reported instead.

A closed form is given beside every simulation as a check: the normal–normal update with tau
fixed at its posterior median and mu's posterior taken as normal, where the posterior variance
after the study is ``1 / (1/v + 1/(tau² + se²))`` whatever y is, and the updated mean is
normal around today's with variance ``v − v'`` (the preposterior).

The new study's SE: set by the analyst (``se``), or ``sd * sqrt(2 / n)`` with the outcome's SD
per person ``sd`` set by the analyst or derived from the domain's metric and evidence
(:func:`outcome_sd`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from metaeval import words
from metaeval.cells import finite, flag
from metaeval.draws import DomainDraws, domain_draws
from metaeval.errors import InputError, Problem
from metaeval.executor import in_threads
from metaeval.kept import kept, key_of
from metaeval.result import Frozen

DEFAULT_N = (50, 100, 200, 400)
DEFAULT_SIMS = 1000
DEFAULT_SEED = 20261124
#: Below this effective sample size (of the draws after reweighting) a simulation's numbers are thin; a note
#: says so when more than THIN_SHARE of the simulations are.
ESS_LOW = 200
THIN_SHARE = 0.05
#: Weights computed at once (results x draws) in the preposterior simulation.
_BLOCK = 1_000_000
#: The update after a study is worked out at results this many to the study's SE and interpolated between them: the
#: weights change over a result's span of sqrt(tau² + se²) >= se. On the bundled fit's 11 domains, at SEs from 4 to 0.1
#: times mu's posterior SD, P(beneficial) came within 0.0002 of working it out at every simulated result, the expected
#: interval width within 0.03%, and 1 in 1000 simulated verdicts at most changed (those a hair from a cut); 17 to 2
#: times fewer updates for new studies whose SE is 4 to 1/4 times mu's posterior SD.
RESULTS_PER_SE = 8


# ---------------------------------------------------------------------------- the numerical core


def study_weights(mu: np.ndarray, tau: np.ndarray, y: np.ndarray, se: float) -> np.ndarray:
    """Normalised weights (sims, draws) of the draws after a new study with estimates ``y`` and SE ``se``.

    ``log w = -log(v)/2 - (y - mu)²/(2v)`` with ``v = tau² + se²``, worked out in one array in place (the same
    operations in the same order as the plain expression, so the same numbers, at half the time).
    """
    v = tau**2 + se**2
    w = np.subtract(np.asarray(y, dtype=float)[:, None], mu[None, :])
    np.square(w, out=w)
    np.multiply(0.5, w, out=w)
    np.divide(w, v[None, :], out=w)
    np.subtract((-0.5 * np.log(v))[None, :], w, out=w)
    w -= w.max(axis=1, keepdims=True)
    np.exp(w, out=w)
    w /= w.sum(axis=1, keepdims=True)
    return w


def weighted_hdi(x: np.ndarray, weights: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """The shortest interval holding ``prob`` of the weight, per row of ``weights`` (rows: sims; columns: ``x``).

    ``x`` need not be sorted. The interval runs between two draws, as ArviZ's HDI of draws does. Only the
    windows that can hold ``prob`` are searched: those starting below the last ``1 - prob`` of the weight
    (for 95%, about a twentieth of the draws; the same intervals as searching from every draw). The
    cumulative weights are summed down the columns of the transposed array: each row's running sum in
    the same order, so the same numbers, in a third less time than along the rows.
    """
    order = np.argsort(x, kind="stable")
    xs = np.asarray(x, dtype=float)[order]
    w = np.atleast_2d(weights)
    if (order[1:] < order[:-1]).any():  # x sorted already: the weights need no reordered copy
        w = w[:, order]
    cum = np.empty((w.shape[1], w.shape[0]))
    np.divide(w.T, w.sum(axis=1), out=cum)
    np.cumsum(cum, axis=0, out=cum)
    low, high = np.empty(w.shape[0]), np.empty(w.shape[0])
    for r in range(w.shape[0]):  # a loop of 1-D searches beats one batched search
        c = cum[:, r]
        reach = np.concatenate(([0.0], c[:-1])) + (prob - 1e-12)  # the weight a window from each draw must reach
        m = int(np.searchsorted(reach, c[-1], side="right"))  # windows from later draws never reach it
        end = np.searchsorted(c, reach[:m], side="left")
        start = int(np.argmin(xs[end] - xs[:m]))
        low[r], high[r] = xs[start], xs[end[start]]
    return low, high


def preposterior(mu: np.ndarray, tau: np.ndarray, se: Sequence[float], *, sign: float, prob: float, sims: int,
                 rng: np.random.Generator, per_se: float | None = RESULTS_PER_SE) -> list[dict]:
    """Per SE: the updated posterior of mu after each of ``sims`` simulated studies (see the module docstring).

    Returns one dict per SE with arrays over the simulations: ``width`` of the HDI, ``p_beneficial``
    (P(sign * mu > 0)) and ``ess`` (Kish effective sample size of the weights). The update is worked out
    at ``per_se`` results per SE across the simulated results and interpolated (:func:`result_grid`;
    None: at every simulated result), in blocks of about :data:`_BLOCK` weights, so memory stays small
    whatever the draws.
    """
    mu, tau = np.asarray(mu, dtype=float).ravel(), np.asarray(tau, dtype=float).ravel()
    pick = rng.integers(mu.size, size=sims)
    theta = mu[pick] + tau[pick] * rng.standard_normal(sims)
    noise = rng.standard_normal(sims)
    order = np.argsort(mu, kind="stable")  # the draws in mu's order, so the intervals need not reorder each row's weights
    mu, tau = mu[order], tau[order]
    good = sign * mu > 0
    out = []
    for s in se:
        y = theta + s * noise
        at = result_grid(y, s, per_se)
        width, p_good, ess = _updates(mu, tau, y if at is None else at, s, good=good, prob=prob)
        if at is not None:
            width, p_good, ess = (np.interp(y, at, a) for a in (width, p_good, ess))
        out.append({"width": width, "p_beneficial": p_good, "ess": ess})
    return out


def result_grid(y: np.ndarray, se: float, per_se: float | None) -> np.ndarray | None:
    """Evenly spaced results from the least to the greatest of ``y``, ``se / per_se`` apart; None when that
    would be as many as ``y`` (or ``per_se`` is None): then the update is worked out at each of ``y``."""
    if per_se is None:
        return None
    low, high = float(np.min(y)), float(np.max(y))
    count = int(math.ceil((high - low) * per_se / se)) + 1
    return np.linspace(low, high, count) if count < y.size else None


def _updates(mu: np.ndarray, tau: np.ndarray, y: np.ndarray, se: float, *, good: np.ndarray, prob: float):
    """HDI width of mu, P(beneficial) and ESS after a study of SE ``se`` finding each of ``y``."""
    width, p_good, ess = np.empty(y.size), np.empty(y.size), np.empty(y.size)
    step = max(1, _BLOCK // mu.size)
    for start in range(0, y.size, step):
        block = slice(start, min(start + step, y.size))
        w = study_weights(mu, tau, y[block], se)
        low, high = weighted_hdi(mu, w, prob)
        width[block], p_good[block], ess[block] = high - low, w @ good, 1.0 / np.sum(w**2, axis=1)
    return width, p_good, ess


def normal_preposterior(m: float, v: float, tau: float, se: float, *, sign: float, prob: float, p_now: float) -> tuple[float, float]:
    """The closed form (mu's posterior N(m, v), tau known): the interval width after the study and P(the verdict changes).

    After a study with SE ``se`` the posterior variance is ``v' = 1 / (1/v + 1/(tau² + se²))`` whatever it
    finds, and the updated mean is N(m, v − v') before it is run; the verdict is the class of
    P(beneficial) = Φ(sign · m' / √v') among :data:`metaeval.words.VERDICT_CUTS`.
    """
    from statistics import NormalDist  # SciPy's stats would add a third of a second to a first report's imports

    z = NormalDist()
    v_new = 1.0 / (1.0 / v + 1.0 / (tau**2 + se**2))
    width = 2.0 * z.inv_cdf(0.5 + prob / 2.0) * math.sqrt(v_new)
    cuts = sorted(words.VERDICT_CUTS)  # P(beneficial) class boundaries, ascending
    k = int(np.searchsorted(cuts, p_now, side="right"))  # today's class: cuts[k-1] <= p_now < cuts[k]
    # P(beneficial)' >= c  <=>  sign * m' >= sqrt(v') * Φ⁻¹(c)
    edge = lambda c: math.sqrt(v_new) * z.inv_cdf(c)  # noqa: E731
    lo = edge(cuts[k - 1]) if k > 0 else -math.inf
    hi = edge(cuts[k]) if k < len(cuts) else math.inf
    spread = math.sqrt(max(v - v_new, 0.0))
    if spread == 0.0:
        return width, 0.0
    after = NormalDist(sign * m, spread)
    stay = after.cdf(hi) - after.cdf(lo)
    return width, float(1.0 - stay)


# ---------------------------------------------------------------------------- the new study's SE


def outcome_sd(dd: DomainDraws, rows: Sequence[Mapping] = ()) -> tuple[float | None, str]:
    """The SD of the outcome per person in the domain's metric, and how it was found (or why not).

    SMD: 1 by definition. Percentage points (or shares): the SD of a yes/no outcome at the median
    control-group level of the domain's pooled estimates (50%, where it is largest, when none is
    reported). Other metrics: the median of the group SDs the domain's pooled estimates report on
    the domain's own metric; none: not derivable (the analyst sets ``sd`` or ``se``).
    """
    if dd.metric == "smd":
        return 1.0, "standardised mean difference: the outcome's SD is 1, so SE = √(2/n)"
    pooled = [r for r in rows if str(r.get("domain")) == dd.domain and flag(r.get("poolable")) and finite(r.get("yi")) is not None
              and str(r.get("metric")) == dd.metric]
    if dd.metric in ("pp", "share"):
        full = 100.0 if dd.metric == "pp" else 1.0
        levels = [finite(r.get("mean_control")) for r in pooled]
        levels = [x / full for x in levels if x is not None and 0 < x < full]
        if levels:
            p = float(np.median(levels))
            how = f"a yes/no outcome at the control-group level of {100 * p:.0f}% (median of {words.plural(len(levels), 'estimate')} in this domain)"
        else:
            p, how = 0.5, "a yes/no outcome at 50%, where its SD is largest (no control-group level is reported in this domain)"
        return full * math.sqrt(p * (1 - p)), how
    sds = [x for r in pooled for x in (finite(r.get("sd_control")), finite(r.get("sd_treatment"))) if x is not None and x > 0]
    if sds:
        return float(np.median(sds)), f"the median group SD reported in this domain ({words.plural(len(sds), 'group')})"
    return None, f"no group SD is reported on this domain's metric ({words.metric_units(dd.metric)}): set sd or se"


# ---------------------------------------------------------------------------- the typed result


class ClosedForm(Frozen):
    """The normal approximation with tau fixed at its posterior median (a check on the simulation)."""

    expected_width: float
    p_change: float = Field(ge=0, le=1)


class PlanPoint(Frozen):
    """One size of new study in one domain: what it would do to the average effect's interval and verdict."""

    n: int | None = Field(description="participants per arm (null when the analyst set the SE directly)")
    se: float
    expected_width: float = Field(description="expected width of mu's interval after the study")
    width_ratio: float = Field(description="expected width / today's width")
    p_change: float = Field(ge=0, le=1, description="P(the verdict changes)")
    p_change_mcse: float
    verdicts: dict[str, float] = Field(description="P(each verdict after the study)")
    ess_min: float
    ess_median: float
    closed_form: ClosedForm


class DomainPlan(Frozen):
    """One domain: today's interval and verdict, how the SE was set, and one point per study size."""

    domain: str
    label: str
    metric: str | None
    beneficial: str
    hdi_prob: float
    width: float = Field(description="today's interval width of mu")
    p_beneficial: float
    verdict: str
    sd: float | None
    se_basis: str
    tau_median: float
    points: tuple[PlanPoint, ...]
    notes: tuple[str, ...] = ()


class Plan(Frozen):
    """The planning simulation for every domain it could be run for, and why not for the others."""

    domains: dict[str, DomainPlan]
    skipped: dict[str, str]
    sims: int
    seed: int
    method: str

    def to_json(self) -> str:
        from metaeval.present import to_json

        return to_json(self.model_dump(mode="json"))

    def to_frame(self):
        """One row per domain and study size."""
        import pandas as pd

        rows = [{"domain": d, "n": p.n, "se": p.se, "width_now": dp.width, "expected_width": p.expected_width,
                 "width_ratio": p.width_ratio, "verdict_now": dp.verdict, "p_change": p.p_change, "p_change_mcse": p.p_change_mcse,
                 "closed_form_width": p.closed_form.expected_width, "closed_form_p_change": p.closed_form.p_change,
                 "ess_min": p.ess_min} for d, dp in self.domains.items() for p in dp.points]
        return pd.DataFrame(rows, columns=["domain", "n", "se", "width_now", "expected_width", "width_ratio", "verdict_now", "p_change",
                                           "p_change_mcse", "closed_form_width", "closed_form_p_change", "ess_min"])

    def most_changed(self) -> tuple[str, PlanPoint] | None:
        """The domain whose verdict a new study (of the largest size planned) would most likely change."""
        best = [(d, dp.points[-1]) for d, dp in self.domains.items() if dp.points]
        return max(best, key=lambda x: (x[1].p_change, x[0])) if best else None


# ---------------------------------------------------------------------------- the API


def plan(
    source,
    *,
    evidence=None,
    domain: str | Sequence[str] | None = None,
    n: Sequence[int] | None = None,
    sd: float | Mapping[str, float] | None = None,
    se: float | Sequence[float] | None = None,
    sims: int = DEFAULT_SIMS,
    seed: int = DEFAULT_SEED,
    cache: str | Path | None = None,
) -> Plan:
    """What a new randomised evaluation would do to each domain's verdict (see the module docstring).

    ``source``: a fit's draws (see :func:`metaeval.draws.domain_draws`). ``evidence``: the harmonised
    table or rows, to derive the outcome's SD for metrics other than SMD. ``n``: participants per
    arm (default 50, 100, 200, 400). ``sd``: the outcome's SD per person (one number for one domain, or
    per domain); ``se``: the new study's SE directly, one number or several (then ``n``, if given,
    labels them: one n per SE). The same inputs and seed give the same numbers. ``cache``: a folder where
    the plan is kept under a hash of everything it is computed from (:func:`plan_key`) and found again,
    as a report made again from the same fit needs the same plan.
    """
    draws = domain_draws(source)
    n = [int(x) for x in (n if n is not None else ([] if se is not None else DEFAULT_N))]
    if any(x < 2 for x in n) or (len(n) == 0 and se is None):
        raise InputError(Problem("command line", "", "--n", f"participants per arm must be whole numbers of at least 2, got {n}"))
    wanted = list(draws) if domain is None else ([domain] if isinstance(domain, str) else list(domain))
    unknown = [d for d in wanted if d not in draws]
    if unknown:
        raise InputError(Problem("command line", "", "--domain", f"no domain {', '.join(map(repr, unknown))} in the fit; domains: {', '.join(draws)}"))
    if (sd is not None and not isinstance(sd, Mapping) or se is not None) and len(wanted) > 1:
        raise InputError(Problem("command line", "", "--sd/--se", "an SD or SE is in one domain's units: name that domain (--domain)"))
    ses = None
    if se is not None:
        ses = [float(se)] if np.ndim(se) == 0 else [float(x) for x in se]
        if n and len(ses) != len(n):
            raise InputError(Problem("command line", "", "--se", f"give one SE per study size (--n has {len(n)}), or no --n"))
        if not all(math.isfinite(x) and x > 0 for x in ses):
            raise InputError(Problem("command line", "", "--se", f"must be positive numbers, got {ses}"))
    if sims < 100:
        raise InputError(Problem("command line", "", "--sims", f"at least 100 simulated studies are needed, got {sims}"))
    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence or [])
    return kept(cache, lambda: plan_key({d: draws[d] for d in wanted}, rows, n, sd, ses, sims, seed), Plan,
                lambda: _plan(draws, wanted, rows, n, sd, ses, sims, seed))


def _plan(draws: Mapping[str, DomainDraws], wanted: Sequence[str], rows: Sequence[Mapping], n: Sequence[int], sd, ses, sims: int,
          seed: int) -> Plan:
    """:func:`plan`'s simulation, its options checked."""
    jobs, skipped = {}, {}
    for d in wanted:
        dd = draws[d]
        given = sd.get(d) if isinstance(sd, Mapping) else sd
        if ses is not None:
            unit_sd, basis, points = None, "SE set by the analyst", list(zip(n or [None] * len(ses), ses))
        else:
            if given is not None:
                unit_sd, basis = float(given), "outcome SD set by the analyst"
                if not (math.isfinite(unit_sd) and unit_sd > 0):
                    raise InputError(Problem("command line", "", "--sd", f"must be a positive number, got {given}"))
            else:
                unit_sd, basis = outcome_sd(dd, rows)
            if unit_sd is None:
                skipped[d] = basis
                continue
            points = [(k, unit_sd * math.sqrt(2.0 / k)) for k in n]
        # one generator per domain, seeded by the seed and the domain's place, so adding a domain changes no other's numbers
        jobs[d] = (dd, points, unit_sd, basis, np.random.default_rng([seed, zlib.crc32(d.encode())]))
    # The domains side by side, each in one BLAS thread: OpenBLAS's threads only spun on the simulation's matrix-vector
    # products (the bundled fit's report: 6.7 CPU-s and 4.0 s wall, now 4.3 and 3.45 on two cores; the same plan, byte for byte).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        plans = in_threads(lambda job: domain_plan(job[0], job[1], unit_sd=job[2], basis=job[3], sims=sims, rng=job[4]), list(jobs.values()))
    out = dict(zip(jobs, plans))
    method = ("preposterior simulation: importance reweighting of the posterior draws by each simulated study's marginal "
              f"likelihood ({sims} simulated studies per size, common to all sizes; the update worked out at results 1/{RESULTS_PER_SE:g} "
              "of the study's SE apart and interpolated); closed form: normal approximation with tau at its posterior median")
    return Plan(domains=out, skipped=skipped, sims=sims, seed=seed, method=method)


def plan_key(draws: Mapping[str, DomainDraws], rows: Sequence[Mapping], n, sd, se, sims: int, seed: int) -> str:
    """A hash of what :func:`plan` computes a plan from: the domains' draws, the evidence rows, the options,
    NumPy's and SciPy's versions and metaeval's own code (so a changed computation is never served from a cache)."""
    import scipy

    return key_of((list(n), sd, se, sims, seed, np.__version__, scipy.__version__, rows),
               (name.encode() + b"\0" + dd.digest() for name, dd in draws.items()))


def domain_plan(dd: DomainDraws, points: Sequence[tuple[int | None, float]], *, unit_sd: float | None, basis: str, sims: int,
                rng: np.random.Generator) -> DomainPlan:
    """The plan of one domain for study sizes and SEs ``points`` ((n or None, se), ...)."""
    from metaeval.result import round_significant

    mu, tau = dd.mu.ravel(), dd.tau.ravel()
    uniform = np.full((1, mu.size), 1.0 / mu.size)
    low, high = weighted_hdi(mu, uniform, dd.hdi_prob)
    width_now = float(high[0] - low[0])
    p_now = float(np.mean(dd.sign * mu > 0))
    verdict_now = words.verdict(p_now)[0]
    tau_median = float(np.median(tau))
    sims_out = preposterior(mu, tau, [se for _, se in points], sign=dd.sign, prob=dd.hdi_prob, sims=sims, rng=rng)
    result, notes = [], []
    for (k, se), s in zip(points, sims_out):
        labels = _verdicts(s["p_beneficial"])
        changed = np.mean([lab != verdict_now for lab in labels])
        share = {lab: round_significant(labels.count(lab) / len(labels)) for lab in dict.fromkeys(labels)}
        cf_width, cf_change = normal_preposterior(float(mu.mean()), float(mu.var(ddof=1)), tau_median, se, sign=dd.sign,
                                                  prob=dd.hdi_prob, p_now=p_now)
        result.append(PlanPoint(n=k, se=round_significant(se), expected_width=round_significant(s["width"].mean()), width_ratio=round_significant(s["width"].mean() / width_now),
                                p_change=round_significant(changed), p_change_mcse=round_significant(math.sqrt(changed * (1 - changed) / sims)),
                                verdicts=share, ess_min=round_significant(s["ess"].min()), ess_median=round_significant(np.median(s["ess"])),
                                closed_form=ClosedForm(expected_width=round_significant(cf_width), p_change=round_significant(cf_change))))
        thin = float(np.mean(s["ess"] < ESS_LOW))
        if thin > THIN_SHARE:
            notes.append(f"n = {k if k is not None else '–'} (SE {words.number(se, dd.metric)}): in {words.probability(thin)} of the simulated "
                         f"studies fewer than {ESS_LOW} of the {mu.size} draws carry the weight; those numbers are thin.")
    return DomainPlan(domain=dd.domain, label=dd.label, metric=dd.metric, beneficial=dd.beneficial, hdi_prob=dd.hdi_prob,
                      width=round_significant(width_now), p_beneficial=round_significant(p_now), verdict=verdict_now, sd=round_significant(unit_sd), se_basis=basis,
                      tau_median=round_significant(tau_median), points=tuple(result), notes=tuple(notes))


def _verdicts(p_beneficial: np.ndarray) -> list[str]:
    """:func:`metaeval.words.verdict` of each P(beneficial), by its class between the cuts (one call a class, not one
    a simulated study)."""
    cuts = np.array(sorted(words.VERDICT_CUTS))
    k = np.searchsorted(cuts, p_beneficial, side="right")  # how many cuts each P reaches
    words_of = {int(c): words.verdict(cuts[c - 1] if c else 0.0)[0] for c in np.unique(k)}
    return [words_of[c] for c in k.tolist()]


# ---------------------------------------------------------------------------- the figure


def plan_figure(result: Plan):
    """Expected interval width (as a share of today's) and P(changed verdict) against n, one line per domain."""
    from matplotlib.figure import Figure

    from metaeval.plots import plain_text, plot_style

    with plot_style():
        fig = Figure(figsize=(8.4, 3.6), dpi=100)
        left, right = fig.subplots(1, 2)
        markers = "osD^vP"
        for i, dp in enumerate(result.domains.values()):
            xs = [p.n if p.n is not None else p.se for p in dp.points]
            style = {"marker": markers[i % len(markers)], "linestyle": "-" if i < 6 else "--"}
            line, = left.plot(xs, [100 * p.width_ratio for p in dp.points], label=plain_text(dp.label, 28), **style)
            right.plot(xs, [100 * p.p_change for p in dp.points], color=line.get_color(), **style)
        by_n = all(p.n is not None for dp in result.domains.values() for p in dp.points)
        fig.supxlabel("participants per arm in a new randomised evaluation" if by_n else "SE of the new evaluation", fontsize=10)
        for ax in (left, right):
            if by_n:
                ax.set_xscale("log")
                ticks = sorted({p.n for dp in result.domains.values() for p in dp.points})
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
        left.set_ylabel("expected interval width (% of today's)")
        left.set_ylim(0, 105)
        right.set_ylabel("P(the verdict changes), %")
        right.set_ylim(0, 100)
        left.set_title("How much narrower")
        right.set_title("How likely a different verdict")
        if result.domains:
            fig.legend(loc="outside right center", frameon=False)
    return fig
