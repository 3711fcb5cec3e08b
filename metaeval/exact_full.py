"""Exact inference for the bias-adjusted model: the :class:`~metaeval.model.Layout` in, the summary out.

Whenever a model is conditionally Gaussian given each domain's variance parameters (additive bias with
fixed priors, no bias, variance inflation, any inclusion rule; direction-only findings censored or left
out), its posterior is computed by :mod:`metaeval.exact_core` without sampling. This module is the thin
layer between the two: it reads what enters the model from the same ``Layout`` that ``model.prepare``
makes for the PyMC model (so what enters and why is decided once), gives the core one block per domain,
and returns the same :class:`~metaeval.result.Result` as :func:`metaeval.summary.summarise`, with each
quantity's estimated numerical error beside it (``error_sd``: the largest change in its mean, SD or
interval ends between the default and the coarse quadrature rules, in posterior SDs) and the largest
over all quantities and probabilities in ``Result.numerical``.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metaeval.exact_block import NEW, Block, NoExactForm
from metaeval.exact_cells import block_posterior
from metaeval.model import Layout, prepare
from metaeval.priors import parse_prior
from metaeval.result import (
    Bias,
    DomainAverage,
    DomainResult,
    Exclusion,
    Numerical,
    Posterior,
    ProjectEffect,
    Provenance,
    Result,
    round_significant,
)
from metaeval.spec import ModelSpec

if TYPE_CHECKING:
    from metaeval.executor import Background, Processes

#: Draws :func:`exact_draws` makes by default: those the commands take (the comparison, the plan, the leave-it-out shifts).
DRAWS = 4000
#: Pairwise probabilities are reported for domains with at most this many projects (a square table).
PAIRWISE_MAX_PROJECTS = 200


def exact_form(spec: ModelSpec) -> str | None:
    """Why ``spec`` has no exact form on any evidence (None when it has one; on given evidence, see :func:`exact_reason`).

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
    cell_of_project = {layout.projects[i]["project"]: k for k, i in enumerate(cells)}
    offsets = [(cell_of_project[t["project"]], t["sign"] * t["mean"], t["sd"]) for t in (layout.bias_terms[j] for j in terms)]
    block = Block.build(
        n_clusters=len(cells),
        mu_prior=parse_prior(layout.priors["mu"][domain]),
        tau_prior=parse_prior(layout.priors["tau"][domain]),
        omega_prior=parse_prior(layout.priors["omega"][domain]) if domain in layout.omega_domains else None,
        estimates=estimates, offsets=offsets, censored=censored,
    )
    return block, cells, terms


def _stats(post, rows, p: float) -> list[dict]:
    """Mean, SD, shortest interval and their estimated error (in SDs) of quantity ``rows``."""
    (mean, sd), (e_mean, e_sd) = post.both("moments", rows)
    (lo, hi), (e_lo, e_hi) = post.both("intervals", rows, p)
    error = np.max([e_mean, e_sd, e_lo, e_hi], axis=0) / np.where(sd > 0, sd, 1.0)
    return [{"mean": round_significant(mean[i]), "sd": round_significant(sd[i]), "hdi_low": round_significant(lo[i]), "hdi_high": round_significant(hi[i]),
             "error_sd": round_significant(error[i])} for i in range(len(rows))]


#: How many block posteriors a process keeps for the draws that follow a result (the report's comparison and plan);
#: the bundled evidence's eleven domains hold about 210 MB.
POSTERIORS_KEPT = 16
_POSTERIORS: dict = {}


def posterior_of(block: Block, keep: bool = False):
    """``block_posterior(block)``: the one kept in this process if there is one; with ``keep``, kept (the
    :data:`POSTERIORS_KEPT` latest) for the draws that follow."""
    key = block.digest()
    post = _POSTERIORS.pop(key, None)
    kept = post is not None
    if post is None:
        post = block_posterior(block)
    if keep or kept:  # the latest asked for last
        _POSTERIORS[key] = post
    while len(_POSTERIORS) > POSTERIORS_KEPT:
        del _POSTERIORS[next(iter(_POSTERIORS))]
    return post


