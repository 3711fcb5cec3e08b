"""Errors a user can act on: each names the file, the record, the field and what was expected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input."""

    file: str
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ", ".join(p for p in (f"record {self.record}" if self.record else "", f"field {self.field}" if self.field else "") if p)
        return f"{self.file}: {where + ': ' if where else ''}{self.message}"


class InputError(Exception):
    """Bad input: the CLI prints each problem on its own line and exits with status 2."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SamplingFailed(RuntimeError):
    """The sampler itself failed (not bad input): no result is written; the CLI says so and exits 1."""


class ClusterFailed(RuntimeError):
    """The Dask cluster stopped doing the work (no workers left): the CLI says what finished and exits 1."""
