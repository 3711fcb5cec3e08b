"""The report's views of the model and the fit: priors and settings, the diagnostics gate, and the optional
sections other commands supply (robustness, sensitivity, calibration). Plain data, as in :mod:`metaeval.views`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from metaeval import words
from metaeval.cells import present
from metaeval.result import Result
from metaeval.views import slug, text

#: Sections other engineers may supply through ``extras``, in report order: key -> (title, what is missing).
EXTRA_SECTIONS = {
    "robustness": ("Robustness: what could change a verdict",
                   "No robustness check was run for this report (`metaeval run` adds one; `metaeval sensitivity` runs the full grid)."),
    "comparison": ("Model variants compared", "No model comparison was run for this report (the sensitivity command compares model variants)."),
    "sensitivity": ("Sensitivity to priors and bias assumptions",
                    "No sensitivity analysis was run for this report (run the sensitivity command to add one)."),
    "calibration": ("Calibration of the model", "No calibration check (simulation-based calibration) was run for this report."),
}
#: Diagnostics gate: label and default limit of each value.
GATE = {"rhat_max": ("R-hat, largest", "≤ 1.01"), "ess_bulk_min": ("bulk ESS, smallest", "≥ 400"),
        "ess_tail_min": ("tail ESS, smallest", "≥ 400"), "divergences": ("divergent transitions", "0")}


def priors(result: Result) -> dict:
    """The model that was fitted: its priors (in scale units and per domain), bias assumptions, settings."""
    model = result.model
    params = list(dict.fromkeys(p for dom in result.domains.values() for p in dom.priors))
    return {
        "name": model.name, "description": model.description, "source": model.source, "units": model.units,
        "priors": dict(model.priors),
        "per_domain": {"params": params, "rows": [{"domain": dom.label, "priors": [dom.priors.get(p, "–") for p in params]}
                                                  for dom in result.domains.values()]},
        "bias_mode": model.bias.mode,
        "bias_designs": [{"design": words.design_label(d), "prior": v} for d, v in sorted(model.bias.designs.items(), key=lambda kv: words.design_rank(kv[0]))],
        "bias_other": {k: v for k, v in (("weights", model.bias.weights), ("hierarchy", model.bias.hierarchy)) if v},
        "bias_terms": [t.model_dump() for t in model.bias_terms],
        "settings": {k: v for k, v in (("direction-only findings", f"{model.direction_only.mode}" + (f", SE prior {model.direction_only.se}" if model.direction_only.se else "")),
                                       ("effects", model.effects), ("designs admitted", ", ".join(model.designs) or "–"),
                                       ("target_accept", _target_accept(model)), ("interval probability", model.hdi_prob),
                                       ("overrides", ", ".join(f"{k}={v}" for k, v in model.overrides.items()) or "none"),
                                       *_appraisal_options(model))},
    }


def _target_accept(model) -> float | str | None:
    """The target acceptance the sampler used (None: nothing was sampled), and the model's rule where it has one for
    integrated-out effects."""
    used = model.sampler.target_accept if model.sampler is not None and model.sampler.target_accept is not None else model.target_accept
    if used is None or model.target_accept_integrated is None:
        return used
    return (f"{used:g} (the model's {model.target_accept:g}, or {model.target_accept_integrated:g} where every project effect "
            "is integrated out)")


def _appraisal_options(model) -> list[tuple[str, str]]:
    """How the fit applied the appraisal rules that are model options (data/README.md); none where it did not say."""
    out = []
    if model.inferred_benefit is not None:
        out.append(("outcomes whose benefit the curator inferred", {"exclude": "left out", "include": "admitted"}[model.inferred_benefit]))
    rule = model.risk_of_bias
    if rule is not None:
        out.append((f"risk of bias judged high ({', '.join(rule.domains)})",
                    {"inflate": f"widens the bias prior by {rule.sd:g} x the domain's scale per domain judged high",
                     "exclude": "the estimate is left out", "ignore": "shown, not used"}[rule.high]))
    return out


def diagnostics(result: Result) -> dict:
    diag = result.diagnostics
    if diag is None:
        error = result.numerical.error_sd_max if result.numerical else None
        return {"exact": True, "rows": [], "gate": None, "failures": [], "error_sd": None if error is None else f"{error:.2g}"}
    limits = {k: limit for k, (_, limit) in GATE.items()}
    t = diag.thresholds  # the gate the fit was judged by, not the defaults
    if "rhat_max" in t:
        limits["rhat_max"] = f"≤ {t['rhat_max']:g}"
    if "ess_min" in t:
        limits["ess_bulk_min"] = limits["ess_tail_min"] = f"≥ {t['ess_min']:g}"
    if "divergences" in t:
        limits["divergences"] = "0" if t["divergences"] == 0 else f"≤ {t['divergences']:g}"
    values = {"rhat_max": diag.rhat_max, "ess_bulk_min": diag.ess_bulk_min, "ess_tail_min": diag.ess_tail_min,
              "divergences": diag.divergences}
    rows = [{"check": GATE[k][0], "value": "–" if v is None else f"{v:.4g}", "limit": limits[k], "numeric": True} for k, v in values.items()]
    check = diag.cross_check
    if check is not None:  # the exact answer for the same model, where it has one
        rows.append({"check": "against the exact answer, largest difference",
                     "value": words.exact_difference(check),
                     "limit": f"≤ {check.threshold:g} Monte Carlo SEs", "numeric": False})
    else:
        rows.append({"check": "against the exact answer", "value": f"not computed: {words.exact_not_computed(diag)}", "limit": "–", "numeric": False})
    return {"exact": False, "gate": "passed" if diag.passed else "FAILED", "failures": list(diag.failures), "rows": rows}


def extra(key: str, value: Any) -> dict:
    """An optional section supplied by another part of metaeval: text, a table and figures (as given)."""
    title = value.get("title") if isinstance(value, Mapping) and value.get("title") else \
        EXTRA_SECTIONS.get(key, (key.replace("_", " ").capitalize(), ""))[0]
    anchor = key if key in EXTRA_SECTIONS else f"extra-{slug(key, set())}"
    if value is None:
        return {"key": key, "anchor": anchor, "title": title, "paragraphs": [], "table": None, "figures": [],
                "missing": EXTRA_SECTIONS.get(key, ("", "Not available."))[1]}
    if isinstance(value, str):
        value = {"text": value}
    elif not isinstance(value, Mapping):
        value = {"table": value} if hasattr(value, "to_dict") or isinstance(value, list) else {"figures": [value]}
    paragraphs = [value["text"]] if isinstance(value.get("text"), str) else list(value.get("text") or [])
    table = value.get("table")
    records = (table.to_dict("records") if hasattr(table, "to_dict") else [dict(r) for r in table]) if table is not None else []
    columns = list(dict.fromkeys(k for r in records for k in r))
    figures = value.get("figures") or ([value["figure"]] if value.get("figure") is not None else [])
    if isinstance(figures, Mapping):
        figures = [{"caption": k, "figure": v} for k, v in figures.items()]
    return {"key": key, "anchor": anchor, "title": title, "paragraphs": paragraphs,
            "table": {"columns": columns, "rows": [[cell(r.get(c)) for c in columns] for r in records],
                      "numeric": [i for i, c in enumerate(columns) if all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                                                          for r in records if present(r.get(c)))]} if records else None,
            "figures": [(f.get("figure"), f.get("caption")) if isinstance(f, Mapping) else (f, None) for f in figures],
            "missing": None if paragraphs or records or figures else "This section was supplied empty."}


def cell(value: Any) -> str:
    """A table cell from data: numbers in 4 significant digits, containers as text, '–' when missing."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "–"
    if isinstance(value, Mapping):
        return text(value) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return "–" if not present(value) else str(value)