def domain_result(layout: Layout, spec: dict, meta: dict, hdi_prob: float, keep: bool = False) -> tuple[DomainResult, float]:
    """One domain's :class:`~metaeval.result.DomainResult`, and the largest estimated error of its probabilities
    (``keep``: its block posterior kept for draws, :func:`posterior_of`)."""
    from metaeval.certainty import prior_influence
    from metaeval.summary import domain_notes

    d, sign = meta["id"], meta["sign"]
    block, cells, terms = domain_block(layout, d)
    post = posterior_of(block, keep)
    C = len(cells)
    errors_p = []
    mu, tau, probability = _mu_and_tau(post, block, meta, hdi_prob, errors_p)
    new = Posterior(**_stats(post, np.array([NEW]), hdi_prob)[0], hdi_prob=hdi_prob, p_beneficial=probability(NEW, 0.0))
    omega = _axis(post, 1, hdi_prob) if block.has_omega else None
    missing = _missing_moments(block)
    if missing:  # a heavy-tailed prior and few projects: say so rather than report the grid's finite stand-ins
        new = new.model_copy(update={k: None for k in missing["theta_new"]})
        omega = omega.model_copy(update={k: None for k in missing["omega"]}) if omega is not None else None

    theta_rows = np.arange(1, C + 1)
    theta = _stats(post, theta_rows, hdi_prob)
    (b_mean, b_sd), _ = post.both("moments", np.arange(C + 1, C + 1 + len(terms)))
    pooling = post.fine.pooling()
    (first, sampling), (first_err, _) = post.both("first", theta_rows, sign)
    errors_p.append(float(np.max(np.maximum(first_err, sampling), initial=0.0)))

    projects, labels = [], [layout.projects[i]["project"] for i in cells]
    terms_of: dict[str, list[int]] = {}  # project -> the positions of its bias terms (a scan a project was quadratic)
    for n, j in enumerate(terms):
        terms_of.setdefault(layout.bias_terms[j]["project"], []).append(n)
    for k in np.argsort(labels):
        cell = layout.projects[cells[k]]
        own = terms_of.get(cell["project"], [])
        bias = None
        if own:  # pooled over the cell's bias terms, as summarise pools their draws
            means, sds = b_mean[own], b_sd[own]
            pooled = float(means.mean())
            bias = Bias(mean=round_significant(pooled), sd=round_significant(math.sqrt(max(float((sds**2 + means**2).mean()) - pooled**2, 0.0))))
        projects.append(ProjectEffect(project=cell["project"], design="+".join(cell["designs"]), raw=round_significant(cell["raw"]),
                                      raw_se=round_significant(cell["raw_se"]), pooling=None if math.isnan(pooling[k]) else round_significant(pooling[k]),
                                      bias=bias, p_best=round_significant(first[k]), **theta[k]))
    pairwise = {}
    names = [labels[k] for k in np.argsort(labels)]
    notes = domain_notes(layout, spec, meta, [layout.projects[i] for i in cells], [k for k in layout.estimates + layout.findings if k["domain"] == d])
    if 1 < C <= PAIRWISE_MAX_PROJECTS:
        table, table_err = post.both("pairwise", theta_rows, sign)
        order = {label: k for k, label in enumerate(labels)}
        pairwise = {a: {b: round_significant(table[order[a], order[b]]) for b in names if b != a} for a in names}
        errors_p.append(float(table_err.max()))
    elif C > PAIRWISE_MAX_PROJECTS:
        notes.append(f"{C} projects: pairwise probabilities are left out (the exact engine reports them up to "
                     f"{PAIRWISE_MAX_PROJECTS} projects a domain).")
    if missing:
        notes.append(f"{missing['what']}: not finite (a heavy-tailed prior and {missing['n']} project(s) with numeric estimates), "
                     "reported as null; intervals and probabilities are exact.")
    if post.fine.edge_density > 1e-6:
        notes.append("tau's (or omega's) posterior still has density where the exact engine's grid ends (a heavy-tailed "
                     "prior and little data): its mean and SD are those of the part within the grid, and may be understated.")
    members = [k for k in layout.estimates + layout.findings if k["domain"] == d]
    designs: dict[str, int] = {}
    for k in members:
        designs[k["design"]] = designs.get(k["design"], 0) + 1
    priors = {param: per_domain[d] for param, per_domain in sorted(layout.priors.items()) if d in per_domain}
    result = DomainResult(
        id=d, label=meta["label"], metric=meta["metric"], beneficial=meta["beneficial"], mid=meta["mid"], scale=meta["scale"],
        assumed=meta.get("assumed", {}), n_projects=C, n_estimates=len(members),
        n_findings=sum(1 for k in members if "z_low" in k), designs=dict(sorted(designs.items())),
        mu=mu, tau=tau, omega=omega, theta_new=new, projects=tuple(projects), pairwise=pairwise, priors=priors,
        prior_influence=prior_influence(mu, tau, priors), notes=tuple(notes),
    )
    return result, max(errors_p)


