"""A table as named columns, without pandas: its rows as read-only mappings, its columns as plain lists.

A metafor-style CSV of a million rows is read, checked and harmonised column by column
(:func:`metaeval.evidence_csv.read_csv_table`, :func:`metaeval.harmonise.evidence_records`): a dict of
about 45 keys per row cost 2.3 KB a row, 3.7 GB for a million (bench/bench_csv.py). A column is a list,
a :class:`Same` (one value for every row) or a :class:`Computed` (each cell made from other columns when
it is read), so the rows of a million-row CSV cost their columns, not a million dicts.
``pandas.DataFrame(rows.lists())`` makes the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any


class Same(Sequence):
    """One value in every row."""

    __slots__ = ("value", "n")

    def __init__(self, value: Any, n: int):
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        return self.value

    def __iter__(self) -> Iterator:
        return itertools.repeat(self.value, self.n)

    def tolist(self) -> list:
        return [self.value] * self.n


class Computed(Sequence):
    """A cell made from the row's index when it is read (a label from other columns, a domain's field)."""

    __slots__ = ("cell", "n")

    def __init__(self, cell: Callable[[int], Any], n: int):
        self.cell, self.n = cell, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        return self.cell(i)

    def __iter__(self) -> Iterator:
        return map(self.cell, range(self.n))

    def tolist(self) -> list:
        return list(map(self.cell, range(self.n)))


def as_list(column: Sequence) -> list:
    """A column's cells as a list (the list itself where the column is one)."""
    return column if isinstance(column, list) else column.tolist()  # type: ignore[attr-defined]


class Row(Mapping):
    """One row of :class:`Rows`: a read-only mapping from column name to cell."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: dict[str, Sequence], i: int):
        self._columns, self._i = columns, i

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._i]

    def get(self, key: str, default: Any = None) -> Any:
        column = self._columns.get(key)
        return default if column is None else column[self._i]

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


class Rows(Sequence):
    """The rows of named columns of one length, as read-only mappings (:class:`Row`), in ``order``."""

    __slots__ = ("_columns", "_order")

    def __init__(self, columns: dict[str, Sequence], order: range | None = None):
        self._columns = columns
        self._order = order if order is not None else range(len(next(iter(columns.values()), ())))

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Rows(self._columns, self._order[i])
        return Row(self._columns, self._order[i])

    def __iter__(self) -> Iterator[Row]:
        return (Row(self._columns, i) for i in self._order)

    def names(self) -> list[str]:
        return list(self._columns)

    def column(self, name: str) -> list:
        """The cells of one column, in the rows' order."""
        cells = as_list(self._columns[name])
        return cells if self._order == range(len(cells)) else [cells[i] for i in self._order]

    def lists(self) -> dict[str, list]:
        """Every column as a list: what ``pandas.DataFrame`` takes."""
        return {name: self.column(name) for name in self._columns}


def column(rows: Sequence[Mapping[str, Any]], name: str) -> list:
    """One column of a table's rows: :class:`Rows` or a list of dicts (a row without the column: None)."""
    return rows.column(name) if isinstance(rows, Rows) else [row.get(name) for row in rows]
