"""Reading evidence: project YAML files and the domains file (a metafor-style CSV: :mod:`metaeval.evidence_csv`).

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
from typing import Any

import yaml
from pydantic import ValidationError

from metaeval.bundled import bundled_path
from metaeval.errors import InputError, Problem
from metaeval.schema import DESIGN_LADDER, JUDGEMENTS, ROB_DOMAINS, Domain, DomainsFile, Project

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
    return Path(os.environ["METAEVAL_DATA"]) if "METAEVAL_DATA" in os.environ else bundled_path("data")


# --- reading files safely --------------------------------------------------------------------------------------

#: Limits no real evidence base reaches (the bundled files: 25 KB at most, 6 levels deep, no aliases); each
#: refusal names the limit. They bound the time and memory a hostile or broken file can cost.
MAX_TEXT_BYTES = 4 * 2**20  # a YAML or TOML file
MAX_CSV_BYTES = 64 * 2**20  # a metafor-style CSV (a million estimates take about 25 MB)
MAX_CSV_COLUMNS = 1_000
MAX_YAML_DEPTH = 64  # nested mappings and lists
MAX_YAML_NODES = 500_000  # scalars, mappings and lists in one file
MAX_YAML_ALIASES = 1_000
MAX_ALIAS_EXPANSION = 1_000_000  # nodes plus characters that aliases add, summed over all aliases
MAX_INTEGER_DIGITS = 100


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """Read a UTF-8 text file (a BOM is tolerated); anything else is an InputError.

    Only a regular file of at most ``limit`` bytes is read: a FIFO, device or socket (or a symlink to one,
    such as ``/dev/zero``) is refused at once rather than blocking or reading without end.
    """
    return utf8(path, regular_bytes(path, limit))


def regular_bytes(path: Path, limit: int) -> bytes:
    """The bytes of :func:`read_text`'s file; a file it does not read is an InputError saying why."""
    from metaeval.files import Unreadable, read_regular

    try:
        return read_regular(path, limit)
    except Unreadable as err:
        reason = "expected a file, found a directory" if err.reason.startswith("is a directory") else err.reason
        raise InputError(Problem(str(path), "", "", reason)) from None


def utf8(path: Path, raw: bytes) -> str:
    """``raw`` decoded as UTF-8 (a BOM is tolerated); anything else is an InputError naming the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(Problem(
            str(path), "", "",
            f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8",
        )) from None


#: libyaml's C parser where the installed PyYAML has it (measured: 2-3x faster than the pure-Python one).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """Safe YAML that refuses silently repeated keys and keys that are lists or mappings.

    The rules on the document's shape (depth, size, aliases, long integers) are checked on its event
    stream before anything is built (:func:`_check_events`), the same for the C and the Python parser.
    """

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict, set)):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be text or a number, not a {type(key).__name__}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_events(text: str, path: Path) -> None:
    """Refuse a YAML document that is nested too deeply, too large, or an alias bomb, before it is built.

    Aliases (``*name``) may reuse a node, but not one that itself holds aliases (so expansion stays linear),
    at most ``MAX_YAML_ALIASES`` times, adding at most ``MAX_ALIAS_EXPANSION`` nodes and characters in all.
    """
    loader = _SafeLoader(text)
    stack: list[list] = []  # open mappings and lists: [weight, holds an alias, anchor]
    anchors: dict[str, tuple[int, bool]] = {}
    nodes = aliases = expanded = 0

    def refuse(event, message: str):
        return InputError(Problem(str(path), f"line {event.start_mark.line + 1}", "", message))

    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                stack.append([1, False, event.anchor])
                if len(stack) > MAX_YAML_DEPTH:
                    raise refuse(event, f"nested more than {MAX_YAML_DEPTH} levels deep (MAX_YAML_DEPTH)")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                weight, nested, anchor = stack.pop()
                if anchor:
                    anchors[anchor] = (weight, nested)
                if stack:
                    stack[-1][0] += weight
                    stack[-1][1] |= nested
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                weight = 1 + len(event.value)
                if len(event.value) > MAX_INTEGER_DIGITS and (
                    event.tag if event.tag and not event.implicit[0] else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                ) == "tag:yaml.org,2002:int":
                    raise refuse(event, f"an integer of {len(event.value):,} characters; at most {MAX_INTEGER_DIGITS} are read (MAX_INTEGER_DIGITS)")
                if event.anchor:
                    anchors[event.anchor] = (weight, False)
                if stack:
                    stack[-1][0] += weight
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                weight, nested = anchors.get(event.anchor, (1, False))
                if nested:
                    raise refuse(event, f"alias *{event.anchor} refers to a node that itself holds aliases (an alias bomb)")
                if aliases > MAX_YAML_ALIASES:
                    raise refuse(event, f"more than {MAX_YAML_ALIASES} YAML aliases (MAX_YAML_ALIASES)")
                expanded += weight
                if expanded > MAX_ALIAS_EXPANSION:
                    raise refuse(event, f"aliases expand to more than {MAX_ALIAS_EXPANSION:,} nodes and characters (MAX_ALIAS_EXPANSION)")
                if stack:
                    stack[-1][0] += 1
                    stack[-1][1] = True
            if nodes > MAX_YAML_NODES:
                raise refuse(event, f"more than {MAX_YAML_NODES:,} values (MAX_YAML_NODES)")
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """Parse one YAML document safely; syntax errors and refused shapes become a Problem with the line number."""
    text = read_text(path)
    if not text.strip():
        raise InputError(Problem(str(path), "", "", "file is empty; expected a YAML mapping"))
    try:
        _check_events(text, path)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f"line {mark.line + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(Problem(str(path), line, "", f"invalid YAML: {what}")) from None
    except (ValueError, TypeError, OverflowError) as err:  # a value the constructors refuse (a date like 2024-02-30)
        raise InputError(Problem(str(path), "", "", f"invalid YAML value: {err}")) from None


def validation_problems(path: Path, err: ValidationError, raw: Any, list_key: str) -> list[Problem]:
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
        raise InputError(validation_problems(path, err, raw, "domains")) from None


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
            problems += validation_problems(path, err, raw, "estimates")
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
