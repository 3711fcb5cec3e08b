"""metaeval: Bayesian evidence synthesis for social and employment policy evaluations.

The public API follows the flow evidence → harmonise → model → sampling (fit) → summary → present:

>>> import metaeval
>>> evidence = metaeval.load_evidence()          # tidy pandas DataFrame, one row per estimate
>>> spec = metaeval.load_spec("default")         # priors and bias priors from models/default.toml
>>> model = metaeval.build_model(evidence, spec) # a pymc.Model you can extend
>>> posterior = metaeval.fit(model, seed=1)      # xarray.DataTree (ArviZ)
>>> result = metaeval.summarise(posterior)       # a typed Result: per domain mu, tau, theta_new, projects, ...
>>> result = metaeval.judge(result, evidence)    # with a certainty rating per domain (GRADE-like)
>>> exact = metaeval.fit_exact_model(evidence, spec)  # the same Result without sampling (conditionally Gaussian models)
>>> metaeval.compare(posterior)                   # which initiative does more: P(A better than B), P(best), ranks
>>> metaeval.plan(posterior, evidence=evidence)   # what a new randomised evaluation would change (value of information)

Submodules are imported on first use, so ``import metaeval`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load_evidence": "metaeval.harmonise",
    "load_spec": "metaeval.spec",
    "build_model": "metaeval.model",
    "fit": "metaeval.sampling",
    "fit_cached": "metaeval.sampling",
    "SamplerSettings": "metaeval.sampling",
    "summarise": "metaeval.summary",
    "judge": "metaeval.certainty",
    "Result": "metaeval.result",
    "fit_exact": "metaeval.exact",
    "exact_posterior": "metaeval.exact",
    "fit_exact_model": "metaeval.exact_full",
    "exact_draws": "metaeval.exact_full",
    "rma": "metaeval.classic",
    "classic_by_domain": "metaeval.classic",
    "forest_plot": "metaeval.plots",
    "write_report": "metaeval.report",
    "validate": "metaeval.validation",
    "read_csv": "metaeval.evidence_csv",
    "InputError": "metaeval.errors",
    "compare": "metaeval.ranking",
    "plan": "metaeval.planning",
    "profiles": "metaeval.initiatives",
    "analyse": "metaeval.analysis",
    "domain_draws": "metaeval.draws",
    "leave_out": "metaeval.influence",
    "load_costs": "metaeval.costs",
    "cost_effectiveness": "metaeval.costs",
    "ceac_figure": "metaeval.costs",
    "plan_figure": "metaeval.planning",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'metaeval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
