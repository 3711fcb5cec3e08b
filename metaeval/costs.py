"""Costs beside effects, and the cost per person helped where cost and effect come from one comparison.

The costs the sources report live in ``data/costs.yaml`` (:class:`CostFigure`, validated with
pydantic; every problem names the file, the record and the field). They are shown as printed: in
the source's unit, per the source's unit of count, in its price year and from its perspective;
nothing is converted, summed across initiatives or put on a common price level.

A **cost per person helped** is computed only where a figure lists ``per_person`` outcomes: effects
measured in the same randomised comparison as the cost (OtO's municipal expenditure and its
effects on adults), with the group sizes that turn an effect on a share of persons into persons
helped per unit the cost is counted in (a family). For each such outcome:

- cost ΔC per unit: the trial's estimate, as a normal distribution with the SE of its confidence
  interval (``(high − low) / (2 · 1.96)``);
- persons helped per unit h = sign · effect / 100 · persons / units (percentage points; sign: +1
  where an increase helps), with the effect taken two ways: ``model``, the project's bias-adjusted
  shrunken effect (posterior draws of the fit), and ``trial``, the project's own estimate as a
  normal distribution (no pooling);
- cost and effect are drawn independently: the source does not report their correlation;
- the net benefit at a willingness to pay λ per person helped is λ·h − ΔC; the cost-effectiveness
  acceptability curve (CEAC) is P(net benefit > 0) against λ. It equals P(cost per person helped
  < λ) where the effect is beneficial, and counts "costs less and helps" as acceptable and
  "costs less but harms" as not, which the ratio alone cannot;
- the ratio ΔC / h itself is summarised (median, interval) only where P(h > 0) ≥ 0.975: where the
  effect may be zero or adverse the ratio's distribution has no useful interval.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from metaeval import words
from metaeval.errors import InputError, Problem
from metaeval.result import Frozen
from metaeval.schema import Provenance, Slug, Strict

#: The ratio of cost to persons helped is summarised only when the effect is this likely beneficial.
RATIO_P_HELPS = 0.975
#: Willingness-to-pay grid of the acceptability curve: DKK per person helped.
DEFAULT_WTP_GRID = tuple(float(x) for x in np.linspace(0, 2_000_000, 41))
DEFAULT_SEED = 20261124


# ---------------------------------------------------------------------------- the file


class PerPerson(Strict):
    """An effect from the same comparison as a cost, and the group sizes that put both on one unit."""

    domain: str = Slug
    outcome: str = Field(min_length=1, description="one person helped, in words: 'adult kept off disability pension'")
    persons: int = Field(gt=0, description="persons the effect's share is of, in the group the cost is counted for")
    units: int = Field(gt=0, description="units the cost is per (e.g. families), in that same group")
    who: str = Field(min_length=1)
    provenance: Provenance
    assumption: str = Field(min_length=1, description="what is assumed in putting cost and effect on one unit")


class CostFigure(Strict):
    """One cost figure as the source prints it."""

    id: str = Slug
    project: str = Slug
    what: str = Field(min_length=1)
    what_da: str = Field(min_length=1)
    kind: Literal["cost_effect", "net_surplus", "programme_cost", "cost_change"] = Field(
        description="cost_effect: expenditure of one group minus the other's (+ = more spent); net_surplus: a net gain from "
                    "the source's business case (+ = saved); programme_cost: what delivering it costs; cost_change: a change "
                    "over time within one group (+ = more spent)")
    comparison: Literal["randomised", "comparison_group", "before_after", "none"]
    perspective: Literal["municipal", "societal", "programme"]
    unit: Literal["dkk", "dkk_1000"]
    per: str = Field(min_length=1)
    period: str | None = None
    price_year: int | None = Field(None, ge=1900, le=2100)
    price_basis: Provenance | None = None
    price_year_missing: str | None = None
    discount_rate: float | None = Field(None, ge=0, lt=1)
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = Field(0.95, gt=0, lt=1)
    p_value: float | None = Field(None, ge=0, le=1)
    statement: str | None = None
    source: str = Field(min_length=1)
    provenance: Provenance
    notes: str | None = None
    per_person: list[PerPerson] = []
    no_ratio: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CostFigure:
        if (self.estimate is None) == (self.statement is None):
            raise ValueError("give either an estimate (a number) or a statement (words), not both or neither")
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError("give both ci_low and ci_high, or neither")
        if self.ci_low is not None and not (self.ci_low <= (self.estimate if self.estimate is not None else self.ci_low) <= self.ci_high):
            raise ValueError(f"the interval {self.ci_low} to {self.ci_high} must contain the estimate {self.estimate}")
        if self.price_year is not None and self.price_basis is None:
            raise ValueError("a price_year needs a price_basis: where the source states it")
        if self.price_year is None and not self.price_year_missing:
            raise ValueError("without a price_year, say why in price_year_missing")
        if bool(self.per_person) == bool(self.no_ratio):
            raise ValueError("give per_person (the outcomes a cost per person helped is computed for) or no_ratio (why none is), exactly one")
        if self.per_person and (self.kind != "cost_effect" or self.comparison != "randomised" or self.ci_low is None):
            raise ValueError("a cost per person helped needs a cost_effect from a randomised comparison with a confidence interval")
        return self

    @property
    def se(self) -> float | None:
        """The SE of the estimate from its confidence interval (None without one)."""
        from statistics import NormalDist

        if self.ci_low is None:
            return None
        return (self.ci_high - self.ci_low) / (2 * NormalDist().inv_cdf(0.5 + self.ci_level / 2))

    @property
    def dkk_factor(self) -> float:
        return 1000.0 if self.unit == "dkk_1000" else 1.0


class CostFile(Strict):
    costs: list[CostFigure]


def costs_path(data_dir: str | Path | None = None) -> Path:
    from metaeval.evidence import default_data_dir

    return Path(data_dir if data_dir is not None else default_data_dir()) / "costs.yaml"


def load_costs(data_dir: str | Path | None = None, *, projects=None, domains=None) -> tuple[CostFigure, ...]:
    """The cost figures of an evidence directory's ``costs.yaml`` (none when the file does not exist).

    ``projects`` and ``domains`` (ids), when given, are checked: a figure of an unknown project or an
    outcome in an unknown domain is an error. Every problem at once, as :class:`~metaeval.errors.InputError`.
    """
    from metaeval.evidence import read_yaml, validation_problems

    path = costs_path(data_dir)
    if not path.is_file():
        return ()
    raw = read_yaml(path)
    problems, figures = [], ()
    try:
        figures = tuple(CostFile.model_validate(raw).costs)
    except ValidationError as err:
        problems += validation_problems(path, err, raw, "costs")
    records = raw.get("costs") if isinstance(raw, dict) else None
    seen: set[str] = set()
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict):
            continue
        record = f"cost {r.get('id')!r}"
        if r.get("id") in seen:
            problems.append(Problem(str(path), record, "id", "ids must be unique"))
        seen.add(r.get("id"))
        if projects is not None and r.get("project") not in projects:
            problems.append(Problem(str(path), record, "project", f"unknown project {r.get('project')!r}; projects: {', '.join(sorted(projects))}"))
        outcomes = r.get("per_person") if isinstance(r.get("per_person"), list) else []
        for i, o in enumerate(outcomes):
            if domains is not None and isinstance(o, dict) and o.get("domain") not in domains:
                problems.append(Problem(str(path), record, f"per_person.{i}.domain", f"unknown domain {o.get('domain')!r}; domains: {', '.join(sorted(domains))}"))
    if problems:
        raise InputError(problems)
    return figures


# ---------------------------------------------------------------------------- cost per person helped


class Ratio(Frozen):
    """The cost per person helped: median and interval, in DKK of the cost's price year."""

    median: float
    low: float
    high: float
    prob: float


