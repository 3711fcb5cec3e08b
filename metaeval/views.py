"""The report's content as plain data: one view per section, from a fit's Result and the evidence table.

Views hold words and numbers, already formatted in metaeval's number style (:mod:`metaeval.words`),
and no markup: ``templates/report.html`` lays them out and escapes every string (Jinja2
autoescaping). So the report's content is tested as data, and its page in a browser. Text from
the evidence files (names, quotes, reasons) is untrusted: it reaches the page only as data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from metaeval import words
from metaeval.cells import finite, flag, present
from metaeval.result import DomainResult, Result

_CERTAINTY_CSS = {"high": "c4", "moderate": "c3", "low": "c2", "very low": "c1"}


def text(value: Any) -> str:
    """A cell as text ('' when missing); a mapping as 'k = v; ...'."""
    if not present(value):
        return ""
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {v}" for k, v in value.items())
    return str(value).strip()


def rows_of(evidence) -> list[dict]:
    """The evidence table as plain rows (empty for None)."""
    return [] if evidence is None or len(evidence) == 0 else evidence.to_dict("records")


def slug(value: str, taken: set[str]) -> str:
    """An HTML id from data: lower-case letters, digits, - and _ only; unique within ``taken``."""
    base = re.sub(r"[^a-z0-9_-]+", "-", str(value).lower()).strip("-") or "section"
    out, i = base, 2
    while out in taken:
        out, i = f"{base}-{i}", i + 1
    taken.add(out)
    return out


class Names:
    """Projects' and domains' readable names, and each domain's anchor in the page."""

    def __init__(self, rows: list[dict], result: Result):
        self.projects: dict[str, str] = {}
        self.domains: dict[str, str] = {d: dom.label for d, dom in result.domains.items()}
        for r in rows:
            pid = text(r.get("project_id"))
            if pid:
                self.projects.setdefault(pid, text(r.get("project_name")) or pid)
            d = text(r.get("domain"))
            if d:
                self.domains.setdefault(d, text(r.get("domain_label")) or d)
        taken: set[str] = set()
        self.anchors = {d: "domain-" + slug(d, taken) for d in result.domains}

    def project(self, pid: Any) -> str:
        return self.projects.get(text(pid), text(pid))

    def domain(self, d: Any) -> dict:
        """A domain as a link: its label and, when it has a section, the section's anchor."""
        return {"label": self.domains.get(text(d), text(d)), "anchor": self.anchors.get(text(d))}


# ---------------------------------------------------------------------------- the top of the page


def header(result: Result, rows: list[dict]) -> dict:
    n_projects = len({text(r.get("project_id")) for r in rows if text(r.get("project_id"))})
    engine = {"mcmc": "MCMC (PyMC)", "exact": "exact numerical integration"}.get(result.engine, result.engine)
    facts = [f"{words.plural(len(rows), 'estimate')} from {words.plural(n_projects, 'project')}",
             f"{words.plural(len(result.domains), 'outcome domain')} summarised", f"engine: {engine}",
             f"model: {result.model.name}"]
    if result.seed is not None:
        facts.append(f"seed {result.seed}")
    return {"title": "What the evaluations say: a Bayesian evidence synthesis", "facts": facts, "banner": gate_banner(result)}


def gate_banner(result: Result) -> dict:
    """The line under the title: computed exactly, the gate passed, or the gate FAILED (then prominent)."""
    diag = result.diagnostics
    if diag is None:  # nothing was sampled: the exact engine
        return {"kind": "info", "text": "Computed exactly (numerical integration, no sampling): there are no sampling "
                                        "diagnostics to check."}
    if not diag.passed:
        return {"kind": "fail", "text": "Warning: the sampler's diagnostics gate FAILED. The numbers below may be wrong; "
                                        "see Diagnostics before relying on them."}
    return {"kind": "pass", "text": "The sampler's diagnostics passed the gate (R-hat, effective sample sizes, "
                                    "divergences; see Diagnostics)."}


