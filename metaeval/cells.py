"""Reading one cell of an evidence table or row: missing, a finite number, text, a yes/no flag.

The same rules everywhere a table is read (harmonisation, model, engines, plots, report), for
a pandas DataFrame's cells (NaN, ``pd.NA``) and plain rows (None) alike.
"""

from __future__ import annotations

import math


def present(value) -> bool:
    """Whether a cell holds a value: not None, NaN, or pandas' NA/NaT."""
    if isinstance(value, str):  # most cells; math.isnan's TypeError for them cost a microsecond each
        return True
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



def cell_text(value) -> str:
    """A cell as text, stripped; "" when it is missing."""
    return str(value).strip() if present(value) else ""


_YES, _NO = ("true", "yes", "1"), ("false", "no", "0", "")


def flag(value) -> bool | None:
    """A yes/no cell: a bool, 0 or 1, or the text true/false, yes/no, 1/0 (any case); None when missing.

    Anything else is not a yes or a no: a ``ValueError`` says so rather than guessing.
    """
    if not present(value):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _YES or text in _NO:
            return text in _YES
    elif type(value).__name__ in ("bool", "bool_") or value in (0, 1):
        return bool(value)
    raise ValueError(f"expected yes or no (true/false, 1/0), got {value!r}")
