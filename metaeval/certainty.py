"""How far a domain's result can be trusted: the prior's influence and a GRADE-like certainty rating.

GRADE's summary-of-findings tables (Guyatt et al. 2008; the GRADE handbook, 2013) put a certainty
of evidence (high, moderate, low, very low) beside every effect, with the reasons for
downgrading it. :func:`judge` does the same for each domain of a fit, from the fit itself and
the evidence behind it:

- **start**: high when randomised estimates carry at least half of the domain's statistical weight
  (inverse-variance weights 1/(sei² + tau²) at tau's posterior mean), low otherwise (GRADE's rule
  for observational evidence);
- **risk of bias** (−1 each): the estimates carrying most of the weight were judged at high risk of bias
  on some domain of bias (judged per estimate, data/README.md "Risk of bias"); the result rests on
  designs without a comparison group (before–after, target–benchmark, single-arm); at least half of
  what entered is a direction without a number (its size comes from an SE prior);
- **imprecision** (−1 or −2): the interval of the average effect includes no effect (−1), and also
  an important effect the other way (−2, GRADE's "very serious"); or one project alone (−1, unless
  already −2);
- **inconsistency** (−1), mirrored for either direction: the average effect is clearly beneficial (harmful)
  but a new project's predictive interval reaches an important harm (benefit: the MID), or, without a MID,
  one of the average effect's size; or, with a MID, the average's interval lies within ±MID (near no
  effect) while the predictive interval reaches both an important benefit and an important harm;
- **indirectness** (−1): which direction is beneficial was assumed, not given;
- **prior dominance** (−1): the average effect's posterior SD is more than half its prior's
  (the data added less than three times the prior's precision: :func:`prior_influence`);
- **robustness** (−1): the direction of the average effect flips under a model variant
  (``robustness``: the variants' results, from :func:`metaeval.sensitivity` or the run's own check).

The level is the start less the downgrades, never below very low. A domain whose estimate rests
only on priors and direction-only findings has ``effect_shown = False``: its size is the prior's,
and presenters say so instead of printing it as a finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metaeval.cells import finite, flag
from metaeval.result import Certainty, DomainResult, Downgrade, Posterior, PriorInfluence, Result

#: A posterior SD above this share of the prior's: the quantity is "driven by its prior".
PRIOR_DRIVEN = 0.5
LEVELS = ("very low", "low", "moderate", "high")
#: Designs with no comparison group: regression to the mean and secular trends are not controlled at all.
NO_COMPARISON = ("before_after", "target_benchmark", "single_arm")


def prior_influence(mu: Posterior, tau: Posterior, priors: Mapping[str, str]) -> PriorInfluence:
    """Posterior SD over prior SD of ``mu`` and ``tau`` (the prior texts in the metric itself), and which
    of them are driven by their prior (ratio above :data:`PRIOR_DRIVEN`)."""
    from metaeval.priors import parse_prior

    ratios: dict[str, float | None] = {}
    for name, post in (("mu", mu), ("tau", tau)):
        prior_sd = parse_prior(priors[name]).sd if name in priors else None
        ratios[name] = round(post.sd / prior_sd, 6) if post.sd is not None and prior_sd else None  # an infinite SD: 0
    driven = tuple(name for name, r in ratios.items() if r is not None and r > PRIOR_DRIVEN)
    return PriorInfluence(mu=ratios["mu"], tau=ratios["tau"], driven=driven, threshold=PRIOR_DRIVEN)


def judge(result: Result, evidence, robustness: Mapping[str, Sequence[str]] | None = None) -> Result:
    """``result`` with a :class:`~metaeval.result.Certainty` for each domain.

    ``evidence``: the harmonised table or its rows (design, risk of bias, sei of what entered);
    ``robustness``: per domain, the model variants under which the average effect's direction flips.
    """
    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence)
    left_out = {x.estimate_id for x in result.exclusions}
    entered: dict[str, list] = {d: [] for d in result.domains}
    for r in rows:  # in one pass (a pass a domain took 0.3 s on 100,000 estimates)
        into = entered.get(str(r.get("domain")))
        if into is not None and str(r.get("estimate_id")) not in left_out and flag(r.get("poolable")):
            into.append(r)
    domains = {d: dom.model_copy(update={"certainty": rate(dom, entered[d], (robustness or {}).get(d, ()))})
               for d, dom in result.domains.items()}
    return result.model_copy(update={"domains": domains})


def rate(dom: DomainResult, entered: list[dict], flips: Sequence[str] = ()) -> Certainty:
    """The certainty of one domain's result (see the module docstring) from the rows that entered it."""
    numeric = [r for r in entered if not flag(r.get("direction_only")) and finite(r.get("sei"))]
    findings = [r for r in entered if flag(r.get("direction_only"))]
    tau = dom.tau.mean or 0.0
    weight: dict[str, float] = {}
    unit = max([finite(r["sei"]) for r in numeric] + [tau]) or 1.0  # shares are scale-free: squares relative to the largest (1e300**2 overflows)
    for r in numeric:
        weight[str(r.get("project_id"))] = weight.get(str(r.get("project_id")), 0.0) + 1.0 / ((finite(r["sei"]) / unit) ** 2 + (tau / unit) ** 2)
    total = sum(weight.values())
    design_of = {str(r.get("project_id")): str(r.get("design") or "unspecified") for r in entered}
    # risk of bias is judged per estimate (an outcome of a project may differ from the rest): the weight at high risk
    high_weight = sum(1.0 / ((finite(r["sei"]) / unit) ** 2 + (tau / unit) ** 2) for r in numeric if str(r.get("risk_of_bias") or "") == "high")
    high_projects = {str(r.get("project_id")) for r in entered if str(r.get("risk_of_bias") or "") == "high"}
    share = ({p: w / total for p, w in weight.items()} if total > 0
             else {p: 1 / len(design_of) for p in design_of} if design_of else {})
    randomised = sum(s for p, s in share.items() if design_of[p] == "rct")
    start = "high" if randomised >= 0.5 else "low"
    stated = sum(s for p, s in share.items() if design_of[p] != "unspecified")
    basis = (f"randomised estimates carry {_pct(randomised)} of the weight" if randomised
             else "no design is stated, so none can be taken as randomised" if not stated
             else "no randomised estimate carries weight")
    downgrades: list[Downgrade] = []

    # risk of bias: serious when most of the weight comes from estimates judged at high risk on some domain of bias
    high = high_weight / total if total > 0 else sum(s for p, s in share.items() if p in high_projects)
    if high >= 0.5:
        downgrades.append(Downgrade(domain="risk of bias", levels=1, reason=f"{_pct(high)} of the weight from estimates at high risk of bias"))
    uncontrolled = sum(s for p, s in share.items() if design_of[p] in NO_COMPARISON)
    if uncontrolled >= 0.5:
        downgrades.append(Downgrade(domain="risk of bias", levels=1,
                                    reason=f"{_pct(uncontrolled)} of the weight from designs without a comparison group"))
    if findings and len(findings) * 2 >= len(entered):
        downgrades.append(Downgrade(domain="risk of bias", levels=1, reason=(
            f"{len(findings)} of {len(entered)} entries are directions without a number: their sizes come from an SE prior")))

    # imprecision
    lo, hi, sign, mid = dom.mu.hdi_low, dom.mu.hdi_high, dom.sign, dom.mid
    if lo is not None and hi is not None:
        benefit_lo, benefit_hi = sorted((sign * lo, sign * hi))
        if benefit_lo < 0 < benefit_hi:
            both = mid is not None and benefit_lo < -mid and benefit_hi > mid
            downgrades.append(Downgrade(domain="imprecision", levels=2 if both else 1, reason=(
                "the interval includes both an important benefit and an important harm" if both
                else "the interval of the average effect includes no effect")))
    if dom.n_projects == 1 and not any(g.domain == "imprecision" and g.levels == 2 for g in downgrades):
        downgrades.append(Downgrade(domain="imprecision", levels=1, reason="one project only: no replication"))

    # inconsistency: a new project could land importantly on the other side of the average, whichever side that is
    new, p = dom.theta_new, dom.mu.p_beneficial
    if new.hdi_low is not None and new.hdi_high is not None and dom.n_projects > 1 and p is not None:
        new_lo, new_hi = sorted((sign * new.hdi_low, sign * new.hdi_high))
        size = mid if mid is not None else abs(dom.mu.mean or 0.0)
        if p >= 0.9 and new_lo < -size or p <= 0.1 and new_hi > size:
            other, opposite, average = ("harmful", "harm", "benefit") if p >= 0.9 else ("beneficial", "benefit", "harm")
            reaches = f"an important {opposite}" if mid is not None else f"a {opposite} as large as the average {average}"
            downgrades.append(Downgrade(domain="inconsistency", levels=1, reason=(
                f"projects differ so much that a new one could be {other} (the predictive interval reaches {reaches})")))
        elif mid is not None and lo is not None and hi is not None and -mid < min(sign * lo, sign * hi) and max(sign * lo, sign * hi) < mid \
                and new_lo < -mid and new_hi > mid:
            downgrades.append(Downgrade(domain="inconsistency", levels=1, reason=(
                "the average is near no effect, but projects differ so much that a new one could be importantly "
                "beneficial or harmful (the predictive interval reaches both)")))

    if "beneficial" in dom.assumed:
        downgrades.append(Downgrade(domain="indirectness", levels=1, reason="which direction is beneficial was assumed, not given"))
    influence = dom.prior_influence
    if influence is not None and "mu" in influence.driven:
        downgrades.append(Downgrade(domain="prior dominance", levels=1,
                                    reason=f"result driven by priors (posterior SD {influence.mu:.0%} of the prior's)"))
    if flips:
        downgrades.append(Downgrade(domain="robustness", levels=1, reason=f"the direction flips under {', '.join(flips)}"))

    level = max(LEVELS.index(start) - sum(g.levels for g in downgrades), 0)
    return Certainty(level=LEVELS[level], start=start, basis=basis, downgrades=tuple(downgrades), effect_shown=bool(numeric))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"
