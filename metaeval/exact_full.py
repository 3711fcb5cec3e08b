"""Exact inference for the bias-adjusted model: the :class:`~metaeval.model.Layout` in, the summary out.

Whenever a model is conditionally Gaussian given each domain's variance parameters (additive bias with
fixed priors, no bias, variance inflation, any inclusion rule; direction-only findings censored or left
out), its posterior is computed by :mod:`metaeval.exact_core` without sampling. This module is the thin
layer between the two: it reads what enters the model from the same ``Layout`` that ``model.prepare``
makes for the PyMC model (so what enters and why is decided once), gives the core one block per domain,
and writes the result in the summary shape of :func:`metaeval.summary.summarise`, with each quantity's
estimated numerical error beside it (``error_sd``: the largest change in its mean, SD or interval ends
between the default and the coarse quadrature rules, in posterior SDs; ``error_p``: the same for its
probabilities).
"""

from __future__ import annotations

import math

import numpy as np

from metaeval.exact_core import NEW, Block, BlockPosterior, NoExactForm
from metaeval.model import Layout, prepare
from metaeval.priors import parse_prior
from metaeval.spec import ModelSpec

#: Pairwise probabilities are reported for domains with at most this many projects (a square table).
PAIRWISE_MAX_PROJECTS = 200


def exact_form(spec: ModelSpec) -> str | None:
    """Why ``spec`` has no exact form here (None when it has one).

    Exact: fixed bias priors (``additive``), ``none`` or ``variance_inflation``. Not: a design level
    learned from the data (``hierarchical``, shared by all domains), or a mu prior other than normal or flat.
    """
    if spec.bias_mode == "hierarchical":
        return (f"model {spec.name!r} learns a design-bias level shared by all domains (bias mode 'hierarchical'): "
                "its domains are not conditionally Gaussian given a few variance parameters each; use --engine mcmc")
    for key, prior in [("mu", spec.priors["mu"])] + [(k, p) for k, p in spec.overrides.items() if k.partition(".")[0] == "mu"]:
        if prior.family not in ("normal", "flat"):
            return f"the prior {key} = {prior} is not normal or flat, so mu is not conditionally Gaussian; use --engine mcmc"
    return None


def domain_block(layout: Layout, domain: str) -> tuple[Block, list[int], list[int]]:
    """The core's block for one domain, with the layout indices of its project cells and bias terms."""
    cells = [i for i, p in enumerate(layout.projects) if p["domain"] == domain]
    terms = [j for j, t in enumerate(layout.bias_terms) if t["domain"] == domain]
    cell_of = {i: k for k, i in enumerate(cells)}
    term_of = {j: k for k, j in enumerate(terms)}
    estimates = [(e["yi"], e["sei"] ** 2 / e["weight"], cell_of[e["project_index"]], term_of.get(e["bias_index"], -1),
                  e["replicate_index"] >= 0) for e in layout.estimates if e["domain"] == domain]
    se = parse_prior(layout.priors["se"][domain]) if "se" in layout.priors else None
    censored = [(f["z_low"], f["z_high"], cell_of[f["project_index"]], term_of.get(f["bias_index"], -1),
                 f["replicate_index"] >= 0, f["weight"], se) for f in layout.findings if f["domain"] == domain]
    offsets = [(cell_of[next(i for i in cells if layout.projects[i]["project"] == layout.bias_terms[j]["project"])],
                layout.bias_terms[j]["sign"] * layout.bias_terms[j]["mean"], layout.bias_terms[j]["sd"]) for j in terms]
    block = Block.build(
        n_clusters=len(cells),
        mu_prior=parse_prior(layout.priors["mu"][domain]),
        tau_prior=parse_prior(layout.priors["tau"][domain]),
        omega_prior=parse_prior(layout.priors["omega"][domain]) if domain in layout.omega_domains else None,
        estimates=estimates, offsets=offsets, censored=censored,
    )
    return block, cells, terms


def _entry(post: BlockPosterior, rows, p: float) -> list[dict]:
    """Mean, SD, shortest interval and their estimated error (in SDs) of quantity ``rows``."""
    (mean, sd), (e_mean, e_sd) = post.both("moments", rows)
    (lo, hi), (e_lo, e_hi) = post.both("intervals", rows, p)
    error = np.max([e_mean, e_sd, e_lo, e_hi], axis=0) / np.where(sd > 0, sd, 1.0)
    return [{"mean": mean[i], "sd": sd[i], "hdi_low": lo[i], "hdi_high": hi[i], "error_sd": error[i]} for i in range(len(rows))]


def _probability(post: BlockPosterior, rows, sign: float, threshold: float):
    value, error = post.both("prob_above", rows, sign, threshold)
    return float(value[0]), float(error[0])