def badge(dom: DomainResult) -> dict:
    """The verdict a reader sees first: direction and certainty together, with the main reasons.

    "Likely beneficial — low certainty: one project only; result driven by priors". A domain whose
    estimate rests only on priors and direction-only findings says so instead of giving a size.
    """
    direction, css = words.verdict(dom.mu.p_beneficial)
    certainty = dom.certainty
    out = {"direction": direction, "css": css, "certainty": None, "certainty_css": "none", "reasons": [],
           "effect_shown": certainty.effect_shown if certainty else True}
    if certainty is not None:
        out.update(certainty=f"{certainty.level} certainty", certainty_css=_CERTAINTY_CSS[certainty.level],
                   reasons=[g.reason for g in certainty.downgrades])
    return out


def overview(result: Result, rows: list[dict], names: Names) -> dict:
    """One row per domain: the average effect, how likely it is beneficial, how sure we are."""
    table = []
    for d, dom in result.domains.items():
        mu, new, metric = dom.mu, dom.theta_new, dom.metric
        b = badge(dom)
        basis = evidence_basis(rows, dom)
        table.append({
            "domain": names.domain(d),
            "units": words.unit_compact(metric),
            "better": {"increase": "higher", "decrease": "lower"}[dom.beneficial] + (" (assumed)" if "beneficial" in dom.assumed else ""),
            "effect": (f"{words.number(mu.mean, metric)} ({words.interval(mu.hdi_low, mu.hdi_high, metric)})"
                       if b["effect_shown"] and mu.mean is not None else None),
            "p_beneficial": words.probability(mu.p_beneficial),
            "badge": b,
            "predictive": words.interval(new.hdi_low, new.hdi_high, metric) if b["effect_shown"] and new.mean is not None else "–",
            "counts": f"{dom.n_projects} / {dom.n_estimates}",
            "randomised": f"{basis['n_randomised']} of {basis['n_estimates']}" if basis["n_estimates"] else "–",
        })
    counts: dict[str, int] = {}
    for r in rows:
        d = text(r.get("domain"))
        if d and d not in result.domains:
            counts[d] = counts.get(d, 0) + 1
    hdi = f"{100 * next(iter(result.domains.values())).mu.hdi_prob:g}%" if result.domains else "95%"
    return {"rows": table, "hdi": hdi,
            "unsummarised": [f"{names.domain(d)['label']} ({words.plural(n, 'estimate')})" for d, n in counts.items()]}


# ---------------------------------------------------------------------------- one domain


def pooled_rows(rows: list[dict]) -> list[dict]:
    """The rows that entered with a number: poolable, not direction-only, with yi and sei."""
    return [r for r in rows if flag(r.get("poolable")) and not flag(r.get("direction_only"))
            and finite(r.get("yi")) is not None and finite(r.get("sei")) is not None]


def evidence_basis(rows: list[dict], dom: DomainResult) -> dict:
    """How much of a domain's result rests on randomised vs weaker designs.

    Counts of pooled estimates by design and the approximate share of the statistical weight each
    design carries: inverse-variance weights 1/(sei² + τ²) with τ at its posterior mean, before any
    discount the bias model gives weaker designs. Direction-only findings are counted apart (they
    carry no weight here).
    """
    projects_in = {p.project for p in dom.projects}
    mine = [r for r in rows if text(r.get("domain")) == dom.id]
    used = [r for r in pooled_rows(mine) if text(r.get("project_id")) in projects_in]
    tau = dom.tau.mean or 0.0
    counts: dict[str, int] = {}
    weights: dict[str, float] = {}
    for r in used:
        design = text(r.get("design")) or "unspecified"
        counts[design] = counts.get(design, 0) + 1
        weights[design] = weights.get(design, 0.0) + 1.0 / (float(r["sei"]) ** 2 + tau**2)
    if not used and dom.designs:
        counts = dict(dom.designs)
    total = sum(weights.values())
    share = {d: w / total for d, w in weights.items()} if total > 0 else {}
    order = sorted(counts, key=words.design_rank)
    return {
        "counts": {d: counts[d] for d in order},
        "weight_share": {d: share[d] for d in order if d in share},
        "n_estimates": sum(counts.values()),
        "n_randomised": counts.get("rct", 0),
        "randomised_weight": share.get("rct", 0.0) if share else None,
        "n_direction_only": sum(1 for r in mine if flag(r.get("direction_only"))),
    }