def _mu_and_tau(post, block: Block, meta: dict, hdi_prob: float, errors_p: list[float]):
    """A domain's average effect and spread as :func:`domain_result` reports them, and its probability function
    (P(sign x row > threshold), rounded; each one's estimated error appended to ``errors_p``)."""
    sign, mid = meta["sign"], meta["mid"]

    def probability(row: int, threshold: float) -> float:
        value, error = post.both("prob_above", np.array([row]), sign, threshold)
        errors_p.append(float(error[0]))
        return round_significant(value[0])

    mu = Posterior(**_stats(post, np.array([0]), hdi_prob)[0], hdi_prob=hdi_prob, p_beneficial=probability(0, 0.0),
                   p_mid=probability(0, mid) if mid else None)
    tau = _axis(post, 0, hdi_prob)
    gone = (_missing_moments(block) or {}).get("tau", [])  # a heavy-tailed prior and few projects: not finite, said as null
    return mu, (tau.model_copy(update=dict.fromkeys(gone)) if gone else tau), probability


def exact_averages(layout: Layout, spec: ModelSpec) -> dict[str, DomainAverage]:
    """Per domain, its :class:`~metaeval.result.DomainAverage` under ``spec``: the same as :func:`summarise_exact`'s
    (``DomainResult.average``), without the project effects, their comparisons and the new project's effect.
    Raises :class:`~metaeval.exact_block.NoExactForm` and :class:`BeyondPrecision` as it does."""
    from threadpoolctl import threadpool_limits

    _require_exact(layout, spec)
    with threadpool_limits(1):
        return {d: _AVERAGES(key) for d, key in _domain_parts(layout, spec.to_dict(), spec.hdi_prob).items()}


def domain_parts(layout: Layout, spec: ModelSpec) -> list[DomainPart]:
    """The domains :func:`exact_averages` and :func:`summarise_exact` compute for ``layout`` under ``spec``."""
    return list(_domain_parts(layout, spec.to_dict(), spec.hdi_prob).values())


def precompute(averages: Iterable[DomainPart], results: Iterable[DomainPart] = (), workers: int | Processes | None = None, *,
               draws: tuple[int, int] | None = None, progress: bool | None = False) -> None:
    """Compute the averages (:func:`exact_averages`) and full results (:func:`summarise_exact`; with ``draws``, (number,
    seed), their draws too: :func:`exact_draws`) of the distinct domains given (of several layouts: a sensitivity grid's
    scenarios), side by side in worker processes (``workers`` of them, or those already started:
    :class:`~metaeval.executor.Processes`; the integrals are mostly small NumPy operations, which threads would take
    turns at), the costliest first, and keep them in this process, where those functions then find them. A domain
    whose computation fails is left out: computed again where it is asked for, its error is raised there; workers
    that end early leave all to be computed there, with a note saying why. ``progress``: a progress bar on stderr
    (None: when it is a terminal)."""
    import logging

    from metaeval.executor import Processes, WorkerLost, in_processes

    results = [key for key in dict.fromkeys(results) if (key, draws is not None) not in _RESULTS]
    averages = [key for key in dict.fromkeys(averages) if (key,) not in _AVERAGES and key not in results]
    # the costliest first, so that none of them is left to the end: a full result takes about four times an average
    items = sorted([("average", key) for key in averages] + [(draws or "result", key) for key in results],
                   key=lambda item: _cost(item[1]) * (1 + 3 * (item[0] != "average")), reverse=True)
    shown = {"progress": progress, "description": "integrating domains"}
    try:
        values = workers.map(_compute, items, **shown) if isinstance(workers, Processes) else in_processes(_compute, items, workers, **shown)
    except WorkerLost as err:  # the integrals are computed where they are asked for instead, one after another
        logging.getLogger(__name__).warning("the exact engine's worker processes could not finish (%s); integrating in this process", err)
        return
    for (what, key), value in zip(items, values):
        if value is None:
            continue
        if what == "average":
            _AVERAGES.put((key,), value)
            continue
        result, drawn = value
        _RESULTS.put((key, draws is not None), result)
        _AVERAGES.put((key,), result[0].average())
        if drawn is not None:
            _DRAWS.put((drawn[0], key.part["meta"]["id"], *draws), drawn[1])


def _cost(key: DomainPart) -> int:
    """A domain's relative cost: its direction-only findings, integrated over each project that holds one, dominate."""
    part = key.part
    return len(part["estimates"]) + 1000 * len(part["findings"]) * len({f["project_index"] for f in part["findings"]})


