"""Initiative profiles: everything the evidence and the fit say about one initiative, across domains.

The result of a fit is organised by outcome domain; an analyst choosing what to copy thinks by
initiative. ``profiles(evidence, result, ...)`` turns it around: per initiative (project) its
design, evaluator, status and risk of bias; per domain it has evidence in, its raw estimate, its
bias-adjusted shrunken effect with interval, P(beneficial) and P(beyond the minimal important
difference), how much it moves the pooled result (leave-it-out shift, :mod:`metaeval.influence`)
and how many of its figures entered; and every figure of it that could not be used, with the
reason. Domains where it reported something that could not be pooled are listed as such;
domains where it reported nothing are "not measured".

P(beneficial) and P(beyond MID) of a project's effect come from posterior draws when they are
given (:mod:`metaeval.draws`); otherwise from a normal approximation to its posterior mean and SD,
and ``from_draws`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from metaeval import words
from metaeval.cells import finite, flag, present
from metaeval.influence import Shift
from metaeval.result import Bias, Result, _Frozen


class DomainEffect(_Frozen):
    """One initiative in one domain: what it reported and what the model makes of it."""

    domain: str
    status: Literal["pooled", "not pooled"] = Field(description="pooled: it has an effect in the fit; not pooled: none of its figures could enter")
    estimates: tuple[str, ...] = Field((), description="set when the engine pools the initiative's estimates here as separate "
                                                        "studies (the exact engine): their ids; the effect fields are then empty")
    design: str | None = None
    raw: float | None = None
    raw_se: float | None = None
    mean: float | None = None
    sd: float | None = None
    hdi_low: float | None = None
    hdi_high: float | None = None
    pooling: float | None = None
    bias: Bias | None = None
    p_beneficial: float | None = None
    p_mid: float | None = None
    from_draws: bool = Field(False, description="probabilities from posterior draws (else a normal approximation)")
    n_figures: int = Field(description="figures the initiative reports in this domain")
    n_entered: int = Field(description="of which entered the fit (numbers and direction-only findings)")
    n_direction_only: int = 0
    shift: Shift | None = None


class UnusedFigure(_Frozen):
    """A figure of the initiative that did not enter the fit, and why."""

    estimate_id: str
    domain: str
    outcome: str
    reason: str


class Profile(_Frozen):
    """One initiative."""

    project: str
    name: str
    design: str
    evaluator: str | None
    status: str | None
    risk_of_bias: str | None
    outcome_source: str | None
    source: str | None
    effects: tuple[DomainEffect, ...] = Field(description="domains it reported in, in the result's domain order, then the others")
    unused: tuple[UnusedFigure, ...]

    def effect(self, domain: str) -> DomainEffect | None:
        return next((e for e in self.effects if e.domain == domain), None)


class Profiles(_Frozen):
    """Every initiative of the evidence (strongest design first) and the fitted domains (the matrix's columns)."""

    domains: tuple[str, ...]
    profiles: tuple[Profile, ...]

    def to_json(self) -> str:
        from metaeval.present import to_json

        return to_json(self.model_dump(mode="json"))


def profiles(evidence, result: Result, *, draws: Mapping | None = None, shifts: Mapping[str, Mapping[str, Shift]] | None = None) -> Profiles:
    """The profile of every initiative in ``evidence`` under ``result`` (see the module docstring).

    ``draws``: per-domain draws (:func:`metaeval.draws.domain_draws`) for exact probabilities.
    ``shifts``: leave-it-out shifts (:func:`metaeval.influence.leave_out`).
    """
    from metaeval.summary import _round

    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence or [])
    excluded = {x.estimate_id: x.reason for x in result.exclusions}
    by_project: dict[str, list[dict]] = {}
    for r in rows:
        by_project.setdefault(_text(r.get("project_id")) or _text(r.get("estimate_id")), []).append(r)
    out = []
    for pid, mine in by_project.items():
        first = mine[0]
        domains_seen = list(dict.fromkeys(_text(r.get("domain")) for r in mine))
        order = [d for d in result.domains if d in domains_seen] + [d for d in domains_seen if d not in result.domains]
        effects, unused = [], []
        for d in order:
            here = [r for r in mine if _text(r.get("domain")) == d]
            dom = result.domains.get(d)
            mine_here = [p for p in dom.projects if p.project == pid] if dom else []
            effect = next((p for p in mine_here if p.estimate_id is None), None)
            if effect is None and len(mine_here) == 1:
                effect = mine_here[0]  # one estimate, pooled as a study of its own: it is the initiative's effect
            entered = [r for r in here if _entered(r, excluded) and mine_here]
            for r in here:
                if r not in entered:
                    unused.append(UnusedFigure(estimate_id=_text(r.get("estimate_id")), domain=d, outcome=_text(r.get("outcome")) or "–",
                                               reason=_reason(r, excluded, dom is not None)))
            entry = {"domain": d, "n_figures": len(here), "n_entered": len(entered),
                     "n_direction_only": sum(1 for r in entered if flag(r.get("direction_only")))}
            if not mine_here:
                effects.append(DomainEffect(status="not pooled", **entry))
                continue
            if effect is None:  # several estimates, each pooled as a study of its own
                effects.append(DomainEffect(status="pooled", estimates=tuple(p.key for p in mine_here), **entry))
                continue
            p_ben, p_mid, from_draws = _probabilities(dom, effect, (draws or {}).get(d), pid)
            effects.append(DomainEffect(
                status="pooled", design=effect.design, raw=effect.raw, raw_se=effect.raw_se, mean=effect.mean, sd=effect.sd,
                hdi_low=effect.hdi_low, hdi_high=effect.hdi_high, pooling=effect.pooling, bias=effect.bias,
                p_beneficial=_round(p_ben), p_mid=_round(p_mid), from_draws=from_draws,
                shift=(shifts or {}).get(d, {}).get(pid), **entry))
        out.append(Profile(
            project=pid, name=_text(first.get("project_name")) or pid, design=_text(first.get("design")) or "unspecified",
            evaluator=_text(first.get("evaluator")) or None, status=_text(first.get("status")) or None,
            risk_of_bias=_text(first.get("risk_of_bias")) or None, outcome_source=_text(first.get("outcome_source")) or None,
            source=_text(first.get("source")) or None, effects=tuple(effects), unused=tuple(unused)))
    out.sort(key=lambda p: (words.design_rank(p.design), p.name.lower()))
    return Profiles(domains=tuple(result.domains), profiles=tuple(out))


