"""Presenting tables: terminal text, CSV and JSON, written so that what a file says is what it holds."""

from __future__ import annotations

import json
import math
from typing import IO, Any

_TERMINAL_COLUMNS = ["estimate_id", "design", "domain", "estimand", "metric", "estimate", "difference", "direction", "yi", "sei", "poolable",
                     "exclusion_reason"]


def plain(value: Any) -> Any:
    """A JSON-ready value: NaN → None, numpy scalars → Python, containers recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(obj: Any, sort_keys: bool = True) -> str:
    """Deterministic JSON: sorted keys (unless told to keep order), no NaN (null instead)."""
    return json.dumps(plain(obj), sort_keys=sort_keys, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_table(table, fmt: str, stream: IO[str], columns: str | list[str] | None = "core") -> None:
    """Write a DataFrame as an aligned text table, CSV (formula-safe) or JSON records."""
    from metaeval.harmonise import COLUMNS

    if columns == "core":
        columns = ["estimate_id", *COLUMNS]
    if columns is not None:
        table = table[[c for c in columns if c in table.columns]]
    if fmt == "json":
        stream.write(to_json(table.to_dict("records"), sort_keys=False))
    elif fmt == "csv":
        from metaeval.files import safe_csv

        stream.write(safe_csv(table))
    else:
        view = table[[c for c in _TERMINAL_COLUMNS if c in table.columns]].copy()
        if "exclusion_reason" in view:
            view["exclusion_reason"] = view["exclusion_reason"].map(
                lambda s: "" if not isinstance(s, str) else s if len(s) < 60 else s[:57] + "...")
        stream.write(view.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="") + "\n")


# --- a fit's result as text, CSV and JSON -------------------------------------------------------------

#: The columns of the long table (``Result.to_frame()``, ``summary.csv``).
SUMMARY_COLUMNS = ("domain", "quantity", "project", "mean", "sd", "hdi_low", "hdi_high", "hdi_prob", "p_beneficial",
                   "p_mid", "raw", "raw_se", "pooling", "p_best", "design", "certainty", "assumed")


def summary_rows(result) -> list[dict]:
    """The long table's rows: one per domain and quantity (mu, tau, omega, theta_new, project), keyed by ``SUMMARY_COLUMNS``.

    Every row of a domain carries its certainty and what was assumed about it: a reader of one row must see them.
    """
    rows = []
    for d, dom in sorted(result.domains.items()):
        common = {"domain": d, "assumed": "; ".join(dom.assumed.values()) or None,
                  "certainty": dom.certainty.level if dom.certainty else None}
        for q in ("mu", "tau", "omega", "theta_new"):
            block = getattr(dom, q)
            if block is not None:
                rows.append({**common, "quantity": q, **block.model_dump()})
        for p in dom.projects:
            rows.append({**common, "quantity": "project", "project": p.key, **p.model_dump(exclude={"project", "estimate_id", "bias"}),
                         "hdi_prob": dom.mu.hdi_prob})
    return [{c: row.get(c) for c in SUMMARY_COLUMNS} for row in rows]


def summary_csv(result) -> str:
    """The long table as CSV (written without pandas); names from the evidence cannot act as spreadsheet formulas."""
    import csv
    import io

    from metaeval.cells import present
    from metaeval.files import defuse_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerows([defuse_cell(v) if present(v) else "" for v in row.values()] for row in summary_rows(result))
    return buffer.getvalue()


def _g(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def summary_table(result) -> str:
    """A plain-text rendering of a result for a terminal."""
    lines = []
    for d, dom in sorted(result.domains.items()):
        mid = f"; MID {_g(dom.mid)}" if dom.mid is not None else ""
        lines.append(f"{d}: {dom.label} ({dom.metric or 'metric not stated'}; {dom.beneficial} is beneficial{mid})")
        lines += [f"  note: {a}" for a in dom.assumed.values()]
        designs = ", ".join(f"{k} {v}" for k, v in dom.designs.items())
        lines.append(f"  rests on {dom.n_projects} project(s), {dom.n_estimates} estimate(s): "
                     f"{', '.join(p.key for p in dom.projects)}; designs: {designs}")
        if dom.certainty is not None:
            reasons = "; ".join(g.reason for g in dom.certainty.downgrades)
            lines.append(f"  certainty: {dom.certainty.level}" + (f" ({reasons})" if reasons else ""))
        pct = f"{dom.mu.hdi_prob:.0%}"
        for q, name in (("mu", "average effect"), ("tau", "between-project SD"), ("omega", "within-project SD"),
                        ("theta_new", "a new project")):
            s = getattr(dom, q)
            if s is None:
                continue
            extra = ""
            if s.p_beneficial is not None:
                extra += f"  P(beneficial) {_g(s.p_beneficial, 2)}"
            if s.p_mid is not None:
                extra += f"  P(beyond MID) {_g(s.p_mid, 2)}"
            lines.append(f"  {name:<19} {_g(s.mean):>8}  sd {_g(s.sd):<7} {pct} HDI [{_g(s.hdi_low)}, {_g(s.hdi_high)}]{extra}")
        if dom.prior_influence is not None and dom.prior_influence.driven:
            lines.append(f"  note: driven by its prior: {', '.join(dom.prior_influence.driven)} (posterior SD over "
                         f"{dom.prior_influence.threshold:.0%} of the prior's)")
        lines.append(f"  {'project':<26} {'design':<18} {'raw (se)':<16} {'shrunken [' + pct + ' HDI]':<28} {'pooling':>7} {'P(best)':>8}")
        for p in dom.projects:
            raw = f"{_g(p.raw)} ({_g(p.raw_se)})" if p.raw is not None else "direction only"
            shrunk = f"{_g(p.mean)} [{_g(p.hdi_low)}, {_g(p.hdi_high)}]"
            lines.append(f"  {p.key:<26} {p.design:<18} {raw:<16} {shrunk:<28} {_g(p.pooling, 2):>7} {_g(p.p_best, 2):>8}")
        lines += [f"  note: {note}" for note in dom.notes]
        left_out = result.exclusions_in(d)
        if left_out:
            lines.append(f"  note: {len(left_out)} estimate(s) of this domain left out, each with its reason (--format json: exclusions)")
        lines.append("")
    diag = result.diagnostics
    if diag is not None:
        state = "passed" if diag.passed else "FAILED"
        lines.append(f"diagnostics gate {state}: R-hat max {_g(diag.rhat_max, 4)}, bulk ESS min {_g(diag.ess_bulk_min, 4)}, "
                     f"tail ESS min {_g(diag.ess_tail_min, 4)}, divergences {diag.divergences}")
        lines += [f"  gate: {failure}" for failure in diag.failures]
        from metaeval.words import exact_difference, exact_not_computed

        if diag.cross_check is not None:
            lines.append(f"  against the exact answer: largest difference {exact_difference(diag.cross_check)}")
        else:
            lines.append(f"  against the exact answer: not computed: {exact_not_computed(diag)}")
    else:
        lines.append(f"engine: {result.engine} (no sampling, no MCMC diagnostics)")
    model = result.model
    lines.append(f"model: {model.name} ({model.description})" + (f"; seed {result.seed}" if result.seed is not None else ""))
    lines.append(f"  priors ({model.units}):")
    params = sorted({param for dom in result.domains.values() for param in dom.priors})
    for param in params:
        groups: dict[str, list[str]] = {}
        for d, dom in sorted(result.domains.items()):
            if param in dom.priors:
                groups.setdefault(dom.priors[param], []).append(d)
        lines.append(f"    {param}: " + "; ".join(f"{text} ({', '.join(ds)})" for text, ds in groups.items()))
    bias = model.bias
    if bias.mode == "additive":
        lines.append("    bias (normal(mean, sd) x scale, beneficial direction): " + ", ".join(f"{k} {v}" for k, v in bias.designs.items()))
    elif bias.mode == "variance_inflation":
        lines.append("    design weights (SE / sqrt(weight)): " + ", ".join(f"{k} {v}" for k, v in bias.weights.items()))
    elif bias.mode == "hierarchical":
        lines.append("    design-bias hierarchy (scale units): " + ", ".join(f"{k} {v}" for k, v in bias.hierarchy.items()))
    if model.overrides:
        lines.append("  prior overrides (absolute): " + ", ".join(f"{k}={v}" for k, v in model.overrides.items()))
    if result.exclusions:
        lines.append(f"  {len(result.exclusions)} estimate(s) left out, each with its reason (see the JSON's \"exclusions\")")
    return "\n".join(lines) + "\n"


def render(result, fmt: str) -> str:
    """A result as ``table``, ``csv`` or ``json`` text."""
    if fmt == "json":
        return result.to_json()
    if fmt == "csv":
        return summary_csv(result)
    return summary_table(result)


# --- the analyst's questions: comparison, plan, costs as terminal text -------------------------------


def _pct(p) -> str:
    from metaeval.words import probability

    return probability(p)


def comparison_table(comparison, names=None) -> str:
    """A comparison (``metaeval.compare``) as terminal text: per domain the sentences, ranks and P(row better than column)."""
    names = names or {}
    name = lambda p: names.get(p, p)  # noqa: E731
    lines = []
    for d, dc in comparison.domains.items():
        source = f"ranks from {dc.n_draws} draws, P(best) and P(better) integrated" if dc.integrated else f"{dc.n_draws} draws"
        lines.append(f"{d}: {dc.label} ({dc.beneficial} is beneficial; {source})")
        lines += [f"  {s}" for s in dc.sentences]
        ref = dc.reference is not None
        lines.append(f"  {'project':<28} {'design':<18} {'P(best)':>8} {'E[rank]':>8} {'range':>6}" + (f" {'P(best) ' + dc.reference:>18}" if ref else ""))
        for r in dc.ranks:
            lines.append(f"  {r.project:<28} {r.design:<18} {_pct(r.p_best):>8} {r.expected_rank:>8.2f} {f'{r.rank_low}-{r.rank_high}':>6}"
                         + (f" {_pct(r.p_best_reference):>18}" if ref else ""))
        order = [r.project for r in dc.ranks]
        width = max(8, *(len(p) for p in order))
        lines.append("  P(row better than column)")
        lines.append("  " + " " * 28 + " ".join(f"{p:>{width}}" for p in order))
        for a in order:
            lines.append(f"  {a:<28}" + " ".join(f"{'-' if a == b else _pct(dc.pairwise[a][b]):>{width}}" for b in order))
        if dc.flips:
            lines.append("  driven by the bias assumptions (order flips under " + f"{dc.reference}): "
                         + "; ".join(f"{name(a)} over {name(b)}" for a, b in dc.flips))
        lines.append("")
    for d, why in comparison.skipped.items():
        lines.append(f"{d}: not compared: {why}")
    if comparison.reference is None:
        lines.append("note: the order was not checked against a model without bias adjustment")
    return "\n".join(lines).rstrip() + "\n"


def plan_table(plan) -> str:
    """A plan (``metaeval.plan``) as terminal text: per domain today's verdict and, per study size, what a new study would do."""
    lines = []
    for d, dp in plan.domains.items():
        lines.append(f"{d}: {dp.label}: today '{dp.verdict}' (P(beneficial) {_pct(dp.p_beneficial)}), interval width {_g(dp.width)}")
        lines.append(f"  new study's SE: {dp.se_basis}")
        lines.append(f"  {'n/arm':>6} {'SE':>8} {'E[width]':>9} {'of now':>7} {'P(change)':>10} {'± MC':>6} {'closed form':>19} {'min ESS':>8}")
        for p in dp.points:
            closed = f"{_g(p.closed_form.expected_width)}; {_pct(p.closed_form.p_change)}"
            lines.append(f"  {p.n if p.n is not None else '-':>6} {_g(p.se):>8} {_g(p.expected_width):>9} {p.width_ratio:>7.0%} "
                         f"{_pct(p.p_change):>10} {100 * p.p_change_mcse:>5.1f}  {closed:>19} {p.ess_min:>8.0f}")
        lines += [f"  note: {n}" for n in dp.notes]
        lines.append("")
    for d, why in plan.skipped.items():
        lines.append(f"{d}: not planned: {why}")
    best = plan.most_changed()
    if best is not None:
        d, p = best
        lines.append(f"most likely to change: {d} ({_pct(p.p_change)} with {p.n if p.n is not None else 'SE ' + _g(p.se)} per arm)")
    lines.append(f"method: {plan.method}; seed {plan.seed}")
    return "\n".join(lines).rstrip() + "\n"


