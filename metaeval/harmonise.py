"""Harmonisation: each estimate on its domain's metric (``yi``, ``sei``), or a reason it can't be pooled.

Also the consistency checks of the evidence (a CI contains its estimate, a p-value
agrees with its CI, participation effects are the ITT rescaled by take-up, ...),
and :func:`load_evidence`, the table every later stage starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaeval import effects
from metaeval.cells import present
from metaeval.columns import Computed, Rows, Same
from metaeval.errors import InputError, Problem
from metaeval.evidence import COUNT_COLUMNS, CsvTable, EvidenceBase, raw_records, read_csv_table, read_evidence_base
from metaeval.schema import ROB_DOMAINS

BINARY = {"pp": 100.0, "share": 1.0}  # metric -> value of "everyone"
CONTINUOUS = {"hours", "grade", "score", "count", "dkk", "dkk_1000", "md"}
NOT_AN_EFFECT = {
    "single_arm": "single-arm figure: no comparison group or baseline, so it is not an effect estimate",
}
#: Estimands that compare two levels (groups, times, or a result and its target): their sign is a direction.
COMPARISONS = ("itt", "tot", "difference", "pre_post", "vs_target")


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


def derived_difference(rec: dict[str, Any]) -> tuple[float, str] | None:
    """The difference of the source's own two levels, with how it was formed; None where it has not both.

    Realised minus target for ``vs_target``, after minus before for ``pre_post``, else the first
    group minus the second. Used for the evidence table's ``difference`` column and for the
    direction of a figure the source gives no words for.
    """
    r = _Row(rec)
    first, second = r.printed("mean_treatment"), r.printed("target" if rec.get("estimand") == "vs_target" else "mean_control")
    if first is None or second is None or rec.get("estimand") not in COMPARISONS:
        return None
    label = {"vs_target": "realised − target", "pre_post": "after − before"}.get(rec.get("estimand"), "mean_treatment − mean_control")
    return first - second, f"derived: {label} = {first:g} − {second:g}"


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
    return _checked(data_dir, csv=csv, domains=domains, defaults=defaults, estimand=estimand)[0]


def _checked(data_dir: Path | str | None, *, csv: Path | str | None, domains: Path | str | None, defaults: DomainDefaults | None,
             estimand: str = "itt") -> tuple[Sequence[Mapping[str, Any]], list[Finding]]:
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
        records, findings = _csv_rows(table, described), _csv_findings(table, described)
    else:
        base = read_evidence_base(data_dir)
        raw, described = raw_records(base), _domain_dicts(base)
        records = [{**rec, **row} for rec, row in zip(raw, _harmonised(raw, described, estimand))]
        for rec in records:
            for col in COLUMNS:
                rec.setdefault(col, None)
        findings = _findings(records)
    errors = [f.problem for f in findings if f.severity == "error"]
    if errors:
        raise InputError(errors)
    return records, findings


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


def _csv_findings(table: CsvTable, domains: dict[str, dict[str, Any]]) -> list[Finding]:
    """The consistency checks (:func:`_checks_for_row`) on a CSV's rows, column by column.

    Of them only the range of a difference of shares bears on a CSV, whose rows have no CI, p-value,
    levels, direction, parts or TOT; tests/test_exact_cli.py holds this to the row-by-row checks.
    """
    bound = {name: BINARY.get(dom["metric"]) for name, dom in domains.items()}
    if not any(bound.values()):
        return []
    return [Finding("share_range", "error", Problem(str(table.path), table.record(i), "estimate", _not_a_share_difference(v, full)))
            for i, (name, v) in enumerate(zip(table.domain, table.yi)) if (full := bound[name]) and not -full <= v <= full]


def evidence_frame(records: Sequence[Mapping[str, Any]]):
    """The evidence table from :func:`evidence_records`: identifying and reported columns first."""
    import pandas as pd

    table = pd.DataFrame(records.lists() if isinstance(records, Rows) else records)
    for col in COUNT_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype("Int64")
    first = ["estimate_id", *COLUMNS]
    return table[first + [c for c in table.columns if c not in first]]


def _column(records: Sequence[Mapping[str, Any]], name: str) -> list:
    """One column of :func:`evidence_records`' rows."""
    return records.column(name) if isinstance(records, Rows) else [rec.get(name) for rec in records]


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
    else:
        columns = [c for c in EVIDENCE_COLUMNS if any(c in rec for rec in evidence)]
        rows = ([rec.get(c) for c in columns] for rec in evidence)
    rows = sorted(([plain(v) for v in row] for row in rows), key=lambda r: str(r[0]))
    return hashlib.sha256(json.dumps({"columns": columns, "rows": rows}, sort_keys=True).encode()).hexdigest()


# --- consistency -------------------------------------------------------------------------------


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
    return _findings(table[[c for c in needed if c in table.columns]].to_dict("records"))


def _findings(records: list[dict[str, Any]]) -> list[Finding]:
    """:func:`check_consistency` on the table's rows as dicts."""
    by_id = {r["estimate_id"]: r for r in records}
    findings = []
    for rec in records:
        where = dict(file=rec.get("file") or "", record=rec.get("record") or rec["estimate_id"])
        acknowledged = rec.get("acknowledged") if isinstance(rec.get("acknowledged"), dict) else {}
        for check, fld, msg in _checks_for_row(rec, by_id):
            if check in acknowledged:
                findings.append(Finding(check, "acknowledged", Problem(**where, field=fld, message=f"{msg} — {acknowledged[check]}")))
            else:
                findings.append(Finding(check, "error", Problem(**where, field=fld, message=msg)))
        if rec.get("estimand") == "tot" and rec.get("poolable"):
            itt = by_id.get(f"{rec['project_id']}:{rec.get('tot_of')}")
            if itt is not None and itt.get("poolable"):
                findings.append(Finding("itt_tot_both_poolable", "error", Problem(
                    **where, field="poolable", message=f"both this participation effect and its ITT {itt['estimate_id']!r} are poolable")))
        findings += _dependence(rec, by_id, where)
    return findings


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
    from collections import Counter

    records, findings = _checked(data_dir, csv=csv, domains=domains, defaults=defaults)
    direction_only = _column(records, "direction_only")
    numeric = Counter(d for d, pooled, only in zip(_column(records, "domain"), _column(records, "poolable"), direction_only)
                      if pooled and not only)
    return ValidationReport(
        source=str(csv) if csv is not None else str(Path(data_dir) if data_dir else "bundled evidence (data/)"),
        n_projects=len(set(_column(records, "project_id"))),
        n_estimates=len(records),
        n_poolable=sum(numeric.values()),
        n_direction_only=sum(map(bool, direction_only)),
        by_domain=dict(sorted(numeric.items())),
        acknowledged=[f.problem for f in findings if f.severity == "acknowledged"],
        assumed=domain_assumptions(records),
    )


def domain_assumptions(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per domain, the sentences saying what was assumed rather than given (:func:`csv_domains`); only domains with some.

    ``records``: :func:`evidence_records`' rows (a domain's are alike: its first row is read).
    """
    first: dict[str, int] = {}
    for i, name in enumerate(_column(records, "domain")):
        first.setdefault(str(name), i)
    out: dict[str, list[str]] = {}
    for name, i in first.items():
        assumed = records[i].get("domain_assumed")
        if isinstance(assumed, dict) and assumed:
            out[name] = list(assumed.values())
    return out
