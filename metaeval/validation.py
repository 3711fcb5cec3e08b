"""``metaeval validate``: an evidence base read, harmonised and checked, and what it holds (:class:`ValidationReport`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaeval.columns import column
from metaeval.errors import Problem
from metaeval.harmonise import DomainDefaults, checked_evidence


@dataclass
class ValidationReport:
    """What `metaeval validate` prints: counts, and the source inconsistencies acknowledged in the data."""

    source: str
    n_projects: int
    n_estimates: int
    n_poolable: int
    n_direction_only: int
    by_domain: dict[str, int]
    acknowledged: list[Problem] = field(default_factory=list)
    assumed: dict[str, list[str]] = field(default_factory=dict)  # domain -> what was assumed rather than given

    def __str__(self) -> str:
        lines = [
            f"{self.source}: valid — {self.n_projects} projects, {self.n_estimates} estimates "
            f"({self.n_poolable} poolable with an SE, {self.n_direction_only} direction-only, "
            f"{self.n_estimates - self.n_poolable - self.n_direction_only} not poolable, each with its reason)",
            "poolable estimates per domain: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_domain.items())),
        ]
        if self.acknowledged:
            lines.append("inconsistencies in the sources, acknowledged in the data:")
            lines += [f"  {p}" for p in self.acknowledged]
        for domain, sentences in sorted(self.assumed.items()):
            lines += [f"domain {domain}: {s}" for s in sentences]
        return "\n".join(lines)


def validate(data_dir: Path | str | None = None, *, csv: Path | str | None = None, domains: Path | str | None = None,
             defaults: DomainDefaults | None = None) -> ValidationReport:
    """Validate an evidence base (schema, cross-file and consistency checks); raises InputError on problems."""
    records, findings = checked_evidence(data_dir, csv=csv, domains=domains, defaults=defaults)
    direction_only = column(records, "direction_only")
    numeric = Counter(d for d, pooled, only in zip(column(records, "domain"), column(records, "poolable"), direction_only)
                      if pooled and not only)
    return ValidationReport(
        source=str(csv) if csv is not None else str(Path(data_dir) if data_dir else "bundled evidence (data/)"),
        n_projects=len(set(column(records, "project_id"))),
        n_estimates=len(records),
        n_poolable=sum(numeric.values()),
        n_direction_only=sum(map(bool, direction_only)),
        by_domain=dict(sorted(numeric.items())),
        acknowledged=[f.problem for f in findings if f.severity == "acknowledged"],
        assumed=domain_assumptions(records),
    )


def domain_assumptions(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per domain, the sentences saying what was assumed rather than given (:func:`metaeval.harmonise.csv_domains`); only domains with some.

    ``records``: :func:`metaeval.harmonise.evidence_records`' rows (a domain's are alike: its first row is read).
    """
    first: dict[str, int] = {}
    for i, name in enumerate(column(records, "domain")):
        first.setdefault(str(name), i)
    out: dict[str, list[str]] = {}
    for name, i in first.items():
        assumed = records[i].get("domain_assumed")
        if isinstance(assumed, dict) and assumed:
            out[name] = list(assumed.values())
    return out
