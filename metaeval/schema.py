"""The evidence-file schema: what a project file and the domains file may contain.

Validated with pydantic so that every problem is reported with the path of the
offending field, never with a traceback. The prose version of this schema, with
examples, is `data/README.md`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Design = Literal[
    "rct",
    "matched_register",
    "comparison_group",
    "area_comparison",
    "before_after",
    "target_benchmark",
    "single_arm",
]
#: Designs from strongest to weakest: the design ladder of docs/glossary.md.
DESIGN_LADDER: tuple[str, ...] = Design.__args__  # type: ignore[attr-defined]

#: Who evaluated: an independent team, one commissioned by the programme's owner, the provider
#: itself, or not stated by the source ("unknown").
Evaluator = Literal["independent", "commissioned", "in_house", "unknown"]
Status = Literal["final", "preliminary"]
OutcomeSource = Literal["register", "survey", "caseworker_rating"]
Estimand = Literal["itt", "tot", "difference", "pre_post", "single_arm", "vs_target"]
Metric = Literal["pp", "share", "hours", "grade", "score", "count", "dkk", "dkk_1000", "smd", "log_or", "md"]
Direction = Literal["increase", "decrease", "none"]
#: Risk-of-bias judgements, worst last. "critical" (ROBINS-I's level) means the result is too
#: problematic in that domain to be evidence of an effect: such an estimate is never pooled.
Judgement = Literal["low", "some", "high", "critical"]
JUDGEMENTS: tuple[str, ...] = Judgement.__args__  # type: ignore[attr-defined]
#: The domains of bias judged per project and, where an outcome differs, per estimate.
ROB_DOMAINS = ("confounding", "selection", "attrition", "measurement", "reporting")
#: Whose judgement an outcome's beneficial direction is (see data/README.md "Benefit").
BenefitBasis = Literal["domain", "source", "curator"]
OutcomeType = Literal["outcome", "intermediate", "process"]
#: Consistency checks (see metaeval.harmonise) a record may acknowledge as the source's own inconsistency.
CheckName = Literal["ci_contains_estimate", "p_value_vs_ci", "tot_vs_itt", "share_range", "direction_vs_levels", "part_exceeds_whole"]

Slug = Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64)


class Strict(BaseModel):
    """Base: unknown fields are errors, strings are stripped, NaN and infinities are refused.

    Validators are built on first use (``defer_build``): every command imports this module
    (through :mod:`metaeval.spec`), and one that reads no project file should not pay for them.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False, defer_build=True)


class Provenance(Strict):
    """Where a figure comes from: the seed file, the table or section, and a short quote."""

    source: str | None = Field(None, description="seed file name; defaults to the project's source")
    location: str = Field(min_length=1)
    quote: str = Field(min_length=1, max_length=600)


class Assumption(Strict):
    """A value the source does not give, supplied by the curator; the report lists every one."""

    field: str = Field(min_length=1)
    value: float | int | str
    rationale: str = Field(min_length=1)


class RiskOfBias(Strict):
    """One domain's judgement, its reason, and (optionally) the source's words it rests on."""

    judgement: Judgement
    rationale: str = Field(min_length=1)
    quote: str | None = Field(None, min_length=1, max_length=600, description="verbatim from the source")


class RiskOfBiasProfile(Strict):
    """A project's judgements; they hold for each of its estimates unless the estimate says otherwise."""

    confounding: RiskOfBias
    selection: RiskOfBias
    attrition: RiskOfBias
    measurement: RiskOfBias
    reporting: RiskOfBias


class RiskOfBiasOverride(Strict):
    """An estimate's own judgements, for the domains where its outcome differs from its project's."""

    confounding: RiskOfBias | None = None
    selection: RiskOfBias | None = None
    attrition: RiskOfBias | None = None
    measurement: RiskOfBias | None = None
    reporting: RiskOfBias | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> RiskOfBiasOverride:
        if all(getattr(self, d) is None for d in ROB_DOMAINS):
            raise ValueError(f"an estimate's risk_of_bias names at least one of {', '.join(ROB_DOMAINS)}")
        return self


class SampleSize(Strict):
    """A group size the source reports (or says it does not report: n is then null)."""

    group: str = Field(min_length=1)
    n: int | None = Field(None, ge=0)
    provenance: Provenance
    notes: str | None = None


class TakeUp(Strict):
    """Participation among those offered: the share used by Bloom's ITT→TOT correction."""

    n_offered: int = Field(gt=0)
    n_participating: int = Field(ge=0)
    unit: str = "families"
    provenance: Provenance

    @model_validator(mode="after")
    def _not_more_than_offered(self) -> TakeUp:
        if self.n_participating > self.n_offered:
            raise ValueError("n_participating cannot exceed n_offered")
        return self


