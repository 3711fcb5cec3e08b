"""The result of a fit: one typed contract that both engines return and every presenter reads.

A :class:`Result` holds, per outcome domain, the pooled effect ``mu``, the between-project SD
``tau`` (and ``omega`` where projects report several estimates), the predictive effect of a new
project ``theta_new``, the shrunken project effects with pooling factors and P(best), pairwise
comparisons, the priors used and plain-language notes; then everything that was left out and by
which stage, the sampler's diagnostics (``None`` for the exact engine: there is nothing to check,
and nothing is faked; with MCMC, also the cross-check against the exact answer where there is one),
the exact engine's estimate of its numerical error, the model that was fitted, the seed and the
provenance.

It is frozen (pydantic): ``Result.from_json(r.to_json()) == r``. The JSON carries
``schema_version`` and is described by a JSON Schema shipped in the package
(:func:`json_schema`, ``metaeval/schemas/result.schema.json``); ``to_frame()`` gives the tidy
long table (one row per domain and quantity) that ``summary.csv`` holds.

Conventions: every effect is in its domain's metric; "beneficial" follows the domain's
``beneficial`` direction; intervals are highest-density intervals at ``hdi_prob`` (the exact
engine: the shortest interval, the same thing for a unimodal posterior).
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Raised whenever a field is added, removed or changes meaning; readers refuse other versions.
SCHEMA_VERSION = 2


#: Every number a result publishes is rounded to this many significant digits.
SIGNIFICANT_DIGITS = 6


def round_significant(x) -> float | None:
    """A published number: SIGNIFICANT_DIGITS significant digits; None for a missing or non-finite value."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    value = float(f"{x:.{SIGNIFICANT_DIGITS}g}")
    return 0.0 if value == 0 else value  # no "-0.0"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True)


class Posterior(Frozen):
    """One scalar quantity's posterior: mean, SD and interval (null where it does not exist)."""

    mean: float | None
    sd: float | None
    hdi_low: float | None
    hdi_high: float | None
    hdi_prob: float = Field(gt=0, lt=1)
    p_beneficial: float | None = Field(None, ge=0, le=1, description="P(effect > 0 in the beneficial direction)")
    p_mid: float | None = Field(None, ge=0, le=1, description="P(effect beyond the minimal important difference)")
    error_sd: float | None = Field(None, ge=0, description="exact engine: its estimated numerical error in the mean, SD and "
                                                          "interval ends, in posterior SDs (null for MCMC: see diagnostics)")


class Bias(Frozen):
    """The posterior of a project's design-bias term (signed in the domain's metric)."""

    mean: float
    sd: float


class ProjectEffect(Frozen):
    """One project's effect in a domain: its data as reported and as the model shrinks it."""

    project: str
    estimate_id: str | None = Field(None, description="set when the effect is of one estimate, not of a whole project")
    design: str
    raw: float | None = Field(description="inverse-variance combination of the project's estimates (null: direction only)")
    raw_se: float | None
    mean: float | None
    sd: float | None
    hdi_low: float | None
    hdi_high: float | None
    pooling: float | None = Field(None, ge=0, le=1, description="0: its own data alone, 1: the domain mean (baggr)")
    bias: Bias | None = None
    p_best: float | None = Field(None, ge=0, le=1, description="P(this project's effect is the domain's most beneficial)")
    error_sd: float | None = Field(None, ge=0, description="exact engine: its estimated numerical error, in posterior SDs")

    @property
    def key(self) -> str:
        """What the effect is of: the estimate where it is one estimate's, else the project."""
        return self.estimate_id or self.project


class PriorInfluence(Frozen):
    """How much of a domain's result its prior decides: posterior SD over prior SD (1: the data taught nothing)."""

    mu: float | None
    tau: float | None
    driven: tuple[Literal["mu", "tau"], ...] = Field(description="quantities whose posterior SD is above the threshold share of their prior SD")
    threshold: float


class Downgrade(Frozen):
    """One reason the certainty of a domain's evidence is lower, in GRADE's terms."""

    domain: Literal["risk of bias", "imprecision", "inconsistency", "indirectness", "prior dominance", "robustness"]
    levels: int = Field(ge=0, le=2)
    reason: str


