"""Reading evidence: project YAML files and the domains file, or a metafor-style CSV.

Everything read is validated (pydantic) and every problem is collected as a
:class:`~metaeval.errors.Problem` naming file, record and field, so one run
reports all of them. The result is the raw tidy table: one row per estimate,
the source's own figures, nothing converted yet (that is :mod:`metaeval.harmonise`).
"""

from __future__ import annotations

import functools
import math
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from metaeval.columns import Computed, Same, as_list
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
    return _utf8(path, _regular_bytes(path, limit))


def _regular_bytes(path: Path, limit: int) -> bytes:
    """The bytes of :func:`read_text`'s file; a file it does not read is an InputError saying why."""
    from metaeval.files import Unreadable, read_regular

    try:
        return read_regular(path, limit)
    except Unreadable as err:
        reason = "expected a file, found a directory" if err.reason.startswith("is a directory") else err.reason
        raise InputError(Problem(str(path), "", "", reason)) from None


def _utf8(path: Path, raw: bytes) -> str:
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


def _blank_is(default: Any) -> BeforeValidator:
    """A blank cell (empty, or only spaces) stands for ``default``."""
    return BeforeValidator(lambda v: default if isinstance(v, str) and not v.strip() else v)


def _known_design(v: str) -> str:
    if v not in (*DESIGN_LADDER, "unspecified"):
        raise ValueError(f"unknown design {v!r}; expected one of {', '.join(DESIGN_LADDER)}")
    return v


_Positive = Annotated[Annotated[float, Field(gt=0)] | None, _blank_is(None)]
_Text = Annotated[str | None, _blank_is(None)]

#: The columns of a metafor-style CSV that metaeval reads, each cell's type (text is stripped of spaces, a
#: number must be finite; a blank cell stands for the default shown, a missing column for a column of blanks), in
#: the order problems are named. Any other column is a moderator (``mod_<name>``: a number where it reads as one).
CSV_COLUMNS: dict[str, Any] = {
    "study": Annotated[str, Field(min_length=1)],
    "yi": float,
    "vi": _Positive,
    "sei": _Positive,
    "domain": Annotated[str, _blank_is("all")],
    "design": Annotated[str, _blank_is("unspecified"), AfterValidator(_known_design)],
    "project": _Text,
    # the row's domain, described (each constant within a domain; see metaeval.harmonise.csv_domains)
    "beneficial": Annotated[Literal["increase", "decrease"] | None, _blank_is(None)],
    "scale": _Positive,
    "mid": _Positive,
    "metric": _Text,
    "label": _Text,
}


@functools.cache
def _validators(name: str) -> tuple[TypeAdapter, TypeAdapter]:
    """pydantic's validators of one cell and of a whole column of ``CSV_COLUMNS[name]`` (built on first use)."""
    config = ConfigDict(str_strip_whitespace=True, allow_inf_nan=False)
    return TypeAdapter(CSV_COLUMNS[name], config=config), TypeAdapter(list[CSV_COLUMNS[name]], config=config)


def _validated(name: str, cells: list[str]) -> tuple[list, dict[int, list[dict]]]:
    """A column's values and, by row, the errors of the cells that are not valid (their values are None).

    The whole column is validated in one call (pydantic's core: 0.1 s a million cells); only a column with a
    bad cell is gone through again cell by cell, to tell its bad cells from its good ones.
    """
    one, column = _validators(name)
    try:
        return column.validate_python(cells), {}
    except ValidationError:
        pass
    values, errors = [], {}
    for i, cell in enumerate(cells):
        try:
            values.append(one.validate_python(cell))
        except ValidationError as err:
            values.append(None)
            errors[i] = err.errors()
    return values, errors


