"""The appraisal of the evidence as plain data for a report or a notebook.

Three views, each a list of frozen dataclasses (``dataclasses.asdict`` makes them JSON):

- :func:`risk_of_bias_rows`: every estimate's risk-of-bias judgements (its own where its outcome
  differs from its project's) and what the model does with them;
- :func:`findings_without_numbers`: every figure that enters, or could enter, only through its
  direction (nulls and positives side by side), with the region of the z-statistic it stands for;
- :func:`compare_fits`: per domain, the pooled mean under each of several fit summaries (the
  JSON ``metaeval fit --format json`` prints), e.g. before and after the appraisal rules of
  data/README.md (``bench/rules.py`` records them for the bundled evidence).

They read the harmonised evidence table and the model's :class:`~metaeval.model.Layout`, so they
show what a fit used, never a second opinion of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metaeval.cells import finite, flag, present
from metaeval.model import Layout
from metaeval.schema import ROB_DOMAINS


def _text(value) -> str | None:
    return str(value) if present(value) and str(value).strip() else None


def _rows(evidence) -> list[dict]:
    return evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence)


def _in_model(layout: Layout) -> tuple[dict[str, dict], dict[str, str]]:
    """Rows that entered the model (estimates and findings) by id, and the reasons the others did not."""
    entered = {r["estimate_id"]: r for r in (*layout.estimates, *layout.findings)}
    left_out = {r["estimate_id"]: r["reason"] for r in layout.excluded}
    return entered, left_out


@dataclass(frozen=True)
class RiskOfBiasRow:
    """One estimate's judgements and their consequence in the model."""

    estimate_id: str
    project_id: str
    outcome: str | None
    domain: str
    judgements: dict[str, str]  # domain of bias -> low / some / high / critical
    overall: str | None  # the worst of them
    own: str | None  # the estimate's own judgements, where its outcome differs from its project's
    in_model: bool
    treatment: str  # what the model does: the bias-term prior it gets, or why it is left out


def risk_of_bias_rows(evidence, layout: Layout) -> list[RiskOfBiasRow]:
    """Per estimate of the evidence table (bundled format), its risk of bias and how the fit used it.

    Rows without judgements (a CSV evidence base) are skipped.
    """
    entered, left_out = _in_model(layout)
    out = []
    for r in _rows(evidence):
        judgements = {d: _text(r.get(f"rob_{d}")) for d in ROB_DOMAINS}
        if not any(judgements.values()):
            continue
        eid = str(r["estimate_id"])
        row = entered.get(eid)
        if row is None:
            treatment = left_out.get(eid) or _text(r.get("exclusion_reason")) or "not in the model"
        elif row["bias_index"] < 0:
            treatment = "no bias term (randomised, no outcome-level domain judged high)"
        else:
            term = layout.bias_terms[row["bias_index"]]
            widened = f"; widened for {', '.join(term['risk_of_bias'])} judged high" if term.get("risk_of_bias") and term.get("rob_sd") else ""
            treatment = f"bias term {term['label']}: {term.get('prior') or 'design level (' + term['design'] + ')'}{widened}"
        out.append(RiskOfBiasRow(eid, str(r["project_id"]), _text(r.get("outcome")), str(r["domain"]),
                                 {d: j for d, j in judgements.items() if j}, _text(r.get("risk_of_bias")),
                                 _text(r.get("rob_estimate")), row is not None, treatment))
    return out


@dataclass(frozen=True)
class FindingRow:
    """A figure known only by its direction: what the source says and what that contributes."""

    estimate_id: str
    project_id: str
    outcome: str | None
    domain: str
    direction: str | None  # in the domain's terms (an increase is beneficial where the domain says so)
    significance: str  # "significant", "not significant" or "not reported"
    basis: str | None  # where the direction and significance come from (harmonisation's note)
    region: str | None  # the z-statistic region the censored likelihood uses, e.g. "|z| < 1.96"
    in_model: bool
    status: str  # "in the model", or the reason it is not


@dataclass(frozen=True)
class Appraisal:
    """What the report shows of the appraisal: per-estimate risk of bias and the findings without numbers."""

    risk_of_bias: tuple[RiskOfBiasRow, ...]
    findings: tuple[FindingRow, ...]


def appraise(evidence, layout: Layout) -> Appraisal:
    """Both views for one fit's layout."""
    return Appraisal(tuple(risk_of_bias_rows(evidence, layout)), tuple(findings_without_numbers(evidence, layout)))


