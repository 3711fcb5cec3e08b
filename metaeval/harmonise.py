"""Harmonisation: each estimate on its domain's metric (``yi``, ``sei``), or a reason it can't be pooled.

Also the consistency checks of the evidence (a CI contains its estimate, a p-value
agrees with its CI, participation effects are the ITT rescaled by take-up, ...),
and :func:`load_evidence`, the table every later stage starts from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaeval import effects
from metaeval.cells import present
from metaeval.errors import InputError, Problem
from metaeval.evidence import COUNT_COLUMNS, EvidenceBase, csv_records, raw_records, read_evidence_base

BINARY = {"pp": 100.0, "share": 1.0}  # metric -> value of "everyone"
CONTINUOUS = {"hours", "grade", "score", "count", "dkk", "dkk_1000", "md"}
NOT_AN_EFFECT = {
    "single_arm": "single-arm figure: no comparison group or baseline, so it is not an effect estimate",
}


class CannotPool(Exception):
    """Raised inside harmonisation with the reason a person reads in the evidence table."""


@dataclass
class _Row:
    """Access to one raw row where an assumption fills in what the source leaves empty."""

    data: dict[str, Any]

    def get(self, name: str) -> Any:
        value = self.data.get(name)
        if not present(value):
            value = (self.data.get("assumed") or {}).get(name)
        return value

    def has(self, *names: str) -> bool:
        return all(self.get(n) is not None for n in names)


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
        _, se = effects.risk_difference(
            r.get("mean_treatment") / full, r.get("n_treatment"), r.get("mean_control") / full, r.get("n_control")
        )
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
        # Reported group SDs standardise any mean difference, percentages of time included;
        # a binary share without SDs goes through the log odds ratio (Chinn 2000).
        if r.has("sd_treatment", "sd_control", "n_treatment", "n_control") and metric != "log_or":
            d, sd = effects.smd_from_effect(
                est, se, r.get("sd_treatment"), r.get("n_treatment"), r.get("sd_control"), r.get("n_control")
            )
            return d, sd, "; SMD = effect / pooled SD × Hedges' J"
        if metric in BINARY or metric == "log_or":
            lor, lse = _log_or(r, est, se)
            d, sd = effects.log_or_to_smd(lor, lse)
            return d, sd, "; SMD from the log odds ratio (Chinn 2000)"
        raise CannotPool(f"cannot standardise: the source gives no group SDs and sizes for this {metric} outcome")
    if target == "log_or" and metric in BINARY:
        lor, lse = _log_or(r, est, se)
        return lor, lse, "; log odds ratio from group shares"
    raise CannotPool(f"a {metric} figure cannot be converted to this domain's metric ({target})")


def _log_or(r: _Row, est: float, se: float) -> tuple[float, float]:
    if r.get("metric") == "log_or":
        return est, se
    full = BINARY[r.get("metric")]
    if r.get("estimand") == "vs_target" and r.has("mean_treatment", "target", "n_treatment"):
        p, t, n = r.get("mean_treatment") / full, r.get("target") / full, r.get("n_treatment")
        if not (0 < p < 1 and 0 < t < 1):
            raise CannotPool("a share of 0 or 100% has no finite log odds")
        return math.log(p / (1 - p)) - math.log(t / (1 - t)), math.sqrt(1 / (n * p) + 1 / (n * (1 - p)))
    if not r.has("mean_treatment", "mean_control", "n_treatment", "n_control"):
        raise CannotPool("cannot convert a share difference to an SMD without both group shares and sizes")
    try:
        return effects.log_odds_ratio(
            r.get("mean_treatment") / full, r.get("n_treatment"), r.get("mean_control") / full, r.get("n_control")
        )
    except ValueError as err:
        raise CannotPool(str(err)) from None


# --- the table ------------------------------------------------------------------------------------


def _harmonise_row(r: _Row, dom: dict[str, Any], estimand_wanted: str = "itt") -> dict[str, Any]:
    out: dict[str, Any] = dict(yi=math.nan, sei=math.nan, poolable=False, direction_only=False,
                               exclusion_reason=None, harmonisation=None)
    # The direction as counted on the domain's scale: flipped, like yi, where the outcome's good direction is
    # the domain's opposite. ``direction`` itself stays as the source reported it.
    flip = (r.get("beneficial") or dom["beneficial"]) != dom["beneficial"]
    direction = r.get("direction")
    if flip and direction in ("increase", "decrease"):
        direction = "decrease" if direction == "increase" else "increase"
    out["direction_counted"] = direction
    estimand = r.get("estimand")
    try:
        if r.data.get("curated_poolable") is False:
            raise CannotPool(r.get("curated_reason"))
        if r.get("outcome_type") == "process":
            raise CannotPool("process measure: describes how the service was delivered, not an outcome for people")
        if estimand == "tot" and estimand_wanted != "tot":
            raise CannotPool(
                f"participation (Bloom) effect: the ITT estimate {r.get('tot_of')!r} rescaled by take-up; "
                "the ITT is pooled, so pooling this too would count the same evidence twice"
            )
        if estimand in NOT_AN_EFFECT:
            raise CannotPool(NOT_AN_EFFECT[estimand])
        numeric = any(r.has(f) for f in ("estimate", "mean_treatment", "se", "share_improved"))
        if not numeric:
            if direction is None:
                raise CannotPool("no figure and no direction reported")
            if r.get("significant") is None:
                raise CannotPool("direction reported without saying whether it is statistically significant")
            out.update(poolable=True, direction_only=True, harmonisation="direction and significance only")
            return out
        est, se, how = _own_effect(r)
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
    return math.sqrt(sum(y * y + s * s for y, s in zip(yi, sei)) / len(yi))


def csv_domains(records: list[dict[str, Any]], path: Path | str, domains_file: Path | str | None = None,
                defaults: DomainDefaults | None = None) -> dict[str, dict[str, Any]]:
    """The domains of a CSV's rows, each described by (first that says) its rows' columns
    (``beneficial``, ``scale``, ``mid``, ``metric``, ``label``: constant within a domain), the
    domains file (the schema of ``data/domains.yaml``), or the command-line defaults.

    What none of them says is assumed and written down in the domain's ``assumed`` (field -> a
    sentence every output shows): an increase is beneficial, and the scale is :func:`derived_scale`.
    A column that disagrees with itself within a domain or with the domains file is an
    :class:`InputError` naming the rows.
    """
    from metaeval.evidence import read_domains

    defaults = defaults or DomainDefaults()
    described = {d.id: d for d in read_domains(Path(domains_file))} if domains_file is not None else {}
    problems: list[Problem] = []
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(rec["domain"] for rec in records):
        rows = [rec for rec in records if rec["domain"] == name]
        given: dict[str, tuple[Any, dict]] = {}
        for rec in rows:
            for field_name, value in (rec.get("domain_given") or {}).items():
                first = given.setdefault(field_name, (value, rec))
                if first[0] != value:
                    problems.append(Problem(str(path), rec["record"], field_name,
                                            f"domain {name!r} is given {field_name} {first[0]!r} on {first[1]['record']}; a domain's "
                                            f"{field_name} must be the same on every row, got {value!r}"))
        sidecar = described.get(name)
        if sidecar is not None:
            for field_name, (value, rec) in given.items():
                if getattr(sidecar, field_name) != value:
                    problems.append(Problem(str(path), rec["record"], field_name,
                                            f"{value!r} contradicts the domains file {domains_file} ({field_name}: {getattr(sidecar, field_name)!r})"))
        dom: dict[str, Any] = {"id": name, "assumed": {}}
        for field_name in _DESCRIBED:
            if field_name in given:
                dom[field_name] = given[field_name][0]
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
            dom["scale"] = derived_scale([r["estimate"] for r in rows], [r["se"] for r in rows])
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
    """Add ``yi, sei, vi, poolable, direction_only, exclusion_reason`` and the domain metadata columns.

    ``domains`` maps domain id to ``{label, metric, beneficial, mid, scale}`` (and ``assumed``: field ->
    a sentence saying it was assumed rather than given); without it, the domains are described
    as a CSV's are, from the table's own columns (:func:`csv_domains`).
    ``estimand="tot"`` (participation, a sensitivity analysis): each participation (Bloom)
    effect is harmonised instead of being left out, and the ITT it rescales is then left
    out, so an ITT and its TOT are still never pooled together; an ITT whose TOT cannot
    be pooled, and every estimate without a TOT, stays as it is.
    """
    import pandas as pd

    records = raw.to_dict("records")
    if domains is None:
        domains = csv_domains(records, "evidence table")
        records = on_domain_metric(records, domains)
        raw = raw.assign(metric=[r["metric"] for r in records])
    derived = pd.DataFrame(_harmonised(records, domains, estimand))
    raw = raw.drop(columns=[c for c in derived.columns if c in raw.columns]).reset_index(drop=True)
    return pd.concat([raw, derived], axis=1)


def _harmonised(records: list[dict[str, Any]], domains: dict[str, dict[str, Any]], estimand: str) -> list[dict[str, Any]]:
    """The columns :func:`harmonise` adds, one dict per raw record (same order)."""
    if estimand not in ESTIMANDS:
        raise ValueError(f"estimand must be one of {', '.join(ESTIMANDS)}, got {estimand!r}")
    rows = []
    for rec in records:
        dom = domains[rec["domain"]]
        rows.append({**_harmonise_row(_Row(rec), dom, estimand), **{f"domain_{k}": dom[k] for k in ("label", "metric", "beneficial", "mid", "scale")},
                     "domain_assumed": dict(dom.get("assumed") or {})})
    if estimand == "tot":
        position = {rec.get("estimate_id"): i for i, rec in enumerate(records)}
        for rec, row in zip(records, rows):
            if rec.get("estimand") == "tot" and row["poolable"] and rec.get("tot_of"):
                i = position.get(f"{rec['project_id']}:{rec['tot_of']}")
                if i is not None and rows[i]["poolable"]:
                    rows[i].update(poolable=False, direction_only=False, yi=math.nan, sei=math.nan, exclusion_reason=(
                        f"ITT replaced by its participation (Bloom) effect {rec.get('estimate_id')!r} (estimand = tot); "
                        "the two are never pooled together"))
    for row in rows:
        row["vi"] = row["sei"] * row["sei"]
    return rows


def _domain_dicts(base: EvidenceBase) -> dict[str, dict[str, Any]]:
    return {d.id: d.model_dump() for d in base.domains}


COLUMNS = [
    "project_id", "design", "outcome", "domain", "population", "estimand", "metric", "estimate", "se",
    "ci_low", "ci_high", "p_value", "n_treatment", "n_control", "direction", "significant", "direction_counted", "yi", "sei",
    "poolable", "exclusion_reason", "source",
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
                     defaults: DomainDefaults | None = None, estimand: str = "itt") -> list[dict[str, Any]]:
    """The rows of :func:`load_evidence` as plain dicts, read, harmonised and checked without pandas
    (so ``metaeval fit --engine exact`` does not import it); :func:`evidence_frame` makes the table."""
    if csv is None and (domains is not None or (defaults is not None and defaults != DomainDefaults())):
        raise InputError(Problem(str(data_dir or "data/"), "", "--domains, --beneficial, --scale, --mid",
                                 "describe the domains of a --csv; an evidence directory describes its own in domains.yaml"))
    if csv is not None:
        raw = csv_records(csv)
        domains = csv_domains(raw, csv, domains, defaults)
        raw = on_domain_metric(raw, domains)
    else:
        base = read_evidence_base(data_dir)
        raw, domains = raw_records(base), _domain_dicts(base)
    records = [{**rec, **row} for rec, row in zip(raw, _harmonised(raw, domains, estimand))]
    for rec in records:
        for col in COLUMNS:
            rec.setdefault(col, None)
    errors = [f for f in _findings(records) if f.severity == "error"]
    if errors:
        raise InputError([f.problem for f in errors])
    return records


def evidence_frame(records: list[dict[str, Any]]):
    """The evidence table from :func:`evidence_records`: identifying and reported columns first."""
    import pandas as pd

    table = pd.DataFrame(records)
    for col in COUNT_COLUMNS:
        if col in table.columns:
            table[col] = table[col].astype("Int64")
    first = ["estimate_id", *COLUMNS]
    return table[first + [c for c in table.columns if c not in first]]


#: What a model reads of the evidence (``metaeval.model.prepare``); :func:`evidence_digest` hashes these columns.
EVIDENCE_COLUMNS = ("estimate_id", "project_id", "domain", "design", "yi", "sei", "poolable", "exclusion_reason", "direction_only",
                    "direction_counted", "significant", "sig_level", "domain_label", "domain_metric", "domain_beneficial", "domain_mid", "domain_scale")


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
                out.append(("share_range", name, f"{v:g} is not a difference of shares between −{full:g} and {full:g}"))
    itt = by_id.get(f"{rec['project_id']}:{rec.get('tot_of')}") if rec.get("estimand") == "tot" else None
    if itt is not None and present(est) and present(itt.get("estimate")) and present(rec.get("take_up")):
        a = itt["estimate"]
        lo = (abs(a) - _half_unit(a)) / rec["take_up"]
        hi = (abs(a) + _half_unit(a)) / rec["take_up"]
        if math.copysign(1, est) != math.copysign(1, a) or not (lo - _half_unit(est) <= abs(est) <= hi + _half_unit(est)):
            out.append(("tot_vs_itt", "estimate",
                        f"participation effect {est:g} is not ITT {a:g} / take-up {rec['take_up']:.3f} = {a / rec['take_up']:.3g}"))
    return out


def check_consistency(table) -> list[Finding]:
    """Run every consistency check on a harmonised table; acknowledged source inconsistencies are kept as such."""
    needed = ("estimate_id", "project_id", "file", "record", "acknowledged", "estimate", "ci_low", "ci_high",
              "ci_level", "p_value", "metric", "mean_treatment", "mean_control", "target", "estimand", "tot_of",
              "take_up", "poolable")
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
    return findings


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
    table = load_evidence(data_dir, csv=csv, domains=domains, defaults=defaults)
    findings = check_consistency(table)
    numeric = table[table["poolable"] & ~table["direction_only"]]
    return ValidationReport(
        source=str(csv) if csv is not None else str(Path(data_dir) if data_dir else "bundled evidence (data/)"),
        n_projects=table["project_id"].nunique(),
        n_estimates=len(table),
        n_poolable=len(numeric),
        n_direction_only=int(table["direction_only"].sum()),
        by_domain=numeric.groupby("domain").size().to_dict(),
        acknowledged=[f.problem for f in findings if f.severity == "acknowledged"],
        assumed=domain_assumptions(table.to_dict("records")),
    )


def domain_assumptions(records) -> dict[str, list[str]]:
    """Per domain, the sentences saying what was assumed rather than given (:func:`csv_domains`); only domains with some."""
    out: dict[str, list[str]] = {}
    for rec in records:
        assumed = rec.get("domain_assumed")
        if isinstance(assumed, dict) and assumed:
            out.setdefault(str(rec["domain"]), list(assumed.values()))
    return out