@dataclass(frozen=True)
class CsvTable:
    """A metafor-style CSV read and checked column by column (:func:`read_csv_table`): one entry per data row."""

    path: Path
    line: Sequence[int]  # the row's number in the file, the header being row 1 (a quoted cell may hold a line break)
    study: list[str]
    yi: list[float]
    sei: list[float]  # as given, or the square root of vi
    domain: Sequence[str]
    design: Sequence[str]
    project: Sequence[str | None]
    given: dict[str, Sequence]  # those of DOMAIN_COLUMNS the CSV has: each row's value, None where blank
    moderators: dict[str, list]  # every other column: each cell as a number where it reads as one, else its text

    def __len__(self) -> int:
        return len(self.study)

    def record(self, i: int) -> str:
        """How a message names row ``i``."""
        return f"row {self.line[i]} (study {self.study[i]!r})"

    def raw_columns(self) -> dict[str, Sequence]:
        """The columns of the raw table (:func:`read_csv`), as :mod:`metaeval.columns` columns."""
        n, line, given = len(self), self.line, self.given
        project = [p or s for p, s in zip(self.project, self.study)]
        return dict(
            estimate_id=self.study, record=Computed(self.record, n), project_id=project, project_name=project,
            domain=self.domain, design=self.design, estimand=Same("difference", n), metric=given.get("metric", Same(None, n)),
            outcome=self.study, domain_given=Computed(lambda i: {k: v[i] for k, v in given.items() if v[i] is not None}, n),
            estimate=self.yi, se=self.sei, source=Same(self.path.name, n), location=Computed(lambda i: f"row {line[i]}", n),
            file=Same(str(self.path), n), curated_poolable=Same(True, n), curated_reason=Same(None, n), assumed=Same({}, n),
            assumptions=Same(None, n), **{f"mod_{k}": v for k, v in self.moderators.items()},
        )


def read_csv(path: Path | str):
    """Read a metafor-style CSV into the raw table (``study, yi, vi|sei`` + optional columns)."""
    import pandas as pd

    return pd.DataFrame({k: as_list(v) for k, v in read_csv_table(path).raw_columns().items()})


def read_csv_table(path: Path | str) -> CsvTable:
    """Read and check a metafor-style CSV column by column (no pandas): every problem at once, as an InputError."""
    import csv
    import io

    path = Path(path)
    raw = _regular_bytes(path, MAX_CSV_BYTES)
    text = _utf8(path, raw)
    if not text or text.isspace():
        raise InputError(Problem(str(path), "", "", "file is empty; expected a header line with study, yi and vi or sei"))
    del text  # checked; the rows are decoded again as they are read (a str of the whole file costs up to 4 bytes a character)
    try:
        return _parse_csv(path, csv.reader(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="")))
    except csv.Error as err:
        raise InputError(Problem(str(path), "", "", f"is not valid CSV: {err}")) from None


#: Rows checked at a time: the text of a block's cells is let go once its values are made (a million rows' text: 200 MB).
_BLOCK_ROWS = 1 << 16


