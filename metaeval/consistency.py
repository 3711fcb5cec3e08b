"""Consistency checks of the source's figures: a CI contains its estimate, a p-value agrees with its CI, shares lie
between 0 and everyone, a participation effect is the ITT rescaled by take-up, a part does not exceed its whole, and
no two pooled records count the same people. A source inconsistency the data acknowledges is kept as such.

The checks read raw figures (and, for dependence, whether a record is pooled); :mod:`metaeval.harmonise` runs them
on every evidence table it makes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metaeval import effects
from metaeval.cells import present
from metaeval.errors import Problem
from metaeval.evidence_csv import CsvTable

BINARY = {"pp": 100.0, "share": 1.0}  # metric -> value of "everyone"
#: Estimands that compare two levels (groups, times, or a result and its target): their sign is a direction.
COMPARISONS = ("itt", "tot", "difference", "pre_post", "vs_target")


def derived_difference(rec: dict[str, Any]) -> tuple[float, str] | None:
    """The difference of the source's own two levels, with how it was formed; None where it has not both.

    Realised minus target for ``vs_target``, after minus before for ``pre_post``, else the first
    group minus the second. Used for the evidence table's ``difference`` column and for the
    direction of a figure the source gives no words for.
    """
    def printed(name: str) -> float | None:  # a figure as the source prints it (never an assumed one)
        value = rec.get(name)
        return float(value) if present(value) else None

    first, second = printed("mean_treatment"), printed("target" if rec.get("estimand") == "vs_target" else "mean_control")
    if first is None or second is None or rec.get("estimand") not in COMPARISONS:
        return None
    label = {"vs_target": "realised − target", "pre_post": "after − before"}.get(rec.get("estimand"), "mean_treatment − mean_control")
    return first - second, f"derived: {label} = {first:g} − {second:g}"


@dataclass(frozen=True)
class Finding:
    """The outcome of one consistency check on one record."""

    check: str
    severity: str  # "error" | "acknowledged"
    problem: Problem


def _half_unit(x: float) -> float:
    """Half a unit of the last printed decimal of ``x``: the rounding slack of a reported figure."""
    text = repr(float(x))
    if "e" in text:
        return 0.0
    decimals = text.split(".")[1]
    return 0.5 * 10 ** -(0 if decimals == "0" else len(decimals))


def _p_interval_from_ci(est: float, low: float, high: float, level: float) -> tuple[float, float]:
    """The range of two-sided p-values consistent with an estimate and CI as rounded in print."""
    z = effects.z_crit(level)
    h_e, h_w = _half_unit(est), _half_unit(low) + _half_unit(high)
    width = high - low
    se_lo, se_hi = max(width - h_w, 1e-12) / (2 * z), (width + h_w) / (2 * z)
    z_lo, z_hi = max(abs(est) - h_e, 0.0) / se_hi, (abs(est) + h_e) / se_lo
    return effects.p_from_z(z_hi), effects.p_from_z(z_lo)


def _checks_for_row(rec: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(check, field, message) for each inconsistency in one raw record."""
    out = []
    est, low, high, p = (rec.get(k) for k in ("estimate", "ci_low", "ci_high", "p_value"))
    level = rec.get("ci_level") if present(rec.get("ci_level")) else 0.95
    if present(est) and present(low) and present(high) and not (low <= est <= high):
        out.append(("ci_contains_estimate", "estimate", f"{est:g} lies outside its CI [{low:g}, {high:g}]"))
    elif present(est) and present(low) and present(high) and present(p) and high > low:
        p_lo, p_hi = _p_interval_from_ci(est, low, high, level)
        h_p = _half_unit(p)
        if p + h_p < p_lo or p - h_p > p_hi:
            out.append(("p_value_vs_ci", "p_value",
                        f"reported p = {p:g} but the estimate and CI imply p between {p_lo:.3g} and {p_hi:.3g}"))
    full = BINARY.get(rec.get("metric"))
    if full:
        for name in ("mean_treatment", "mean_control", "target"):
            v = rec.get(name)
            if present(v) and not 0 <= v <= full:
                out.append(("share_range", name, f"{v:g} is not a share between 0 and {full:g} ({rec['metric']})"))
        for name in ("estimate", "ci_low", "ci_high"):
            v = rec.get(name)
            if present(v) and not -full <= v <= full:
                out.append(("share_range", name, _not_a_share_difference(v, full)))
    direction, diff = rec.get("direction"), derived_difference(rec)
    printed = rec.get("estimate") if present(rec.get("estimate")) else (diff[0] if diff else None)
    if direction in ("increase", "decrease") and printed is not None and not (printed > 0 if direction == "increase" else printed < 0):
        out.append(("direction_vs_levels", "direction", f"says {direction} but the printed figures give {printed:+g}"))
    for whole_id in _ids(rec.get("part_of")):
        whole = by_id.get(whole_id)
        if full and whole is not None:
            for name in ("mean_treatment", "mean_control"):
                part_v, whole_v = rec.get(name), whole.get(name)
                if present(part_v) and present(whole_v) and part_v > whole_v + _half_unit(part_v) + _half_unit(whole_v):
                    out.append(("part_exceeds_whole", name, f"{part_v:g} exceeds {whole_v:g} in {whole_id!r}, which it is part of"))
    itt = by_id.get(f"{rec['project_id']}:{rec.get('tot_of')}") if rec.get("estimand") == "tot" else None
    if itt is not None and present(est) and present(itt.get("estimate")) and present(rec.get("take_up")):
        a = itt["estimate"]
        lo = (abs(a) - _half_unit(a)) / rec["take_up"]
        hi = (abs(a) + _half_unit(a)) / rec["take_up"]
        if math.copysign(1, est) != math.copysign(1, a) or not (lo - _half_unit(est) <= abs(est) <= hi + _half_unit(est)):
            out.append(("tot_vs_itt", "estimate",
                        f"participation effect {est:g} is not ITT {a:g} / take-up {rec['take_up']:.3f} = {a / rec['take_up']:.3g}"))
    return out