def sentences(rows: list[dict], dom: DomainResult) -> list[str]:
    """The plain-language summary of one domain, sentence by sentence."""
    metric, mu, new = dom.metric, dom.mu, dom.theta_new
    better = f"an {dom.beneficial}" if dom.beneficial == "increase" else f"a {dom.beneficial}"
    out: list[str] = []
    if mu.mean is None:
        return ["Nothing was pooled in this domain: no estimate with a usable effect size and standard error."]
    shown = dom.certainty.effect_shown if dom.certainty else True
    if shown:
        out.append(f"Average effect: {words.with_unit(mu.mean, metric)} ({words.interval(mu.hdi_low, mu.hdi_high, metric)} "
                   f"{words.unit_short(metric)}, {100 * mu.hdi_prob:g}% credible interval).".replace(" ,", ","))
    else:
        out.append("No numeric estimate: the result rests only on findings reported as a direction and on the priors, so "
                   f"its size ({words.with_unit(mu.mean, metric)}) is the priors' doing, not a finding.")
    out.append(f"Probability that the average effect is beneficial ({better} is beneficial here): "
               f"{words.probability(mu.p_beneficial)}.")
    if dom.mid is not None and mu.p_mid is not None:
        out.append(f"Probability that the average effect is larger than the minimal important difference of "
                   f"{words.with_unit(dom.mid, metric)}: {words.probability(mu.p_mid)}.")
    if new.mean is not None and shown:
        sentence = (f"A new initiative of this kind: {100 * new.hdi_prob:g}% predictive interval "
                    f"{words.interval(new.hdi_low, new.hdi_high, metric)}")
        if new.p_beneficial is not None and (mu.p_beneficial is None or abs(new.p_beneficial - mu.p_beneficial) >= 0.05):
            sentence += f"; probability that a new initiative of this kind would be beneficial: {words.probability(new.p_beneficial)}"
        out.append(sentence + ".")
    basis = evidence_basis(rows, dom)
    weaker = {d: k for d, k in basis["counts"].items() if d not in ("rct", "unspecified")}
    unstated = basis["counts"].get("unspecified", 0)
    parts = [f"{words.plural(basis['n_estimates'], 'pooled estimate')} from {words.plural(dom.n_projects, 'project')}"]
    if basis["n_randomised"]:
        rct = f"{basis['n_randomised']} from randomised trials"
        w = basis["randomised_weight"]
        if w is not None:
            rct += " (all of the statistical weight)" if w > 0.995 else f" (about {words.probability(w)} of the statistical weight)"
        parts.append(rct)
    if weaker:
        parts.append(f"{sum(weaker.values())} from weaker designs ("
                     + ", ".join(f"{words.design_label(d)}: {k}" for d, k in weaker.items()) + ")")
    if unstated:
        parts.append(f"design not stated for {unstated}")
    out.append("Evidence: " + "; ".join(parts) + ".")
    if not basis["n_randomised"] and weaker:
        out.append("No randomised evidence: the result rests on weaker designs and on the bias assumptions made for them.")
    if basis["n_direction_only"]:
        out.append(f"{words.plural(basis['n_direction_only'], 'finding')} reported only as a direction and significance "
                   "(see 'Findings without numbers').")
    if dom.n_projects == 1:
        out.append("Only one project: how much projects differ (τ) cannot be learned from the data, so the predictive "
                   "interval for a new project mostly reflects τ's prior.")
    influence = dom.prior_influence
    if influence is not None and influence.driven:
        what = {"mu": "the average effect", "tau": "the spread between projects (τ)"}
        out.append("Driven by its prior: " + ", ".join(what[q] for q in influence.driven)
                   + f" (posterior SD more than {influence.threshold:.0%} of the prior's; the data add little).")
    return out