class CostPerPerson(Frozen):
    """The cost per person helped for one cost figure, one outcome and one way of taking the effect."""

    cost: str
    project: str
    domain: str
    outcome: str
    basis: Literal["model", "trial"] = Field(description="model: the bias-adjusted shrunken effect; trial: the project's own estimate")
    currency: str = Field(description="DKK in the cost's price year and perspective")
    price_year: int | None
    perspective: str
    per: str
    cost_mean: float = Field(description="ΔC per unit, DKK: the source's estimate")
    helped_mean: float = Field(description="persons helped per unit")
    p_helps: float
    p_saves: float = Field(description="P(ΔC < 0)")
    quadrants: dict[str, float]
    ratio: Ratio | None
    ratio_note: str
    wtp: float | None
    p_below_wtp: float | None = Field(None, description="P(net benefit > 0 at wtp): P(cost per person helped < wtp)")
    ceac: tuple[tuple[float, float], ...] = Field(description="(willingness to pay per person helped, P(acceptable))")
    assumptions: tuple[str, ...]


class CostEffectiveness(Frozen):
    """Every cost per person helped that could be computed, and why none is for the other figures."""

    results: tuple[CostPerPerson, ...]
    no_ratio: dict[str, str]

    def to_json(self) -> str:
        from metaeval.present import to_json

        return to_json(self.model_dump(mode="json"))

    def to_frame(self):
        """One row per cost figure, outcome and basis."""
        import pandas as pd

        rows = [{"project": r.project, "cost": r.cost, "outcome": r.outcome, "basis": r.basis, "currency": r.currency,
                 "perspective": r.perspective, "per": r.per, "helped_per_unit": r.helped_mean, "p_helps": r.p_helps, "p_saves": r.p_saves,
                 "ratio_median": r.ratio.median if r.ratio else None, "ratio_low": r.ratio.low if r.ratio else None,
                 "ratio_high": r.ratio.high if r.ratio else None, "wtp": r.wtp, "p_below_wtp": r.p_below_wtp} for r in self.results]
        return pd.DataFrame(rows, columns=["project", "cost", "outcome", "basis", "currency", "perspective", "per", "helped_per_unit",
                                           "p_helps", "p_saves", "ratio_median", "ratio_low", "ratio_high", "wtp", "p_below_wtp"])


