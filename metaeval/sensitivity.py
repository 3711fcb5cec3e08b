"""Sensitivity analysis: a grid of model choices, leave-one-project-out, power-scaling.

A *scenario* is the baseline analysis with some choices changed: the tau prior, the
bias model (a model file: ``default``, ``no_bias``, ``variance_inflation``,
``design_hierarchy``), which designs are included, the estimand (ITT, or
participation = the TOT records in place of their ITTs) and whether direction-only
findings enter. The grid comes from ``models/sensitivity.toml`` (:func:`load_grid`),
one factor at a time by default. Every scenario is one fit, run through
:func:`metaeval.executor.run_tasks` (a local Dask cluster, a remote one, or serially);
all scenarios use the same seed (common random numbers), written into each task, so a
result does not depend on which process ran it. A scenario that fails is a row with
its error; the others stand.

Outputs (:func:`run_sensitivity` → :class:`SensitivityResult`): a tidy table (one row
per scenario × domain: mu mean/SD/HDI, P(beneficial), tau), a specification curve per
domain, a verdict per domain on whether the sign and the decision class of
P(beneficial) are robust; leave-one-project-out influence (refits of the baseline
without each project: the Bayesian counterpart of metafor's ``leave1out``), flagged
where the sign flips or mu moves by more than its posterior SD; and power-scaling
sensitivity of the baseline fit per domain (``arviz_stats.psense_summary``, Kallioinen
et al. 2024), which flags a domain driven by its prior or in prior–data conflict.
The figures, files and report section: :mod:`metaeval.sensitivity_outputs`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from metaeval.errors import InputError, Problem
from metaeval.spec import ALL_DESIGNS, MODELS_DIR, read_toml

if TYPE_CHECKING:
    from metaeval.result import DomainAverage

FACTORS = ("tau", "bias", "inclusion", "estimand", "direction_only")
ESTIMANDS = ("itt", "tot")
DIRECTION_ONLY = {"in": "censored", "out": "exclude"}
BASELINE = "baseline"


# --- the grid ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A sensitivity grid: the baseline choices, the levels tried per factor, and the options."""

    baseline: dict
    levels: dict[str, list[str]]
    inclusion: dict[str, list[str]]
    mode: str = "oat"
    decision_probability: float = 0.9
    leave_one_out: bool = True
    power_scaling: bool = True
    psense_threshold: float = 0.05
    source: str = ""

    def scenarios(self) -> list[dict]:
        """The scenarios, baseline first; each a dict of the five choices plus name and what changed."""
        base = {f: self.baseline[f] for f in FACTORS}
        out = [{"name": BASELINE, "changed": [], **base}]
        if self.mode == "factorial":
            axes = [[base[f]] + [v for v in self.levels.get(f, []) if v != base[f]] for f in FACTORS]
            for combo in itertools.product(*axes):
                choice = dict(zip(FACTORS, combo))
                changed = [f for f in FACTORS if choice[f] != base[f]]
                if changed:
                    out.append({"name": _name(choice, changed), "changed": changed, **choice})
        else:
            for f in FACTORS:
                for level in self.levels.get(f, []):
                    if level != base[f]:
                        choice = {**base, f: level}
                        out.append({"name": _name(choice, [f]), "changed": [f], **choice})
        seen, unique = set(), []
        for s in out:
            if s["name"] not in seen:
                seen.add(s["name"])
                unique.append(s)
        return unique

    def with_levels(self, **levels) -> Grid:
        """The grid with some factors' level lists replaced (None: keep)."""
        new = dict(self.levels)
        for f, values in levels.items():
            if values is not None:
                new[f] = list(values)
        grid = replace(self, levels=new)
        grid.check()
        return grid

    def check(self) -> None:
        """Raise InputError for unknown levels (each problem named)."""
        from metaeval.priors import PriorError, parse_prior
        from metaeval.spec import resolve_model_path

        problems = []
        src = self.source or "sensitivity grid"
        for f in FACTORS:
            for level in [self.baseline[f], *self.levels.get(f, [])]:
                message = None
                if f == "tau" and level:
                    try:
                        p = parse_prior(level)
                        if p.support != "positive":
                            message = f"tau needs a prior on positive values, got {level!r}"
                    except PriorError as err:
                        message = str(err)
                elif f == "bias":
                    try:
                        resolve_model_path(level)
                    except InputError as err:
                        message = "; ".join(p.message for p in err.problems)
                elif f == "inclusion" and level not in self.inclusion:
                    message = f"unknown inclusion rule {level!r}; defined: {', '.join(self.inclusion)}"
                elif f == "estimand" and level not in ESTIMANDS:
                    message = f"expected one of {', '.join(ESTIMANDS)}, got {level!r}"
                elif f == "direction_only" and level not in DIRECTION_ONLY:
                    message = f"expected in or out, got {level!r}"
                if message:
                    problems.append(Problem(src, f, f, message))
        for rule, designs in self.inclusion.items():
            bad = [d for d in designs if d not in ALL_DESIGNS]
            if bad or not designs:
                problems.append(Problem(src, "inclusion", rule, f"expected a non-empty list of designs from {', '.join(ALL_DESIGNS)}"))
        if self.mode not in ("oat", "factorial"):
            problems.append(Problem(src, "grid", "mode", f"expected oat or factorial, got {self.mode!r}"))
        if not 0.5 < self.decision_probability < 1:
            problems.append(Problem(src, "verdict", "decision_probability", "expected a number in (0.5, 1)"))
        if problems:
            raise InputError(problems)