def domain(result: Result, rows: list[dict], d: str, names: Names) -> dict:
    """One domain's section: the badge, certainty and its reasons, sentences, notes, projects and τ."""
    dom = result.domains[d]
    mine = [r for r in rows if text(r.get("domain")) == d]
    metric = dom.metric
    certainty = dom.certainty
    projects = [{
        "name": names.project(p.project) if p.estimate_id is None else p.estimate_id,
        "raw": words.number(p.raw, metric), "raw_se": words.number(p.raw_se, metric),
        "mean": words.number(p.mean, metric), "interval": words.interval(p.hdi_low, p.hdi_high, metric),
        "pooling": words.probability(p.pooling) if p.pooling is not None else "–",
        "p_best": words.probability(p.p_best) if p.p_best is not None else "–",
        "bias": (f"{words.number(p.bias.mean, metric)} ± {words.number(p.bias.sd, metric)}" if p.bias else "none"),
    } for p in dom.projects]
    tau = dom.tau
    return {
        "id": d, "anchor": names.anchors[d], "label": dom.label, "units": words.metric_units(metric),
        "benefit": {"increase": "higher is better", "decrease": "lower is better"}[dom.beneficial],
        "badge": badge(dom),
        "certainty": None if certainty is None else {
            "level": certainty.level, "start": certainty.start, "basis": certainty.basis,
            "downgrades": [{"domain": g.domain, "levels": g.levels, "reason": g.reason} for g in certainty.downgrades]},
        "assumed": list(dom.assumed.values()),
        "sentences": sentences(mine, dom),
        "notes": list(dom.notes),
        "n_left_out": len(result.exclusions_in(d)),
        "projects": projects,
        "has_bias": any(p.bias for p in dom.projects),
        "hdi": f"{100 * dom.mu.hdi_prob:g}%",
        "tau": (f"Between-project spread τ: {words.with_unit(tau.mean, metric)} ({100 * tau.hdi_prob:g}% interval "
                f"{words.interval(tau.hdi_low, tau.hdi_high, metric)}).") if tau.mean is not None else None,
    }


# ---------------------------------------------------------------------------- the evidence


def evidence(rows: list[dict], names: Names) -> dict:
    """Projects (strongest design first) and every estimate as reported, harmonised and pooled."""
    projects: dict[str, dict] = {}
    for r in rows:
        pid = text(r.get("project_id")) or text(r.get("estimate_id"))
        p = projects.setdefault(pid, {"row": r, "n": 0, "pooled": 0})
        p["n"] += 1
        p["pooled"] += int(bool(flag(r.get("poolable"))) and finite(r.get("yi")) is not None)
    ladder = [d for d in words.DESIGN_ORDER if d != "unspecified"]
    table = []
    for pid, p in sorted(projects.items(), key=lambda kv: (words.design_rank(text(kv[1]["row"].get("design"))), kv[0])):
        r = p["row"]
        design = text(r.get("design")) or "unspecified"
        table.append({
            "name": names.project(pid), "id": pid, "design": words.design_label(design),
            "grade": f"{ladder.index(design) + 1} of {len(ladder)}" if design in ladder else "–",
            "evaluator": ", ".join(w for w in (text(r.get(k)).replace("_", " ") for k in ("evaluator", "status")) if w) or "–",
            "outcome_source": text(r.get("outcome_source")).replace("_", " ") or "–",
            "risk_of_bias": text(r.get("risk_of_bias")) or "–", "source": text(r.get("source")) or "–",
            "pooled": f"{p['pooled']} of {p['n']}",
        })
    groups: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (words.design_rank(text(r.get("design"))), text(r.get("project_id")), text(r.get("estimate_id")))):
        groups.setdefault(text(r.get("project_id")) or text(r.get("estimate_id")), []).append(r)
    return {"projects": table,
            "groups": [{"name": names.project(pid), "design": words.design_label(text(g[0].get("design")) or "unspecified"),
                        "estimates": [estimate(r, names) for r in g]} for pid, g in groups.items()]}


