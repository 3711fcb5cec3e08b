"""Harmonisation: each estimate on its domain's metric (``yi``, ``sei``), or a reason it can't be pooled.

Also :func:`load_evidence`, the table every later stage starts from (read, harmonised, and checked
by :mod:`metaeval.consistency`), and :func:`evidence_records`, its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaeval import effects
from metaeval.cells import present
from metaeval.columns import Computed, Rows, Same
from metaeval.consistency import BINARY, COMPARISONS, Finding, csv_findings, derived_difference, findings
from metaeval.errors import InputError, Problem
from metaeval.evidence import COUNT_COLUMNS, EvidenceBase, raw_records, read_evidence_base
from metaeval.evidence_csv import CsvTable, read_csv_table
from metaeval.schema import ROB_DOMAINS

CONTINUOUS = {"hours", "grade", "score", "count", "dkk", "dkk_1000", "md"}
NOT_AN_EFFECT = {
    "single_arm": "single-arm figure: no comparison group or baseline, so it is not an effect estimate",
}


class CannotPool(Exception):
    """Raised inside harmonisation with the reason a person reads in the evidence table."""


@dataclass
class _Row:
    """Access to one raw row where an assumption fills in what the source leaves empty.

    ``itt`` is the ITT row a participation (TOT) row rescales: the outcome's spread and group
    sizes are its, and standardise the TOT as they standardise the ITT.
    """

    data: dict[str, Any]
    itt: _Row | None = None

    def get(self, name: str) -> Any:
        value = self.data.get(name)
        if not present(value):
            value = (self.data.get("assumed") or {}).get(name)
        return value

    def has(self, *names: str) -> bool:
        return all(self.get(n) is not None for n in names)

    def spread(self, name: str) -> Any:
        """An SD or group size for standardising: the row's own, else (for a TOT) its ITT row's."""
        value = self.get(name)
        if value is None and self.itt is not None:
            value = self.itt.get(name)
        return value

    def printed(self, name: str) -> float | None:
        """A figure as the source prints it (never an assumed one)."""
        value = self.data.get(name)
        return float(value) if present(value) else None


def _stated_or_derived_direction(r: _Row) -> tuple[str | None, str]:
    """The record's direction in its own terms (before any flip) and where it comes from."""
    if r.get("direction") is not None:
        return r.get("direction"), "direction as the source states it"
    if r.get("estimand") not in COMPARISONS:
        return None, ""
    est = r.printed("estimate")
    if est is not None:
        return ("increase" if est > 0 else "decrease" if est < 0 else "none"), f"direction from the printed estimate ({est:g})"
    diff = derived_difference(r.data)
    if diff is None:
        return None, ""
    value, how = diff
    return ("increase" if value > 0 else "decrease" if value < 0 else "none"), f"direction from the levels ({how.removeprefix('derived: ')})"


# --- estimate and SE on the estimate's own metric -------------------------------------------------


