"""The bias-adjusted hierarchical model as a PyMC model (docs/model.md).

For estimate k of project p in domain d, with design s::

    yi_k     ~ Normal(theta_k + bias_k, sei_k)            (or the censored likelihood below)
    theta_k  = mu_d + tau_d * z_{p,d} + omega_d * z_k     (omega only where a project has > 1 estimate in d)
    bias_k   = sign_d * (delta_s + sigma_s * z_{p,d,s,r})  (no bias term for rct / unspecified designs)

where ``r`` is the estimate's set of outcome-level risk-of-bias domains judged ``high``: under
``[risk_of_bias] high = "inflate"`` each adds ``sd x scale`` in quadrature to sigma_s (a
randomised estimate with such a judgement gets a bias term of mean 0), so estimates of one
project cell with different judgements have separate bias terms (data/README.md "Risk of bias").

all non-centred. ``sign_d`` is +1 when an increase is beneficial in domain d and -1
otherwise, so a positive bias mean says "this design flatters the initiative".
The estimate-level effects ``omega_d * z_k`` are integrated out analytically: given
the project effect and bias, ``yi_k ~ Normal(theta_{p,d} + bias_k, sqrt(sei_k^2 + omega_d^2))``.

A finding reported only as direction and significance enters as the probability
that its z-statistic fell where the report says, given an unknown SE with its own
prior: a significant increase is ``z > z_crit``, a significant decrease
``z < -z_crit``, a non-significant finding with a direction ``0 < z < z_crit`` (or its
mirror), a finding of "no effect" ``|z| < z_crit``, and a direction of unknown
significance ``z > 0`` (or ``z < 0``).

``prepare`` turns the evidence table into a :class:`Layout` (what enters, what is
left out and why, the per-domain priors); ``build_model`` turns that into a
``pm.Model`` a researcher can extend before sampling.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from metaeval.cells import finite, flag, present
from metaeval.errors import InputError, Problem
from metaeval.priors import Prior
from metaeval.spec import ALL_DESIGNS, UNBIASED_DESIGNS, ModelSpec

REQUIRED_COLUMNS = ("estimate_id", "project_id", "domain", "design", "yi", "sei", "poolable")
#: Why an outcome with ``benefit_basis: curator`` is left out (data/README.md "Benefit only where the source or the domain says so").
INFERRED_BENEFIT = "beneficial direction inferred by the curator, not stated by the source or given by the domain"
#: Finite stand-in for an unbounded side of a censoring region, in z units.
_Z_INF = 40.0


@dataclass
class Layout:
    """What a model is built from: domains, project cells, estimates, findings, bias terms.

    Plain data (lists of dicts) so it can be stored with the posterior and read by
    ``summarise`` without the evidence table.
    """

    domains: list[dict] = field(default_factory=list)
    projects: list[dict] = field(default_factory=list)
    estimates: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    bias_terms: list[dict] = field(default_factory=list)
    bias_designs: list[str] = field(default_factory=list)
    omega_domains: list[str] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    priors: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Layout:
        return cls(**data)

    def domain(self, domain_id: str) -> dict:
        return next(d for d in self.domains if d["id"] == domain_id)


def _text(value, default: str | None = None) -> str | None:
    if not present(value):
        return default
    text = str(value).strip()
    return text or default


def _z_region(direction: str | None, significant: bool | None, z_crit: float) -> tuple[float, float] | str:
    """The z-statistic region a direction-only finding reports, or why it cannot enter."""
    if direction == "increase":
        return {True: (z_crit, _Z_INF), False: (0.0, z_crit), None: (0.0, _Z_INF)}[significant]
    if direction == "decrease":
        return {True: (-_Z_INF, -z_crit), False: (-z_crit, 0.0), None: (-_Z_INF, 0.0)}[significant]
    if direction == "none":
        if significant:
            return "direction 'none' reported as significant: contradictory, left out"
        return (-z_crit, z_crit)
    return "a direction-only finding without a direction carries no information, left out"


def prepare(evidence, spec: ModelSpec) -> Layout:
    """Decide what enters the model and how; rows left out get a stated reason.

    Rows are ordered by domain, project and estimate id, so the same evidence in
    any row order gives the same model.
    """
    from statistics import NormalDist  # not scipy.stats: half a second of import on the summary and report paths

    # the table, or its rows (metaeval.harmonise.evidence_records: the exact engine's path never imports pandas)
    rows = evidence.to_dict("records") if hasattr(evidence, "to_dict") else list(evidence)  # mappings, only read
    columns = evidence.columns if hasattr(evidence, "columns") else set().union(*rows) if rows else set()
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError([Problem("evidence table", "", c, "required column is missing") for c in missing])
    problems: list[Problem] = []
    ids = [str(r["estimate_id"]) for r in rows]
    for dup in sorted(i for i, n in Counter(ids).items() if n > 1):
        problems.append(Problem("evidence table", dup, "estimate_id", "estimate ids must be unique"))

    layout = Layout()
    kept: list[dict] = []
    domain_meta: dict[str, dict] = {}
    # the risk-of-bias columns the evidence has (a missing one reads as not judged): on 100,000 rows, asking for
    # five absent ones was a third of this loop's time
    rob_columns = [(d, f"rob_{d}") for d in spec.rob_domains if f"rob_{d}" in columns] if spec.rob_high != "ignore" else []
    for r in sorted(rows, key=lambda r: (str(r["domain"]), str(r["project_id"]), str(r["estimate_id"]))):
        eid, domain, project = str(r["estimate_id"]), str(r["domain"]), str(r["project_id"])
        design = _text(r.get("design"), "unspecified")
        if design not in ALL_DESIGNS:
            problems.append(Problem("evidence table", eid, "design", f"unknown design {design!r}; expected one of {', '.join(ALL_DESIGNS)}"))
            continue
        domain_meta.setdefault(domain, r)
        base = {"estimate_id": eid, "domain": domain, "project": project, "design": design}

        def leave_out(reason: str) -> None:
            layout.excluded.append({**base, "reason": reason})

        if not flag(r.get("poolable")):
            leave_out(_text(r.get("exclusion_reason"), "not poolable (no reason given)"))
            continue
        if design not in spec.designs:
            leave_out(f"design {design!r} is not among the designs model {spec.name!r} admits")
            continue
        if _text(r.get("benefit_basis")) == "curator" and spec.inferred_benefit != "include":
            leave_out(f"{INFERRED_BENEFIT}; model {spec.name!r} leaves such outcomes out ([data] inferred_benefit = exclude)")
            continue
        high = [d for d, column in rob_columns if _text(r.get(column)) == "high"]
        if high and spec.rob_high == "exclude":
            leave_out(f"risk of bias high ({', '.join(high)}); model {spec.name!r} leaves such estimates out ([risk_of_bias] high = exclude)")
            continue
        base["risk_of_bias"] = high
        if flag(r.get("direction_only")):
            if spec.direction_only == "exclude":
                leave_out(f"reported only as direction and significance; model {spec.name!r} leaves such findings out (direction_only.mode = exclude)")
                continue
            level = finite(r.get("sig_level")) or 0.05
            z_crit = NormalDist().inv_cdf(1 - level / 2)
            # on the domain's scale (harmonise flips a finding whose outcome is better lower); a hand-made
            # table without that column is taken to be on it already
            direction = _text(r.get("direction_counted") if "direction_counted" in r else r.get("direction"))
            region = _z_region(direction, flag(r.get("significant")), z_crit)
            if isinstance(region, str):
                leave_out(region)
                continue
            kept.append({**base, "kind": "finding", "direction": direction, "significant": flag(r.get("significant")), "sig_level": level, "z_low": region[0], "z_high": region[1]})
            continue
        yi, sei = finite(r.get("yi")), finite(r.get("sei"))
        if yi is None or sei is None or sei <= 0:
            leave_out("no usable estimate and standard error (yi/sei missing)")
            continue
        kept.append({**base, "kind": "estimate", "yi": yi, "sei": sei})

    domains = sorted({k["domain"] for k in kept})
    for d in domains:
        r = domain_meta[d]
        beneficial = _text(r.get("domain_beneficial"), "increase")
        if beneficial not in ("increase", "decrease"):
            problems.append(Problem("evidence table", d, "domain_beneficial", f"expected increase or decrease, got {beneficial!r}"))
        scale = finite(r.get("domain_scale"))
        if scale is not None and scale <= 0:
            problems.append(Problem("evidence table", d, "domain_scale", f"must be positive, got {scale:g}"))
        mid = finite(r.get("domain_mid"))
        assumed = r.get("domain_assumed")
        layout.domains.append({
            "id": d,
            "label": _text(r.get("domain_label"), d),
            "metric": _text(r.get("domain_metric")),
            "beneficial": beneficial,
            "sign": 1.0 if beneficial != "decrease" else -1.0,
            "mid": mid if mid and mid > 0 else None,
            "scale": scale if scale and scale > 0 else 1.0,
            "assumed": {str(k): str(v) for k, v in assumed.items()} if isinstance(assumed, dict) else {},
        })
    for key in spec.overrides:
        head, _, tail = key.partition(".")
        if head in ("mu", "tau", "omega", "se") and tail and tail not in domains:
            problems.append(Problem("--prior", key, head, f"no domain {tail!r} in the model; domains: {', '.join(domains) or 'none'}"))
    if problems:
        raise InputError(problems)
    if not kept:
        raise InputError(Problem("evidence table", "", "", "no estimate can enter the model (every row is excluded)"))

    scale = {d["id"]: d["scale"] for d in layout.domains}
    sign = {d["id"]: d["sign"] for d in layout.domains}
    cells: dict[tuple[str, str], list[dict]] = {}
    for k in kept:
        cells.setdefault((k["domain"], k["project"]), []).append(k)
    for i, ((d, p), members) in enumerate(sorted(cells.items())):
        normal = [m for m in members if m["kind"] == "estimate"]
        smallest = min((m["sei"] for m in normal), default=None)
        w = [(smallest / m["sei"]) ** 2 for m in normal]  # relative to the smallest SE: 1/sei² underflows at sei 1e-300
        raw = sum(wi * m["yi"] for wi, m in zip(w, normal)) / sum(w) if normal else None
        layout.projects.append({
            "label": f"{d}/{p}", "domain": d, "project": p,
            "designs": sorted({m["design"] for m in members}),
            "n_estimates": len(members), "n_findings": len(members) - len(normal),
            "raw": raw, "raw_se": smallest / math.sqrt(sum(w)) if normal else None,
        })
        for m in members:
            m["project_index"] = i
    layout.omega_domains = sorted({d for (d, _), members in cells.items() if len(members) > 1})

    # bias terms: one per project cell, biased design and set of high risk-of-bias judgements (or
    # the design level of a hierarchy); risk of bias widens only the additive terms' fixed priors
    biased = spec.bias_mode in ("additive", "hierarchical")
    inflating = spec.bias_mode == "additive" and spec.rob_high == "inflate"
    groups: dict[tuple[str, str, str, tuple[str, ...]], int] = {}
    high_of = {k["estimate_id"]: tuple(k.pop("risk_of_bias")) for k in kept}
    if not inflating:
        high_of = dict.fromkeys(high_of, ())
    for k in kept:
        high = high_of[k["estimate_id"]]
        if biased and (k["design"] not in UNBIASED_DESIGNS or high):
            key = (k["domain"], k["project"], k["design"], high)
            if key not in groups:
                groups[key] = len(groups)
                label = f"{key[0]}/{key[1]}" + (f":{key[2]}" if len(layout.projects[k["project_index"]]["designs"]) > 1 else "")
                if high and any(high_of[m["estimate_id"]] != high for m in kept if m["project_index"] == k["project_index"]):
                    label += f"[{'+'.join(high)} high]"
                term = {"label": label, "domain": key[0], "project": key[1], "design": key[2], "sign": sign[key[0]],
                        "scale": scale[key[0]], "risk_of_bias": list(high)}
                if spec.bias_mode == "additive":
                    prior, scaled = spec.bias_prior(key[2], scale[key[0]]) or (Prior("normal", (0.0, 0.0)), True)
                    extra = spec.rob_inflation(high, scale[key[0]])
                    mean, sd = prior.params[0], math.hypot(prior.params[1], extra)
                    term.update(mean=mean, sd=sd, prior=str(Prior("normal", (mean, sd))) if extra else str(prior),
                                scaled=scaled, rob_sd=extra)
                layout.bias_terms.append(term)
            k["bias_index"] = groups[key]
        else:
            k["bias_index"] = -1
        k["weight"] = spec.weight(k["design"])
    layout.bias_designs = sorted({t["design"] for t in layout.bias_terms}, key=ALL_DESIGNS.index) if spec.bias_mode == "hierarchical" else []

    replicated = [k for k in kept if k["domain"] in layout.omega_domains and len(cells[(k["domain"], k["project"])]) > 1]
    for j, k in enumerate(replicated):
        k["replicate_index"] = j
    for k in kept:
        k.setdefault("replicate_index", -1)
        (layout.estimates if k.pop("kind") == "estimate" else layout.findings).append(k)

    params = ["mu", "tau"] + (["omega"] if layout.omega_domains else []) + (["se"] if layout.findings else [])
    for param in params:
        per_domain = {}
        for d in (layout.omega_domains if param == "omega" else domains):
            prior, scaled = spec.domain_prior(param, d, scale[d])
            per_domain[d] = str(prior)
        layout.priors[param] = per_domain
    return layout


def _vector_rv(name: str, priors: list, dims: str, labels: list[str]):
    """One random variable per label; vectorised when all priors share a family.

    A shared family's parameters are data containers (``<name>_prior_<param>``), so
    a refit with other values of them reuses the compiled model.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from metaeval.priors import PYMC_NAMES

    families = {p.family for p in priors}
    if len(families) == 1:
        first = priors[0]
        kwargs = {k: pm.Data(f"{name}_prior_{k}", np.array([p.kwargs()[k] for p in priors], dtype=float), dims=dims) for k in first.kwargs()}
        return getattr(pm, PYMC_NAMES[first.family])(name, **kwargs, dims=dims)
    parts = [p.to_pymc(f"{name}_{label}") for p, label in zip(priors, labels)]
    return pm.Deterministic(name, pt.stack(parts), dims=dims)


