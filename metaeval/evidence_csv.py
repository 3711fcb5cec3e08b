"""Reading evidence from a metafor-style CSV (``study, yi, vi|sei`` + optional columns), column by column.

Each column of a block of rows is checked with one pydantic call (:data:`CSV_COLUMNS`: the cell rules and
their messages), so a million rows validate in seconds; every problem is collected as a
:class:`~metaeval.errors.Problem` naming file, row and field, and raised at once. The result is a
:class:`CsvTable` of the source's own figures (nothing converted yet: :mod:`metaeval.harmonise`).
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from metaeval.columns import Computed, Same, as_list
from metaeval.errors import InputError, Problem
from metaeval.evidence import MAX_CSV_BYTES, MAX_CSV_COLUMNS, regular_bytes, utf8
from metaeval.schema import DESIGN_LADDER

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
    raw = regular_bytes(path, MAX_CSV_BYTES)
    text = utf8(path, raw)
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