def _region(z_low: float, z_high: float) -> str:
    inf = 30.0
    if z_low <= -inf and z_high >= inf:
        return "any z"
    if z_low <= -inf:
        return f"z < {z_high:.3g}"
    if z_high >= inf:
        return f"z > {z_low:.3g}"
    if math.isclose(z_low, -z_high):
        return f"|z| < {z_high:.3g}"
    return f"{z_low:.3g} < z < {z_high:.3g}"


def findings_without_numbers(evidence, layout: Layout) -> list[FindingRow]:
    """Every direction-only row of the evidence table, in the model or not, nulls and positives alike."""
    entered, left_out = _in_model(layout)
    out = []
    for r in _rows(evidence):
        if not flag(r.get("direction_only")):
            continue
        eid = str(r["estimate_id"])
        row = entered.get(eid)
        significance = {True: "significant", False: "not significant"}.get(flag(r.get("significant")), "not reported")
        region = _region(row["z_low"], row["z_high"]) if row else None
        status = "in the model" if row else (left_out.get(eid) or "not in the model")
        counted = r.get("direction_counted") if "direction_counted" in r else r.get("direction")
        out.append(FindingRow(eid, str(r["project_id"]), _text(r.get("outcome")), str(r["domain"]), _text(counted),
                              significance, _text(r.get("harmonisation")), region, row is not None, status))
    return out


@dataclass(frozen=True)
class DomainMean:
    """One domain's pooled mean under one fit."""

    mean: float | None
    hdi_low: float | None
    hdi_high: float | None
    p_beneficial: float | None
    n_projects: int | None
    n_estimates: int | None  # estimates and direction-only findings that entered


@dataclass(frozen=True)
class DomainComparison:
    """One domain across fits (in the order given); a fit without the domain has None."""

    domain: str
    label: str | None
    metric: str | None
    results: tuple[tuple[str, DomainMean | None], ...]

    def shift(self, first: str, last: str) -> float | None:
        """The change of the pooled mean from fit ``first`` to fit ``last`` (None if either lacks the domain)."""
        by_name = dict(self.results)
        a, b = by_name.get(first), by_name.get(last)
        if a is None or b is None or a.mean is None or b.mean is None:
            return None
        return b.mean - a.mean


def compare_fits(summaries: Sequence[tuple[str, Any]] | Iterable[tuple[str, Any]]) -> list[DomainComparison]:
    """Per domain, the pooled mean (mu) of each named fit, for a before/after table.

    A fit is a :class:`~metaeval.result.Result` or its JSON as a dict (``metaeval fit --format json``,
    ``metaeval/records/rules.json``).
    """
    summaries = [(name, s.model_dump(mode="json") if hasattr(s, "model_dump") else s) for name, s in summaries]
    domains = sorted({d for _, s in summaries for d in s.get("domains", {})})
    out = []
    for d in domains:
        meta = next(s["domains"][d] for _, s in summaries if d in s.get("domains", {}))
        results = []
        for name, s in summaries:
            dom = s.get("domains", {}).get(d)
            if dom is None:
                results.append((name, None))
                continue
            mu = dom.get("mu") or {}
            results.append((name, DomainMean(finite(mu.get("mean")), finite(mu.get("hdi_low")), finite(mu.get("hdi_high")),
                                             finite(mu.get("p_beneficial")), dom.get("n_projects"), dom.get("n_estimates"))))
        out.append(DomainComparison(d, meta.get("label"), meta.get("metric"), tuple(results)))
    return out


# ---------------------------------------------------------------------------- what the rules move


@dataclass(frozen=True)
class Rule:
    """One appraisal rule of data/README.md, as ``bench/rules.py`` names the state that adds it."""

    state: str  # the state's name in metaeval/records/rules.json
    name: str
    section: str  # where data/README.md documents it
    reason: str  # why, in a sentence (the documented reason, shortened)