def _in_cells(key: DomainPart) -> bool:
    """Whether the domain's direction-only findings sit in several projects: integrated given mu
    (:mod:`metaeval.exact_cells`), a second or so, where other domains take milliseconds."""
    return len({f["project_index"] for f in key.part["findings"]}) > 1


def _compute(item: tuple[str | tuple[int, int], DomainPart]):
    """In a worker process, a domain's average (``item[0]`` "average"), or its full result and None, or its full
    result and draws (``item[0]`` (number, seed)) from one integration; None where it fails."""
    from threadpoolctl import threadpool_limits

    what, key = item
    try:
        with threadpool_limits(1):
            if what == "average":
                return _AVERAGES(key)
            if what == "result":
                return _RESULTS(key, False), None
            d = key.part["meta"]["id"]
            block, _, _ = domain_block(key.layout(), d)
            return _RESULTS(key, True), (block.digest(), domain_draws(block, d, *what))
    except Exception:  # noqa: BLE001 - said again, with its context, where the domain is asked for (precompute)
        return None


class _Kept:
    """Computed domains by their :class:`DomainPart` (and arguments; draws by their block's digest), the least recently
    used dropped beyond ``size``: sensitivity grids and leave-one-out refits leave most domains as they were, and these
    are then not computed again. Filled by calls, by :meth:`get` with a computation of its own, or with results
    computed elsewhere (:func:`precompute`). Safe to share between threads, as functools' cache it replaces (two
    threads may compute one domain twice, alike)."""

    def __init__(self, compute, size: int = 256):
        self.compute, self.size, self.items, self.lock = compute, size, {}, threading.Lock()

    def __call__(self, *args):
        return self.get(args, lambda: self.compute(*args))

    def get(self, args: tuple, compute):
        """The value kept for ``args``, else ``compute()``, kept and returned."""
        with self.lock:
            if args in self.items:
                self.items[args] = self.items.pop(args)  # now the most recent
                return self.items[args]
        value = compute()
        self.put(args, value)
        return value

    def __contains__(self, args) -> bool:
        return args in self.items

    def put(self, args: tuple, value) -> None:
        with self.lock:
            self.items.pop(args, None)
            self.items[args] = value
            while len(self.items) > self.size:
                del self.items[next(iter(self.items))]

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


def _domain_average(key: DomainPart) -> DomainAverage:
    """The :class:`~metaeval.result.DomainAverage` of the domain ``key`` describes."""
    part, layout = key.part, key.layout()
    meta = part["meta"]
    block, cells, _ = domain_block(layout, meta["id"])
    mu, tau, _ = _mu_and_tau(posterior_of(block), block, meta, part["hdi_prob"], [])
    return DomainAverage(id=meta["id"], label=meta["label"], metric=meta["metric"], mu=mu, tau=tau, n_projects=len(cells),
                         n_estimates=len(part["estimates"]) + len(part["findings"]),
                         projects=tuple(sorted(layout.projects[i]["project"] for i in cells)))


class DomainPart:
    """Everything one domain's result depends on (:func:`_domain_parts`), the key of its cached result and average:
    equal to another when their pickles are the same bytes (sensitivity grids and leave-one-out refits leave most
    domains as they were, and these are then not computed again). A pickle, not canonical JSON and its parse: 0.06
    against 0.5 s on 100,000 estimates; parts made alike pickle alike, and any other difference only misses the cache."""

    __slots__ = ("digest", "part")

    def __init__(self, part: dict):
        self.part = part
        self.digest = hashlib.sha256(pickle.dumps(part, protocol=5)).digest()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, DomainPart) and other.digest == self.digest

    def layout(self) -> Layout:
        """The domain's own layout."""
        part, d = self.part, self.part["meta"]["id"]
        return Layout(domains=[part["meta"]], projects=part["projects"], estimates=part["estimates"], findings=part["findings"],
                      bias_terms=part["bias_terms"], omega_domains=[d] if part["omega"] else [], excluded=part["excluded"],
                      priors={param: {d: text} for param, text in part["priors"].items() if text is not None})


