"""The report's views of the initiatives: the initiatives × domains matrix, a card per initiative, the pairwise
comparison, costs and what a new evaluation would settle. Plain data, as in :mod:`metaeval.views`."""

from __future__ import annotations

from metaeval import words
from metaeval.influence import ONLY_PROJECT
from metaeval.result import Result
from metaeval.views import Names, slug, text

#: How strong the design behind a number is, for a reader who does not know the ladder: dots out of three.
_STRENGTH = {"rct": 3, "matched_register": 2, "comparison_group": 1, "area_comparison": 1, "before_after": 0,
             "target_benchmark": 0, "single_arm": 0}
_STRENGTH_WORDS = {3: "strong design", 2: "fairly strong design", 1: "weak design", 0: "very weak design"}
_KINDS = {"cost_effect": "difference in expenditure between the groups compared", "net_surplus": "net surplus from the source's business case",
          "programme_cost": "cost of delivering the programme", "cost_change": "change in expenditure over time, same people"}


def strength(design: str | None) -> dict:
    """A design's strength as a mark (●●● randomised … ○○○ no comparison group), a word and its ladder label.

    A cell resting on several designs ("matched_register+before_after") is as strong as the weakest.
    """
    parts = [d for d in text(design).split("+") if d] or ["unspecified"]
    weakest = max(parts, key=words.design_rank)
    level = min((_STRENGTH.get(d) for d in parts if d in _STRENGTH), default=None)
    label = " + ".join(words.design_label(d) for d in parts)
    if level is None:
        return {"mark": "···", "words": "design not stated", "label": label, "css": "sx", "design": weakest}
    return {"mark": "●" * level + "○" * (3 - level), "words": _STRENGTH_WORDS[level], "label": label, "css": f"s{level}", "design": weakest}


def _card_anchor(pid: str, taken: set[str]) -> str:
    return "initiative-" + slug(pid, taken)


def matrix(analysis, result: Result, names: Names) -> dict:
    """Initiatives × domains at a glance: per cell the estimated effect, how likely it helps, and how strong the design is."""
    profiles = analysis.profiles
    columns = []
    for d in profiles.domains:
        dom = result.domains[d]
        columns.append({"label": dom.label, "anchor": names.anchors.get(d), "units": words.unit_compact(dom.metric),
                        "better": {"increase": "higher is better", "decrease": "lower is better"}[dom.beneficial]})
    taken: set[str] = set()
    rows = []
    for prof in profiles.profiles:
        cells = []
        for d in profiles.domains:
            e, dom = prof.effect(d), result.domains[d]
            if e is None:
                cells.append({"kind": "none", "text": "not measured"})
            elif e.status == "not pooled":
                cells.append({"kind": "unused", "text": "reported, not usable", "detail": words.plural(e.n_figures, "figure")})
            elif e.estimates:
                cells.append({"kind": "unused", "text": f"{len(e.estimates)} estimates", "detail": "pooled separately: see the domain"})
            else:
                verdict, css = words.verdict(e.p_beneficial)
                no_number = e.raw is None and dom.certainty is not None and not dom.certainty.effect_shown
                cells.append({"kind": "effect", "verdict": verdict, "css": css, "strength": strength(e.design),
                              "text": "no number" if no_number else words.number(e.mean, dom.metric),
                              "p": ("≈ " if not e.from_draws else "") + words.probability(e.p_beneficial),
                              "detail": "reported only as a direction" if e.raw is None else
                                        f"range {words.interval(e.hdi_low, e.hdi_high, dom.metric)}"})
        rows.append({"name": prof.name, "anchor": _card_anchor(prof.project, taken), "strength": strength(prof.design), "cells": cells})
    legend = [(css, label) for label, css in dict.fromkeys(words.verdict(p) for p in (0.99, 0.95, 0.8, 0.5, 0.2, 0.05, 0.01))]
    return {"columns": columns, "rows": rows, "legend": legend, "hdi": f"{100 * result.domains[profiles.domains[0]].mu.hdi_prob:g}%" if profiles.domains else "95%",
            "strengths": [{"mark": "●" * k + "○" * (3 - k), "css": f"s{k}", "words": _STRENGTH_WORDS[k],
                           "designs": ", ".join(words.design_label(d) for d, level in _STRENGTH.items() if level == k)} for k in (3, 2, 1, 0)],
            "approximate": any(e.status == "pooled" and not e.estimates and not e.from_draws for p in profiles.profiles for e in p.effects)}