def _name(choice: dict, changed: list[str]) -> str:
    return ", ".join(f"{f}={choice[f] or 'model'}" for f in changed)


def load_grid(path: str | Path = "sensitivity") -> Grid:
    """Read a grid from ``models/<name>.toml`` or a TOML file path."""
    p = Path(path)
    if not p.suffix:
        p = MODELS_DIR / f"{path}.toml"
    if not p.is_file():
        raise InputError(Problem(str(p), "", "", "no such sensitivity grid file"))
    raw = read_toml(p)
    base = raw.get("baseline", {})
    grid_raw = raw.get("grid", {})
    baseline = {
        "tau": str(base.get("tau", "")),
        "bias": str(base.get("model", "default")),
        "inclusion": str(base.get("inclusion", "all")),
        "estimand": str(base.get("estimand", "itt")),
        "direction_only": str(base.get("direction_only", "in")),
    }
    levels = {f: [str(v) for v in grid_raw.get(f, [])] for f in FACTORS}
    inclusion = {k: list(v) for k, v in raw.get("inclusion", {"all": list(ALL_DESIGNS)}).items()}
    inclusion.setdefault("all", list(ALL_DESIGNS))
    grid = Grid(
        baseline=baseline,
        levels=levels,
        inclusion=inclusion,
        mode=str(grid_raw.get("mode", "oat")),
        decision_probability=float(raw.get("verdict", {}).get("decision_probability", 0.9)),
        leave_one_out=bool(raw.get("leave_one_out", {}).get("enabled", True)),
        power_scaling=bool(raw.get("power_scaling", {}).get("enabled", True)),
        psense_threshold=float(raw.get("power_scaling", {}).get("threshold", 0.05)),
        source=str(p),
    )
    grid.check()
    return grid


def scenario_spec(scenario: dict, grid: Grid, overrides: tuple[str, ...] | list[str] = ()):
    """The ModelSpec of a scenario: its model file with tau, included designs and direction-only mode set."""
    from metaeval.priors import parse_prior
    from metaeval.spec import load_spec

    spec = load_spec(scenario["bias"], list(overrides))
    priors = dict(spec.priors)
    if scenario["tau"]:
        priors["tau"] = parse_prior(scenario["tau"])
    designs = tuple(d for d in ALL_DESIGNS if d in grid.inclusion[scenario["inclusion"]])
    direction = DIRECTION_ONLY[scenario["direction_only"]]
    se = spec.direction_only_se
    if direction == "censored" and se is None:  # a model file that excludes them has no SE prior: take the default's
        se = load_spec("default").direction_only_se
    return replace(spec, priors=priors, designs=designs, direction_only=direction, direction_only_se=se)