def build_model(evidence, spec: ModelSpec):
    """The PyMC model for ``evidence`` (the harmonised evidence table) under ``spec``.

    Returns the ``pm.Model``; add variables inside ``with model:`` before calling
    ``metaeval.sampling.fit``. The :class:`Layout` it was built from is ``layout_of(model)``.
    """
    return model_from_layout(prepare(evidence, spec), spec)


def _ints(values) -> np.ndarray:
    """Indices for a ``pm.Data`` container (int64 even when empty)."""
    return np.array(values, dtype=np.int64)


def _omega_slot(row: dict, o_index: dict[str, int]) -> int:
    """A row's index into ``omega_all``: its domain's omega if its project has several rows there, else the trailing 0."""
    return o_index[row["domain"]] if row["replicate_index"] >= 0 else len(o_index)


def collapse(y, v, index, n, segsum, log):
    """Integrate out a Gaussian level: rows ``y ~ N(theta[index], v)`` given per-group ``theta``.

    Returns each group's precision ``P`` and precision-weighted mean ``ybar`` (so that
    ``ybar ~ N(theta, 1/P)``) and each row's share of the remaining log-likelihood,
    ``-0.5 (log 2 pi v + (y - ybar)^2 / v)``; a group adds ``0.5 log(2 pi / P)``.
    Written once for numpy and PyTensor: ``segsum(values, index, n)`` sums by group.
    """
    precision = segsum(1 / v, index, n)
    mean = segsum(y / v, index, n) / precision
    return precision, mean, -0.5 * (LOG_2PI + log(v) + (y - mean[..., index]) ** 2 / v)