def cards(analysis, result: Result, names: Names) -> list[dict]:
    """One card per initiative: who evaluated it and how, its effect in every domain, its costs, and what could not be used."""
    costs_by_project: dict[str, list] = {}
    for f in analysis.costs:
        costs_by_project.setdefault(f.project, []).append(f)
    ratios = {}
    if analysis.cost_effectiveness is not None:
        for r in analysis.cost_effectiveness.results:
            ratios.setdefault(r.project, []).append(r)
    taken: set[str] = set()
    out = []
    for prof in analysis.profiles.profiles:
        effects, other, separate = [], [], []
        for e in prof.effects:
            dom = result.domains.get(e.domain)
            if dom is None or e.status != "pooled":
                other.append(names.domain(e.domain))
                continue
            if e.estimates:
                separate.append(names.domain(e.domain))
                continue
            metric, shift = dom.metric, e.shift
            effects.append({
                "domain": names.domain(e.domain), "better": {"increase": "higher", "decrease": "lower"}[dom.beneficial],
                "raw": (f"{words.number(e.raw, metric)} ± {words.number(e.raw_se, metric)}" if e.raw is not None else "direction only"),
                "effect": f"{words.number(e.mean, metric)} ({words.interval(e.hdi_low, e.hdi_high, metric)})",
                "p_beneficial": ("≈ " if not e.from_draws else "") + words.probability(e.p_beneficial),
                "p_mid": "–" if e.p_mid is None else ("≈ " if not e.from_draws else "") + words.probability(e.p_mid),
                "mid": words.with_unit(dom.mid, metric) if dom.mid is not None else "–",
                "verdict": words.verdict(e.p_beneficial),
                "shift": _shift_text(shift, metric),
                "used": f"{e.n_entered} of {e.n_figures}" + (f" ({e.n_direction_only} direction only)" if e.n_direction_only else ""),
                "bias": f"{words.number(e.bias.mean, metric)} ± {words.number(e.bias.sd, metric)}" if e.bias else "none",
            })
        reasons: dict[str, list[str]] = {}
        for u in prof.unused:
            reasons.setdefault(u.reason, []).append(f"{u.estimate_id} ({names.domain(u.domain)['label']})")
        out.append({
            "anchor": _card_anchor(prof.project, taken), "name": prof.name, "id": prof.project, "strength": strength(prof.design),
            "facts": [("Design", words.design_label(prof.design)), ("Evaluator", (prof.evaluator or "–").replace("_", " ")),
                      ("Status", prof.status or "–"), ("Risk of bias", prof.risk_of_bias or "–"),
                      ("Outcome data", (prof.outcome_source or "–").replace("_", " ")), ("Source", prof.source or "–")],
            "effects": effects, "other_domains": other, "separate_domains": separate,
            "costs": [cost_row(f) for f in costs_by_project.get(prof.project, [])],
            "ratios": [ratio_row(r) for r in ratios.get(prof.project, [])],
            "unused": [{"reason": reason, "figures": ids} for reason, ids in reasons.items()],
        })
    return out


def _shift_text(shift, metric) -> str:
    if shift is None:
        return "–"
    if shift.shift is None:
        return "only project here" if shift.note == ONLY_PROJECT else "–"
    out = f"{'+' if shift.shift > 0 else ''}{words.number(shift.shift, metric)}"
    if shift.shift_in_sd is not None:
        out += f" ({abs(shift.shift_in_sd):.1f} SD)"
    return out + ("" if shift.reliable else " (unreliable)")