# --- one task = one fit ------------------------------------------------------------------------


def _compact(averages: Mapping[str, DomainAverage], diag=None) -> dict:
    """What the grid keeps of a fit: per domain mu, tau, counts (its :class:`~metaeval.result.DomainAverage`); the gate
    (the diagnostics, MCMC only)."""
    domains = {}
    for d, dom in averages.items():
        mu, tau = dom.mu, dom.tau
        domains[d] = {
            "label": dom.label,
            "metric": dom.metric,
            "mu_mean": mu.mean, "mu_sd": mu.sd, "mu_hdi_low": mu.hdi_low, "mu_hdi_high": mu.hdi_high,
            "hdi_prob": mu.hdi_prob, "p_beneficial": mu.p_beneficial,
            "tau_mean": tau.mean, "tau_hdi_low": tau.hdi_low, "tau_hdi_high": tau.hdi_high,
            "n_projects": dom.n_projects, "n_estimates": dom.n_estimates, "projects": list(dom.projects),
        }
    return {"domains": domains, "gate_passed": diag.passed if diag else None, "gate_failures": list(diag.failures) if diag else []}


def _scenario_layout(scenario: dict, grid: Grid, evidence, overrides, drop_project: str | None):
    """A scenario's model spec, its evidence (without ``drop_project``) and their layout."""
    from metaeval.model import prepare

    spec = scenario_spec(scenario, grid, overrides)
    table = evidence
    if drop_project is not None:
        table = evidence[evidence["project_id"].astype(str) != drop_project].reset_index(drop=True)
    return spec, table, prepare(table, spec)


def _exact_in_processes(tasks: list[dict], processes, baseline: bool, progress) -> list[tuple]:
    """Integrate every distinct domain of the tasks' scenarios once, side by side in worker processes, and keep them
    for the tasks (:func:`~metaeval.exact_full.precompute`); ``baseline``: the first task's domains in full (its
    project effects and comparisons too), for the report made after the grid. Returns each task's prepared
    scenario (:func:`_scenario_layout`), for the task to use again."""
    from metaeval.exact_full import domain_parts, exact_reason, precompute

    prepared = [_scenario_layout(t["scenario"], t["grid"], t["evidence"], t["overrides"], t.get("drop_project")) for t in tasks]
    parts = [domain_parts(layout, spec) if exact_reason(layout, spec) is None else []
             for spec, _, layout in prepared]
    precompute([key for keys in parts for key in keys], parts[0] if baseline else [], processes, progress=progress)
    return prepared


def fit_scenario(
    *,
    scenario: dict,
    grid: Grid,
    evidence,
    settings: dict,
    overrides: tuple[str, ...] | list[str] = (),
    drop_project: str | None = None,
    power_scaling: bool = False,
    out: str | None = None,
    refit: bool = False,
    engine: str = "mcmc",
    prepared: tuple | None = None,
) -> dict:
    """Fit one scenario (optionally without one project) and return its compact summary.

    ``evidence`` is the harmonised table for the scenario's estimand. With ``out`` the
    fit goes through the fit cache (``<out>/fits/<key>/``); ``settings`` are
    :class:`~metaeval.sampling.SamplerSettings` fields, seed included.
    ``power_scaling`` adds the per-domain power-scaling diagnostics (MCMC only: they reweight draws).
    ``engine``: ``mcmc``; ``exact`` (a scenario whose model has no exact form fails, saying why); or
    ``auto`` (exact where the scenario's model has an exact form, else MCMC). ``prepared``: the scenario's
    (spec, evidence, layout) where already made (:func:`_scenario_layout`).
    """
    from metaeval.model import model_from_layout
    from metaeval.sampling import SamplerSettings, fit, fit_cached
    from metaeval.summary import summarise

    spec, table, layout = prepared or _scenario_layout(scenario, grid, evidence, overrides, drop_project)
    if engine != "mcmc":
        from metaeval.exact_block import NoExactForm
        from metaeval.exact_full import exact_averages, exact_reason

        reason = exact_reason(layout, spec, several_cells=engine == "exact")
        if reason is None:
            return _compact(exact_averages(layout, spec))
        if engine == "exact":
            raise NoExactForm(reason)
    sampler = SamplerSettings(**settings).resolved(spec, layout)
    if out is not None:
        cached = fit_cached(table, spec, out=out, settings=sampler, refit=refit, progress=False)
        posterior = cached.posterior
    else:
        model = model_from_layout(layout, spec)
        posterior = fit(model, chains=sampler.chains, draws=sampler.draws, tune=sampler.tune, seed=sampler.seed,
                        sampler=sampler.sampler, target_accept=sampler.target_accept, progress=False)
    summary = summarise(posterior)
    result = _compact({d: dom.average() for d, dom in summary.domains.items()}, summary.diagnostics)
    if power_scaling:
        model = model_from_layout(layout, spec)
        result["power_scaling"] = power_scaling_by_domain(posterior, model, threshold=grid.psense_threshold)
    return result