LOG_2PI = math.log(2 * math.pi)


def cell_groups(layout: Layout, spec: ModelSpec) -> dict:
    """Which project cells are integrated out (``effects = "marginal"``) and how their estimates group.

    A cell is integrated out when it holds only estimates (a direction-only finding is not
    Gaussian); within it, estimates group by bias term (one group for those without).
    Returns ``latent`` (project indices sampled), ``marginal`` (project indices integrated
    out), ``rows`` (estimate indices in marginal cells), ``row_group``, ``group_cell``
    (position in ``marginal``) and ``group_bias`` (bias-term index, -1 for none).
    """
    marginal = [i for i, p in enumerate(layout.projects) if spec.effects == "marginal" and p["n_findings"] == 0]
    position = {i: j for j, i in enumerate(marginal)}
    rows = [k for k, e in enumerate(layout.estimates) if e["project_index"] in position]
    groups: dict[tuple[int, int], int] = {}
    for k in rows:
        e = layout.estimates[k]
        groups.setdefault((e["project_index"], e["bias_index"]), len(groups))
    return {
        "latent": [i for i in range(len(layout.projects)) if i not in position],
        "marginal": marginal,
        "rows": rows,
        "row_group": [groups[(layout.estimates[k]["project_index"], layout.estimates[k]["bias_index"])] for k in rows],
        "group_cell": [position[c] for c, _ in groups],
        "group_bias": [b for _, b in groups],
    }


