"""The analyst's questions in one object: which initiative, at what cost, and what would settle it.

``analyse(evidence, result, source=...)`` gathers what the report's initiative sections show:
the initiative profiles (:mod:`metaeval.initiatives`, with leave-it-out shifts), the pairwise
comparison and ranking (:mod:`metaeval.ranking`), the costs and the cost per person helped
(:mod:`metaeval.costs`) and the plan for the next evaluation (:mod:`metaeval.planning`). Everything
but the profiles needs posterior draws (``source``: an MCMC fit's, or the exact engine's
:func:`~metaeval.exact_full.exact_draws`); without them (a summary read from a file) each missing part
says why in ``missing``, and the profiles' probabilities come from a normal approximation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metaeval.costs import CostEffectiveness, CostFigure
from metaeval.initiatives import Profiles
from metaeval.planning import DEFAULT_N, DEFAULT_SIMS, Plan
from metaeval.ranking import Comparison
from metaeval.result import Result

_NO_DRAWS = ("needs posterior draws, and none came with this result (a summary read from a file): report without --summary "
             "(the MCMC fit in --out, or --engine exact)")


@dataclass(frozen=True)
class Analysis:
    """Profiles, comparison, costs and plan; ``missing``: part -> why it is not there."""

    profiles: Profiles
    comparison: Comparison | None = None
    costs: tuple[CostFigure, ...] = ()
    cost_effectiveness: CostEffectiveness | None = None
    plan: Plan | None = None
    missing: dict[str, str] = field(default_factory=dict)


def analyse(evidence, result: Result, *, source=None, reference=None, reference_label: str = "no_bias",
            costs: tuple[CostFigure, ...] = (), wtp: float | None = None, n=DEFAULT_N, sims: int = DEFAULT_SIMS, cache=None) -> Analysis:
    """Everything the report's initiative sections need (see the module docstring).

    ``source``: the fit's draws; ``reference``: draws under ``reference_label`` (the no-bias variant) for
    the comparison's bias check; ``costs``: :func:`metaeval.costs.load_costs`; ``wtp``: willingness to
    pay per person helped (DKK); ``n``, ``sims``: the planning simulation's study sizes and size; ``cache``: a
    folder keeping the comparison and the plan for the next analysis of the same draws (:mod:`metaeval.kept`).
    """
    from metaeval.initiatives import profiles

    if source is None:
        missing = {"comparison": _NO_DRAWS, "plan": _NO_DRAWS}
        if any(f.per_person for f in costs):
            missing["cost_effectiveness"] = _NO_DRAWS
        return Analysis(profiles=profiles(evidence, result), costs=tuple(costs), missing=missing)
    from metaeval.costs import cost_effectiveness
    from metaeval.draws import domain_draws
    from metaeval.influence import SE_NOT_DRAWN, leave_out
    from metaeval.planning import plan

    draws = domain_draws(source)
    missing = {}
    if reference is None:
        where = ("the report computes it only where that takes milliseconds; `metaeval compare --engine exact` computes it"
                 if result.engine == "exact" else "no fit of it in the output folder (`metaeval compare` fits it once)")
        missing["reference"] = (f"The order was not checked against the {reference_label} model: {where}" if result.model.bias.mode != "none" else
                                "This model takes every design at face value: there is no bias adjustment to check the order against")
    posterior = source.posterior if hasattr(source, "directory") else source  # a CachedFit's, or the posterior itself
    shifts = leave_out(posterior) if "metaeval_layout" in getattr(posterior, "attrs", {}) else None
    if shifts is None:
        missing["shifts"] = "No leave-it-out shifts: they need the fit's posterior with its layout."
    elif any(s.note == SE_NOT_DRAWN for per_domain in shifts.values() for s in per_domain.values()):
        missing["shifts"] = f"No leave-it-out shift for a project with direction-only findings: {SE_NOT_DRAWN}."
    return Analysis(
        profiles=profiles(evidence, result, draws=draws, shifts=shifts),
        comparison=comparison(evidence, draws, reference=reference, reference_label=reference_label, cache=cache, integrated=result),
        costs=tuple(costs),
        cost_effectiveness=cost_effectiveness(costs, draws, wtp=wtp) if any(f.per_person for f in costs) else None,
        plan=plan(draws, evidence=evidence, n=n, sims=sims, cache=cache),
        missing=missing,
    )


def comparison(evidence, source, *, reference=None, reference_label: str = "no_bias", cache=None, integrated: Result | None = None) -> Comparison:
    """The report's comparison of the projects (:func:`metaeval.ranking.compare`, kept in ``cache``; ``integrated``: the
    result the draws come from): in one place, so that ``metaeval fit`` keeps the very comparison a report of its fit
    looks for."""
    from metaeval.ranking import compare

    return compare(source, reference=reference, reference_label=reference_label, names=project_names(evidence), cache=cache,
                   integrated=integrated)


def project_names(evidence) -> dict[str, str]:
    """Project id -> readable name, from the evidence table."""
    from metaeval.cells import cell_text

    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence or [])
    out: dict[str, str] = {}
    for r in rows:
        pid = cell_text(r.get("project_id"))
        if pid:
            out.setdefault(pid, cell_text(r.get("project_name")) or pid)
    return out
