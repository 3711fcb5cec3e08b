"""Would another reasonable model change a verdict? The compact check `metaeval run` puts in its report.

The baseline fit is refitted under the variants a methodologist would try first: no design-bias
adjustment, randomised trials only, findings reported only as a direction left out, a tighter and a
wider between-project spread, and each project left out in turn. Each variant is fitted with the
exact engine where the model it makes has an exact form (milliseconds, no sampling), and left out
otherwise, saying so: `metaeval sensitivity` fits the whole grid, with MCMC where it is needed.

A verdict **flips** when the average effect's direction changes (P(beneficial) crosses one half); a
domain whose verdict flips under a variant is downgraded for robustness (:mod:`metaeval.certainty`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from metaeval import words
from metaeval.result import DomainAverage, Result
from metaeval.spec import ModelSpec


@dataclass(frozen=True)
class Variant:
    """A model variant: its name, what it changes in words, and how it changes the spec and the evidence."""

    name: str
    label: str
    spec: Callable[[ModelSpec], ModelSpec] = lambda spec: spec
    drop_project: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One domain under one variant: its P(beneficial) and verdict, and whether the direction flipped."""

    variant: str
    domain: str
    p_beneficial: float | None
    verdict: str
    flipped: bool


@dataclass(frozen=True)
class Robustness:
    """The outcomes of the variants that could be fitted, and those left out with the reason."""

    outcomes: tuple[Outcome, ...]
    skipped: tuple[tuple[str, str], ...]  # (variant label, why)

    def flips(self) -> dict[str, list[str]]:
        """Per domain, the variants under which the direction of its average effect flips."""
        out: dict[str, list[str]] = {}
        for o in self.outcomes:
            if o.flipped:
                out.setdefault(o.domain, []).append(o.variant)
        return out


def _scaled_tau(factor: float) -> Callable[[ModelSpec], ModelSpec]:
    def change(spec: ModelSpec) -> ModelSpec:
        tau = spec.priors["tau"]
        return replace(spec, priors={**spec.priors, "tau": tau.scaled(factor)})
    return change


#: Leave-one-project-out refits beyond this many projects are left to `metaeval sensitivity` (one fit each).
MAX_LEAVE_ONE_OUT = 20


def variants(spec: ModelSpec, projects: list[str]) -> list[Variant]:
    """The variants tried, in report order (each project left out in turn only up to :data:`MAX_LEAVE_ONE_OUT`)."""
    from metaeval.spec import load_spec

    no_bias, rct_only = load_spec("no_bias"), load_spec("rct_only")
    return [
        Variant("no_bias", "no design-bias adjustment", lambda s: replace(s, bias_mode="none", bias_designs={}, name=no_bias.name)),
        Variant("rct_only", "randomised trials only", lambda s: replace(s, designs=rct_only.designs, name=rct_only.name)),
        Variant("no_directions", "findings without numbers left out", lambda s: replace(s, direction_only="exclude", direction_only_se=None)),
        Variant("tau_half", "half the between-project spread (tau prior x 0.5)", _scaled_tau(0.5)),
        Variant("tau_double", "twice the between-project spread (tau prior x 2)", _scaled_tau(2.0)),
        *[Variant(f"without_{p}", f"without {p}", drop_project=p) for p in projects if len(projects) <= MAX_LEAVE_ONE_OUT],
    ]


def averages_under(evidence, spec: ModelSpec) -> tuple[dict[str, DomainAverage] | None, str | None]:
    """The exact engine's domain averages (:func:`metaeval.exact_full.exact_averages`: what the check compares) for
    ``spec`` on ``evidence`` (a table or its rows), or None and why it has no exact form."""
    from metaeval.errors import InputError
    from metaeval.exact_full import exact_averages, exact_reason
    from metaeval.model import prepare

    try:
        layout = prepare(evidence, spec)
    except InputError as err:  # e.g. nothing left to fit once the variant drops it
        return None, "; ".join(p.message for p in err.problems)
    why = exact_reason(layout, spec, several_cells=False)
    if why is not None:
        return None, why
    try:
        return exact_averages(layout, spec), None
    except (ValueError, OverflowError) as err:  # a number the engine cannot use: this variant is left out, saying why
        return None, str(err)


def check(evidence, spec: ModelSpec, baseline: Result) -> Robustness:
    """Fit each variant (exactly, where it can be) and compare every domain's verdict with the baseline's."""
    projects = sorted({p.project for dom in baseline.domains.values() for p in dom.projects})
    outcomes: list[Outcome] = []
    skipped: list[tuple[str, str]] = []
    if len(projects) > MAX_LEAVE_ONE_OUT:
        skipped.append(("each project left out in turn", f"{len(projects)} projects, more than {MAX_LEAVE_ONE_OUT} refits"))
    # the table's rows once: pandas' to_dict took 15 ms a call on the bundled evidence, 0.2 of the check's 0.26 s
    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence)
    for variant in variants(spec, projects):
        kept = rows if variant.drop_project is None else [r for r in rows if str(r["project_id"]) != variant.drop_project]
        result, why = averages_under(kept or evidence[:0], variant.spec(spec))  # none left: the empty table, with its columns
        if result is None:
            skipped.append((variant.label, why))
            continue
        for d, dom in result.items():
            base = baseline.domains.get(d)
            if base is None or base.mu.p_beneficial is None or dom.mu.p_beneficial is None:
                continue
            flipped = (base.mu.p_beneficial - 0.5) * (dom.mu.p_beneficial - 0.5) < 0
            outcomes.append(Outcome(variant.label, d, dom.mu.p_beneficial, words.verdict(dom.mu.p_beneficial)[0], flipped))
    return Robustness(tuple(outcomes), tuple(skipped))


def report_section(robustness: Robustness, baseline: Result) -> dict:
    """The report's robustness section (an ``extras`` entry)."""
    rows = []
    for d, dom in baseline.domains.items():
        mine = [o for o in robustness.outcomes if o.domain == d]
        changed = [o for o in mine if o.verdict != words.verdict(dom.mu.p_beneficial)[0]]
        unassessed = "not assessed: no computed variant leaves this domain anything to pool"
        flips = "; ".join(o.variant for o in mine if o.flipped)
        if flips and not (dom.certainty and any(g.domain == "robustness" for g in dom.certainty.downgrades)):
            flips += " (not counted in this domain's certainty rating)"
        rows.append({"domain": dom.label, "verdict": words.verdict(dom.mu.p_beneficial)[0],
                     "variants fitted": len(mine),
                     "direction flips under": flips or ("none" if mine else unassessed),
                     "verdict changes under": "; ".join(f"{o.variant}: {o.verdict} ({words.probability(o.p_beneficial)})"
                                                        for o in changed if not o.flipped) or ("none" if mine else "–")})
    text = ["Each domain's verdict under the variants a methodologist would try first, fitted exactly where the variant "
            "has an exact form. A direction that flips is a reason to lower the domain's certainty (robustness)."]
    if robustness.skipped:
        by_reason: dict[str, list[str]] = {}
        for label, why in robustness.skipped:
            by_reason.setdefault(why, []).append(label)
        text.append("Not computed here, so not part of this check (`metaeval sensitivity` fits them with MCMC): "
                    + "; ".join(f"{', '.join(labels)}, because {why.rstrip('.')}" for why, labels in by_reason.items()) + ".")
    return {"text": text, "table": rows}
