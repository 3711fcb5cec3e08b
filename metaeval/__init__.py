"""metaeval: Bayesian evidence synthesis for social and employment policy evaluations.

The public API follows the flow evidence → harmonise → model → fit → summarise → present:

>>> import metaeval
>>> evidence = metaeval.load_evidence()          # tidy pandas DataFrame, one row per estimate

Submodules are imported on first use, so ``import metaeval`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "load_evidence": "metaeval.harmonise",
    "validate": "metaeval.harmonise",
    "harmonise": "metaeval.harmonise",
    "read_csv": "metaeval.evidence",
    "InputError": "metaeval.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'metaeval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