def _text(value) -> str:
    return str(value).strip() if present(value) else ""


def _entered(r: dict, excluded: Mapping[str, str]) -> bool:
    """Whether a figure entered the fit: a poolable number or a direction-only finding, not left out by the model."""
    if _text(r.get("estimate_id")) in excluded:
        return False
    if flag(r.get("direction_only")):
        return True
    return bool(flag(r.get("poolable"))) and finite(r.get("yi")) is not None and finite(r.get("sei")) is not None


def _reason(r: dict, excluded: Mapping[str, str], fitted: bool) -> str:
    eid = _text(r.get("estimate_id"))
    if eid in excluded:
        return excluded[eid]
    if not fitted:
        return _text(r.get("exclusion_reason")) or "its domain was not fitted"
    return _text(r.get("exclusion_reason")) or "not in this model's fit (its design or project is outside this model variant)"


def _probabilities(dom, effect, dd, project: str) -> tuple[float | None, float | None, bool]:
    """P(beneficial) and P(beyond MID) of a project's effect: from draws when given, else normal approximation."""
    import numpy as np

    sign, mid = dom.sign, dom.mid
    key = next((k for k in (effect.key, project) if dd is not None and k in dd.projects), None)
    if key is not None:
        good = sign * dd.effect(key).ravel()
        return float(np.mean(good > 0)), (float(np.mean(good > mid)) if mid else None), True
    if effect.mean is None or not effect.sd:
        return None, None, False
    from statistics import NormalDist

    z = NormalDist()
    return z.cdf(sign * effect.mean / effect.sd), (z.cdf((sign * effect.mean - mid) / effect.sd) if mid else None), False
