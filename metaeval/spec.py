"""Model specifications: the priors, bias assumptions and options of a fit, as data.

A spec is read from ``models/<name>.toml`` (or any TOML file) and may be adjusted
by ``--prior PARAM=DIST(args)`` overrides. Units: the priors in a TOML file are in
units of each domain's ``scale`` and are multiplied by it per domain; an override
is absolute (in the domain's own metric) and is used as given. The one exception
is the ``design_hierarchy`` bias parameters, which are shared by all domains and
so stay in scale units (see ``models/design_hierarchy.toml``).

Override names::

    mu, tau, omega, se             every domain (se: the unknown SE of a direction-only finding)
    mu.<domain>, tau.<domain>, ...  one domain
    bias.<design>                   an additive bias prior (normal only), every domain
    bias.mean, bias.design_sd, bias.project_sd   the design-hierarchy parameters
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from metaeval.bundled import bundled_path
from metaeval.errors import InputError, Problem
from metaeval.priors import Prior, PriorError, parse_assignment, parse_prior
from metaeval.schema import DESIGN_LADDER, ROB_DOMAINS

#: Where the bundled model files live (package data; ``models/`` at the top of a checkout links here).
MODELS_DIR = bundled_path("models")
#: Designs that carry no bias term: randomised, or not stated (a plain CSV).
UNBIASED_DESIGNS = ("rct", "unspecified")
ALL_DESIGNS = (*DESIGN_LADDER, "unspecified")
BIAS_MODES = ("none", "additive", "variance_inflation", "hierarchical")
DIRECTION_ONLY_MODES = ("censored", "exclude")
#: latent: project effects and bias terms are sampled; marginal: integrated out where a cell has only estimates.
EFFECTS_MODES = ("latent", "marginal")
DOMAIN_PARAMS = ("mu", "tau", "omega", "se")
#: What a per-estimate risk-of-bias judgement of "high" does (data/README.md "Risk of bias"):
#: widen the estimate's bias-term prior, leave the estimate out, or nothing.
ROB_HIGH_MODES = ("inflate", "exclude", "ignore")
#: Whether an outcome whose beneficial direction the curator inferred may enter the model.
INFERRED_BENEFIT_MODES = ("exclude", "include")
HIERARCHY_PARAMS = ("mean", "design_sd", "project_sd")
_POSITIVE = ("tau", "omega", "se", "design_sd", "project_sd")

_TABLES: dict[str, tuple[str, ...]] = {
    "priors": ("mu", "tau", "omega"),
    "bias": ("mode", "designs", "weights", "hierarchy"),
    "direction_only": ("mode", "se"),
    "effects": ("mode",),
    "data": ("designs", "inferred_benefit"),
    "risk_of_bias": ("high", "sd", "domains"),
    "sampler": ("target_accept", "target_accept_integrated"),
    "summary": ("hdi_prob",),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a model that is not evidence: priors, bias handling, options."""

    name: str
    description: str
    source: str
    priors: dict[str, Prior]
    bias_mode: str = "additive"
    bias_designs: dict[str, Prior] = field(default_factory=dict)
    bias_weights: dict[str, float] = field(default_factory=dict)
    bias_hierarchy: dict[str, Prior] = field(default_factory=dict)
    direction_only: str = "censored"
    direction_only_se: Prior | None = None
    effects: str = "latent"
    designs: tuple[str, ...] = ALL_DESIGNS
    inferred_benefit: str = "exclude"
    rob_high: str = "inflate"
    rob_sd: float = 0.25
    rob_domains: tuple[str, ...] = ("attrition", "measurement", "reporting")
    target_accept: float = 0.99
    target_accept_integrated: float | None = None  # where no project effect is sampled (None: target_accept)
    hdi_prob: float = 0.95
    overrides: dict[str, Prior] = field(default_factory=dict)

    def domain_prior(self, param: str, domain: str, scale: float) -> tuple[Prior, bool]:
        """The prior of ``param`` in ``domain`` and whether it was scaled (False for an override)."""
        for key in (f"{param}.{domain}", param):
            if key in self.overrides:
                return self.overrides[key], False
        base = self.direction_only_se if param == "se" else self.priors[param]
        return base.scaled(scale), True

    def bias_prior(self, design: str, scale: float) -> tuple[Prior, bool] | None:
        """The additive bias prior for a design (None: no bias term)."""
        if self.bias_mode != "additive" or design in UNBIASED_DESIGNS:
            return None
        key = f"bias.{design}"
        if key in self.overrides:
            return self.overrides[key], False
        return self.bias_designs[design].scaled(scale), True

    def hierarchy_prior(self, param: str) -> Prior:
        return self.overrides.get(f"bias.{param}", self.bias_hierarchy[param])

    def rob_inflation(self, high: list[str] | tuple[str, ...], scale: float) -> float:
        """The SD (in the metric) that ``high`` judgements add, in quadrature, to a bias term's prior."""
        if self.rob_high != "inflate":
            return 0.0
        return self.rob_sd * scale * len(high) ** 0.5

    def target_accept_for(self, samples_effects: bool) -> float:
        """The sampler's target acceptance: ``target_accept_integrated`` (when set) where no project effect is sampled."""
        if not samples_effects and self.target_accept_integrated is not None:
            return self.target_accept_integrated
        return self.target_accept

    def weight(self, design: str) -> float:
        """Power-prior weight of a design under variance inflation (1: full weight)."""
        if self.bias_mode != "variance_inflation":
            return 1.0
        return self.bias_weights.get(design, 1.0)

    def to_dict(self) -> dict:
        """Plain data: recorded in the summary's "model" block and hashed for the cache."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "units": "priors in units of each domain's scale; --prior overrides are absolute",
            "priors": {k: str(v) for k, v in sorted(self.priors.items())},
            "bias": {
                "mode": self.bias_mode,
                "designs": {k: str(v) for k, v in sorted(self.bias_designs.items())},
                "weights": dict(sorted(self.bias_weights.items())),
                "hierarchy": {k: str(v) for k, v in sorted(self.bias_hierarchy.items())},
            },
            "direction_only": {"mode": self.direction_only, "se": str(self.direction_only_se)},
            "effects": self.effects,
            "designs": list(self.designs),
            "inferred_benefit": self.inferred_benefit,
            "risk_of_bias": {"high": self.rob_high, "sd": self.rob_sd, "domains": list(self.rob_domains)},
            "target_accept": self.target_accept,
            **({"target_accept_integrated": self.target_accept_integrated} if self.target_accept_integrated is not None else {}),
            "hdi_prob": self.hdi_prob,
            "overrides": {k: str(v) for k, v in sorted(self.overrides.items())},
        }

    def digest(self) -> str:
        """A stable hash of the spec's content (not of its file path)."""
        return spec_digest(self.to_dict())