def _not_a_share_difference(v: float, full: float) -> str:
    return f"{v:g} is not a difference of shares between −{full:g} and {full:g}"


def _ids(cell) -> list[str]:
    """The estimate ids in a ``part_of`` cell ("a; b")."""
    return [i.strip() for i in cell.split(";") if i.strip()] if isinstance(cell, str) else []


def check_consistency(table) -> list[Finding]:
    """Run every consistency check on a harmonised table; acknowledged source inconsistencies are kept as such."""
    needed = ("estimate_id", "project_id", "file", "record", "acknowledged", "estimate", "ci_low", "ci_high",
              "ci_level", "p_value", "metric", "mean_treatment", "mean_control", "target", "estimand", "tot_of",
              "take_up", "poolable", "direction", "part_of", "shared_sample")
    return findings(table[[c for c in needed if c in table.columns]].to_dict("records"))


def findings(records: list[dict[str, Any]]) -> list[Finding]:
    """:func:`check_consistency` on the table's rows (:func:`metaeval.harmonise.evidence_records`)."""
    by_id = {r["estimate_id"]: r for r in records}
    out = []
    for rec in records:
        where = dict(file=rec.get("file") or "", record=rec.get("record") or rec["estimate_id"])
        acknowledged = rec.get("acknowledged") if isinstance(rec.get("acknowledged"), dict) else {}
        for check, fld, msg in _checks_for_row(rec, by_id):
            if check in acknowledged:
                out.append(Finding(check, "acknowledged", Problem(**where, field=fld, message=f"{msg} — {acknowledged[check]}")))
            else:
                out.append(Finding(check, "error", Problem(**where, field=fld, message=msg)))
        if rec.get("estimand") == "tot" and rec.get("poolable"):
            itt = by_id.get(f"{rec['project_id']}:{rec.get('tot_of')}")
            if itt is not None and itt.get("poolable"):
                out.append(Finding("itt_tot_both_poolable", "error", Problem(
                    **where, field="poolable", message=f"both this participation effect and its ITT {itt['estimate_id']!r} are poolable")))
        out += _dependence(rec, by_id, where)
    return out


def _dependence(rec: dict[str, Any], by_id: dict[str, dict[str, Any]], where: dict[str, str]) -> list[Finding]:
    """Errors where a pooled record shares people with another pooled record (data/README.md "Dependence").

    A part pooled beside its whole counts its people twice; two pooled records of one sample
    (``shared_sample``: rows of one status table) are dependent shares of the same people. The
    model has no covariance between estimates, so at most one of them may be pooled.
    """
    if not rec.get("poolable"):
        return []
    out = []
    for whole_id in _ids(rec.get("part_of")):
        whole = by_id.get(whole_id)
        if whole is not None and whole.get("poolable"):
            out.append(Finding("dependence", "error", Problem(**where, field="part_of", message=(
                f"is part of {whole_id!r} and both are pooled: the same people would count twice; "
                "leave one out (poolable: false) with the reason"))))
    sample = rec.get("shared_sample")
    if isinstance(sample, str) and sample:
        first = next(r for r in by_id.values() if r.get("project_id") == rec["project_id"]
                     and r.get("shared_sample") == sample and r.get("poolable"))
        if first["estimate_id"] != rec["estimate_id"]:
            out.append(Finding("dependence", "error", Problem(**where, field="shared_sample", message=(
                f"comes from the same sample ({sample!r}) as {first['estimate_id']!r} and both are pooled: "
                "shares of one sample are dependent; pool one of them and leave the others out with the reason"))))
    return out


def csv_findings(table: CsvTable, domains: dict[str, dict[str, Any]]) -> list[Finding]:
    """The consistency checks (:func:`_checks_for_row`) on a CSV's rows, column by column.

    Of them only the range of a difference of shares bears on a CSV, whose rows have no CI, p-value,
    levels, direction, parts or TOT; tests/test_validate.py holds this to :func:`findings` on the same rows.
    """
    bound = {name: BINARY.get(dom["metric"]) for name, dom in domains.items()}
    if not any(bound.values()):
        return []
    return [Finding("share_range", "error", Problem(str(table.path), table.record(i), "estimate", _not_a_share_difference(v, full)))
            for i, (name, v) in enumerate(zip(table.domain, table.yi)) if (full := bound[name]) and not -full <= v <= full]