class Certainty(Frozen):
    """A GRADE-like rating of how far a domain's result can be trusted, with every downgrade's reason."""

    level: Literal["high", "moderate", "low", "very low"]
    start: Literal["high", "low"] = Field(description="high for randomised evidence, low for observational (GRADE)")
    basis: str = Field(description="why it starts there: what carries the weight")
    downgrades: tuple[Downgrade, ...]
    effect_shown: bool = Field(description="false when the estimate rests only on priors and direction-only findings")


class DomainAverage(Frozen):
    """A domain's average effect and spread, its counts and its projects' keys: what the sensitivity grid and the
    robustness check read of a fit (:meth:`DomainResult.average`; the exact engine computes it alone in half the
    time, :func:`metaeval.exact_full.exact_averages`)."""

    id: str
    label: str
    metric: str | None
    mu: Posterior
    tau: Posterior
    n_projects: int
    n_estimates: int
    projects: tuple[str, ...] = Field(description="the projects' keys (ProjectEffect.key), in the result's order")


class DomainResult(Frozen):
    """Everything a fit says about one outcome domain."""

    id: str
    label: str
    metric: str | None
    beneficial: Literal["increase", "decrease"]
    mid: float | None
    scale: float
    assumed: dict[str, str] = Field(description="what was assumed rather than given (field -> sentence)")
    n_projects: int
    n_estimates: int = Field(description="estimates and direction-only findings that entered")
    n_findings: int = Field(0, description="of which direction-only findings")
    designs: dict[str, int]
    mu: Posterior
    tau: Posterior
    omega: Posterior | None = None
    theta_new: Posterior
    projects: tuple[ProjectEffect, ...]
    pairwise: dict[str, dict[str, float]] = Field(description="pairwise[a][b] = P(a's effect beats b's)")
    priors: dict[str, str] = Field(description="the prior of each parameter in this domain, in the metric itself")
    prior_influence: PriorInfluence | None = None
    certainty: Certainty | None = None
    notes: tuple[str, ...]

    def project(self, key: str) -> ProjectEffect:
        return next(p for p in self.projects if p.key == key)

    def average(self) -> DomainAverage:
        return DomainAverage(id=self.id, label=self.label, metric=self.metric, mu=self.mu, tau=self.tau, n_projects=self.n_projects,
                             n_estimates=self.n_estimates, projects=tuple(p.key for p in self.projects))

    @property
    def sign(self) -> float:
        return -1.0 if self.beneficial == "decrease" else 1.0


class Exclusion(Frozen):
    """An estimate that did not enter, with the stage that left it out and why."""

    estimate_id: str
    project: str
    domain: str
    design: str | None = None
    reason: str
    stage: Literal["evidence", "model", "engine"] = Field(
        description="evidence: harmonisation (no usable effect size, curated out); model: the model's inclusion rules; "
                    "engine: the engine cannot use it")


class CrossCheck(Frozen):
    """The MCMC fit against the exact engine's answer for the same model, where it has one (``metaeval run``)."""

    max_discrepancy_sd: float = Field(description="largest |MCMC - exact| of a posterior mean or SD (mu, tau, project "
                                                  "effects), in the exact posterior's SDs")
    quantity: str = Field(description="where it is: domain, quantity and statistic")
    max_z: float = Field(description="largest |MCMC - exact| over its Monte Carlo standard error (with the exact "
                                     "engine's numerical error)")
    threshold: float = Field(description="max_z above this fails the gate")
    passed: bool


class Diagnostics(Frozen):
    """The MCMC diagnostics gate (Vehtari et al. 2021) over every posterior variable."""

    rhat_max: float | None
    ess_bulk_min: float | None
    ess_tail_min: float | None
    divergences: int
    passed: bool
    failures: tuple[str, ...] = Field(description="one sentence per failed criterion, naming the worst variable")
    thresholds: dict[str, float]
    cross_check: CrossCheck | None = None
    cross_check_skipped: str | None = Field(None, description="why the exact answer for the same model was not computed "
                                                              "(`metaeval run`: no fast exact form on this evidence)")