#: The rules in the order bench/rules.py adds them; each state of the record adds one.
RULES = (
    Rule("+ sparse cells", "Sparse cells", "Appraisal rules › Sparse cells",
         "A 0% or 100% group share leaves a Wald SE that counts one group's variance only; the Agresti–Caffo SE (one success "
         "and one failure added to each group) keeps near-nominal coverage down to empty cells."),
    Rule("+ symmetric inclusion", "Findings without a standard error", "Appraisal rules › Findings without a standard error",
         "A figure that states a comparison but cannot get an SE enters through its direction whatever that is: an "
         "increase, a decrease or none. A rule that admits a positive finding admits a null one."),
    Rule("+ dependence", "Dependence", "Appraisal rules › Dependence",
         "Records that share people are never pooled side by side: a part never enters beside its whole, and one sample "
         "enters through one record; a comparison judged critical (DRC's permanent transfers, 0% vs 10%) is left out."),
    Rule("+ DRC denominators", "DRC's denominators", "Curation decisions › DRC SIB (seed 004)",
         "The participants' shares fit no follow-up denominator but 55, and the controls' none smaller than 83 "
         "(not 56 and 56)."),
    Rule("+ benefit as stated", "Benefit only where the source or the domain says so",
         "Appraisal rules › Benefit only where the source or the domain says so",
         "An outcome the source states as a difference, not as a benefit (VIVE's lower GP use: less use can mean less "
         "access), is left out unless a model admits curator-inferred benefits ([data] inferred_benefit)."),
    Rule("+ risk of bias (after)", "Risk of bias per estimate", "Appraisal rules › Risk of bias",
         "Each estimate's own judgements: high on attrition, measurement or reporting widens its bias prior ([risk_of_bias]); "
         "critical keeps it out."),
)


@dataclass(frozen=True)
class RuleStep:
    """What one rule changes in what entered the model: the estimates it lets in and those it leaves out."""

    rule: Rule
    admitted: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class RulesMoves:
    """Per domain, the pooled result before the appraisal rules and after each (``metaeval/records/rules.json``).

    ``applies`` is False, with ``why_not``, when the record is not of this evidence (another evidence
    base, the participation estimand, the bundled data changed since): then it says nothing about it.
    """

    applies: bool
    why_not: str | None
    steps: tuple[RuleStep, ...] = ()
    domains: tuple[DomainComparison, ...] = ()
    recorded: str = ""  # when, at which commit, with which model and sampler settings


#: Package data (``metaeval/records/``, read through :mod:`metaeval.bundled`), written by ``bench/rules.py``.
RULES_RECORD = "records/rules.json"


def bundled_rules_record() -> dict | None:
    """The recorded run of ``bench/rules.py`` on the bundled evidence (None where it is not installed)."""
    import json

    from metaeval.bundled import bundled_path

    try:
        return json.loads(bundled_path(RULES_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def rules_moves(record: dict | None, evidence_sha256: str | None) -> RulesMoves:
    """What the appraisal rules move, from ``record`` (:func:`bundled_rules_record`), if it is of the evidence
    whose digest is ``evidence_sha256`` (:func:`metaeval.harmonise.evidence_digest`; a result's provenance)."""
    if record is None:
        return RulesMoves(False, f"No record of what the appraisal rules move is installed (metaeval/{RULES_RECORD}, written by bench/rules.py).")
    recorded = record.get("evidence_sha256")
    if not recorded:
        return RulesMoves(False, f"The record (metaeval/{RULES_RECORD}) does not say which evidence it was made on, so it cannot be "
                                 "shown as this evidence's.")
    if evidence_sha256 != recorded:
        return RulesMoves(False, (
            "The record of what the appraisal rules move was made on the bundled evidence (ITT analysis); this report's "
            "evidence is not that evidence" + ("" if evidence_sha256 else " (its digest is unknown)") + ", so the record "
            "does not apply and is not shown. The rules themselves (data/README.md, Appraisal rules) hold for any evidence "
            "base in the bundled format; bench/rules.py measures their effect on the bundled one."))
    states = record["itt"]
    documented = {r.state: r for r in RULES}
    missing = [s["state"] for s in states[1:] if s["state"] not in documented]
    if missing:
        return RulesMoves(False, f"The record (metaeval/{RULES_RECORD}) has states no documented rule names: {', '.join(missing)}.")
    steps = tuple(RuleStep(documented[cur["state"]], tuple(sorted(set(cur["entered"]) - set(prev["entered"]))),
                           tuple(sorted(set(prev["entered"]) - set(cur["entered"]))))
                  for prev, cur in zip(states, states[1:]))
    return RulesMoves(True, None, steps, tuple(compare_fits([(s["state"], s["summary"]) for s in states])),
                      f"bench/rules.py, {record['date'][:10]}, commit {record['head']} (before: commit {record['base']}); "
                      f"{record['settings']}, seed {record['seed']}")