class Estimate(Strict):
    """One reported figure: an effect, a difference, a before/after change or a single-arm share.

    Only what the source gives is filled in. For ``pre_post`` records "treatment" means
    *after* and "control" means *before*; for ``vs_target`` records ``target`` is the
    politically set or historic benchmark and ``mean_treatment`` the realised value.
    """

    id: str = Slug
    outcome: str = Field(min_length=1)
    outcome_da: str = Field(min_length=1)
    domain: str = Slug
    population: str = Field(min_length=1)
    estimand: Estimand
    metric: Metric
    outcome_type: OutcomeType = "outcome"
    beneficial: Literal["increase", "decrease"] | None = None
    benefit_basis: BenefitBasis | None = Field(
        None, description="whose judgement the beneficial direction is; required with `beneficial`"
    )

    estimate: float | None = None
    se: float | None = Field(None, gt=0)
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float = Field(0.95, gt=0, lt=1)
    p_value: float | None = Field(None, ge=0, le=1)

    mean_treatment: float | None = None
    sd_treatment: float | None = Field(None, gt=0)
    mean_control: float | None = None
    sd_control: float | None = Field(None, gt=0)
    n_treatment: int | None = Field(None, gt=0)
    n_control: int | None = Field(None, gt=0)
    target: float | None = None
    share_improved: float | None = Field(None, ge=0, le=100)
    share_unchanged: float | None = Field(None, ge=0, le=100)

    direction: Direction | None = None
    significant: bool | None = None
    sig_level: float = Field(0.05, gt=0, lt=1)

    tot_of: str | None = Field(None, description="id of the ITT estimate this participation effect rescales")
    part_of: list[str] = Field(
        [], description="ids of records of this project whose people (or money) include all of this record's"
    )
    shared_sample: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64,
        description="records computed from one sample measured once (one status table); at most one is pooled",
    )
    risk_of_bias: RiskOfBiasOverride | None = None
    poolable: bool = True
    exclusion_reason: str | None = None

    provenance: Provenance
    notes: str | None = None
    assumptions: list[Assumption] = []
    acknowledged: dict[CheckName, str] = Field(
        {}, description="consistency checks this record fails in its source, each with the curator's explanation"
    )

    @field_validator("estimate", "ci_low", "ci_high", "mean_treatment", "mean_control", "target")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Estimate:
        if (self.ci_low is None) != (self.ci_high is None) and not self.notes:
            raise ValueError("a one-sided CI needs a note saying why the other bound is missing")
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low ({self.ci_low}) is above ci_high ({self.ci_high})")
        if self.estimand == "tot" and not self.tot_of:
            raise ValueError("a participation (tot) estimate must name its ITT estimate in tot_of")
        if not self.poolable and not self.exclusion_reason:
            raise ValueError("poolable: false needs an exclusion_reason a person understands")
        if self.estimand == "vs_target" and self.target is None:
            raise ValueError("a vs_target estimate needs the target it is compared with")
        if self.beneficial is not None and self.benefit_basis is None:
            raise ValueError("`beneficial` needs a `benefit_basis`: source (the source says so), domain (the domain's "
                             "quantity measured the other way round) or curator (inferred)")
        if self.id in self.part_of:
            raise ValueError("part_of names the estimate itself")
        has_number = any(
            v is not None for v in (self.estimate, self.mean_treatment, self.se, self.share_improved)
        )
        if not has_number and self.direction is None:
            raise ValueError("an estimate needs a number or, when only that is reported, a direction")
        return self


class Project(Strict):
    """One evaluated initiative: design-quality metadata, group sizes and its estimates."""

    id: str = Slug
    name: str = Field(min_length=1)
    municipality: str = Field(min_length=1)
    period: str = Field(min_length=1)
    population: str = Field(min_length=1)
    intervention: str = Field(min_length=1)
    design: Design
    evaluator: Evaluator
    evaluator_name: str = Field(min_length=1)
    status: Status
    outcome_source: OutcomeSource
    source: str = Field(pattern=r"^[\w.-]+\.txt$")
    evaluator_provenance: Provenance | None = Field(None, description="where the source says who evaluated")
    status_provenance: Provenance | None = Field(None, description="where the source says how final the results are")
    risk_of_bias: RiskOfBiasProfile
    sample_sizes: list[SampleSize] = []
    take_up: TakeUp | None = None
    estimates: list[Estimate] = Field(min_length=1)
    assumptions: list[Assumption] = []
    notes: str | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> Project:
        seen: set[str] = set()
        for est in self.estimates:
            if est.id in seen:
                raise ValueError(f"estimate id {est.id!r} is used twice")
            seen.add(est.id)
        for est in self.estimates:
            if est.tot_of and est.tot_of not in seen:
                raise ValueError(f"estimate {est.id!r}: tot_of names {est.tot_of!r}, which is not an estimate here")
            for whole in est.part_of:
                if whole not in seen:
                    raise ValueError(f"estimate {est.id!r}: part_of names {whole!r}, which is not an estimate here")
        return self


class Domain(Strict):
    """An outcome domain: the metric estimates are pooled on and which direction helps."""

    id: str = Slug
    label: str = Field(min_length=1)
    description: str = Field(min_length=1)
    metric: Metric
    beneficial: Literal["increase", "decrease"]
    mid: float = Field(gt=0, description="minimal important difference, in the domain's metric")
    mid_rationale: str = Field(min_length=1)
    scale: float = Field(gt=0, description="size of a large effect in this metric; scales default priors")
    scale_rationale: str = Field(min_length=1)


class DomainsFile(Strict):
    domains: list[Domain] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> DomainsFile:
        ids = [d.id for d in self.domains]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"domain ids used twice: {', '.join(dupes)}")
        return self