class Numerical(Frozen):
    """The exact engine's estimate of its own numerical error: the largest change between its default rules
    and rules 1.5 times coarser (an upper bound in practice; tests/test_exact_full.py holds it to that)."""

    error_sd_max: float = Field(ge=0, description="means, SDs and interval ends, in posterior SDs")
    error_p_max: float = Field(ge=0, description="probabilities (beneficial, beyond the MID, best, pairwise)")


class BiasModel(Frozen):
    mode: Literal["none", "additive", "variance_inflation", "hierarchical"]
    designs: dict[str, str] = {}
    weights: dict[str, float] = {}
    hierarchy: dict[str, str] = {}


class DirectionOnly(Frozen):
    mode: Literal["censored", "exclude"]
    se: str | None = None


class BiasTerm(Frozen):
    label: str
    design: str
    prior: str | None = None
    scaled: bool | None = None
    risk_of_bias: tuple[str, ...] = Field((), description="domains of bias judged high that widened this term's prior")


class RiskOfBiasRule(Frozen):
    """How per-estimate risk-of-bias judgements entered the model (data/README.md "Risk of bias")."""

    high: Literal["inflate", "exclude", "ignore"]
    sd: float = Field(description="added in quadrature per domain judged high, in units of the domain's scale")
    domains: tuple[str, ...]


class Sampler(Frozen):
    chains: int
    draws: int
    tune: int
    seed: int
    sampler: str
    target_accept: float | None


class ModelRecord(Frozen):
    """The model that was fitted: priors in scale units, bias handling, options, and how it was sampled."""

    name: str
    description: str
    source: str | None
    units: str
    priors: dict[str, str]
    bias: BiasModel
    direction_only: DirectionOnly
    effects: str
    designs: tuple[str, ...]
    target_accept: float | None
    target_accept_integrated: float | None = Field(
        None, description="the target where no project effect is sampled (every cell integrated out); null: target_accept")
    hdi_prob: float
    overrides: dict[str, str]
    inferred_benefit: Literal["exclude", "include"] | None = Field(
        None, description="whether outcomes whose beneficial direction the curator inferred entered (null: not applied)")
    risk_of_bias: RiskOfBiasRule | None = None
    bias_terms: tuple[BiasTerm, ...] = ()
    sampler: Sampler | None = None


class Provenance(Frozen):
    versions: dict[str, str] | None
    evidence_sha256: str | None
    model_sha256: str | None
    seed: int | None


class Result(Frozen):
    """A whole fit (see the module docstring)."""

    schema_version: Literal[2] = SCHEMA_VERSION
    engine: Literal["mcmc", "exact"]
    domains: dict[str, DomainResult]
    exclusions: tuple[Exclusion, ...]
    diagnostics: Diagnostics | None
    numerical: Numerical | None = None
    model: ModelRecord
    seed: int | None
    provenance: Provenance

    # -- serialisation -------------------------------------------------------------------------

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, two-space indent, UTF-8 text; floats as Python prints them (exact)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Result:
        """Read a result back (raises pydantic's ValidationError naming each bad field)."""
        return cls.model_validate_json(text)

    # -- views ---------------------------------------------------------------------------------

    def domain(self, domain_id: str) -> DomainResult:
        return self.domains[domain_id]

    def exclusions_in(self, domain_id: str) -> tuple[Exclusion, ...]:
        return tuple(x for x in self.exclusions if x.domain == domain_id)

    def to_frame(self):
        """The tidy long table (pandas): one row per domain and quantity (mu, tau, omega, theta_new, project)."""
        import pandas as pd

        from metaeval.present import SUMMARY_COLUMNS, summary_rows

        return pd.DataFrame(summary_rows(self), columns=list(SUMMARY_COLUMNS))


@cache
def json_schema() -> dict:
    """The JSON Schema of :class:`Result` (what ``metaeval/schemas/result.schema.json`` holds)."""
    schema = Result.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://metaeval.dev/schemas/result-{SCHEMA_VERSION}.schema.json"
    return schema
