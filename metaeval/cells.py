"""Reading one cell of an evidence table or row: missing, a finite number, a yes/no flag.

The same rules everywhere a table is read (harmonisation, model, engines, plots, report), for
a pandas DataFrame's cells (NaN, ``pd.NA``) and plain rows (None) alike.
"""

from __future__ import annotations

import math


def present(value) -> bool:
    """Whether a cell holds a value: not None, NaN, or pandas' NA/NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return False
    try:
        return not math.isnan(value)
    except (TypeError, ValueError):
        return True


def finite(value) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, or not finite."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def flag(value) -> bool | None:
    """A yes/no cell (bool, 0/1, or text "true"/"1"/"yes", any case); None when missing."""
    if not present(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)