def _domain_parts(layout: Layout, spec: dict, hdi_prob: float) -> dict[str, DomainPart]:
    """Per domain, its part of the layout (its rows pointing at its own project cells and bias terms), the spec and
    the interval probability."""
    fields = ("projects", "estimates", "findings", "bias_terms", "excluded")
    parts = {meta["id"]: {field: [] for field in fields} for meta in layout.domains}
    local: dict[str, dict[int, int]] = {"projects": {}, "bias_terms": {}}
    for field in ("projects", "bias_terms"):
        for i, row in enumerate(getattr(layout, field)):
            local[field][i] = len(parts[row["domain"]][field])
            parts[row["domain"]][field].append(row)
    for field in ("estimates", "findings"):
        for row in getattr(layout, field):
            parts[row["domain"]][field].append({**row, "project_index": local["projects"][row["project_index"]],
                                                "bias_index": local["bias_terms"].get(row["bias_index"], -1)})
    for row in layout.excluded:
        if row.get("domain") in parts:
            parts[row["domain"]]["excluded"].append(row)
    for meta in layout.domains:
        d = meta["id"]
        parts[d].update(priors={param: per_domain.get(d) for param, per_domain in layout.priors.items()},
                        omega=d in layout.omega_domains, meta=meta, spec=spec, hdi_prob=hdi_prob)
    return {d: DomainPart(part) for d, part in parts.items()}


def _domain_result(key: DomainPart, keep: bool = False) -> tuple[DomainResult, float]:
    """:func:`domain_result` of the domain ``key`` describes."""
    part = key.part
    return domain_result(key.layout(), part["spec"], part["meta"], part["hdi_prob"], keep)