def samples_project_effects(layout: Layout, spec: ModelSpec) -> bool:
    """Whether the sampler explores project effects (and with them the funnel between tau and the effects), rather
    than the domain parameters alone: every cell integrated out (``effects = "marginal"``, no direction-only finding)."""
    return bool(cell_groups(layout, spec)["latent"])


def model_from_layout(layout: Layout, spec: ModelSpec):
    """Build the PyMC model from a prepared layout (see ``build_model``).

    Every number that comes from the evidence or a prior's parameters enters as a
    ``pm.Data`` container, so two models of the same shape differ only in data and
    ``metaeval.sampling.fit`` can reuse one compiled sampler for both. The within-project
    estimate effects (omega) are Gaussian and integrated out analytically: they add
    omega^2 to an estimate's variance, which removes one funnel and one latent per
    replicated estimate.

    With ``effects = "marginal"`` the project effects and bias terms of cells holding only
    estimates are integrated out too (``collapse``, twice): the sampler sees the domain
    parameters alone, and ``fit`` draws those effects afterwards from their exact
    conditional posterior (``draw_marginal_effects``). Sampled effects then live on the
    ``latent_project`` and ``latent_bias_term`` dims, and every likelihood is a
    ``pm.Potential`` (no pointwise log-likelihood for LOO).
    """
    import pymc as pm
    import pytensor.tensor as pt

    from metaeval.priors import parse_prior

    marginal_mode = spec.effects == "marginal"
    split = cell_groups(layout, spec)
    latent = split["latent"]
    latent_pos = {i: j for j, i in enumerate(latent)}
    labels = [p["label"] for p in layout.projects]
    label_pos = {label: i for i, label in enumerate(labels)}
    term_cell = [label_pos[f"{t['domain']}/{t['project']}"] for t in layout.bias_terms]
    latent_terms = [j for j, c in enumerate(term_cell) if c in latent_pos]
    term_pos = {j: i for i, j in enumerate(latent_terms)}

    domains = [d["id"] for d in layout.domains]
    d_index = {d: i for i, d in enumerate(domains)}
    project_dim = "latent_project" if marginal_mode else "project"
    term_dim = "latent_bias_term" if marginal_mode else "bias_term"
    coords = {"domain": domains, "project": labels}
    if layout.estimates:
        coords["estimate"] = [e["estimate_id"] for e in layout.estimates]
    if layout.findings:
        coords["finding"] = [f["estimate_id"] for f in layout.findings]
    if layout.omega_domains:
        coords["omega_domain"] = layout.omega_domains
    if layout.bias_terms:
        coords["bias_term"] = [t["label"] for t in layout.bias_terms]
    if layout.bias_designs:
        coords["design"] = layout.bias_designs
    if marginal_mode:
        coords["latent_project"] = [labels[i] for i in latent]
        coords["latent_bias_term"] = [layout.bias_terms[j]["label"] for j in latent_terms]
        coords["marginal_project"] = [labels[i] for i in split["marginal"]]

    with pm.Model(coords=coords) as model:
        mu = _vector_rv("mu", [parse_prior(layout.priors["mu"][d]) for d in domains], "domain", domains)
        tau = _vector_rv("tau", [parse_prior(layout.priors["tau"][d]) for d in domains], "domain", domains)
        project_domain = pm.Data("project_domain", _ints([d_index[p["domain"]] for p in layout.projects]), dims="project")
        theta_latent = None
        if latent:
            cell_domain = project_domain[pm.Data("latent_projects", _ints(latent))] if marginal_mode else project_domain
            z_project = pm.Normal("z_project", 0.0, 1.0, dims=project_dim)
            theta_latent = pm.Deterministic("theta_latent" if marginal_mode else "theta_project", mu[cell_domain] + tau[cell_domain] * z_project, dims=project_dim)

        if layout.omega_domains:
            omega = _vector_rv("omega", [parse_prior(layout.priors["omega"][d]) for d in layout.omega_domains], "omega_domain", layout.omega_domains)
            omega_all = pt.concatenate([omega, pt.zeros(1)])
        else:
            omega_all = pt.zeros(1)
        o_index = {d: i for i, d in enumerate(layout.omega_domains)}

        bias_latent = pt.zeros(1)
        bias_prior = None  # each bias term's prior mean (signed) and SD on the metric, when they are fixed
        if layout.bias_terms:
            t_sign = pm.Data("bias_sign", np.array([t["sign"] for t in layout.bias_terms]), dims="bias_term")
            if spec.bias_mode == "additive":
                means = pm.Data("bias_prior_mean", np.array([t["mean"] for t in layout.bias_terms]), dims="bias_term")
                sds = pm.Data("bias_prior_sd", np.array([t["sd"] for t in layout.bias_terms]), dims="bias_term")
                bias_prior = (t_sign * means, sds)
                if latent_terms:
                    pick = pm.Data("latent_bias_terms", _ints(latent_terms)) if marginal_mode else slice(None)
                    z_bias = pm.Normal("z_bias", 0.0, 1.0, dims=term_dim)
                    bias = pm.Deterministic("bias_latent" if marginal_mode else "bias", t_sign[pick] * (means[pick] + sds[pick] * z_bias), dims=term_dim)
                    bias_latent = pt.concatenate([bias, pt.zeros(1)])
            else:  # hierarchical: a design level (Prevost et al. 2000), in domain-scale units (latent effects only)
                t_scale = pm.Data("bias_scale", np.array([t["scale"] for t in layout.bias_terms]), dims="bias_term")
                design_of = pm.Data("bias_design_index", _ints([layout.bias_designs.index(t["design"]) for t in layout.bias_terms]), dims="bias_term")
                mean = spec.hierarchy_prior("mean").to_pymc("bias_mean")
                design_sd = spec.hierarchy_prior("design_sd").to_pymc("bias_design_sd")
                project_sd = spec.hierarchy_prior("project_sd").to_pymc("bias_project_sd")
                z_bias = pm.Normal("z_bias", 0.0, 1.0, dims="bias_term")
                z_design = pm.Normal("z_design", 0.0, 1.0, dims="design")
                delta = pm.Deterministic("bias_design", mean + design_sd * z_design, dims="design")
                bias = pm.Deterministic("bias", t_sign * t_scale * (delta[design_of] + project_sd * z_bias), dims="bias_term")
                bias_latent = pt.concatenate([bias, pt.zeros(1)])

        def effect_and_extra_sd(rows: list[dict], dim: str):
            """Each row's expected effect (project effect + design bias) and its within-project SD (omega or 0)."""
            cell = pm.Data(f"{dim}_project", _ints([latent_pos[k["project_index"]] for k in rows]), dims=dim)
            b = pm.Data(f"{dim}_bias_term", _ints([term_pos[k["bias_index"]] if k["bias_index"] >= 0 else len(latent_terms) for k in rows]), dims=dim)
            o = pm.Data(f"{dim}_omega_domain", _ints([_omega_slot(k, o_index) for k in rows]), dims=dim)
            return theta_latent[cell] + bias_latent[b], omega_all[o]

        if layout.estimates:
            yi = pm.Data("yi", np.array([e["yi"] for e in layout.estimates]), dims="estimate")
            sei = pm.Data("sei", np.array([e["sei"] for e in layout.estimates]), dims="estimate")
            weight = pm.Data("estimate_weight", np.array([e["weight"] for e in layout.estimates]), dims="estimate")
            if not marginal_mode:
                effect, extra_sd = effect_and_extra_sd(layout.estimates, "estimate")
                pm.Normal("y", mu=effect, sigma=pt.sqrt(sei**2 / weight + extra_sd**2), observed=yi, dims="estimate")
            else:
                on_latent = [k for k, e in enumerate(layout.estimates) if e["project_index"] in latent_pos]
                if on_latent:
                    effect, extra_sd = effect_and_extra_sd([layout.estimates[k] for k in on_latent], "latent_estimate")
                    rows = pm.Data("latent_estimate_rows", _ints(on_latent))
                    pm.Potential("latent_estimates", pm.logp(pm.Normal.dist(effect, pt.sqrt(sei[rows] ** 2 / weight[rows] + extra_sd**2)), yi[rows]))
                if split["rows"]:
                    _marginal_likelihood(layout, split, mu, tau, omega_all, o_index, yi, sei, weight, project_domain, bias_prior)

        if layout.findings:
            se_priors = [parse_prior(layout.priors["se"][f["domain"]]) for f in layout.findings]
            se = _vector_rv("se_finding", se_priors, "finding", coords["finding"])
            weight = pm.Data("finding_weight", np.array([f["weight"] for f in layout.findings]), dims="finding")
            effect, extra_sd = effect_and_extra_sd(layout.findings, "finding")
            z_low = pm.Data("z_low", np.array([f["z_low"] for f in layout.findings]), dims="finding")
            z_high = pm.Data("z_high", np.array([f["z_high"] for f in layout.findings]), dims="finding")
            # the reported z = yhat / s with yhat ~ N(effect, s^2 + omega^2): z ~ N(effect / s, 1 + omega^2 / s^2)
            s = se / pt.sqrt(weight)
            spread = pt.sqrt(1 + (extra_sd / s) ** 2)
            x = effect / s
            std = pm.Normal.dist(0.0, 1.0)
            logp = pm.math.logdiffexp(pm.logcdf(std, (z_high - x) / spread), pm.logcdf(std, (z_low - x) / spread))
            pm.Potential("direction_only", logp, dims="finding")

    model._metaeval_layout = layout  # noqa: SLF001 - read through layout_of
    model._metaeval_spec = spec
    return model