# --- power-scaling -----------------------------------------------------------------------------

PLAIN = {
    "potential prior-data conflict": "prior–data conflict: the prior and the data pull the estimate in different directions; "
                                     "check the prior against what the evidence says",
    "potential strong prior / weak likelihood": "driven by the prior: the data carry little information here, so the "
                                                "result mostly restates the prior; do not read it as evidence",
}


def power_scaling_by_domain(posterior, model, *, threshold: float = 0.05) -> dict:
    """Power-scaling sensitivity of mu and tau per domain (no refit).

    Per domain, the prior of that domain's mu and tau and the likelihood of that
    domain's numeric estimates are power-scaled (``arviz_stats.psense_summary``).
    Direction-only findings enter through a Potential, which is not part of the
    log_likelihood group: a domain with only such findings gets no likelihood
    sensitivity, and says so.
    """
    import warnings

    import pymc as pm
    from arviz_stats import psense_summary

    from metaeval.model import layout_of

    tree = posterior.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "log_likelihood" not in tree.children and any(v.name == "y" for v in model.observed_RVs):
            tree = pm.compute_log_likelihood(tree, model=model, progressbar=False)
        if "log_prior" not in tree.children:
            tree = pm.stats.compute_log_prior(tree, model=model, progressbar=False)
    layout = layout_of(model)
    log_prior = tree["log_prior"].to_dataset()
    out: dict[str, dict] = {}
    for dom in layout.domains:
        d = dom["id"]
        estimates = [e["estimate_id"] for e in layout.estimates if e["domain"] == d]
        entry: dict = {"mu": None, "tau": None, "diagnosis": None, "plain": None, "note": None}
        prior_vars = [v for v in ("mu", "tau") if v in log_prior and "domain" in log_prior[v].dims]
        if not estimates or "log_likelihood" not in tree.children or not prior_vars:
            entry["note"] = ("no numeric estimates in this domain (only direction-only findings): "
                             "power-scaling of the likelihood is not available" if not estimates else
                             "power-scaling not available for this model")
            out[d] = entry
            continue
        try:
            import logging

            logger = logging.getLogger("arviz_stats.psense")  # it logs a pointer to the paper; we explain in words
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    table = psense_summary(
                        tree, var_names=["mu", "tau"], coords={"domain": [d]}, threshold=threshold,
                        prior_var_names=prior_vars, prior_coords={"domain": [d]},
                        likelihood_var_names=["y"], likelihood_coords={"estimate": estimates},
                    )
            finally:
                logger.setLevel(level)
        except Exception as err:  # noqa: BLE001 - reported per domain
            entry["note"] = f"power-scaling failed: {type(err).__name__}: {err}"
            out[d] = entry
            continue
        diagnoses = []
        for var in ("mu", "tau"):
            row = next((table.loc[i] for i in table.index if str(i).startswith(var)), None)
            if row is None:
                continue
            entry[var] = {"prior": float(row["prior"]), "likelihood": float(row["likelihood"]), "diagnosis": str(row["diagnosis"])}
            if str(row["diagnosis"]) in PLAIN:
                diagnoses.append((var, str(row["diagnosis"])))
        if diagnoses:
            kinds = sorted({k for _, k in diagnoses}, key=list(PLAIN).index)
            entry["diagnosis"] = "; ".join(kinds)
            entry["plain"] = "; ".join(f"{'/'.join(v for v, k in diagnoses if k == kind)} {PLAIN[kind]}" for kind in kinds)
        out[d] = entry
    return out