def costs_table(figures, effectiveness=None) -> str:
    """Cost figures as printed, and the cost per person helped where computed, as terminal text."""
    lines = []
    for f in figures:
        unit = "thousand DKK" if f.unit == "dkk_1000" else "DKK"
        value = f.statement if f.estimate is None else f"{f.estimate:,g} {unit}" + (f" ({f.ci_level:.0%} CI {f.ci_low:,g} to {f.ci_high:,g})" if f.ci_low is not None else "")
        price = f"{f.price_year} prices" if f.price_year else "price year not stated"
        lines.append(f"{f.project}/{f.id}: {f.what}")
        lines.append(f"  {value}; per {f.per}; {price}; {f.perspective} perspective ({f.source}, {f.provenance.location})")
        if f.no_ratio:
            lines.append(f"  no cost per person helped: {f.no_ratio}")
    if effectiveness is not None:
        lines.append("")
        for r in effectiveness.results:
            ratio = ("no interval" if r.ratio is None else
                     f"median {r.ratio.median:,.0f} DKK ({r.ratio.prob:.0%} interval {r.ratio.low:,.0f} to {r.ratio.high:,.0f})")
            lines.append(f"{r.project}/{r.cost} per {r.outcome} (effect: {r.basis}; {r.currency}, {r.perspective} perspective): "
                         f"P(helps) {_pct(r.p_helps)}, P(saves) {_pct(r.p_saves)}, cost per person helped {ratio}"
                         + (f", P(worth it at {r.wtp:,.0f} DKK) {_pct(r.p_below_wtp)}" if r.wtp is not None else ""))
            if r.ratio_note:
                lines.append(f"  note: {r.ratio_note}")
        for a in dict.fromkeys(a for r in effectiveness.results for a in r.assumptions):
            lines.append(f"assumed: {a}")
        for k, why in effectiveness.no_ratio.items():
            if "/" in k:
                lines.append(f"{k}: no cost per person helped: {why}")
    return "\n".join(lines).rstrip() + "\n"
