"""Reading evidence: project YAML files and the domains file, or a metafor-style CSV.

Everything read is validated (pydantic) and every problem is collected as a
:class:`~metaeval.errors.Problem` naming file, record and field, so one run
reports all of them. The result is the raw tidy table: one row per estimate,
the source's own figures, nothing converted yet (that is :mod:`metaeval.harmonise`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metaeval.errors import InputError, Problem
from metaeval.schema import DESIGN_LADDER, JUDGEMENTS, ROB_DOMAINS, Domain, DomainsFile, Project

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

#: Numeric estimate fields an ``assumptions`` entry may supply when the source is silent.
ASSUMABLE_FIELDS = (
    "estimate", "se", "ci_low", "ci_high", "p_value", "mean_treatment", "sd_treatment", "mean_control",
    "sd_control", "n_treatment", "n_control", "target", "share_improved", "share_unchanged",
)
#: The comparison an estimand makes whatever its project's design: a before-after change of the
#: participants is a before-after design even in a project with a control group.
ESTIMAND_DESIGN = {"pre_post": "before_after", "vs_target": "target_benchmark"}


def default_data_dir() -> Path:
    """The bundled evidence base (``$METAEVAL_DATA`` overrides it)."""
    return Path(os.environ.get("METAEVAL_DATA", PACKAGE_ROOT / "data"))


# --- safe YAML -----------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses alias bombs and silently repeated keys.

    Aliases (``*name``) are allowed for reuse, but not to a node that itself contains
    aliases: without nesting, expansion stays linear and a "billion laughs" file fails.
    """

    MAX_ALIASES = 1000

    def compose_document(self):  # type: ignore[override]
        self._aliases_seen = 0
        self._nested: set[int] = set()
        return super().compose_document()

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            self._aliases_seen += 1
            if node is not None and id(node) in self._nested:
                raise yaml.constructor.ConstructorError(
                    None, None, f"alias *{event.anchor} refers to a node that itself holds aliases (an alias bomb)", event.start_mark
                )
            if self._aliases_seen > self.MAX_ALIASES:
                raise yaml.constructor.ConstructorError(None, None, "too many YAML aliases", event.start_mark)
            return super().compose_node(parent, index)
        before = self._aliases_seen
        node = super().compose_node(parent, index)
        if self._aliases_seen > before:
            self._nested.add(id(node))
        return node

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path) -> str:
    """Read a UTF-8 text file (a BOM is tolerated); anything else is an InputError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(Problem(str(path), "", "", "file not found")) from None
    except IsADirectoryError:
        raise InputError(Problem(str(path), "", "", "expected a file, found a directory")) from None
    except OSError as err:
        raise InputError(Problem(str(path), "", "", f"cannot be read: {err.strerror}")) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(Problem(
            str(path), "", "",
            f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8",
        )) from None


def read_yaml(path: Path) -> Any:
    """Parse one YAML document safely; syntax errors become a Problem with the line number."""
    text = read_text(path)
    if not text.strip():
        raise InputError(Problem(str(path), "", "", "file is empty; expected a YAML mapping"))
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f"line {mark.line + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(Problem(str(path), line, "", f"invalid YAML: {what}")) from None


def _validation_problems(path: Path, err: ValidationError, raw: Any, list_key: str) -> list[Problem]:
    """Turn pydantic errors into Problems, naming records by their id where there is one."""
    problems = []
    for e in err.errors():
        loc = list(e["loc"])
        record = ""
        if len(loc) >= 2 and loc[0] == list_key and isinstance(loc[1], int):
            idx = loc[1]
            items = raw.get(list_key) if isinstance(raw, dict) else None
            rec_id = items[idx].get("id") if isinstance(items, list) and idx < len(items) and isinstance(items[idx], dict) else None
            record = f"{list_key[:-1]} {rec_id!r}" if rec_id else f"{list_key[:-1]} #{idx + 1}"
            loc = loc[2:]
        elif isinstance(raw, dict) and raw.get("id"):
            record = f"project {raw['id']!r}"
        field = ".".join(str(x) for x in loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field; see data/README.md for the fields a record may have"
        problems.append(Problem(str(path), record, field, msg))
    return problems


# --- the bundled format -------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceBase:
    """Validated projects and domains, with the files they came from."""

    projects: tuple[Project, ...]
    domains: tuple[Domain, ...]
    files: dict[str, Path]  # project id -> file

    def domain(self, domain_id: str) -> Domain:
        return next(d for d in self.domains if d.id == domain_id)


def read_domains(path: Path) -> tuple[Domain, ...]:
    raw = read_yaml(path)
    try:
        return tuple(DomainsFile.model_validate(raw).domains)
    except ValidationError as err:
        raise InputError(_validation_problems(path, err, raw, "domains")) from None


def read_evidence_base(data_dir: Path | str | None = None) -> EvidenceBase:
    """Read and validate ``DIR/domains.yaml`` and every ``DIR/projects/*.yaml``.

    All problems in all files are collected before raising, so one run lists them all.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not data_dir.is_dir():
        raise InputError(Problem(str(data_dir), "", "", "evidence directory not found"))
    problems: list[Problem] = []
    domains: tuple[Domain, ...] = ()
    try:
        domains = read_domains(data_dir / "domains.yaml")
    except InputError as err:
        problems += err.problems
    files = sorted((data_dir / "projects").glob("*.y*ml"))
    if not files:
        problems.append(Problem(str(data_dir / "projects"), "", "", "no project files (*.yaml) found"))
    projects: list[Project] = []
    where: dict[str, Path] = {}
    for path in files:
        try:
            raw = read_yaml(path)
            if not isinstance(raw, dict):
                raise InputError(Problem(str(path), "", "", f"expected a mapping of project fields, got {type(raw).__name__}"))
            project = Project.model_validate(raw)
        except InputError as err:
            problems += err.problems
            continue
        except ValidationError as err:
            problems += _validation_problems(path, err, raw, "estimates")
            continue
        if project.id in where:
            problems.append(Problem(str(path), f"project {project.id!r}", "id", f"already used by {where[project.id].name}"))
            continue
        if path.stem != project.id:
            problems.append(Problem(str(path), f"project {project.id!r}", "id", f"must match the file name ({path.stem!r})"))
        where[project.id] = path
        projects.append(project)
    known = {d.id for d in domains}
    if domains:
        for project in projects:
            for est in project.estimates:
                if est.domain not in known:
                    problems.append(Problem(
                        str(where[project.id]), f"estimate {est.id!r}", "domain",
                        f"unknown domain {est.domain!r}; expected one of {', '.join(sorted(known))} (defined in domains.yaml)",
                    ))
    if problems:
        raise InputError(problems)
    return EvidenceBase(tuple(projects), domains, where)


def _risk_of_bias(project: Project, est) -> dict[str, Any]:
    """The estimate's judgement per domain of bias (its own where it has one, else its project's),
    the worst of them, and the estimate's own judgements in words."""
    own = est.risk_of_bias
    profile = {d: (getattr(own, d, None) if own else None) or getattr(project.risk_of_bias, d) for d in ROB_DOMAINS}
    worst = max((r.judgement for r in profile.values()), key=JUDGEMENTS.index)
    notes = [f"{d} {getattr(own, d).judgement}: {getattr(own, d).rationale}" for d in ROB_DOMAINS if own and getattr(own, d)]
    return {**{f"rob_{d}": r.judgement for d, r in profile.items()}, "risk_of_bias": worst,
            "rob_estimate": "; ".join(notes) or None}


def _comparison_design(project: Project, estimand: str) -> str:
    """The design the estimate's comparison has: its project's, or weaker where the estimand says so."""
    implied = ESTIMAND_DESIGN.get(estimand)
    if implied and DESIGN_LADDER.index(implied) > DESIGN_LADDER.index(project.design):
        return implied
    return project.design


def _assumptions(project: Project, est) -> dict[str, tuple[Any, str]]:
    """The assumptions that bear on one estimate (estimate-level entries win).

    A numeric field is only assumed where the source leaves it empty; other
    assumptions (e.g. that a finding was significant at 5%) are carried as text.
    """
    out = {}
    for a in [*project.assumptions, *est.assumptions]:
        if a.field not in ASSUMABLE_FIELDS or getattr(est, a.field) is None:
            out[a.field] = (a.value, a.rationale)
    return out


#: Integer columns that may be missing (pandas' nullable Int64 in a table).
COUNT_COLUMNS = ("n_treatment", "n_control")


def raw_table(base: EvidenceBase):
    """One row per estimate with the source's figures and the project's design metadata."""
    import pandas as pd

    table = pd.DataFrame(raw_records(base))
    for col in COUNT_COLUMNS:
        table[col] = table[col].astype("Int64")
    return table


def raw_records(base: EvidenceBase) -> list[dict[str, Any]]:
    """The rows of :func:`raw_table` as plain dicts."""
    rows = []
    for project in base.projects:
        take_up = project.take_up.n_participating / project.take_up.n_offered if project.take_up else math.nan
        for est in project.estimates:
            row = est.model_dump(exclude={"id", "provenance", "assumptions", "poolable", "exclusion_reason", "risk_of_bias", "part_of"})
            assumed = _assumptions(project, est)
            row.update(
                estimate_id=f"{project.id}:{est.id}",
                record=f"estimate {est.id!r}",
                project_id=project.id,
                project_name=project.name,
                design=_comparison_design(project, est.estimand),
                project_design=project.design,
                evaluator=project.evaluator,
                status=project.status,
                outcome_source=project.outcome_source,
                **_risk_of_bias(project, est),
                benefit_basis=est.benefit_basis or "domain",
                part_of="; ".join(f"{project.id}:{w}" for w in est.part_of) or None,
                take_up=take_up,
                curated_poolable=est.poolable,
                curated_reason=est.exclusion_reason,
                source=est.provenance.source or project.source,
                location=est.provenance.location,
                quote=est.provenance.quote,
                assumed={k: v for k, (v, _) in assumed.items() if k in ASSUMABLE_FIELDS},
                assumptions="; ".join(f"{k} = {v} ({why})" for k, (v, why) in assumed.items()) or None,
                file=str(base.files[project.id]),
            )
            rows.append(row)
    return rows


# --- metafor-style CSV -----------------------------------------------------------------------------


#: Optional CSV columns that describe a row's domain rather than the row (constant within a domain).
DOMAIN_COLUMNS = ("beneficial", "scale", "mid", "metric", "label")


class CsvRow(BaseModel):
    """One row of a metafor-style CSV; unknown columns are kept as moderators."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, allow_inf_nan=False)

    study: str = Field(min_length=1)
    yi: float
    vi: float | None = Field(None, gt=0)
    sei: float | None = Field(None, gt=0)
    domain: str = Field("all", min_length=1)
    design: str = "unspecified"
    project: str | None = None
    # the row's domain, described (each constant within a domain; see metaeval.harmonise.csv_domains)
    beneficial: Literal["increase", "decrease"] | None = None
    scale: float | None = Field(None, gt=0)
    mid: float | None = Field(None, gt=0)
    metric: str | None = None
    label: str | None = None

    @field_validator("vi", "sei", "project", *DOMAIN_COLUMNS, mode="before")
    @classmethod
    def _blank_is_missing(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("domain", "design", mode="before")
    @classmethod
    def _blank_is_default(cls, v: Any, info) -> Any:
        if isinstance(v, str) and not v.strip():
            return cls.model_fields[info.field_name].default
        return v

    @field_validator("design")
    @classmethod
    def _known_design(cls, v: str) -> str:
        from metaeval.schema import DESIGN_LADDER

        if v not in (*DESIGN_LADDER, "unspecified"):
            raise ValueError(f"unknown design {v!r}; expected one of {', '.join(DESIGN_LADDER)}")
        return v

    @model_validator(mode="after")
    def _one_variance(self) -> CsvRow:
        if self.vi is None and self.sei is None:
            raise ValueError("needs vi or sei")
        if self.vi is not None and self.sei is not None and not math.isclose(self.vi, self.sei**2, rel_tol=1e-3):
            raise ValueError(f"vi ({self.vi}) and sei² ({self.sei**2:.6g}) disagree")
        return self


def read_csv(path: Path | str):
    """Read a metafor-style CSV into the raw table (``study, yi, vi|sei`` + optional columns)."""
    import pandas as pd

    return pd.DataFrame(csv_records(path))


def csv_records(path: Path | str) -> list[dict[str, Any]]:
    """The rows of :func:`read_csv` as plain dicts, for a caller that keeps working row by row
    (:func:`metaeval.harmonise.evidence_records`)."""
    import csv
    import io

    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise InputError(Problem(str(path), "", "", "file is empty; expected a header line with study, yi and vi or sei"))
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(Problem(str(path), "", "", f"is not valid CSV: {err}")) from None
    return _parse_csv(path, lines)


def _parse_csv(path: Path, lines: list[list[str]]) -> list[dict[str, Any]]:
    header = [h.strip() for h in lines[0]]
    missing = [c for c in ("study", "yi") if c not in header]
    if missing or not ({"vi", "sei"} & set(header)):
        need = missing + ([] if {"vi", "sei"} & set(header) else ["vi or sei"])
        raise InputError(Problem(str(path), "header", ", ".join(need), f"missing column(s); found {', '.join(header) or 'none'}"))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(Problem(str(path), "header", ", ".join(dupes), "column name appears twice"))
    problems, rows, seen = [], [], {}
    for i, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(cells) != len(header):
            problems.append(Problem(str(path), f"row {i}", "", f"has {len(cells)} cells; the header has {len(header)}"))
            continue
        raw = dict(zip(header, cells))
        label = f"row {i}" + (f" (study {raw.get('study')!r})" if raw.get("study") else "")
        try:
            row = CsvRow.model_validate(raw)
        except ValidationError as err:
            for e in err.errors():
                field = ".".join(str(x) for x in e["loc"]) or "vi, sei"  # the one row-level check: vi and sei
                msg = e["msg"].removeprefix("Value error, ")
                if e["type"] != "missing" and not isinstance(e.get("input"), dict):
                    msg += f" (got {e.get('input')!r})"
                problems.append(Problem(str(path), label, field, msg))
            continue
        if row.study in seen:
            problems.append(Problem(str(path), label, "study", f"duplicate study id; first used on row {seen[row.study]}"))
            continue
        seen[row.study] = i
        rows.append(row)
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError(Problem(str(path), "", "", "no data rows after the header"))
    records = []
    for row in rows:
        extra = row.model_extra or {}
        sei = row.sei if row.sei is not None else math.sqrt(row.vi)
        records.append(dict(
            estimate_id=row.study, record=f"row {seen[row.study]} (study {row.study!r})", project_id=row.project or row.study, project_name=row.project or row.study,
            domain=row.domain, design=row.design, estimand="difference", metric=row.metric, outcome=row.study,
            domain_given={k: getattr(row, k) for k in DOMAIN_COLUMNS if getattr(row, k) is not None},
            estimate=row.yi, se=sei, source=path.name, location=f"row {seen[row.study]}", file=str(path),
            curated_poolable=True, curated_reason=None, assumed={}, assumptions=None,
            **{f"mod_{k}": _number_or_text(v) for k, v in extra.items()},
        ))
    return records


def _number_or_text(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