# --- running the grid --------------------------------------------------------------------------


@dataclass
class SensitivityResult:
    """Everything a sensitivity run produced, as plain data plus tables."""

    grid: Grid
    scenarios: list[dict]
    results: list[dict]  # per scenario: {"ok", "error", "value", "seconds", "worker"}
    loo: list[dict] = field(default_factory=list)  # per dropped project
    power_scaling: dict | None = None
    evidence_digest: str = ""

    def table(self):
        """One row per scenario × domain (``metric``: the units of mu and its interval); a failed scenario is one row
        with its error."""
        import pandas as pd

        rows = []
        for s, r in zip(self.scenarios, self.results):
            head = {"scenario": s["name"], **{f: s[f] for f in FACTORS}}
            if not r["ok"]:
                rows.append({**head, "domain": None, "error": r["error"]})
                continue
            for d, v in r["value"]["domains"].items():
                rows.append({**head, "domain": d, "metric": v.get("metric"), "mu_mean": v["mu_mean"], "mu_sd": v["mu_sd"],
                             "mu_hdi_low": v["mu_hdi_low"], "mu_hdi_high": v["mu_hdi_high"], "hdi_prob": v["hdi_prob"],
                             "p_beneficial": v["p_beneficial"], "tau_mean": v["tau_mean"],
                             "n_projects": v["n_projects"], "n_estimates": v["n_estimates"],
                             "gate_passed": r["value"]["gate_passed"], "error": None})
        columns = ["scenario", *FACTORS, "domain", "metric", "mu_mean", "mu_sd", "mu_hdi_low", "mu_hdi_high", "hdi_prob",
                   "p_beneficial", "tau_mean", "n_projects", "n_estimates", "gate_passed", "error"]
        return pd.DataFrame(rows, columns=columns)

    def baseline(self) -> dict | None:
        r = self.results[0]
        return r["value"] if r["ok"] else None

    def verdicts(self) -> dict[str, str]:
        return verdicts(self.table(), self.grid.decision_probability)

    def loo_table(self):
        return loo_table(self.baseline(), self.loo)

    def power_scaling_table(self):
        import pandas as pd

        rows = []
        for d, e in (self.power_scaling or {}).items():
            rows.append({"domain": d,
                         "mu_prior": (e["mu"] or {}).get("prior"), "mu_likelihood": (e["mu"] or {}).get("likelihood"),
                         "tau_prior": (e["tau"] or {}).get("prior"), "tau_likelihood": (e["tau"] or {}).get("likelihood"),
                         "diagnosis": e["diagnosis"] or ("ok" if e["mu"] else None),
                         "meaning": e["plain"] or e["note"] or "the result responds to the data and not unduly to the prior"})
        return pd.DataFrame(rows, columns=["domain", "mu_prior", "mu_likelihood", "tau_prior", "tau_likelihood", "diagnosis", "meaning"])

    def to_dict(self) -> dict:
        return {
            "grid": {"source": self.grid.source, "mode": self.grid.mode, "baseline": self.grid.baseline,
                     "levels": self.grid.levels, "inclusion": self.grid.inclusion,
                     "decision_probability": self.grid.decision_probability},
            "scenarios": self.scenarios,
            "results": self.results,
            "verdicts": self.verdicts(),
            "loo": self.loo,
            "power_scaling": self.power_scaling,
            "evidence_digest": self.evidence_digest,
        }


def _category(p: float, q: float) -> str:
    return "beneficial" if p >= q else ("harmful" if p <= 1 - q else "uncertain")