def _parse_csv(path: Path, lines: Iterable[list[str]]) -> CsvTable:
    """Check the rows of a CSV (an iterable of cell lists, the header first) column by column: linear in the input.

    The rows are read in blocks (:func:`_check_block`); every problem is collected, and raised in row order.
    """
    from collections import Counter

    lines = iter(lines)
    header = [h.strip() for h in next(lines, [])]
    if len(header) > MAX_CSV_COLUMNS:
        raise InputError(Problem(str(path), "header", "", f"has {len(header):,} columns; at most {MAX_CSV_COLUMNS:,} are read (MAX_CSV_COLUMNS)"))
    missing = [c for c in ("study", "yi") if c not in header]
    if missing or not ({"vi", "sei"} & set(header)):
        need = missing + ([] if {"vi", "sei"} & set(header) else ["vi or sei"])
        raise InputError(Problem(str(path), "header", ", ".join(need), f"missing column(s); found {', '.join(header) or 'none'}"))
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise InputError(Problem(str(path), "header", ", ".join(dupes), "column name appears twice"))

    width = len(header)
    values: dict[str, list] = {name: [] for name in header}  # CSV_COLUMNS' values, and moderators' numbers or text
    line = array("q")  # each row's number: 8 bytes a row (a list of ints: 36)
    seen: dict[str, int] = {}  # study id -> the row that first has it
    problems: list[tuple[int, Problem]] = []  # with the row's number: sorted by row at the end, a row's in column order
    block: list[list[str]] = []
    for number, row in enumerate(lines, start=2):
        if not any(map(str.strip, row)):
            continue  # a blank line
        if len(row) != width:
            problems.append((number, Problem(str(path), f"row {number}", "", f"has {len(row)} cells; the header has {width}")))
            continue
        line.append(number)
        block.append(row)
        if len(block) == _BLOCK_ROWS:
            problems += _check_block(path, header, block, line[-len(block):], values, seen)
            block = []
    if block:
        problems += _check_block(path, header, block, line[-len(block):], values, seen)
    if problems:
        problems.sort(key=lambda p: p[0])
        raise InputError([p for _, p in problems])
    n = len(line)
    if not n:
        raise InputError(Problem(str(path), "", "", "no data rows after the header"))

    def column(name: str) -> Sequence:
        return values[name] if name in values else Same(_blank_cell(name), n)

    return CsvTable(
        path=path, line=line, study=values["study"], yi=values["yi"],
        sei=[s if s is not None else math.sqrt(v) for v, s in zip(column("vi"), column("sei"))],
        domain=column("domain"), design=column("design"), project=column("project"),
        given={k: values[k] for k in DOMAIN_COLUMNS if k in values},
        moderators={k: values[k] for k in header if k not in CSV_COLUMNS},
    )


def _check_block(path: Path, header: list[str], rows: list[list[str]], numbers: Sequence[int], values: dict[str, list],
                 seen: dict[str, int]) -> list[tuple[int, Problem]]:
    """Check a block of data rows and add their values to ``values``; the problems found, with their row numbers.

    Each column is validated as a whole (:data:`CSV_COLUMNS`); then each row whose cells are valid must
    have vi or sei (agreeing where it has both) and a study id no earlier row has (``seen``).
    """
    cells = dict(zip(header, map(list, zip(*rows))))
    study = cells["study"]

    def label(i: int) -> str:
        return f"row {numbers[i]}" + (f" (study {study[i]!r})" if study[i] else "")

    problems: list[tuple[int, Problem]] = []
    checked: dict[str, Sequence] = {}
    invalid: set[int] = set()
    for name in CSV_COLUMNS:
        if name not in cells:
            checked[name] = Same(_blank_cell(name), len(rows))
            continue
        checked[name], errors = _validated(name, cells[name])
        invalid.update(errors)
        problems += [(numbers[i], Problem(str(path), label(i), name, f"{e['msg'].removeprefix('Value error, ')} (got {e['input']!r})"))
                     for i, errs in errors.items() for e in errs]
    vi, sei, ids = checked["vi"], checked["sei"], checked["study"]
    for i, number in enumerate(numbers):
        if i in invalid:
            continue
        v, s = vi[i], sei[i]
        if v is None and s is None:
            problems.append((number, Problem(str(path), label(i), "vi, sei", "needs vi or sei")))
        elif v is not None and s is not None and not math.isclose(v, s * s, rel_tol=1e-3):
            problems.append((number, Problem(str(path), label(i), "vi, sei", f"vi ({v}) and sei² ({s * s:.6g}) disagree")))
        elif seen.setdefault(ids[i], number) != number:
            problems.append((number, Problem(str(path), label(i), "study", f"duplicate study id; first used on row {seen[ids[i]]}")))
    for name, column in values.items():
        column += checked[name] if name in CSV_COLUMNS else map(_number_or_text, cells[name])
    return problems


@functools.cache
def _blank_cell(name: str) -> Any:
    """What a blank cell of ``CSV_COLUMNS[name]`` stands for: what a column the CSV lacks holds."""
    return _validators(name)[0].validate_python("")


def _number_or_text(value: str) -> float | str:
    """A moderator's cell: a number where it reads as one, else its text."""
    try:
        return float(value)
    except ValueError:
        return value
