"""Inputs for the report and plot tests: evidence from fixture files and a summary dict.

The summary has the shape the MCMC and exact engines produce (docs/result.md), built
here by a normal–normal calculation with tau fixed at a quarter of each domain's
scale: plausible numbers, not a fit. The report is a pure function of evidence
and summary, so it can be tested without the engines.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import yaml
from scipy import stats

MINI = Path(__file__).parent / "fixtures" / "mini"
HOSTILE_NAME = '<script>alert("pwned")</script> & Søn'
HOSTILE_QUOTE = '<img src=x onerror=alert(1)> "citat" & <b>fed</b>'


def hostile_data_dir(tmp: Path) -> Path:
    """The mini evidence base plus a second, weaker project whose texts carry HTML."""
    target = tmp / "data"
    shutil.copytree(MINI, target)
    demo = yaml.safe_load((target / "projects" / "demo.yaml").read_text(encoding="utf-8"))
    other = dict(demo)
    other.update(id="area", name=HOSTILE_NAME, design="area_comparison", evaluator="in_house", status="preliminary",
                 source="area.txt", notes="Note with <em>markup</em> & an ampersand")
    other.pop("take_up", None)
    other["estimates"] = [
        {"id": "hours", "outcome": "Hours <worked>", "outcome_da": "Timer & løn", "domain": "employment",
         "population": "adults", "estimand": "difference", "metric": "smd", "estimate": 0.3, "se": 0.1,
         "provenance": {"location": "Tabel <3>", "quote": HOSTILE_QUOTE}},
        {"id": "self_support", "outcome": "Self-supporting", "outcome_da": "Selvforsørgende", "domain": "self_support",
         "population": "adults", "estimand": "difference", "metric": "pp", "mean_treatment": 24.0,
         "mean_control": 20.0, "n_treatment": 150,
         "assumptions": [{"field": "n_control", "value": 150, "rationale": "assumed equal to the <offer> group"}],
         "provenance": {"location": "Tabel 4", "quote": "24 % mod 20 %"}},
        {"id": "no_numbers", "outcome": "Wellbeing", "outcome_da": "Trivsel", "domain": "self_support",
         "population": "adults", "estimand": "difference", "metric": "score", "estimate": 3.0,
         "poolable": False, "exclusion_reason": "caseworker-rated <score> only",
         "provenance": {"location": "Resumé", "quote": "trivslen er bedre"}},
    ]
    (target / "projects" / "area.yaml").write_text(yaml.safe_dump(other, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def _num(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def summary_for(evidence, engine: str = "exact", hdi_prob: float = 0.95, passed: bool = True):
    """A :class:`~metaeval.result.Result` in the engines' shape for every domain with a poolable estimate."""
    from metaeval.certainty import prior_influence
    from metaeval.result import BiasModel, Diagnostics, DirectionOnly, DomainResult, ModelRecord, Posterior, ProjectEffect, Provenance, Result

    z = stats.norm.ppf(0.5 + hdi_prob / 2)
    domains = {}
    for domain, rows in evidence.groupby("domain", sort=True):
        first = rows.iloc[0]
        scale = _num(first.get("domain_scale")) or 1.0
        beneficial = first.get("domain_beneficial") or "increase"
        sign = 1.0 if beneficial == "increase" else -1.0
        mid = _num(first.get("domain_mid"))
        tau = 0.25 * scale
        usable = rows[rows["poolable"].astype(bool) & rows["yi"].notna() & rows["sei"].notna()]
        if usable.empty:
            continue
        by_project = {}
        for pid, prow in usable.groupby("project_id", sort=True):
            w = 1.0 / prow["sei"].astype(float) ** 2
            by_project[str(pid)] = (float((w * prow["yi"].astype(float)).sum() / w.sum()), float(math.sqrt(1.0 / w.sum())),
                                    str(prow["design"].iloc[0]))
        weights = {p: 1.0 / (se**2 + tau**2) for p, (_, se, _) in by_project.items()}
        mu_var = 1.0 / sum(weights.values())
        mu_mean = mu_var * sum(weights[p] * y for p, (y, _, _) in by_project.items())
        mu_sd = math.sqrt(mu_var)
        new_sd = math.sqrt(mu_var + tau**2)

        def block(mean, sd, p_ben=True, p_mid=None):
            extra = {"p_beneficial": float(stats.norm.sf(0, loc=sign * mean, scale=sd))} if p_ben else {}
            if p_mid is not None:
                extra["p_mid"] = float(stats.norm.sf(p_mid, loc=sign * mean, scale=sd))
            return Posterior(mean=mean, sd=sd, hdi_low=mean - z * sd, hdi_high=mean + z * sd, hdi_prob=hdi_prob, **extra)

        projects = []
        for p, (y, se, design) in by_project.items():
            prec = 1 / se**2 + 1 / tau**2
            mean = (y / se**2 + mu_mean / tau**2) / prec
            sd = math.sqrt(1 / prec + mu_var * (1 / tau**2 / prec) ** 2)
            projects.append(ProjectEffect(project=p, design=design, raw=y, raw_se=se, mean=mean, sd=sd, hdi_low=mean - z * sd,
                                          hdi_high=mean + z * sd, pooling=(1 / tau**2) / prec, p_best=1.0 / len(by_project)))
        mu = block(mu_mean, mu_sd, p_mid=mid)
        tau_block = Posterior(mean=tau, sd=0.0, hdi_low=tau, hdi_high=tau, hdi_prob=hdi_prob)
        priors = {"mu": f"normal(0, {scale:g})", "tau": f"halfnormal({0.4 * scale:g})"}
        domains[str(domain)] = DomainResult(
            id=str(domain), label=first.get("domain_label") or domain, metric=first.get("domain_metric"),
            beneficial=beneficial, mid=mid, scale=scale, assumed={},
            n_projects=len(by_project), n_estimates=int(len(usable)),
            designs={str(k): int(v) for k, v in usable["design"].value_counts().sort_index().items()},
            mu=mu, tau=tau_block, theta_new=block(mu_mean, new_sd), projects=tuple(projects),
            pairwise={a: {b: 0.5 for b in by_project if b != a} for a in by_project}, priors=priors,
            prior_influence=prior_influence(mu, tau_block, priors),
            notes=("tau is fixed at a quarter of the domain scale in this test fixture",)
                  + (("one project only: tau's posterior is its prior",) if len(by_project) == 1 else ()),
        )
    diagnostics = (Diagnostics(rhat_max=1.004 if passed else 1.08, ess_bulk_min=812.0 if passed else 95.0, ess_tail_min=760.0,
                               divergences=0 if passed else 7, passed=passed,
                               failures=() if passed else ("R-hat 1.080 for mu[employment] is above 1.01",),
                               thresholds={"rhat_max": 1.01, "ess_min": 400, "divergences": 0})
                   if engine == "mcmc" else None)
    model = ModelRecord(
        name="default", description="Bias-adjusted <additive> design bias", source="models/default.toml",
        units="priors in units of each domain's scale; --prior overrides are absolute",
        priors={"mu": "normal(0, 1)", "omega": "halfnormal(0.25)", "tau": "halfnormal(0.25)"},
        bias=BiasModel(mode="additive", designs={"area_comparison": "normal(0.1, 0.25)", "matched_register": "normal(0.05, 0.1)"}),
        direction_only=DirectionOnly(mode="censored", se="lognormal(-2.30259, 0.5)"), effects="latent",
        designs=("rct", "matched_register", "area_comparison"), target_accept=0.99, hdi_prob=hdi_prob, overrides={},
    )
    return Result(engine=engine, domains=domains, exclusions=(), diagnostics=diagnostics, model=model,
                  seed=20261124 if engine == "mcmc" else None,
                  provenance=Provenance(versions=None, evidence_sha256=None, model_sha256=None, seed=None))