def _own_effect(r: _Row) -> tuple[float, float, str]:
    """The effect and its SE in the record's own metric, with a note on how they were obtained."""
    metric, estimand = r.get("metric"), r.get("estimand")
    full = BINARY.get(metric)
    est, how = r.get("estimate"), "reported estimate"
    if est is None:
        if estimand == "vs_target" and r.has("mean_treatment", "target"):
            est, how = r.get("mean_treatment") - r.get("target"), "realised minus target"
        elif r.has("mean_treatment", "mean_control"):
            est, how = r.get("mean_treatment") - r.get("mean_control"), (
                "after minus before" if estimand == "pre_post" else "difference of group means"
            )
        else:
            raise CannotPool("no effect size: the source gives neither an estimate nor the two group levels")

    if r.has("se"):
        return est, r.get("se"), how + "; reported SE"
    if r.has("ci_low", "ci_high"):
        return est, effects.se_from_ci(r.get("ci_low"), r.get("ci_high"), r.get("ci_level") or 0.95), how + "; SE from CI"
    if r.has("p_value") and 0 < r.get("p_value") < 1 and est != 0:
        return est, effects.se_from_p(est, r.get("p_value")), how + "; SE from p-value"
    for bound in ("ci_low", "ci_high"):
        if r.has(bound) and r.get(bound) != est:
            return est, effects.se_from_bound(est, r.get(bound), r.get("ci_level") or 0.95), how + f"; SE from {bound} only"
    if full and estimand == "pre_post" and r.has("share_improved", "share_unchanged", "n_treatment"):
        up, same = r.get("share_improved") / 100, r.get("share_unchanged") / 100
        _, se = effects.paired_risk_difference(up, max(0.0, 1 - up - same), r.get("n_treatment"))
        return est, se * full, how + "; paired SE from the discordant shares"
    if full and estimand == "vs_target" and r.has("mean_treatment", "n_treatment"):
        p = r.get("mean_treatment") / full
        return est, math.sqrt(p * (1 - p) / r.get("n_treatment")) * full, how + "; binomial SE of the realised share (target fixed)"
    if full and r.has("mean_treatment", "mean_control", "n_treatment", "n_control"):
        p1, n1, p2, n2 = r.get("mean_treatment") / full, r.get("n_treatment"), r.get("mean_control") / full, r.get("n_control")
        if {p1, p2} & {0.0, 1.0}:
            se = effects.agresti_caffo_se(p1, n1, p2, n2)
            return est, se * full, how + "; SE by Agresti–Caffo (a group at 0% or 100%: one success and one failure added to each group)"
        _, se = effects.risk_difference(p1, n1, p2, n2)
        return est, se * full, how + "; binomial SE from group shares and sizes"
    if metric in CONTINUOUS and r.has("sd_treatment", "sd_control", "n_treatment", "n_control"):
        _, se = effects.mean_difference(
            0, r.get("sd_treatment"), r.get("n_treatment"), 0, r.get("sd_control"), r.get("n_control")
        )
        return est, se, how + "; SE from group SDs and sizes"
    missing = "group sizes" if not r.has("n_treatment") else "CI, p-value or group spread"
    raise CannotPool(f"no standard error: the source reports no {missing} for this figure")


# --- onto the domain's metric ---------------------------------------------------------------------


def _to_domain(r: _Row, est: float, se: float, target: str) -> tuple[float, float, str]:
    metric = r.get("metric")
    if metric == target:
        return est, se, ""
    if metric in BINARY and target in BINARY:
        f = BINARY[target] / BINARY[metric]
        return est * f, se * f, f"; {metric} → {target}"
    if metric == "dkk" and target == "dkk_1000":
        return est / 1000, se / 1000, "; DKK → 1,000 DKK"
    if target == "smd":
        # Reported group SDs standardise any mean difference, percentages of time included (a TOT
        # with its ITT row's SDs, so that the two differ on the SMD scale by the take-up alone);
        # a binary share without SDs goes through the log odds ratio (Chinn 2000).
        spread = [r.spread(k) for k in ("sd_treatment", "n_treatment", "sd_control", "n_control")]
        if all(v is not None for v in spread) and metric != "log_or":
            d, sd = effects.smd_from_effect(est, se, *spread)
            whose = "" if r.has("sd_treatment", "sd_control", "n_treatment", "n_control") else " (the SDs and sizes of its ITT row)"
            return d, sd, f"; SMD = effect / pooled SD{whose} × Hedges' J"
        if r.get("estimand") == "tot" and metric in BINARY:
            raise CannotPool("a participation effect on a share has no group shares of its own to convert through the "
                             "log odds ratio, and its ITT row gives no SDs")
        if metric in BINARY or metric == "log_or":
            lor, lse, note = _log_or(r, est, se)
            d, sd = effects.log_or_to_smd(lor, lse)
            return d, sd, f"; SMD from the log odds ratio{note} (Chinn 2000)"
        raise CannotPool(f"cannot standardise: the source gives no group SDs and sizes for this {metric} outcome")
    if target == "log_or" and metric in BINARY:
        lor, lse, note = _log_or(r, est, se)
        return lor, lse, f"; log odds ratio from group shares{note}"
    raise CannotPool(f"a {metric} figure cannot be converted to this domain's metric ({target})")


