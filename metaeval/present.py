"""Presenting tables: terminal text, CSV and JSON, written so that what a file says is what it holds."""

from __future__ import annotations

import json
import math
from typing import IO, Any

_TERMINAL_COLUMNS = ["estimate_id", "design", "domain", "estimand", "metric", "estimate", "difference", "direction", "yi", "sei", "poolable",
                     "exclusion_reason"]


def plain(value: Any) -> Any:
    """A JSON-ready value: NaN → None, numpy scalars → Python, containers recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(obj: Any, sort_keys: bool = True) -> str:
    """Deterministic JSON: sorted keys (unless told to keep order), no NaN (null instead)."""
    return json.dumps(plain(obj), sort_keys=sort_keys, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_table(table, fmt: str, stream: IO[str], columns: str | list[str] | None = "core") -> None:
    """Write a DataFrame as an aligned text table, CSV (formula-safe) or JSON records."""
    from metaeval.harmonise import COLUMNS

    if columns == "core":
        columns = ["estimate_id", *COLUMNS]
    if columns is not None:
        table = table[[c for c in columns if c in table.columns]]
    if fmt == "json":
        stream.write(to_json(table.to_dict("records"), sort_keys=False))
    elif fmt == "csv":
        from metaeval.files import safe_csv

        stream.write(safe_csv(table))
    else:
        view = table[[c for c in _TERMINAL_COLUMNS if c in table.columns]].copy()
        if "exclusion_reason" in view:
            view["exclusion_reason"] = view["exclusion_reason"].map(
                lambda s: "" if not isinstance(s, str) else s if len(s) < 60 else s[:57] + "...")
        stream.write(view.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="") + "\n")