def spec_digest(spec: dict) -> str:
    """SHA-256 of a spec's plain data (``ModelSpec.to_dict()``, as a fit records it), its file path left out."""
    content = {k: v for k, v in spec.items() if k != "source"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def available_models() -> list[str]:
    """Names of the bundled model files."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def resolve_model_path(model: str | Path) -> Path:
    """A model name under ``models/`` or a path to a TOML file."""
    text = str(model)
    path = Path(text)
    if text.endswith(".toml") or path.is_file() or "/" in text or "\\" in text:
        if not path.is_file():
            raise InputError(Problem(text, "", "--model", "model file not found"))
        return path
    candidate = MODELS_DIR / f"{text}.toml"
    if not candidate.is_file():
        raise InputError(Problem(text, "", "--model", f"no model named {text!r}; expected one of {', '.join(available_models())} or a path to a .toml file"))
    return candidate


def load_spec(model: str | Path = "default", overrides: list[str] | tuple[str, ...] = ()) -> ModelSpec:
    """Read a model spec by name or path and apply ``PARAM=DIST(args)`` overrides.

    A user's file may leave out keys: they are taken from ``models/default.toml``,
    except that a ``[bias]`` table, when given, replaces the default one whole.
    """
    path = resolve_model_path(model)
    raw = read_toml(path)
    default_path = MODELS_DIR / "default.toml"
    if path.resolve() != default_path.resolve():
        base = read_toml(default_path)
        merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        for key, value in raw.items():
            if isinstance(value, dict) and key != "bias" and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        if "name" not in raw:
            merged["name"] = path.stem
        if "description" not in raw:
            merged["description"] = ""
        raw = merged
    bundled = path.resolve().parent == MODELS_DIR.resolve()
    spec = _from_dict(raw, f"models/{path.name}" if bundled else str(path))
    return with_overrides(spec, overrides)


def with_overrides(spec: ModelSpec, overrides: list[str] | tuple[str, ...]) -> ModelSpec:
    """A copy of ``spec`` with ``--prior`` overrides (absolute values) applied."""
    if not overrides:
        return spec
    problems: list[Problem] = []
    parsed = dict(spec.overrides)
    for text in overrides:
        try:
            name, prior = parse_assignment(text)
        except PriorError as err:
            problems.append(Problem("--prior", text, "", str(err)))
            continue
        message = _check_override(spec, name, prior)
        if message:
            problems.append(Problem("--prior", text, name, message))
        else:
            parsed[name] = prior
    if problems:
        raise InputError(problems)
    return _replace(spec, overrides=parsed)


def _check_override(spec: ModelSpec, name: str, prior: Prior) -> str | None:
    head, _, tail = name.partition(".")
    if head in DOMAIN_PARAMS:
        if head == "se" and spec.direction_only != "censored":
            return "this model leaves direction-only findings out; there is no SE prior to override"
        return _check_family(head, prior)
    if head == "bias" and tail:
        if tail in HIERARCHY_PARAMS:
            if spec.bias_mode != "hierarchical":
                return f"bias.{tail} exists only in a model with bias mode 'hierarchical' (this one: {spec.bias_mode!r})"
            return _check_family(tail, prior)
        if tail in ALL_DESIGNS:
            if spec.bias_mode != "additive":
                return f"per-design bias priors exist only in a model with bias mode 'additive' (this one: {spec.bias_mode!r})"
            if tail in UNBIASED_DESIGNS:
                return f"design {tail!r} carries no bias term"
            return _check_family("bias", prior)
        return f"unknown bias parameter {tail!r}; expected a design ({', '.join(d for d in ALL_DESIGNS if d not in UNBIASED_DESIGNS)}) or {', '.join(HIERARCHY_PARAMS)}"
    return f"unknown parameter {name!r}; expected mu, tau, omega, se (optionally .<domain>) or bias.<design>"


def _check_family(param: str, prior: Prior) -> str | None:
    if param == "bias" or param == "mean":
        if prior.family != "normal":
            return f"a bias prior must be normal(mean, sd), got {prior}"
        return None
    if param in _POSITIVE:
        if prior.support == "positive":
            return None
        if prior.family == "uniform" and prior.params[0] >= 0:
            return None
        return f"{param} is a standard deviation: expected a positive distribution (halfnormal, halfcauchy, halfstudentt, exponential, lognormal, uniform(>=0, b)), got {prior}"
    return None


def read_toml(path: Path) -> dict:
    """A TOML file as a dict; unreadable, non-UTF-8 or invalid TOML is an InputError naming the file."""
    from metaeval.evidence import read_text  # UTF-8 (a BOM tolerated), as for evidence files

    try:
        return tomllib.loads(read_text(Path(path)))
    except tomllib.TOMLDecodeError as err:
        raise InputError(Problem(str(path), "", "", f"not valid TOML: {err}")) from None
    except ValueError as err:  # an integer of thousands of digits (Python's int limit)
        raise InputError(Problem(str(path), "", "", f"not valid TOML: {err}")) from None
    except RecursionError:
        raise InputError(Problem(str(path), "", "", "not valid TOML: arrays or tables nested too deeply")) from None


def _from_dict(raw: dict, source: str) -> ModelSpec:
    problems: list[Problem] = []

    def bad(table: str, key: str, message: str) -> None:
        problems.append(Problem(source, table, key, message))

    for key, value in raw.items():
        if key in ("name", "description"):
            if not isinstance(value, str):
                bad("", key, "expected a string")
        elif key not in _TABLES:
            bad("", key, f"unknown table; expected one of {', '.join(_TABLES)}")
        elif not isinstance(value, dict):
            bad(key, "", "expected a table")
        else:
            for sub in value:
                if sub not in _TABLES[key]:
                    bad(key, sub, f"unknown key; expected one of {', '.join(_TABLES[key])}")

    def prior(table: str, key: str, text, param: str) -> Prior | None:
        if text is None:
            bad(table, key, "missing; expected a prior such as halfnormal(0.25)")
            return None
        try:
            p = parse_prior(text)
        except PriorError as err:
            bad(table, key, str(err))
            return None
        message = _check_family(param, p)
        if message:
            bad(table, key, message)
            return None
        return p

    priors_raw = raw.get("priors", {}) if isinstance(raw.get("priors"), dict) else {}
    priors = {k: prior("priors", k, priors_raw.get(k), k) for k in ("mu", "tau", "omega")}

    bias = raw.get("bias", {}) if isinstance(raw.get("bias"), dict) else {}
    mode = bias.get("mode", "none")
    designs: dict[str, Prior] = {}
    weights: dict[str, float] = {}
    hierarchy: dict[str, Prior] = {}
    if not isinstance(mode, str) or mode not in BIAS_MODES:
        bad("bias", "mode", f"expected one of {', '.join(BIAS_MODES)}, got {mode!r}")
        mode = None
    elif mode == "additive":
        table = bias.get("designs")
        if not isinstance(table, dict):
            bad("bias.designs", "", "bias mode 'additive' needs a [bias.designs] table: one normal(mean, sd) per non-randomised design")
        else:
            for design, text in table.items():
                if design not in ALL_DESIGNS or design in UNBIASED_DESIGNS:
                    bad("bias.designs", design, f"expected a non-randomised design: {', '.join(d for d in DESIGN_LADDER if d != 'rct')}")
                    continue
                p = prior("bias.designs", design, text, "bias")
                if p:
                    designs[design] = p
            for design in DESIGN_LADDER:
                if design not in UNBIASED_DESIGNS and design not in table:
                    bad("bias.designs", design, "missing; every non-randomised design needs a bias prior")
    elif mode == "variance_inflation":
        table = bias.get("weights")
        if not isinstance(table, dict):
            bad("bias.weights", "", "bias mode 'variance_inflation' needs a [bias.weights] table: a weight in (0, 1] per design")
        else:
            for design, w in table.items():
                if design not in ALL_DESIGNS:
                    bad("bias.weights", design, f"unknown design; expected one of {', '.join(ALL_DESIGNS)}")
                elif not isinstance(w, (int, float)) or isinstance(w, bool) or not (0 < w <= 1):
                    bad("bias.weights", design, f"expected a weight in (0, 1], got {w!r}")
                else:
                    weights[design] = float(w)
    elif mode == "hierarchical":
        table = bias.get("hierarchy")
        if not isinstance(table, dict):
            bad("bias.hierarchy", "", "bias mode 'hierarchical' needs a [bias.hierarchy] table with mean, design_sd, project_sd")
        else:
            for key in table:
                if key not in HIERARCHY_PARAMS:
                    bad("bias.hierarchy", key, f"unknown key; expected {', '.join(HIERARCHY_PARAMS)}")
            for key in HIERARCHY_PARAMS:
                p = prior("bias.hierarchy", key, table.get(key), key)
                if p:
                    hierarchy[key] = p
    for sub in ("designs", "weights", "hierarchy"):
        wanted = {"additive": "designs", "variance_inflation": "weights", "hierarchical": "hierarchy"}.get(mode)
        if mode is not None and sub in bias and sub != wanted:
            bad("bias", sub, f"not used with bias mode {mode!r}")

    do = raw.get("direction_only", {}) if isinstance(raw.get("direction_only"), dict) else {}
    do_mode = do.get("mode", "exclude")
    se_prior = None
    if not isinstance(do_mode, str) or do_mode not in DIRECTION_ONLY_MODES:
        bad("direction_only", "mode", f"expected one of {', '.join(DIRECTION_ONLY_MODES)}, got {do_mode!r}")
        do_mode = None
    elif do_mode == "censored":
        se_prior = prior("direction_only", "se", do.get("se"), "se")

    effects = (raw.get("effects") if isinstance(raw.get("effects"), dict) else {}).get("mode", "latent")
    if not isinstance(effects, str) or effects not in EFFECTS_MODES:
        bad("effects", "mode", f"expected one of {', '.join(EFFECTS_MODES)}, got {effects!r}")
    elif effects == "marginal" and mode == "hierarchical":
        bad("effects", "mode", "'marginal' needs fixed bias priors (bias mode additive, variance_inflation or none), not 'hierarchical'")

    data = raw.get("data", {}) if isinstance(raw.get("data"), dict) else {}
    included = data.get("designs", list(ALL_DESIGNS))
    if not isinstance(included, list) or not included or any(d not in ALL_DESIGNS for d in included):
        bad("data", "designs", f"expected a non-empty list drawn from {', '.join(ALL_DESIGNS)}, got {included!r}")
        included = list(ALL_DESIGNS)

    inferred_benefit = data.get("inferred_benefit", "exclude")
    if inferred_benefit not in INFERRED_BENEFIT_MODES:
        bad("data", "inferred_benefit", f"expected one of {', '.join(INFERRED_BENEFIT_MODES)}, got {inferred_benefit!r}")

    rob = raw.get("risk_of_bias", {}) if isinstance(raw.get("risk_of_bias"), dict) else {}
    rob_high = rob.get("high", "inflate")
    if rob_high not in ROB_HIGH_MODES:
        bad("risk_of_bias", "high", f"expected one of {', '.join(ROB_HIGH_MODES)}, got {rob_high!r}")
    rob_sd = rob.get("sd", 0.25)
    if isinstance(rob_sd, bool) or not isinstance(rob_sd, (int, float)) or not 0 <= rob_sd < 10:
        bad("risk_of_bias", "sd", f"expected a number in [0, 10) (units of the domain's scale), got {rob_sd!r}")
        rob_sd = 0.25
    rob_domains = rob.get("domains", ["attrition", "measurement", "reporting"])
    if not isinstance(rob_domains, list) or any(d not in ROB_DOMAINS for d in rob_domains):
        bad("risk_of_bias", "domains", f"expected a list drawn from {', '.join(ROB_DOMAINS)}, got {rob_domains!r}")
        rob_domains = []

    sampler = raw.get("sampler", {}) if isinstance(raw.get("sampler"), dict) else {}
    target_accept = sampler.get("target_accept", 0.99)
    if not isinstance(target_accept, float) or not 0 < target_accept < 1:
        bad("sampler", "target_accept", f"expected a number in (0, 1), got {target_accept!r}")
    integrated = sampler.get("target_accept_integrated")
    if integrated is not None and (not isinstance(integrated, float) or not 0 < integrated < 1):
        bad("sampler", "target_accept_integrated", f"expected a number in (0, 1), got {integrated!r}")
    summary = raw.get("summary", {}) if isinstance(raw.get("summary"), dict) else {}
    hdi_prob = summary.get("hdi_prob", 0.95)
    if not isinstance(hdi_prob, float) or not 0 < hdi_prob < 1:
        bad("summary", "hdi_prob", f"expected a number in (0, 1), got {hdi_prob!r}")

    if problems:
        raise InputError(problems)
    return ModelSpec(
        name=str(raw.get("name", Path(source).stem)),
        description=str(raw.get("description", "")),
        source=source,
        priors=priors,  # type: ignore[arg-type]
        bias_mode=mode,
        bias_designs=designs,
        bias_weights=weights,
        bias_hierarchy=hierarchy,
        direction_only=do_mode,
        direction_only_se=se_prior,
        effects=effects,
        designs=tuple(d for d in ALL_DESIGNS if d in included),
        inferred_benefit=str(inferred_benefit),
        rob_high=str(rob_high),
        rob_sd=float(rob_sd),
        rob_domains=tuple(d for d in ROB_DOMAINS if d in rob_domains),
        target_accept=float(target_accept),
        target_accept_integrated=float(integrated) if isinstance(integrated, float) else None,
        hdi_prob=float(hdi_prob),
    )


def _replace(spec: ModelSpec, **changes) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)