def verdicts(table, decision_probability: float = 0.9) -> dict[str, str]:
    """One line per domain: are the sign of mu and the class of P(beneficial) the same in every scenario?"""
    q = decision_probability
    out = {}
    ok = table[table["error"].isna() & table["domain"].notna()]
    n_scenarios = table["scenario"].nunique()
    n_failed = table[table["error"].notna()]["scenario"].nunique()
    for d, rows in ok.groupby("domain", sort=True):
        base = rows[rows["scenario"] == BASELINE]
        ref = base.iloc[0] if len(base) else rows.iloc[0]
        sign = math.copysign(1, ref["mu_mean"])
        # the sign of the pooled mean in the domain's own metric, read through P(beneficial)
        beneficial_side = ref["p_beneficial"] >= 0.5
        flips = rows[(rows["p_beneficial"] >= 0.5) != beneficial_side]["scenario"].tolist()
        classes = rows["p_beneficial"].map(lambda p: _category(p, q))
        ref_class = _category(ref["p_beneficial"], q)
        moved = rows[classes != ref_class]["scenario"].tolist()
        lo, hi = rows["p_beneficial"].min(), rows["p_beneficial"].max()
        n = len(rows)
        missing = n_scenarios - n_failed - n
        tail = []
        if missing:
            tail.append(f"absent from {missing} scenario(s) that left it no evidence")
        if n_failed:
            tail.append(f"{n_failed} scenario(s) failed")
        failed_gate = rows[rows["gate_passed"] == False]["scenario"].tolist()  # noqa: E712
        if failed_gate:
            tail.append(f"diagnostics gate failed in {len(failed_gate)}")
        side = "beneficial" if beneficial_side else "harmful"
        del sign
        if flips:
            line = (f"NOT ROBUST: the direction of the pooled effect flips (to {'harmful' if beneficial_side else 'beneficial'}) "
                    f"under {', '.join(flips)}; P(beneficial) ranges {lo:.2f}–{hi:.2f} over {n} scenario(s)")
        elif moved:
            line = (f"sign robust, probability not: the pooled effect points {side} in all {n} scenario(s), but "
                    f"P(beneficial) ranges {lo:.2f}–{hi:.2f} and leaves the baseline's '{ref_class}' class "
                    f"(threshold {q:.2f}) under {', '.join(moved)}")
        else:
            line = (f"robust: the pooled effect points {side} in all {n} scenario(s) and P(beneficial) stays "
                    f"'{ref_class}' ({lo:.2f}–{hi:.2f}, threshold {q:.2f})")
        if n == 1:
            line = f"only one scenario fitted this domain (P(beneficial) {lo:.2f}): robustness not assessed"
        out[str(d)] = line + ("; " + "; ".join(tail) if tail else "")
    return out


def loo_table(baseline: dict | None, loo: list[dict]):
    """Leave-one-project-out influence per domain, flagged where the sign flips or mu moves > its SD."""
    import pandas as pd

    rows = []
    for item in loo:
        project = item["project"]
        for d, full in (baseline or {}).get("domains", {}).items():
            if project not in full["projects"]:
                continue
            row = {"domain": d, "project": project, "mu_mean_all": full["mu_mean"], "mu_sd_all": full["mu_sd"],
                   "p_beneficial_all": full["p_beneficial"]}
            if not item["ok"]:
                rows.append({**row, "flag": f"refit failed: {item['error']}"})
                continue
            without = item["value"]["domains"].get(d)
            if without is None:
                rows.append({**row, "flag": "only project in this domain: nothing left without it"})
                continue
            shift = without["mu_mean"] - full["mu_mean"]
            flags = []
            if (without["p_beneficial"] >= 0.5) != (full["p_beneficial"] >= 0.5):
                flags.append("sign flips without it")
            if abs(shift) > full["mu_sd"]:
                flags.append("moves mu by more than its posterior SD")
            rows.append({**row, "mu_mean_without": without["mu_mean"], "shift": shift,
                         "shift_in_sd": shift / full["mu_sd"] if full["mu_sd"] else None,
                         "p_beneficial_without": without["p_beneficial"], "flag": "; ".join(flags) or None})
    columns = ["domain", "project", "mu_mean_all", "mu_sd_all", "mu_mean_without", "shift", "shift_in_sd",
               "p_beneficial_all", "p_beneficial_without", "flag"]
    return pd.DataFrame(rows, columns=columns).sort_values(["domain", "project"], ignore_index=True)