def reported(r: dict) -> list[str]:
    """What the source reported for one estimate, in its own terms (direction and significance as written)."""
    metric = r.get("metric")
    out = []
    if finite(r.get("estimate")) is not None:
        part = f"{words.number(r.get('estimate'))} {text(metric)}"
        if finite(r.get("ci_low")) is not None and finite(r.get("ci_high")) is not None:
            part += f" [{100 * (finite(r.get('ci_level')) or 0.95):g}% CI {words.interval(r.get('ci_low'), r.get('ci_high'))}]"
        elif finite(r.get("se")) is not None:
            part += f" (SE {words.number(r.get('se'))})"
        out.append(part)
    if finite(r.get("estimate")) is None and finite(r.get("difference")) is not None:
        out.append(f"difference {words.number(r.get('difference'))} {text(metric)} ({text(r.get('difference_basis'))})")
    if finite(r.get("mean_treatment")) is not None or finite(r.get("mean_control")) is not None:
        part = f"group means {words.number(r.get('mean_treatment'))} vs {words.number(r.get('mean_control'))}"
        if finite(r.get("sd_treatment")) is not None or finite(r.get("sd_control")) is not None:
            part += f" (SD {words.number(r.get('sd_treatment'))} vs {words.number(r.get('sd_control'))})"
        out.append(part)
    if finite(r.get("target")) is not None:
        out.append(f"target {words.number(r.get('target'))}")
    if finite(r.get("p_value")) is not None:
        out.append(f"p = {words.number(r.get('p_value'))}")
    if text(r.get("direction")):
        out.append(f"direction: {text(r.get('direction'))}, {_significance(r)}")
    n_t, n_c = finite(r.get("n_treatment")), finite(r.get("n_control"))
    if n_t is not None or n_c is not None:
        out.append(f"n = {words.count(n_t)} vs {words.count(n_c)}")
    return out


def counted(r: dict) -> str | None:
    """How a direction-only finding was counted, where that differs from what was reported."""
    direction, on_scale = text(r.get("direction")), text(r.get("direction_counted"))
    if on_scale in ("increase", "decrease") and direction and on_scale != direction:  # a direction read from levels is not flipped
        return f"counted as an {on_scale} on the domain's scale: lower is better for this outcome"
    return None


def _significance(r: dict) -> str:
    return {True: "significant", False: "not significant"}.get(flag(r.get("significant")), "significance not stated")


def estimate(r: dict, names: Names) -> dict:
    dmetric = r.get("domain_metric")
    if flag(r.get("direction_only")):
        pooled = "direction only"
    elif flag(r.get("poolable")) and finite(r.get("yi")) is not None:
        pooled = "yes"
    else:
        pooled = "no: " + (text(r.get("exclusion_reason")) or "no usable effect size")
    return {
        "id": text(r.get("estimate_id")), "outcome": text(r.get("outcome")) or "–", "outcome_da": text(r.get("outcome_da")),
        "domain": names.domain(r.get("domain")), "estimand": text(r.get("estimand")),
        "reported": reported(r),
        "harmonised": (f"{words.number(r.get('yi'), dmetric)} ± {words.number(r.get('sei'), dmetric)} {text(dmetric)}"
                       if finite(r.get("yi")) is not None else "–"),
        "how": text(r.get("harmonisation")), "counted": counted(r), "pooled": pooled,
        "provenance": " · ".join(x for x in (text(r.get("source")), text(r.get("location"))) if x),
        "quote": text(r.get("quote")), "assumptions": text(r.get("assumptions")), "notes": text(r.get("notes")),
    }