def _log_or(r: _Row, est: float, se: float) -> tuple[float, float, str]:
    """The log odds ratio, its SE, and a note on any continuity correction."""
    if r.get("metric") == "log_or":
        return est, se, ""
    full = BINARY[r.get("metric")]
    if r.get("estimand") == "vs_target" and r.has("mean_treatment", "target", "n_treatment"):
        p, t, n = r.get("mean_treatment") / full, r.get("target") / full, r.get("n_treatment")
        if not (0 < p < 1 and 0 < t < 1):
            raise CannotPool("a share of 0 or 100% has no finite log odds")
        return math.log(p / (1 - p)) - math.log(t / (1 - t)), math.sqrt(1 / (n * p) + 1 / (n * (1 - p))), ""
    if not r.has("mean_treatment", "mean_control", "n_treatment", "n_control"):
        raise CannotPool("cannot convert a share difference to an SMD without both group shares and sizes")
    p1, p2 = r.get("mean_treatment") / full, r.get("mean_control") / full
    # an empty cell (a share of 0 or 100%): 0.5 added to every cell (Cochrane Handbook 10.4.4.2)
    continuity = 0.5 if {p1, p2} & {0.0, 1.0} else 0.0
    try:
        lor, lse = effects.log_odds_ratio(p1, r.get("n_treatment"), p2, r.get("n_control"), continuity=continuity)
    except ValueError as err:
        raise CannotPool(str(err)) from None
    return lor, lse, " (0.5 added to each cell: an empty cell)" if continuity else ""


# --- the table ------------------------------------------------------------------------------------


_SIGNIFICANCE = {True: "significant", False: "not significant", None: "significance not reported"}


def _harmonise_row(r: _Row, dom: dict[str, Any], estimand_wanted: str = "itt") -> dict[str, Any]:
    """One record on its domain's metric, as a direction-only finding, or with the reason it is left out.

    The rule for figures without a standard error (data/README.md "Findings without a standard
    error"): any comparison whose direction is known, from the source's words or from its two
    printed levels, enters through the censored direction-only likelihood, whether that direction
    is an increase, a decrease or none, and with the significance the source reports, or none.
    """
    out: dict[str, Any] = dict(yi=math.nan, sei=math.nan, poolable=False, direction_only=False,
                               exclusion_reason=None, harmonisation=None)
    # The direction as counted on the domain's scale: flipped, like yi, where the outcome's good direction is
    # the domain's opposite. ``direction`` itself stays as the source reported it.
    flip = (r.get("beneficial") or dom["beneficial"]) != dom["beneficial"]

    def in_domain(direction: str | None) -> str | None:
        return {"increase": "decrease", "decrease": "increase"}.get(direction, direction) if flip else direction

    out["direction_counted"] = in_domain(r.get("direction"))
    estimand = r.get("estimand")

    def direction_only(why_no_se: str) -> dict[str, Any]:
        direction, whence = _stated_or_derived_direction(r)
        if direction is None:
            raise CannotPool(f"{why_no_se}, and no direction is reported" if why_no_se else "no figure and no direction reported")
        note = f"direction only ({whence}; {_SIGNIFICANCE[r.get('significant')]})"
        out.update(poolable=True, direction_only=True, direction_counted=in_domain(direction),
                   harmonisation=note + (f"; {why_no_se}" if why_no_se else ""))
        return out

    try:
        if r.data.get("curated_poolable") is False:
            raise CannotPool(r.get("curated_reason"))
        critical = [d for d in ROB_DOMAINS if r.get(f"rob_{d}") == "critical"]
        if critical:
            raise CannotPool(f"risk of bias critical ({', '.join(critical)})" + (f" — {r.get('rob_estimate')}" if r.get("rob_estimate") else ""))
        if r.get("outcome_type") == "process":
            raise CannotPool("process measure: describes how the service was delivered, not an outcome for people")
        if estimand == "tot" and estimand_wanted != "tot":
            raise CannotPool(
                f"participation (Bloom) effect: the ITT estimate {r.get('tot_of')!r} rescaled by take-up; "
                "the ITT is pooled, so pooling this too would count the same evidence twice"
            )
        if estimand in NOT_AN_EFFECT:
            raise CannotPool(NOT_AN_EFFECT[estimand])
        if not any(r.has(f) for f in ("estimate", "mean_treatment", "se", "share_improved")):
            return direction_only("")
        try:
            est, se, how = _own_effect(r)
        except CannotPool as why:  # levels or an estimate, but no standard error: the figure's direction still counts
            return direction_only(str(why))
        yi, sei, conv = _to_domain(r, est, se, dom["metric"])
        if flip:
            yi, conv = -yi, conv + "; sign flipped (lower is better for this outcome)"
        if not (math.isfinite(yi) and math.isfinite(sei) and sei > 0):
            raise CannotPool("the conversion gave no finite estimate with a positive SE")
        out.update(yi=yi, sei=sei, poolable=True, harmonisation=how + conv)
    except CannotPool as why:
        out["exclusion_reason"] = str(why)
    except ValueError as err:  # a conversion refused its input
        out["exclusion_reason"] = f"cannot convert: {err}"
    return out