def _as_printed(x: float) -> str:
    """An amount with the digits the source printed: thousands separated, a true minus sign."""
    return (f"{x:,.0f}" if float(x).is_integer() else f"{x:,}").replace("-", "−")


def cost_row(f) -> dict:
    """A cost figure as the source prints it: value, unit, per what, price year, perspective, provenance."""
    unit = "thousand DKK" if f.unit == "dkk_1000" else "DKK"
    if f.estimate is None:
        value = f.statement
    else:
        value = f"{_as_printed(f.estimate)} {unit}"
        if f.ci_low is not None:
            value += f" ({100 * f.ci_level:g}% CI {_as_printed(f.ci_low)} to {_as_printed(f.ci_high)})"
        sign = {"cost_effect": ("a saving", "extra cost"), "cost_change": ("a fall", "a rise"), "net_surplus": ("a net loss", "a net gain"),
                "programme_cost": ("", "")}[f.kind]
        value += f": {sign[0] if f.estimate < 0 else sign[1]}" if sign[0] else ""
    basis = [f"per {f.per}", f"{f.price_year} prices" if f.price_year else "price year not stated"]
    if f.discount_rate is not None:
        basis.append(f"discounted at {100 * f.discount_rate:g}% a year")
    basis.append(f"{f.perspective} perspective")
    if f.period:
        basis.append(f.period)
    return {"id": f.id, "what": f.what, "what_da": f.what_da, "kind": _KINDS[f.kind], "value": value, "basis": ", ".join(basis),
            "provenance": f"{f.source} · {f.provenance.location}", "quote": f.provenance.quote, "notes": f.notes or "",
            "no_ratio": f.no_ratio or "", "price_note": f.price_year_missing or ""}


def _money(x: float) -> str:
    """A cost per person helped in words: a saving below zero, a cost above."""
    return f"a saving of {words.number(-x, 'dkk')} DKK" if x < 0 else f"a cost of {words.number(x, 'dkk')} DKK"


def ratio_row(r) -> dict:
    """One cost per person helped, in words and numbers."""
    ratio = "no interval (see the note)"
    if r.ratio:
        ratio = (f"{_money(r.ratio.median)} per person helped (median; {100 * r.ratio.prob:g}% interval from "
                 f"{_money(r.ratio.low)} to {_money(r.ratio.high)})")
    per = r.per[:-1] + "ies" if r.per.endswith("y") else r.per + "s"
    return {"outcome": r.outcome, "basis": {"model": "model (bias-adjusted, pooled)", "trial": "trial alone"}[r.basis],
            "helped": f"{words.number(r.helped_mean * 100, 'count')} per 100 {per}", "p_helps": words.probability(r.p_helps),
            "p_saves": words.probability(r.p_saves), "ratio": ratio, "note": r.ratio_note,
            "wtp": None if r.wtp is None else f"{words.probability(r.p_below_wtp)} at {words.number(r.wtp, 'dkk')} DKK",
            "currency": r.currency, "quadrants": "; ".join(f"{k} {words.probability(v)}" for k, v in r.quadrants.items())}