def excluded(result: Result, rows: list[dict], names: Names) -> list[dict]:
    """Each estimate that did not enter a pooled effect, with the reason and the stage that left it out."""
    out: list[dict] = []
    seen: set[str] = set()
    for r in rows:
        if flag(r.get("direction_only")):
            continue
        if not flag(r.get("poolable")) or finite(r.get("yi")) is None or finite(r.get("sei")) is None:
            eid = text(r.get("estimate_id"))
            seen.add(eid)
            out.append({"id": eid, "project": names.project(r.get("project_id")), "domain": names.domain(r.get("domain")),
                        "reason": text(r.get("exclusion_reason")) or "no usable effect size and standard error", "stage": "evidence"})
    for x in result.exclusions:
        if x.estimate_id in seen:
            continue
        seen.add(x.estimate_id)
        out.append({"id": x.estimate_id, "project": names.project(x.project), "domain": names.domain(x.domain),
                    "reason": x.reason, "stage": x.stage})
    for d, dom in result.domains.items():
        projects_in = {p.project for p in dom.projects}
        for r in pooled_rows([r for r in rows if text(r.get("domain")) == d]):
            eid = text(r.get("estimate_id"))
            if text(r.get("project_id")) not in projects_in and eid not in seen:
                seen.add(eid)
                out.append({"id": eid, "project": names.project(r.get("project_id")), "domain": names.domain(d),
                            "reason": "not in this model's fit (its design or project is outside this model variant)", "stage": "model"})
    counts: dict[str, int] = {}
    for r in rows:
        d = text(r.get("domain"))
        if d and d not in result.domains:
            counts[d] = counts.get(d, 0) + 1
    out += [{"id": "–", "project": "–", "domain": names.domain(d), "stage": "model",
             "reason": f"domain not in the fit's result ({words.plural(n, 'estimate')})"} for d, n in counts.items()]
    return out


def findings(result: Result, rows: list[dict], names: Names, appraisal=None) -> list[dict]:
    """Findings reported only as a direction, nulls and positives alike, beside their domain's posterior: do they
    agree? With the ``appraisal`` (:func:`metaeval.appraisal.appraise`), also where each direction comes from and the
    region of the z-statistic it stands for in the model."""
    by_id = {f.estimate_id: f for f in appraisal.findings} if appraisal is not None else {}
    mode = result.model.direction_only.mode
    left_out = {x.estimate_id: x.stage for x in result.exclusions}
    out = []
    for r in rows:
        if not flag(r.get("direction_only")):
            continue
        d, eid = text(r.get("domain")), text(r.get("estimate_id"))
        dom = result.domains.get(d)
        on_scale = text(r.get("direction_counted")) or text(r.get("direction"))
        if eid in left_out or (dom is not None and mode == "exclude"):
            who = "the engine cannot use it" if left_out.get(eid) == "engine" else "the model leaves it out"
            used = f"no: {who}; shown beside it only"
        elif dom is None:
            used = "no: the domain was not fitted"
        else:
            used = "yes (censored likelihood)"
        p_same, agree = "–", "cannot tell"
        if dom is not None and dom.mu.p_beneficial is not None and on_scale in ("increase", "decrease"):
            p = dom.mu.p_beneficial if on_scale == dom.beneficial else 1 - dom.mu.p_beneficial
            p_same, agree = words.probability(p), "agrees" if p >= 0.8 else "disagrees" if p <= 0.2 else "inconclusive"
        effect = next((p for p in dom.projects if p.project == text(r.get("project_id"))), None) if dom else None
        metric = dom.metric if dom else None
        stated = text(r.get("direction")) or (f"{on_scale} (read from the levels)" if on_scale else "no direction")
        row = by_id.get(eid)
        out.append({
            "outcome": text(r.get("outcome")) or "–", "project": names.project(r.get("project_id")), "id": eid,
            "domain": names.domain(d), "reported": f"{stated}, {_significance(r)}",
            "counted": counted(r), "used": used, "region": row.region if row is not None and row.region else None,
            "pooled": (f"{words.number(dom.mu.mean, metric)} ({words.interval(dom.mu.hdi_low, dom.mu.hdi_high, metric)})"
                       if dom and dom.mu.mean is not None else "–"),
            "project_effect": (f"{words.number(effect.mean, metric)} ({words.interval(effect.hdi_low, effect.hdi_high, metric)})"
                               if effect is not None and effect.mean is not None else "–"),
            "p_same": p_same, "agree": agree,
        })
    return out