def acceptability(cost: np.ndarray, helped: np.ndarray, wtp) -> np.ndarray:
    """P(λ · helped − cost > 0) for each λ in ``wtp`` (the CEAC), from paired draws."""
    wtp = np.atleast_1d(np.asarray(wtp, dtype=float))
    return (wtp[:, None] * helped[None, :] - cost[None, :] > 0).mean(axis=1)


def cost_effectiveness(figures, source, *, wtp: float | None = None, grid=DEFAULT_WTP_GRID, basis=("model", "trial"),
                       seed: int = DEFAULT_SEED) -> CostEffectiveness:
    """The cost per person helped for every figure with ``per_person`` outcomes (see the module docstring).

    ``figures``: :func:`load_costs`. ``source``: the fit's draws (:func:`metaeval.draws.domain_draws`).
    ``wtp``: the analyst's willingness to pay per person helped (DKK), marked on the curve.
    """
    from metaeval.draws import domain_draws
    from metaeval.result import round_significant

    draws = domain_draws(source)
    if wtp is not None and not (math.isfinite(wtp) and wtp >= 0):
        raise InputError(Problem("command line", "", "--wtp", f"must be a non-negative amount in DKK, got {wtp}"))
    grid = sorted({*grid, *([wtp] if wtp is not None else [])})
    results, reasons = [], {}
    for f in figures:
        if not f.per_person:
            reasons[f.id] = f.no_ratio
            continue
        for k, target in enumerate(f.per_person):
            dd = draws.get(target.domain)
            why = _unusable(dd, f, target)
            if why:
                reasons[f"{f.id}/{target.domain}"] = why
                continue
            i, size = dd.projects.index(f.project), dd.n_draws
            # the same cost draws for every outcome of a figure; the trial's effect drawn per outcome
            cost = (f.estimate + f.se * np.random.default_rng([seed, zlib.crc32(f.id.encode())]).standard_normal(size)) * f.dkk_factor
            rng = np.random.default_rng([seed, k, zlib.crc32(f.id.encode())])
            per_unit = dd.sign * target.persons / target.units / (100.0 if dd.metric == "pp" else 1.0)
            effects = {"model": dd.theta[i].ravel(), "trial": dd.raw[i] + dd.raw_se[i] * rng.standard_normal(size)
                       if dd.raw and dd.raw[i] is not None else None}
            for b in basis:
                if effects[b] is None:
                    reasons[f"{f.id}/{target.domain}/{b}"] = "the project has no numeric estimate of its own in this domain"
                    continue
                results.append(_per_person(f, target, dd, b, cost, per_unit * effects[b], wtp, grid, round_significant))
    return CostEffectiveness(results=tuple(results), no_ratio=reasons)