def comparison_view(analysis, names: Names) -> dict:
    """Which initiative does more, per domain: ranks, P(row better than column), and the sentences."""
    comp = analysis.comparison
    if comp is None:
        return {"domains": [], "missing": analysis.missing.get("comparison"), "reference": None, "skipped": [], "integrated": False, "n_draws": None}
    out = []
    for d, dc in comp.domains.items():
        hdi = f"{100 * dc.hdi_prob:g}%"
        order = [r.project for r in dc.ranks]
        out.append({
            "domain": names.domain(d), "sentences": list(dc.sentences),
            "ranks": [{"name": names.project(r.project), "strength": strength(r.design), "p_best": words.probability(r.p_best),
                       "rank": f"{r.expected_rank:.1f}", "interval": f"{r.rank_low}–{r.rank_high}",
                       "p_best_reference": words.probability(r.p_best_reference) if r.p_best_reference is not None else None}
                      for r in dc.ranks],
            "header": [names.project(p) for p in order],
            "pairs": [{"name": names.project(a), "cells": [("–" if a == b else words.probability(dc.pairwise[a][b])) for b in order],
                       "css": [("" if a == b else _pair_css(dc.pairwise[a][b])) for b in order]} for a in order],
            "flips": [f"{names.project(a)} over {names.project(b)}" for a, b in dc.flips], "hdi": hdi,
        })
    integrated = [dc for dc in comp.domains.values() if dc.integrated]
    return {"domains": out, "missing": None, "reference": comp.reference or analysis.missing.get("reference"),
            "checked": comp.reference is not None, "integrated": bool(integrated), "n_draws": integrated[0].n_draws if integrated else None,
            "skipped": [f"{names.domain(d)['label']}: {why}" for d, why in comp.skipped.items()]}


def _pair_css(p: float) -> str:
    return words.verdict(p)[1]


def costs_view(analysis, names: Names, figure: dict | None = None) -> dict:
    """Every cost figure beside its initiative, the cost per person helped where one can be computed, and why not elsewhere."""
    ce = analysis.cost_effectiveness
    by_project: dict[str, list] = {}
    for f in analysis.costs:
        by_project.setdefault(f.project, []).append(cost_row(f))
    return {"initiatives": [{"name": names.project(p), "rows": rows} for p, rows in by_project.items()],
            "ratios": [{"name": names.project(r.project), **ratio_row(r)} for r in ce.results] if ce else [],
            "assumptions": list(dict.fromkeys(a for r in ce.results for a in r.assumptions)) if ce else [],
            "no_ratio": [{"what": k, "why": v} for k, v in ce.no_ratio.items()] if ce else [],
            "missing": analysis.missing.get("cost_effectiveness"), "figure": figure}


def plan_view(analysis, figure: dict | None = None) -> dict:
    """What a new randomised evaluation would do, per domain: narrower interval, P(a different verdict)."""
    plan = analysis.plan
    if plan is None:
        return {"missing": analysis.missing.get("plan"), "domains": [], "headline": None, "figure": None, "method": "", "skipped": []}
    rows = []
    for dp in plan.domains.values():
        for i, pt in enumerate(dp.points):
            rows.append({"domain": dp.label, "first": i == 0, "span": len(dp.points), "verdict": dp.verdict,
                         "width": words.number(dp.width, dp.metric), "n": pt.n if pt.n is not None else "–",
                         "se": words.number(pt.se, dp.metric), "expected": f"{words.number(pt.expected_width, dp.metric)} ({100 * pt.width_ratio:.0f}%)",
                         "p_change": f"{words.probability(pt.p_change)} ± {100 * pt.p_change_mcse:.0f}",
                         "closed": f"{words.number(pt.closed_form.expected_width, dp.metric)}; {words.probability(pt.closed_form.p_change)}",
                         "basis": dp.se_basis})
    best = plan.most_changed()
    headline = None
    if best is not None:
        d, pt = best
        dp = plan.domains[d]
        likely = max(pt.verdicts.items(), key=lambda kv: kv[1])
        headline = (f"A new randomised evaluation would most likely change the verdict in {dp.label}: with {pt.n} per arm the verdict "
                    f"('{dp.verdict}' today) changes with probability {words.probability(pt.p_change)}, and the interval of the average "
                    f"effect is expected to shrink to {100 * pt.width_ratio:.0f}% of today's width (most likely new verdict: '{likely[0]}', "
                    f"{words.probability(likely[1])}).")
    return {"missing": None, "domains": rows, "headline": headline, "figure": figure, "method": plan.method,
            "skipped": [f"{k}: {v}" for k, v in plan.skipped.items()],
            "notes": [f"{dp.label}: {n}" for dp in plan.domains.values() for n in dp.notes]}