def risk_of_bias(appraisal, names: Names) -> list[dict]:
    """Every estimate's risk-of-bias judgements (its own where its outcome differs from its project's) and
    what the model did with them (:func:`metaeval.appraisal.appraise`); empty without judgements."""
    if appraisal is None:
        return []
    return [{"id": r.estimate_id, "project": names.project(r.project_id), "outcome": r.outcome or "–",
             "domain": names.domain(r.domain), "judgements": "; ".join(f"{k} {v}" for k, v in r.judgements.items()),
             "overall": r.overall or "–", "own": r.own or "", "treatment": r.treatment} for r in appraisal.risk_of_bias]


def rules_moves(moves, names: Names) -> dict:
    """Per domain, the pooled result before the appraisal rules and after each, each rule named with its documented
    reason (:func:`metaeval.appraisal.rules_moves`); where the record is not of this evidence, only why."""
    if not moves.applies:
        return {"applies": False, "why_not": moves.why_not}
    steps = [{"anchor": f"rule-{i}", "name": s.rule.name, "section": s.rule.section, "reason": s.rule.reason,
              "admitted": list(s.admitted), "removed": list(s.removed),
              "counts": ", ".join([*([f"{words.plural(len(s.admitted), 'estimate')} let in"] if s.admitted else []),
                                   *([f"{words.plural(len(s.removed), 'estimate')} left out"] if s.removed else [])])
              or "the same estimates enter (their SEs or priors change)", "state": s.rule.state}
             for i, s in enumerate(moves.steps, 1)]
    rows = []
    for c in moves.domains:
        cells = [None if m is None else {"mean": words.number(m.mean, c.metric), "interval": words.interval(m.hdi_low, m.hdi_high, c.metric),
                                         "p_beneficial": words.probability(m.p_beneficial), "n": m.n_estimates}
                 for _, m in c.results]
        before, after = c.results[0][1], c.results[-1][1]
        verdicts = [words.verdict(m.p_beneficial)[0] if m is not None else "not analysed" for m in (before, after)]
        rows.append({"domain": {"label": names.domains.get(c.domain) or c.label or c.domain, "anchor": names.anchors.get(c.domain)},
                     "units": words.unit_compact(c.metric), "cells": cells, "verdict_before": verdicts[0], "verdict_after": verdicts[1],
                     "verdict_changed": verdicts[0] != verdicts[1]})
    return {"applies": True, "columns": [{"label": "Before the rules", "anchor": None},
                                        *({"label": s["state"], "anchor": s["anchor"]} for s in steps)], "steps": steps, "rows": rows,
            "recorded": moves.recorded}


def assumptions(rows: list[dict], names: Names) -> dict:
    """Values the sources do not give, supplied by the curators; and the analyst judgements per domain."""
    estimates = [{"id": text(r.get("estimate_id")), "project": names.project(r.get("project_id")),
                  "domain": names.domain(r.get("domain")), "text": text(r.get("assumptions"))}
                 for r in rows if text(r.get("assumptions"))]
    per_domain: dict[str, dict] = {}
    for r in rows:
        d = text(r.get("domain"))
        if d and d not in per_domain:
            metric = r.get("domain_metric")
            per_domain[d] = {"domain": names.domain(d), "metric": text(metric) or "–",
                             "better": {"increase": "higher", "decrease": "lower"}.get(text(r.get("domain_beneficial")), "–"),
                             "mid": words.number(r.get("domain_mid"), metric), "scale": words.number(r.get("domain_scale"), metric),
                             "assumed": "; ".join((r.get("domain_assumed") or {}).values()) if isinstance(r.get("domain_assumed"), dict) else ""}
    return {"estimates": estimates, "domains": list(per_domain.values())}