def domain_summary(layout: Layout, spec: dict, meta: dict, hdi_prob: float) -> dict:
    """One domain's entry of the summary (the shape of :func:`metaeval.summary.summarise`)."""
    from metaeval.summary import _notes

    d, sign, mid = meta["id"], meta["sign"], meta["mid"]
    block, cells, terms = domain_block(layout, d)
    post = BlockPosterior(block)
    C = len(cells)
    mu_row = np.array([0])
    errors_p = []

    mu = _entry(post, mu_row, hdi_prob)[0]
    mu["p_beneficial"], e = _probability(post, mu_row, sign, 0.0)
    errors_p.append(e)
    mu["p_mid"] = None
    if mid:
        mu["p_mid"], e = _probability(post, mu_row, sign, mid)
        errors_p.append(e)
    new = _entry(post, np.array([NEW]), hdi_prob)[0]
    new["p_beneficial"], e = _probability(post, np.array([NEW]), sign, 0.0)
    errors_p.append(e)
    (tau_mean, tau_sd, tau_lo, tau_hi), errs = post.both("axis_summary", 0, hdi_prob)
    tau = {"mean": tau_mean, "sd": tau_sd, "hdi_low": tau_lo, "hdi_high": tau_hi, "error_sd": max(errs) / tau_sd if tau_sd > 0 else 0.0}
    for entry in (mu, tau, new):
        entry["hdi_prob"] = hdi_prob
    entry_omega = None
    if block.has_omega:
        (om_mean, om_sd, om_lo, om_hi), errs = post.both("axis_summary", 1, hdi_prob)
        entry_omega = {"mean": om_mean, "sd": om_sd, "hdi_low": om_lo, "hdi_high": om_hi, "hdi_prob": hdi_prob,
                       "error_sd": max(errs) / om_sd if om_sd > 0 else 0.0}

    theta_rows = np.arange(1, C + 1)
    theta = _entry(post, theta_rows, hdi_prob)
    bias_rows = np.arange(C + 1, C + 1 + len(terms))
    (b_mean, b_sd), _ = post.both("moments", bias_rows) if len(terms) else ((np.zeros(0), np.zeros(0)), None)
    pooling = [None if math.isnan(x) else float(x) for x in post.fine.pooling()]

    projects, labels = {}, []
    for k, i in enumerate(cells):
        cell = layout.projects[i]
        labels.append(cell["project"])
        entry = {"raw": cell["raw"], "raw_se": cell["raw_se"], **theta[k], "pooling": pooling[k], "design": "+".join(cell["designs"])}
        own = [n for n, j in enumerate(terms) if layout.bias_terms[j]["project"] == cell["project"]]
        if own:  # pooled over the cell's bias terms, as summarise pools their draws
            means, sds = b_mean[own], b_sd[own]
            mean = float(means.mean())
            entry["bias"] = {"mean": mean, "sd": math.sqrt(max(float((sds**2 + means**2).mean()) - mean**2, 0.0))}
        projects[cell["project"]] = entry

    order = np.argsort(labels)
    names = [labels[k] for k in order]
    (first, sampling), (first_err, _) = post.both("first", theta_rows, sign)
    first_err = np.maximum(first_err, sampling)
    rank_first = {labels[k]: float(first[k]) for k in order}
    errors_p.append(float(first_err.max()) if first_err.size else 0.0)
    pairwise = {}
    if 1 < C <= PAIRWISE_MAX_PROJECTS:
        table, table_err = post.both("pairwise", theta_rows, sign)
        pairwise = {labels[a]: {labels[b]: float(table[a, b]) for b in order if b != a} for a in order}
        errors_p.append(float(table_err.max()))

    members = [k for k in layout.estimates + layout.findings if k["domain"] == d]
    designs: dict[str, int] = {}
    for k in members:
        designs[k["design"]] = designs.get(k["design"], 0) + 1
    notes = _notes(layout, spec, meta, [layout.projects[i] for i in cells], members)
    if C > PAIRWISE_MAX_PROJECTS:
        notes.append(f"{C} projects: pairwise probabilities are left out (reported up to {PAIRWISE_MAX_PROJECTS} projects a domain).")
    entries = [mu, tau, new, *theta] + ([entry_omega] if entry_omega else [])
    out = {
        "label": meta["label"], "metric": meta["metric"], "beneficial": meta["beneficial"], "mid": mid,
        "scale": meta["scale"], "n_projects": C, "n_estimates": len(members), "projects_in": names,
        "designs": dict(sorted(designs.items())), "mu": mu, "tau": tau, "theta_new": new, "projects": projects,
        "rank_first": rank_first, "pairwise": pairwise, "notes": notes,
        "numerical": {"error_sd_max": max(e["error_sd"] for e in entries), "error_p_max": max(errors_p),
                      "grid_nodes": int(post.fine.weight.size), "edge_density": post.fine.edge_density},
    }
    if entry_omega:
        out["omega"] = entry_omega
    return out


def summarise_exact(layout: Layout, spec: ModelSpec) -> dict:
    """The summary (engine "exact") of ``spec``'s posterior for the evidence in ``layout``.

    Raises :class:`~metaeval.exact_core.NoExactForm` when the model has no exact form here.
    """
    from metaeval.summary import _rounded

    reason = exact_form(spec)
    if reason:
        raise NoExactForm(reason)
    spec_dict = spec.to_dict()
    domains = {meta["id"]: domain_summary(layout, spec_dict, meta, spec.hdi_prob) for meta in layout.domains}
    model = dict(spec_dict)
    model["per_domain_priors"] = layout.priors
    model["bias_terms"] = [{k: t[k] for k in ("label", "design", "prior", "scaled") if k in t} for t in layout.bias_terms]
    numerical = {"error_sd_max": max(d["numerical"]["error_sd_max"] for d in domains.values()),
                 "error_p_max": max(d["numerical"]["error_p_max"] for d in domains.values())}
    return _rounded({
        "engine": "exact",
        "domains": domains,
        "diagnostics": {"passed": True, "failures": [], "numerical": numerical},
        "model": model,
        "excluded": layout.excluded,
        "seed": None,
    })


def fit_exact_model(evidence, spec: ModelSpec) -> dict:
    """:func:`summarise_exact` of the harmonised evidence (the table, or its rows) under ``spec``."""
    return summarise_exact(prepare(evidence, spec), spec)