def domain_draws(block: Block, domain: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` draws of one domain's block posterior (:meth:`metaeval.exact_core.BlockPosterior.draws`), from a random
    stream of its own (the seed and the domain's name), so that they are the same wherever they are made; kept in
    this process by the block's digest (the numbers, however the layout was made)."""
    return _DRAWS.get((block.digest(), domain, n, seed),
                      lambda: posterior_of(block).draws(n, np.random.default_rng([seed, 18, zlib.crc32(domain.encode())])))


_AVERAGES = _Kept(_domain_average)
_RESULTS = _Kept(_domain_result)
_DRAWS = _Kept(None, size=64)


def _missing_moments(block: Block) -> dict | None:
    """The moments that do not exist under a heavy-tailed prior (as in :mod:`metaeval.exact`): the posterior
    of tau decays like tau^-a, a = the prior's tail exponent plus the number of projects with numeric
    estimates (one fewer under a flat mu prior; direction-only findings add nothing): E[tau] needs a > 2 and
    its SD a > 3, and so does a new project's effect. omega's tail is not worked out: under a heavy-tailed
    prior its moments are left out."""
    from metaeval.tau_grid import TAIL_EXPONENT

    def tail(prior) -> float:
        return prior.params[0] + 1.0 if prior.family == "halfstudentt" else TAIL_EXPONENT.get(prior.family, math.inf)

    n = len(set(block.cluster.tolist()))
    a = tail(block.tau_prior) + n - (block.mu_prior.family == "flat")
    heavy_omega = block.omega_prior is not None and math.isfinite(tail(block.omega_prior))
    gone = {"tau": [k for k, need in (("mean", 2), ("sd", 3)) if a <= need], "omega": ["mean", "sd"] if heavy_omega else []}
    gone["theta_new"] = ["sd"] if "sd" in gone["tau"] else []
    if not (gone["tau"] or gone["omega"]):
        return None
    what = [f"tau {k}" for k in gone["tau"]] + [f"theta_new {k}" for k in gone["theta_new"]] + [f"omega {k}" for k in gone["omega"]]
    return {**gone, "what": ", ".join(what), "n": n}


def _axis(post, axis: int, hdi_prob: float) -> Posterior:
    """tau (axis 0) or omega (axis 1): mean, SD, shortest interval and the estimated error (in SDs)."""
    (mean, sd, lo, hi), errors = post.both("axis_summary", axis, hdi_prob)
    return Posterior(mean=round_significant(mean), sd=round_significant(sd), hdi_low=round_significant(lo), hdi_high=round_significant(hi), hdi_prob=hdi_prob,
                     error_sd=round_significant(max(errors) / sd if sd > 0 else 0.0))


def exact_reason(layout: Layout, spec: ModelSpec, *, several_cells: bool = True) -> str | None:
    """Why the exact engine cannot compute the model ``spec`` makes of this evidence (None: it can).

    Direction-only findings in several project cells of a domain are computed by :mod:`metaeval.exact_cells`,
    in seconds a domain rather than milliseconds: ``several_cells=False`` (the automatic uses: ``--engine auto``,
    the MCMC cross-check, the robustness variants) leaves them to MCMC, saying so."""
    reason = exact_form(spec)
    if reason:
        return reason
    for meta in layout.domains:
        groups = {(f["project_index"], f["bias_index"]) for f in layout.findings if f["domain"] == meta["id"]}
        projects = {p for p, _ in groups}
        if len(groups) > len(projects):
            return (f"domain {meta['id']!r} has direction-only findings of one project under two designs; the exact "
                    "engine integrates one design's findings a project; use --engine mcmc (or leave them out: "
                    "direction_only.mode = exclude)")
        if len(projects) > 1 and not several_cells:
            return (f"domain {meta['id']!r} has direction-only findings in {len(projects)} projects, which the exact engine "
                    "computes on request only (--engine exact: seconds a domain rather than milliseconds)")
    return None


class BeyondPrecision(ValueError):
    """Numbers too far apart to integrate in double precision (:func:`check_numbers`)."""


def check_numbers(layout: Layout) -> None:
    """Refuse, per domain, estimates, SEs, prior scales or a MID too far apart to integrate in double precision
    (:class:`BeyondPrecision` naming the domain and the number: :func:`metaeval.tau_grid.check_scales`, the one-level
    engine's rule)."""
    from metaeval.tau_grid import check_scales

    for meta in layout.domains:
        d = meta["id"]
        rows = [e for e in layout.estimates if e["domain"] == d]
        if not rows:
            continue
        try:
            check_scales(np.array([e["yi"] for e in rows]), np.array([e["sei"] for e in rows]), parse_prior(layout.priors["tau"][d]),
                         parse_prior(layout.priors["mu"][d]), meta.get("mid"), [e["estimate_id"] for e in rows])
        except ValueError as err:
            raise BeyondPrecision(f"domain {d!r}: {err}") from None


def _require_exact(layout: Layout, spec: ModelSpec) -> None:
    """Raise :class:`~metaeval.exact_block.NoExactForm` (:func:`exact_reason`) or :class:`BeyondPrecision`
    (:func:`check_numbers`) where the exact engine cannot compute ``spec`` on this evidence."""
    reason = exact_reason(layout, spec)
    if reason:
        raise NoExactForm(reason)
    check_numbers(layout)


def summarise_exact(layout: Layout, spec: ModelSpec, evidence=None, *, draws: tuple[int, int] | None = None,
                    workers: int | None = None) -> Result:
    """The :class:`~metaeval.result.Result` (engine "exact") of ``spec``'s posterior for the evidence in
    ``layout`` (``evidence``, the table or rows it was made from, for the provenance's digest).
    ``draws``: (number, seed) of the draws that follow (:func:`exact_draws`), made beside each domain's result.
    ``workers``: where two domains or more have direction-only findings in several projects (a second or so each),
    the domains are integrated side by side in this many worker processes (:func:`precompute`; None: one per core,
    1: here); the same result and draws either way.

    Raises :class:`~metaeval.exact_block.NoExactForm` when the model has no exact form on this evidence.
    """
    from threadpoolctl import threadpool_limits

    from metaeval.harmonise import evidence_digest
    from metaeval.sampling import package_versions
    from metaeval.summary import model_record

    _require_exact(layout, spec)
    spec_dict = spec.to_dict()
    keys = _domain_parts(layout, spec_dict, spec.hdi_prob)
    if workers != 1 and sum(map(_in_cells, keys.values())) >= 2:
        # bundled: fit 3.9 -> 2.7 s, run (its draws made there too) 5.2 -> 4.1 s; where all is numbers (10,000 and 100,000
        # synthetic estimates) pickling the results cost what it saved
        precompute([], keys.values(), workers, draws=draws)
    with threadpool_limits(1):  # small linear algebra: BLAS threads only spin (twice the CPU time, measured)
        parts = {d: _RESULTS(key, draws is not None) for d, key in keys.items()}  # the block posteriors kept for the draws
    domains = {d: part[0] for d, part in parts.items()}
    errors = [e for dom in domains.values() for e in (dom.mu, dom.tau, dom.theta_new, *([dom.omega] if dom.omega else []), *dom.projects)]
    return Result(
        engine="exact",
        domains=domains,
        exclusions=tuple(Exclusion(estimate_id=x["estimate_id"], project=x["project"], domain=x["domain"], design=x.get("design"),
                                   reason=x["reason"], stage=x.get("stage", "model")) for x in layout.excluded),
        diagnostics=None,
        numerical=Numerical(error_sd_max=max(e.error_sd for e in errors), error_p_max=round_significant(max(part[1] for part in parts.values()))),
        model=model_record(spec_dict, layout.bias_terms),
        seed=None,
        provenance=Provenance(versions=package_versions(), evidence_sha256=evidence_digest(evidence) if evidence is not None else None,
                              model_sha256=spec.digest(), seed=None),
    )


def fit_exact_model(evidence, spec: ModelSpec, *, draws: tuple[int, int] | None = None, workers: int | None = None) -> Result:
    """:func:`summarise_exact` of the harmonised evidence (the table, or its rows) under ``spec``."""
    return summarise_exact(prepare(evidence, spec), spec, evidence, draws=draws, workers=workers)


@dataclass(frozen=True)
class Moments:
    """An exact posterior mean and SD (None where the moment does not exist) and the larger of their stated
    numerical errors (absolute: the change between the default and the coarse rules)."""

    mean: float | None
    sd: float | None
    error: float


@dataclass(frozen=True)
class DomainMoments:
    """The exact posterior moments of a domain's mean, its tau and each project's effect (by project)."""

    mu: Moments
    tau: Moments
    projects: dict[str, Moments]


def exact_moments(layout: Layout, spec: ModelSpec) -> dict[str, DomainMoments]:
    """Per domain, the exact posterior mean and SD of mu, tau and the project effects: what the MCMC cross-check
    compares, without the intervals and probabilities of :func:`summarise_exact` (which take a third of its time
    on the bundled evidence). Raises :class:`~metaeval.exact_block.NoExactForm` and :class:`BeyondPrecision` as it does."""
    from threadpoolctl import threadpool_limits

    _require_exact(layout, spec)
    out = {}
    with threadpool_limits(1):
        for meta in layout.domains:
            block, cells, _ = domain_block(layout, meta["id"])
            post = posterior_of(block)
            (mean, sd), (e_mean, e_sd) = post.both("moments", np.arange(len(cells) + 1))
            (t_mean, t_sd, _, _), (te_mean, te_sd, _, _) = post.both("axis_summary", 0, spec.hdi_prob)
            gone = (_missing_moments(block) or {}).get("tau", [])
            tau = Moments(None if "mean" in gone else float(t_mean), None if "sd" in gone else float(t_sd), float(max(te_mean, te_sd)))
            each = [Moments(float(m), float(v), float(max(a, b))) for m, v, a, b in zip(mean, sd, e_mean, e_sd)]
            out[meta["id"]] = DomainMoments(mu=each[0], tau=tau, projects={layout.projects[i]["project"]: each[k + 1] for k, i in enumerate(cells)})
    return out


#: The cross-check fails when an MCMC posterior mean or SD is further than this many Monte Carlo standard
#: errors from the exact value: with 108 comparisons on the bundled evidence (the mean and SD of 54 quantities),
#: a correct sampler trips it with probability about 108 x 6.8e-6 = 7e-4.
CROSS_CHECK_Z = 4.5


def exact_moments_meanwhile(evidence, spec: ModelSpec) -> Background:
    """:func:`exact_moments` of ``evidence`` under ``spec`` in a worker process, started now: what the MCMC cross-check
    compares (1.3 CPU-s on the bundled evidence), computed on the core that the fit's imports, model building and
    compiling leave idle before its chains start."""
    from metaeval.executor import Background

    return Background(_moments_of, (prepare(evidence, spec), spec), preload=("metaeval.exact_full",))


def _moments_of(item: tuple[Layout, ModelSpec]) -> dict[str, DomainMoments]:
    return exact_moments(*item)


def with_cross_check(result: Result, posterior, evidence, spec: ModelSpec, *, moments: Background | None = None) -> Result:
    """``result`` (MCMC) with ``diagnostics.cross_check``: its posterior means and SDs of mu, tau and the project
    effects against the exact engine's for the same model, where it has one (else ``diagnostics.cross_check_skipped``
    says why). A discrepancy beyond Monte Carlo error (:data:`CROSS_CHECK_Z`) fails the gate, naming the quantity.
    ``moments``: the exact moments computed meanwhile (:func:`exact_moments_meanwhile`); else computed here."""
    from arviz_stats import mcse as monte_carlo_se  # ArviZ's own (arviz.mcse is this), without arviz's plots and matplotlib

    from metaeval.result import CrossCheck

    if result.diagnostics is None:
        return result
    try:
        exact = moments.result() if moments is not None else exact_moments(prepare(evidence, spec), spec)
    except (NoExactForm, BeyondPrecision) as err:  # said where the comparison would stand
        reason = str(err) if isinstance(err, NoExactForm) else f"the exact engine cannot integrate this evidence in double precision: {err}"
        return result.model_copy(update={"diagnostics": result.diagnostics.model_copy(update={"cross_check_skipped": reason})})
    names = ["mu", "tau", "theta_project"]
    mcse = {method: monte_carlo_se(posterior, var_names=names, method=method) for method in ("mean", "sd")}
    worst, worst_z = (0.0, ""), (0.0, "")
    for d, dom in result.domains.items():
        ref = exact[d]
        pairs = [("mu", dom.mu, ref.mu, {"domain": d}), ("tau", dom.tau, ref.tau, {"domain": d})]
        pairs += [(f"project {p.project}", p, ref.projects[p.project], {"project": f"{d}/{p.project}"}) for p in dom.projects]
        for name, got, want, at in pairs:
            var = "theta_project" if "project" in at else name
            for stat in ("mean", "sd"):
                if None in (getattr(got, stat), getattr(want, stat)) or not want.sd:  # a moment that does not exist
                    continue
                diff = abs(getattr(got, stat) - getattr(want, stat))
                error = float(mcse[stat][var].sel(at).values)
                z = diff / math.hypot(error, want.error)
                where = f"{d}: {name} ({'posterior mean' if stat == 'mean' else 'posterior SD'})"
                worst = max(worst, (diff / want.sd, where))
                worst_z = max(worst_z, (z, where))
    check = CrossCheck(max_discrepancy_sd=round_significant(worst[0]), quantity=worst[1], max_z=round_significant(worst_z[0]),
                       threshold=CROSS_CHECK_Z, passed=worst_z[0] <= CROSS_CHECK_Z)
    diagnostics = result.diagnostics
    update = {"cross_check": check}
    if not check.passed:
        update.update(passed=False, failures=(*diagnostics.failures, f"MCMC disagrees with the exact answer for the same model: "
                                              f"{worst_z[1]} is {worst_z[0]:.1f} Monte Carlo standard errors off"))
    return result.model_copy(update={"diagnostics": diagnostics.model_copy(update=update)})


def exact_draws(evidence, spec: ModelSpec, *, draws: int = DRAWS, seed: int = 0):
    """Independent draws from the exact posterior of ``spec`` on ``evidence``, as an ``xarray.DataTree``
    shaped like an MCMC fit's (one chain; ``mu``, ``tau``, ``omega``, ``theta_project``, ``bias`` on the same
    dims and coords, and the same attributes), so that whatever reads draws reads these too
    (:func:`metaeval.summary.summarise`, ArviZ, the plots). Seeded: the same call gives the same draws, each domain's
    from a random stream of its own. See :meth:`metaeval.exact_core.BlockPosterior.draws` for how they are drawn; a
    result computed with ``draws`` (:func:`summarise_exact`) made them already, else its block posteriors are
    computed here."""
    import xarray as xr

    layout = prepare(evidence, spec)
    reason = exact_reason(layout, spec)
    if reason:
        raise NoExactForm(reason)
    domains = [d["id"] for d in layout.domains]
    mu, tau = np.empty((1, draws, len(domains))), np.empty((1, draws, len(domains)))
    omega = np.empty((1, draws, len(layout.omega_domains)))
    theta = np.empty((1, draws, len(layout.projects)))
    bias = np.empty((1, draws, len(layout.bias_terms)))
    for i, d in enumerate(domains):
        block, cells, terms = domain_block(layout, d)
        sample = domain_draws(block, d, draws, seed)
        mu[0, :, i], tau[0, :, i] = sample["mu"], sample["tau"]
        if d in layout.omega_domains:
            omega[0, :, layout.omega_domains.index(d)] = sample["omega"]
        theta[0][:, cells] = sample["theta"]
        bias[0][:, terms] = sample["offset"]
    coords = {"chain": [0], "draw": np.arange(draws)}
    posterior = xr.Dataset({
        "mu": (("chain", "draw", "domain"), mu), "tau": (("chain", "draw", "domain"), tau),
        "omega": (("chain", "draw", "omega_domain"), omega), "theta_project": (("chain", "draw", "project"), theta),
        "bias": (("chain", "draw", "bias_term"), bias),
    }, coords={**coords, "domain": domains, "omega_domain": layout.omega_domains,
               "project": [p["label"] for p in layout.projects], "bias_term": [t["label"] for t in layout.bias_terms]})
    tree = xr.DataTree.from_dict({"posterior": posterior})
    from metaeval.harmonise import evidence_digest
    from metaeval.sampling import package_versions

    tree.attrs.update(metaeval_layout=json.dumps(layout.to_dict(), sort_keys=True), metaeval_spec=json.dumps(spec.to_dict(), sort_keys=True),
                      metaeval_seed=int(seed), metaeval_versions=json.dumps(package_versions(), sort_keys=True),
                      metaeval_evidence_sha256=evidence_digest(evidence), metaeval_engine="exact")
    return tree