def on_domain_metric(records: list[dict[str, Any]], domains: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """A CSV's rows with their metric: a CSV's yi is on its domain's metric, whether or not a row says so."""
    return [rec if present(rec.get("metric")) else {**rec, "metric": domains[rec["domain"]]["metric"]} for rec in records]


@dataclass(frozen=True)
class DomainDefaults:
    """What a CSV's domains are where neither its columns nor a domains file say (the command line's
    ``--beneficial``, ``--scale``, ``--mid``)."""

    beneficial: str | None = None
    scale: float | None = None
    mid: float | None = None


#: The domain fields a CSV may describe, in the order the messages name them.
_DESCRIBED = ("beneficial", "scale", "mid", "metric", "label")


def derived_scale(yi: list[float], sei: list[float]) -> float:
    """A domain's scale from its estimates: the root-mean-square size of an estimate with its noise,
    sqrt(mean(yi^2 + sei^2)).

    The default priors are in units of a domain's scale (``mu ~ Normal(0, 1 x scale)``, ``tau ~
    HalfNormal(0.4 x scale)``): this makes them as wide as the effects a study reports, measured from
    no effect, so they do not pull estimates towards 0 however the metric is scaled (eight schools:
    18.4, the BCG log risk ratios: 1.07). It reads the data only through the size of what is
    reported, never its sign.
    """
    values = [abs(x) for pair in zip(yi, sei) for x in pair]
    top = max(values)  # squares of 1e300 (or 1e-300) overflow (underflow): sum the squares relative to the largest
    return top * math.sqrt(sum((x / top) ** 2 for x in values) / len(yi)) if top > 0 else 0.0


def csv_domains(domain: Sequence[str], given: Mapping[str, Sequence], estimate: Sequence[float], se: Sequence[float],
                record: Callable[[int], str], path: Path | str, domains_file: Path | str | None = None,
                defaults: DomainDefaults | None = None) -> dict[str, dict[str, Any]]:
    """The domains of a CSV's rows, each described by (first that says) its rows' columns
    (``beneficial``, ``scale``, ``mid``, ``metric``, ``label``: constant within a domain), the
    domains file (the schema of ``data/domains.yaml``), or the command-line defaults.

    The rows are given as columns: each row's ``domain``; ``given``, the values of the describing
    columns the CSV has (None where a row leaves one blank); ``estimate`` and ``se``; and ``record``,
    how a message names row ``i``. What none of them says is assumed and written down in the domain's
    ``assumed`` (field -> a sentence every output shows): an increase is beneficial, and the scale is
    :func:`derived_scale`. A column that disagrees with itself within a domain or with the domains
    file is an :class:`InputError` naming the rows.
    """
    from metaeval.evidence import read_domains

    defaults = defaults or DomainDefaults()
    described = {d.id: d for d in read_domains(Path(domains_file))} if domains_file is not None else {}
    members: dict[str, list[int]] = {}
    for i, name in enumerate(domain):
        members.setdefault(name, []).append(i)
    problems: list[Problem] = []
    out: dict[str, dict[str, Any]] = {}
    for name, rows in members.items():
        first: dict[str, tuple[Any, int]] = {}  # field -> its first value in the domain, and that row
        clashes: list[tuple[int, int, Problem]] = []  # (row, field's place): a row's clashes in the order of _DESCRIBED
        for place, field_name in enumerate(_DESCRIBED):
            column = given.get(field_name)
            for i in rows if column is not None else ():
                value = column[i]
                if value is None:
                    continue
                value0, i0 = first.setdefault(field_name, (value, i))
                if value0 != value:
                    clashes.append((i, place, Problem(str(path), record(i), field_name,
                                                      f"domain {name!r} is given {field_name} {value0!r} on {record(i0)}; a domain's "
                                                      f"{field_name} must be the same on every row, got {value!r}")))
        problems += [p for *_, p in sorted(clashes, key=lambda c: c[:2])]
        given_first = sorted(first.items(), key=lambda item: (item[1][1], _DESCRIBED.index(item[0])))  # in the order the rows give them
        sidecar = described.get(name)
        if sidecar is not None:
            for field_name, (value, i) in given_first:
                if getattr(sidecar, field_name) != value:
                    problems.append(Problem(str(path), record(i), field_name,
                                            f"{value!r} contradicts the domains file {domains_file} ({field_name}: {getattr(sidecar, field_name)!r})"))
        dom: dict[str, Any] = {"id": name, "assumed": {}}
        for field_name in _DESCRIBED:
            if field_name in first:
                dom[field_name] = first[field_name][0]
            elif sidecar is not None:
                dom[field_name] = getattr(sidecar, field_name)
            else:
                dom[field_name] = getattr(defaults, field_name, None)
        dom["label"] = dom["label"] or name
        dom["metric"] = dom["metric"] or "yi"
        if dom["beneficial"] is None:
            dom["beneficial"] = "increase"
            dom["assumed"]["beneficial"] = ("direction assumed: an increase is beneficial (no `beneficial` column, domains "
                                            "file or --beneficial says which direction helps)")
        if dom["scale"] is None:
            dom["scale"] = derived_scale([estimate[i] for i in rows], [se[i] for i in rows])
            dom["assumed"]["scale"] = (f"scale derived from the data: {dom['scale']:.3g}, the root-mean-square of yi and sei "
                                       "(the default priors are in units of the scale; give a `scale` column, domains file or --scale)")
        if dom["mid"] is None:
            dom["mid"] = math.nan
        out[name] = dom
    if problems:
        raise InputError(problems)
    return out


ESTIMANDS = ("itt", "tot")


def harmonise(raw, domains: dict[str, dict[str, Any]] | None = None, *, estimand: str = "itt"):
    """Add ``yi, sei, vi, poolable, direction_only, exclusion_reason``, the derived ``difference`` and the domain metadata columns.

    ``domains`` maps domain id to ``{label, metric, beneficial, mid, scale}`` (and ``assumed``: field ->
    a sentence saying it was assumed rather than given); without it, the domains are described
    as a CSV's are, from the table's own columns (:func:`csv_domains`).
    ``estimand="tot"`` (participation, a sensitivity analysis): each participation (Bloom)
    effect is harmonised instead of being left out (standardised with its ITT row's SDs and
    sizes where it has none of its own), and the ITT it rescales is left out, whether or not
    the TOT can be pooled: an outcome is analysed on the participation estimand or not at all,
    never with its ITT standing in. Estimates without a TOT stay as they are.
    """
    import pandas as pd

    records = raw.to_dict("records")
    if domains is None:
        given = [rec.get("domain_given") or {} for rec in records]
        domains = csv_domains([rec["domain"] for rec in records], {f: [g.get(f) for g in given] for f in _DESCRIBED},
                              [rec["estimate"] for rec in records], [rec["se"] for rec in records],
                              lambda i: records[i]["record"], "evidence table")
        records = on_domain_metric(records, domains)
        raw = raw.assign(metric=[r["metric"] for r in records])
    derived = pd.DataFrame(_harmonised(records, domains, estimand))
    raw = raw.drop(columns=[c for c in derived.columns if c in raw.columns]).reset_index(drop=True)
    return pd.concat([raw, derived], axis=1)


def _harmonised(records: list[dict[str, Any]], domains: dict[str, dict[str, Any]], estimand: str) -> list[dict[str, Any]]:
    """The columns :func:`harmonise` adds, one dict per raw record (same order)."""
    if estimand not in ESTIMANDS:
        raise ValueError(f"estimand must be one of {', '.join(ESTIMANDS)}, got {estimand!r}")
    position = {rec.get("estimate_id"): i for i, rec in enumerate(records)}

    def itt_of(rec: dict[str, Any]) -> int | None:
        return position.get(f"{rec['project_id']}:{rec['tot_of']}") if rec.get("estimand") == "tot" and rec.get("tot_of") else None

    rows = []
    for rec in records:
        dom = domains[rec["domain"]]
        i = itt_of(rec)
        row = _Row(rec, itt=_Row(records[i]) if i is not None else None)
        rows.append({**_harmonise_row(row, dom, estimand), **{f"domain_{k}": dom[k] for k in ("label", "metric", "beneficial", "mid", "scale")},
                     "domain_assumed": dict(dom.get("assumed") or {})})
    if estimand == "tot":
        # An outcome with a participation effect is analysed on that estimand or not at all: its ITT
        # never stands in for a TOT that cannot be pooled.
        for rec, row in zip(records, rows):
            i = itt_of(rec)
            if i is None or not rows[i]["poolable"]:
                continue
            instead = ("its participation (Bloom) effect {tot!r} is pooled in its place" if row["poolable"] else
                       "its participation (Bloom) effect {tot!r} cannot be pooled ({why}), and the ITT does not stand in for it")
            rows[i].update(poolable=False, direction_only=False, yi=math.nan, sei=math.nan, exclusion_reason=(
                "ITT left out of the participation analysis (estimand = tot): "
                + instead.format(tot=rec.get("estimate_id"), why=row["exclusion_reason"])))
    for rec, row in zip(records, rows):
        row["vi"] = row["sei"] * row["sei"]
        row["difference"], row["difference_basis"] = derived_difference(rec) or (None, None)
    return rows


def _domain_dicts(base: EvidenceBase) -> dict[str, dict[str, Any]]:
    return {d.id: d.model_dump() for d in base.domains}


#: The evidence table's leading columns (``metaeval evidence``). ``difference`` is derived by metaeval
#: from the source's two levels (``difference_basis`` says how); ``estimate`` is the source's own figure.
COLUMNS = [
    "project_id", "design", "outcome", "domain", "population", "estimand", "metric", "estimate",
    "difference", "difference_basis", "mean_treatment", "sd_treatment", "n_treatment", "mean_control",
    "sd_control", "n_control", "se", "ci_low", "ci_high", "p_value", "direction", "significant",
    "direction_counted", "risk_of_bias", "yi", "sei", "poolable", "exclusion_reason", "source",
]


def load_evidence(data_dir: Path | str | None = None, *, csv: Path | str | None = None, domains: Path | str | None = None,
                  defaults: DomainDefaults | None = None, estimand: str = "itt"):
    """The harmonised evidence table: one row per estimate, ``yi``/``sei`` on each domain's metric.

    ``estimand="tot"`` pools participation (Bloom) effects in place of their ITTs (see
    :func:`harmonise`); the default, ``"itt"``, is the main analysis.

    Reads the bundled evidence base (or ``data_dir``), or a metafor-style CSV whose domains
    are described by its columns, a ``domains`` file and ``defaults`` (:func:`csv_domains`);
    raises :class:`~metaeval.errors.InputError` listing every problem when the input is
    invalid or inconsistent.
    """
    return evidence_frame(evidence_records(data_dir, csv=csv, domains=domains, defaults=defaults, estimand=estimand))


def evidence_records(data_dir: Path | str | None = None, *, csv: Path | str | None = None, domains: Path | str | None = None,
                     defaults: DomainDefaults | None = None, estimand: str = "itt") -> Sequence[Mapping[str, Any]]:
    """The rows of :func:`load_evidence`, read, harmonised and checked without pandas (so ``metaeval fit
    --engine exact`` does not import it); :func:`evidence_frame` makes the table.

    An evidence directory gives a list of dicts; a CSV gives :class:`~metaeval.columns.Rows`, read-only
    mappings over its columns (a million rows cost their columns, not a million dicts).
    """
    return checked_evidence(data_dir, csv=csv, domains=domains, defaults=defaults, estimand=estimand)[0]


def checked_evidence(data_dir: Path | str | None, *, csv: Path | str | None, domains: Path | str | None,
                     defaults: DomainDefaults | None, estimand: str = "itt") -> tuple[Sequence[Mapping[str, Any]], list[Finding]]:
    """:func:`evidence_records`, and the findings of the consistency checks (run once; errors are raised)."""
    if estimand not in ESTIMANDS:
        raise ValueError(f"estimand must be one of {', '.join(ESTIMANDS)}, got {estimand!r}")
    if csv is None and (domains is not None or (defaults is not None and defaults != DomainDefaults())):
        raise InputError(Problem(str(data_dir or "data/"), "", "--domains, --beneficial, --scale, --mid",
                                 "describe the domains of a --csv; an evidence directory describes its own in domains.yaml"))
    records: Sequence[Mapping[str, Any]]
    if csv is not None:
        table = read_csv_table(csv)
        described = csv_domains(table.domain, table.given, table.yi, table.sei, table.record, csv, domains, defaults)
        records, found = _csv_rows(table, described), csv_findings(table, described)
    else:
        base = read_evidence_base(data_dir)
        raw, described = raw_records(base), _domain_dicts(base)
        records = [{**rec, **row} for rec, row in zip(raw, _harmonised(raw, described, estimand))]
        for rec in records:
            for col in COLUMNS:
                rec.setdefault(col, None)
        found = findings(records)
    errors = [f.problem for f in found if f.severity == "error"]
    if errors:
        raise InputError(errors)
    return records, found


def _csv_rows(table: CsvTable, domains: dict[str, dict[str, Any]]) -> Rows:
    """A CSV's evidence rows, harmonised column by column.

    A CSV row is a reported estimate with its SE on its domain's metric (its ``metric``, where it has one,
    is its domain's: :func:`csv_domains`), with no direction, design-bias judgement, TOT or level of its
    own, so :func:`_harmonise_row` leaves it as it is, under either estimand: poolable, ``yi`` and ``sei``
    as given. tests/test_exact_cli.py holds these columns to the row-by-row harmonisation of the same CSV.
    """
    n, domain = len(table), table.domain

    def of_domain(key: str) -> Computed:
        return Computed(lambda i: domains[domain[i]][key], n)

    columns: dict[str, Sequence] = {
        **table.raw_columns(), "metric": of_domain("metric"),
        "yi": table.yi, "sei": table.sei, "poolable": Same(True, n), "direction_only": Same(False, n), "exclusion_reason": Same(None, n),
        "harmonisation": Same("reported estimate; reported SE", n), "direction_counted": Same(None, n),
        **{f"domain_{k}": of_domain(k) for k in ("label", "metric", "beneficial", "mid", "scale", "assumed")},
        "vi": [s * s for s in table.sei], "difference": Same(None, n), "difference_basis": Same(None, n),
    }
    return Rows({**columns, **{c: Same(None, n) for c in COLUMNS if c not in columns}})


def evidence_frame(records: Sequence[Mapping[str, Any]]):
    """The evidence table from :func:`evidence_records`: identifying and reported columns first."""
    import pandas as pd

    table = pd.DataFrame(records.lists() if isinstance(records, Rows) else records)
    for col in COUNT_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype("Int64")
    first = ["estimate_id", *COLUMNS]
    return table[first + [c for c in table.columns if c not in first]]


#: What a model reads of the evidence (``metaeval.model.prepare``); :func:`evidence_digest` hashes these columns.
EVIDENCE_COLUMNS = ("estimate_id", "project_id", "domain", "design", "yi", "sei", "poolable", "exclusion_reason", "direction_only",
                    "direction_counted", "significant", "sig_level", "domain_label", "domain_metric", "domain_beneficial", "domain_mid", "domain_scale",
                    "benefit_basis", *(f"rob_{d}" for d in ROB_DOMAINS))


def evidence_digest(evidence) -> str:
    """SHA-256 of the evidence as a model reads it: the columns in ``EVIDENCE_COLUMNS``, rows by estimate id.

    ``evidence`` is the table (:func:`load_evidence`) or its rows (:func:`evidence_records`);
    both give the same digest. Independent of the model spec, of row order and of where the
    files live (paths, quotes and other text a model does not read are left out).
    """
    import hashlib
    import json

    def plain(v):
        kind = type(v)
        if kind is str or kind is int or kind is bool:  # most cells, at once
            return v
        if kind is float:
            return v if math.isfinite(v) else None
        if not present(v):
            return None
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v if isinstance(v, (bool, int, float, str)) else str(v)

    if hasattr(evidence, "columns"):
        columns = [c for c in EVIDENCE_COLUMNS if c in evidence.columns]
        rows = evidence[columns].itertuples(index=False, name=None)
    elif isinstance(evidence, Rows):  # a CSV's rows, read a column at a time: a 100,000-row digest 0.59 -> 0.33 s, the same
        names = set(evidence.names())
        columns = [c for c in EVIDENCE_COLUMNS if c in names] if len(evidence) else []
        rows = zip(*(evidence.column(c) for c in columns))
    else:
        columns = [c for c in EVIDENCE_COLUMNS if any(c in rec for rec in evidence)]
        rows = ([rec.get(c) for c in columns] for rec in evidence)
    rows = sorted(([plain(v) for v in row] for row in rows), key=lambda r: str(r[0]))
    return hashlib.sha256(json.dumps({"columns": columns, "rows": rows}, sort_keys=True).encode()).hexdigest()