def _segsum_pt(values, index, n):
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros(n)[index], values)


def segsum_np(values, index, n):
    """Sum the last axis of ``values`` by ``index`` into ``n`` slots."""
    out = np.zeros((n, *values.shape[:-1]))
    np.add.at(out, index, np.moveaxis(values, -1, 0))
    return np.moveaxis(out, 0, -1)


def _marginal_likelihood(layout, split, mu, tau, omega_all, o_index, yi, sei, weight, project_domain, bias_prior):
    """Add the integrated likelihood of the cells holding only estimates, one term per cell."""
    import pymc as pm
    import pytensor.tensor as pt

    rows = pm.Data("marginal_rows", _ints(split["rows"]))
    n_groups, n_cells = len(split["group_cell"]), len(split["marginal"])
    row_group = pm.Data("marginal_row_group", _ints(split["row_group"]))
    group_cell = pm.Data("marginal_group_cell", _ints(split["group_cell"]))
    group_bias = pm.Data("marginal_group_bias", _ints([b if b >= 0 else len(layout.bias_terms) for b in split["group_bias"]]))
    row_omega = pm.Data("marginal_row_omega", _ints([_omega_slot(layout.estimates[k], o_index) for k in split["rows"]]))
    if bias_prior is not None:
        m_g = pt.concatenate([bias_prior[0], pt.zeros(1)])[group_bias]
        s_g = pt.concatenate([bias_prior[1], pt.zeros(1)])[group_bias]
    else:
        m_g, s_g = pt.zeros(n_groups), pt.zeros(n_groups)
    v = sei[rows] ** 2 / weight[rows] + omega_all[row_omega] ** 2
    p_g, ybar_g, l_rows = collapse(yi[rows], v, row_group, n_groups, _segsum_pt, pt.log)
    p_c, xbar_c, l_groups = collapse(ybar_g - m_g, 1 / p_g + s_g**2, group_cell, n_cells, _segsum_pt, pt.log)
    cell_domain = project_domain[pm.Data("marginal_projects", _ints(split["marginal"]))]
    l_cells = 0.5 * (LOG_2PI - pt.log(p_c)) + pm.logp(pm.Normal.dist(mu[cell_domain], pt.sqrt(1 / p_c + tau[cell_domain] ** 2)), xbar_c)
    per_cell = (_segsum_pt(l_rows, group_cell[row_group], n_cells) + _segsum_pt(0.5 * (LOG_2PI - pt.log(p_g)) + l_groups, group_cell, n_cells) + l_cells)
    pm.Potential("marginal_likelihood", per_cell, dims="marginal_project")