def run_sensitivity(
    *,
    grid: Grid,
    data_dir=None,
    csv=None,
    domains=None,
    defaults=None,
    evidence=None,
    settings: dict | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    out: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=None,
    refit: bool = False,
    engine: str = "mcmc",
    keep_baseline: bool = False,
) -> SensitivityResult:
    """Run the grid (+ leave-one-project-out refits) as one batch of tasks; power-scaling on the baseline.

    ``engine`` (see :func:`fit_scenario`): with ``exact`` and no ``scheduler`` named, the tasks run in this process
    after every distinct domain of every scenario has been integrated once, side by side in ``workers`` processes
    (where each worker of a cluster would integrate again the domains that scenarios leave as they are; with
    ``scheduler="serial"`` they are integrated here, one after another); a domain takes milliseconds, or up to a
    second where its direction-only findings sit in several projects.
    ``keep_baseline``: with the exact engine, the baseline's domains are integrated in full meanwhile and kept in
    this process, where :func:`~metaeval.exact_full.summarise_exact` of the baseline (a report's) finds them.

    ``evidence``: a harmonised table to use as is (both estimands then use it; a TOT
    scenario needs ``data_dir``/``csv`` or the bundled evidence; ``domains`` and ``defaults`` describe a
    CSV's domains, as for :func:`~metaeval.harmonise.load_evidence`). ``out``: cache fits under
    ``<out>/fits`` (None: no cache). ``settings``: SamplerSettings fields (seed included).
    """
    from contextlib import nullcontext
    from dataclasses import asdict

    from metaeval.executor import SERIAL, Processes, run_tasks
    from metaeval.harmonise import evidence_digest, load_evidence
    from metaeval.sampling import SamplerSettings

    # exact, no scheduler named: worker processes of this machine, started now, so that they import the engine while
    # this process loads and prepares the scenarios (a scheduler named "serial" keeps everything in this process)
    exact_in_workers = engine == "exact" and scheduler is None
    if engine == "exact" and scheduler is None:
        scheduler = SERIAL
    with Processes(workers, preload=["metaeval.exact_full"]) if exact_in_workers else nullcontext() as processes:
        settings = asdict(SamplerSettings(**(settings or {})))
        scenarios = grid.scenarios()
        tables = {}
        for estimand in sorted({s["estimand"] for s in scenarios}):
            tables[estimand] = evidence if evidence is not None else load_evidence(data_dir, csv=csv, domains=domains, defaults=defaults, estimand=estimand)
        common = {"grid": grid, "settings": settings, "overrides": tuple(overrides), "out": None if out is None else str(out), "refit": refit,
                  "engine": engine}
        tasks = [{**common, "scenario": s, "evidence": tables[s["estimand"]],
                  "power_scaling": grid.power_scaling and s["name"] == BASELINE} for s in scenarios]
        projects: list[str] = []
        if grid.leave_one_out:
            base = scenarios[0]
            layout = _scenario_layout(base, grid, tables[base["estimand"]], overrides, None)[2]
            projects = sorted({p["project"] for p in layout.projects})
            tasks += [{**common, "scenario": base, "evidence": tables[base["estimand"]], "drop_project": p} for p in projects]
        if processes is not None:
            prepared = _exact_in_processes(tasks, processes, keep_baseline, False if callable(progress) else progress)
            tasks = [{**task, "prepared": ready} for task, ready in zip(tasks, prepared)]
    results = run_tasks(fit_scenario, tasks, scheduler=scheduler, workers=workers, progress=progress, description="sensitivity fits",
                        label=lambda t: t["scenario"]["name"] + (f" without {t['drop_project']}" if t.get("drop_project") else ""))
    plain = [{"ok": r.ok, "error": r.error, "value": r.value, "seconds": r.seconds, "worker": r.worker} for r in results]
    power = None
    if plain[0]["ok"] and grid.power_scaling:
        power = plain[0]["value"].pop("power_scaling", None)
    loo = [{"project": p, **r} for p, r in zip(projects, plain[len(scenarios):])]
    return SensitivityResult(grid, scenarios, plain[: len(scenarios)], loo, power,
                             evidence_digest(tables[scenarios[0]["estimand"]]))