def _unusable(dd, f: CostFigure, target: PerPerson) -> str | None:
    """Why no cost per person helped can be computed for this outcome, or None."""
    if dd is None:
        return f"the fit has no {target.domain} domain"
    if f.project not in dd.projects:
        return f"{f.project} has no effect in {dd.label} in this fit"
    if dd.metric not in ("pp", "share"):
        return f"{dd.label} is measured in {words.metric_units(dd.metric)}, not as a share of persons: there is no 'person helped'"
    return None


def _per_person(f: CostFigure, target: PerPerson, dd, basis: str, cost: np.ndarray, helped: np.ndarray, wtp, grid, rnd) -> CostPerPerson:
    helps, saves = helped > 0, cost < 0
    quadrants = {"helps and saves money": rnd(np.mean(helps & saves)), "helps at extra cost": rnd(np.mean(helps & ~saves)),
                 "harms and saves money": rnd(np.mean(~helps & saves)), "harms at extra cost": rnd(np.mean(~helps & ~saves))}
    p_helps = float(np.mean(helps))
    ratio, note = None, ""
    if p_helps >= RATIO_P_HELPS:
        r = cost / helped
        low, med, high = np.quantile(r, [(1 - dd.hdi_prob) / 2, 0.5, (1 + dd.hdi_prob) / 2])
        ratio = Ratio(median=rnd(med), low=rnd(low), high=rnd(high), prob=dd.hdi_prob)
        note = ("below zero throughout: the initiative saves money while it helps" if high < 0 else
                "the interval runs from a saving to a cost: read the acceptability curve for a decision" if low < 0 else "")
    else:
        note = (f"no interval for the ratio: the effect is beneficial with probability {words.probability(p_helps)} only, so the "
                "cost per person helped is unbounded; read the acceptability curve")
    curve = acceptability(cost, helped, grid)
    assumptions = (target.assumption, "Cost and effect are drawn independently: the source does not report their correlation.",
                   f"The cost's uncertainty is a normal distribution with the SE of its {100 * f.ci_level:g}% interval ({words.number(f.se)} "
                   f"{'thousand ' if f.unit == 'dkk_1000' else ''}DKK).")
    return CostPerPerson(
        cost=f.id, project=f.project, domain=dd.domain, outcome=target.outcome, basis=basis,
        currency=f"DKK, {f.price_year} prices" if f.price_year else "DKK, price year not stated", price_year=f.price_year,
        perspective=f.perspective, per=f.per, cost_mean=rnd(f.estimate * f.dkk_factor), helped_mean=rnd(helped.mean()), p_helps=rnd(p_helps),
        p_saves=rnd(np.mean(cost < 0)), quadrants=quadrants, ratio=ratio, ratio_note=note, wtp=wtp,
        p_below_wtp=None if wtp is None else rnd(acceptability(cost, helped, [wtp])[0]),
        ceac=tuple((float(x), rnd(y)) for x, y in zip(grid, curve)), assumptions=assumptions,
    )


def ceac_figure(ce: CostEffectiveness, names: Mapping[str, str] | None = None):
    """The acceptability curves: P(acceptable) against willingness to pay per person helped, one line per outcome and basis."""
    from matplotlib.figure import Figure

    from metaeval.plots import plain_text, plot_style

    names = names or {}
    with plot_style():
        fig = Figure(figsize=(8.4, 3.8), dpi=100)
        ax = fig.add_subplot()
        colours = {}
        for r in ce.results:
            key = (r.cost, r.domain)
            xs, ys = zip(*r.ceac)
            line, = ax.plot([x / 1000 for x in xs], [100 * y for y in ys], color=colours.get(key), linestyle="-" if r.basis == "model" else "--",
                            label=plain_text(f"{names.get(r.project, r.project)}: per {r.outcome} ({r.basis})", 70))
            colours.setdefault(key, line.get_color())
            if r.wtp is not None:
                ax.axvline(r.wtp / 1000, color="#555555", linewidth=0.8, linestyle=":")
        ax.set_xlabel("willingness to pay per person helped, thousand DKK" + (f" ({ce.results[0].currency})" if ce.results else ""))
        ax.set_ylabel("P(worth it at that price), %")
        ax.set_ylim(0, 100)
        if ce.results:
            ax.legend(loc="lower right", frameon=False)
    return fig