def draw_marginal_effects(posterior, layout: Layout, spec: ModelSpec, seed: int):
    """Add ``theta_project`` and ``bias`` draws to a posterior fitted with ``effects = "marginal"``.

    For each posterior draw of the domain parameters, the integrated-out project effects
    and bias terms are drawn from their exact Gaussian conditional posterior: first
    ``theta_c | data`` (the cell's collapsed estimate against ``N(mu, tau)``), then each
    bias term given ``theta_c``. Sampled (latent) cells keep their MCMC draws. Seeded, so
    the same fit gives the same draws.
    """
    import xarray as xr

    split = cell_groups(layout, spec)
    post = posterior["posterior"].to_dataset()
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    n_cells, n_groups = len(split["marginal"]), len(split["group_cell"])
    theta = np.empty((n_chain, n_draw, len(layout.projects)))
    bias = np.empty((n_chain, n_draw, len(layout.bias_terms)))
    if "theta_latent" in post:
        theta[:, :, split["latent"]] = post["theta_latent"].values
    if "bias_latent" in post:
        sampled = set(post["bias_latent"].coords["latent_bias_term"].values)
        bias[:, :, [j for j, t in enumerate(layout.bias_terms) if t["label"] in sampled]] = post["bias_latent"].values
    if n_cells:
        rows = [layout.estimates[k] for k in split["rows"]]
        y = np.array([e["yi"] for e in rows])
        sampling_var = np.array([e["sei"] ** 2 / e["weight"] for e in rows])
        row_group, group_cell = np.array(split["row_group"]), np.array(split["group_cell"])
        terms = [layout.bias_terms[b] if b >= 0 else None for b in split["group_bias"]]
        m_g = np.array([t["sign"] * t["mean"] if t else 0.0 for t in terms])
        s2_g = np.array([t["sd"] ** 2 if t else 0.0 for t in terms])
        d_of = {d["id"]: i for i, d in enumerate(layout.domains)}
        cell_domain = [d_of[layout.projects[i]["domain"]] for i in split["marginal"]]
        replicated = [j for j, e in enumerate(rows) if e["replicate_index"] >= 0]
        o_of = {d: i for i, d in enumerate(layout.omega_domains)}
        omega_of_row = [o_of[rows[j]["domain"]] for j in replicated]
        with_term = [g for g, t in enumerate(split["group_bias"]) if t >= 0]
        term_of_group = [split["group_bias"][g] for g in with_term]
        rng = np.random.default_rng([seed, 7])
        for chain in range(n_chain):  # one chain at a time: the per-row arrays are draws x estimates
            mu, tau = post["mu"].values[chain][:, cell_domain], post["tau"].values[chain][:, cell_domain]
            v = np.broadcast_to(sampling_var, (n_draw, len(rows))).copy()
            if replicated:
                v[:, replicated] += post["omega"].values[chain][:, omega_of_row] ** 2
            p_g, ybar_g, _ = collapse(y, v, row_group, n_groups, segsum_np, np.log)
            p_c, xbar_c, _ = collapse(ybar_g - m_g, 1 / p_g + s2_g, group_cell, n_cells, segsum_np, np.log)
            shrink = tau**2 / (tau**2 + 1 / p_c)
            theta_c = mu + shrink * (xbar_c - mu) + np.sqrt(shrink / p_c) * rng.standard_normal(mu.shape)
            theta[chain][:, split["marginal"]] = theta_c
            gain = s2_g / (s2_g + 1 / p_g)
            b_g = m_g + gain * (ybar_g - theta_c[:, group_cell] - m_g) + np.sqrt(gain / p_g) * rng.standard_normal(ybar_g.shape)
            bias[chain][:, term_of_group] = b_g[:, with_term]
    post = post.drop_vars([v for v in ("theta_latent", "bias_latent") if v in post])
    post["theta_project"] = xr.DataArray(theta, dims=("chain", "draw", "project"), coords={"project": [p["label"] for p in layout.projects]})
    if layout.bias_terms:
        post["bias"] = xr.DataArray(bias, dims=("chain", "draw", "bias_term"), coords={"bias_term": [t["label"] for t in layout.bias_terms]})
    posterior["posterior"] = post
    return posterior


def layout_of(model) -> Layout:
    """The layout a model was built from (raises if the model was not built by ``build_model``)."""
    layout = getattr(model, "_metaeval_layout", None)
    if layout is None:
        raise ValueError("this model was not built by metaeval.build_model; it has no layout")
    return layout


def spec_of(model) -> ModelSpec:
    spec = getattr(model, "_metaeval_spec", None)
    if spec is None:
        raise ValueError("this model was not built by metaeval.build_model; it has no spec")
    return spec
