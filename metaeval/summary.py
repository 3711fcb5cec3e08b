"""Per-domain summaries of a fit, in the JSON shape the exact engine shares (DESIGN.md).

``summarise(posterior)`` reads the layout and spec stored with the posterior by
``metaeval.sampling.fit`` and returns a plain dict: per domain the pooled mean ``mu``
(mean, SD, HDI, probability of a beneficial effect and of one beyond the minimal
important difference), the between-project SD ``tau``, the predictive effect of
a new project ``theta_new``, raw and shrunken project effects with pooling
factors, the probability that each project ranks first and the pairwise
probabilities that one project's effect beats another's, and notes saying what
the domain rests on. Intervals are highest-density intervals (ArviZ) at
``hdi_prob``. Floats are rounded to 6 significant digits and missing values are
null, so the same posterior gives byte-identical JSON.

Definitions:

- "beneficial" and "beats" follow the domain's beneficial direction.
- ``theta_new = mu + tau * z`` with one standard-normal z per draw from a generator
  seeded by the fit's seed: the true effect of a new project of the same kind,
  without design bias.
- ``raw``/``raw_se``: the inverse-variance combination of a project's numeric
  estimates in the domain (null when it has only direction-only findings).
- ``pooling`` (as in baggr): the posterior mean of ``v / (v + tau^2)`` where ``v``
  is the variance of the project's data as one estimate of its effect, as the model
  sees it: ``1 / sum_k 1 / (sei_k^2 / weight_k + omega^2)`` over its estimates (the
  design weight under variance inflation; omega, the within-project SD, only where
  the project has several estimates in the domain) plus the variance of the
  project's bias term. 1 means fully pooled (the project's own data count for
  nothing), 0 not pooled at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from metaeval.cells import present
from metaeval.files import defuse_cell, write_atomic
from metaeval.sampling import CachedFit, SamplerSettings, diagnose, fit_cached
from metaeval.model import Layout
from metaeval.spec import ModelSpec

SIGNIFICANT_DIGITS = 6


def _round(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    value = float(f"{x:.{SIGNIFICANT_DIGITS}g}")
    return 0.0 if value == 0 else value  # no "-0.0"


def _rounded(obj):
    if isinstance(obj, dict):
        return {str(k): _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    try:
        return _round(obj)
    except (TypeError, ValueError):
        return obj


def summarise(posterior, *, hdi_prob: float | None = None, diagnostics: dict | None = None) -> dict:
    """The per-domain summary of a posterior made by ``metaeval.sampling.fit``.

    ``diagnostics``: the gate already computed for this posterior (``diagnose`` takes
    seconds on large ones); computed here when not given.
    """
    import arviz_stats as az  # not arviz: that imports arviz_plots and matplotlib as well
    import numpy as np
    import xarray as xr

    attrs = posterior.attrs
    if "metaeval_layout" not in attrs:
        raise ValueError("this posterior was not made by metaeval.sampling.fit: it carries no layout")
    layout = Layout.from_dict(json.loads(attrs["metaeval_layout"]))
    spec = json.loads(attrs.get("metaeval_spec", "{}"))
    settings = json.loads(attrs.get("metaeval_settings", "{}"))
    seed = int(attrs.get("metaeval_seed", 0))
    hdi_prob = float(hdi_prob or spec.get("hdi_prob", 0.95))
    post = posterior["posterior"].to_dataset()
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]

    def stats(da, sign: float | None = None) -> dict:
        """Mean, SD and HDI of a (chain, draw) array; with ``sign``, P(beneficial) too."""
        values = np.asarray(da.values, dtype=float).ravel()
        bounds = az.hdi(da, prob=hdi_prob).values
        out = {"mean": values.mean(), "sd": values.std(ddof=1), "hdi_low": bounds[0], "hdi_high": bounds[1], "hdi_prob": hdi_prob}
        if sign is not None:
            out["p_beneficial"] = float(np.mean(sign * values > 0))
        return out

    domain_ids = [d["id"] for d in layout.domains]
    rng = np.random.default_rng(seed)
    z_new = rng.standard_normal((n_chain, n_draw, len(domain_ids)))
    hyper_project_sd = post["bias_project_sd"] if "bias_project_sd" in post else None

    estimates_of: dict[int, list[dict]] = {}  # project cell -> its estimates / bias terms (one pass, not one per cell)
    terms_of: dict[int, set[int]] = {}
    for k in layout.estimates:
        estimates_of.setdefault(k["project_index"], []).append(k)
    for k in layout.estimates + layout.findings:
        if k["bias_index"] >= 0:
            terms_of.setdefault(k["project_index"], set()).add(k["bias_index"])
    domains: dict[str, dict] = {}
    for i, meta in enumerate(layout.domains):
        d, sign, mid = meta["id"], meta["sign"], meta["mid"]
        mu = post["mu"].sel(domain=d)
        tau = post["tau"].sel(domain=d)
        mu_stats = stats(mu, sign)
        mu_stats["p_mid"] = float(np.mean(sign * mu.values > mid)) if mid else None
        theta_new = xr.DataArray(mu.values + tau.values * z_new[:, :, i], dims=("chain", "draw"))
        cells = [(j, p) for j, p in enumerate(layout.projects) if p["domain"] == d]
        members = [k for k in layout.estimates + layout.findings if k["domain"] == d]

        projects: dict[str, dict] = {}
        draws: dict[str, np.ndarray] = {}
        for j, cell in cells:
            theta = post["theta_project"].isel(project=j)
            draws[cell["project"]] = sign * np.asarray(theta.values, dtype=float).ravel()
            entry = {"raw": cell["raw"], "raw_se": cell["raw_se"], **stats(theta), "pooling": None, "design": "+".join(cell["designs"])}
            del entry["hdi_prob"]
            own = estimates_of.get(j, [])
            if own:
                # the project's data as one estimate of its effect: the precision of its estimates, each with
                # its sampling variance (over the design weight) plus omega^2 where the project has several
                variances = np.array([e["sei"] ** 2 / e["weight"] for e in own])
                if any(e["replicate_index"] >= 0 for e in own) and "omega" in post:
                    omega = post["omega"].sel(omega_domain=d).values[..., None]
                    v_sampling = 1 / np.sum(1 / (variances + omega**2), axis=-1)
                else:
                    v_sampling = 1 / np.sum(1 / variances)
                terms = [layout.bias_terms[e["bias_index"]] for e in own if e["bias_index"] >= 0]
                v_bias = 0.0
                if terms and "sd" in terms[0]:
                    v_bias = max(t["sd"] for t in terms) ** 2
                elif terms and hyper_project_sd is not None:
                    v_bias = (meta["scale"] * hyper_project_sd.values) ** 2
                v = v_sampling + v_bias
                entry["pooling"] = float(np.mean(v / (v + tau.values**2)))
            bias_terms = sorted(terms_of.get(j, ()))
            if bias_terms and "bias" in post:
                b = post["bias"].isel(bias_term=bias_terms)
                entry["bias"] = {"mean": float(b.values.mean()), "sd": float(b.values.std(ddof=1))}
            projects[cell["project"]] = entry

        names = sorted(draws)
        stack = np.vstack([draws[n] for n in names])
        first = np.bincount(np.argmax(stack, axis=0), minlength=len(names)) / stack.shape[1]
        rank_first = {n: float(first[j]) for j, n in enumerate(names)}
        pairwise = {a: {b: float(np.mean(draws[a] > draws[b])) for b in names if b != a} for a in names} if len(names) > 1 else {}

        designs: dict[str, int] = {}
        for k in members:
            designs[k["design"]] = designs.get(k["design"], 0) + 1
        domains[d] = {
            "label": meta["label"],
            "metric": meta["metric"],
            "beneficial": meta["beneficial"],
            "mid": mid,
            "scale": meta["scale"],
            "n_projects": len(cells),
            "n_estimates": len(members),
            "projects_in": names,
            "designs": dict(sorted(designs.items())),
            "mu": mu_stats,
            "tau": stats(tau),
            "theta_new": stats(theta_new, sign),
            "projects": projects,
            "rank_first": rank_first,
            "pairwise": pairwise,
            "notes": _notes(layout, spec, meta, [p for _, p in cells], members),
        }

    diagnostics = diagnostics if diagnostics is not None else diagnose(posterior)
    model = dict(spec)
    model["per_domain_priors"] = layout.priors
    model["bias_terms"] = [{k: t[k] for k in ("label", "design", "prior", "scaled") if k in t} for t in layout.bias_terms]
    model["sampler"] = settings
    summary = {
        "engine": "mcmc",
        "domains": domains,
        "diagnostics": diagnostics,
        "model": model,
        "excluded": layout.excluded,
        "seed": seed,
        "provenance": {
            "versions": json.loads(attrs["metaeval_versions"]) if "metaeval_versions" in attrs else None,
            "evidence_sha256": attrs.get("metaeval_evidence_sha256"),  # set by fit_cached; None for a bare fit(model)
            "model_sha256": spec_digest(spec) if spec else None,
            "seed": seed,
        },
    }
    return _rounded(summary)


def spec_digest(spec: dict) -> str:
    """``ModelSpec.digest()`` of a spec stored as plain data (its file path left out)."""
    import hashlib

    content = {k: v for k, v in spec.items() if k != "source"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _notes(layout: Layout, spec: dict, meta: dict, cells: list[dict], members: list[dict]) -> list[str]:
    """Plain sentences on what a domain's result rests on."""
    notes = []
    d = meta["id"]
    if len(cells) == 1:
        notes.append(f"Only one project ({cells[0]['project']}): tau's posterior equals its prior ({layout.priors['tau'][d]}); the data cannot inform between-project spread, so theta_new rests on that prior.")
    designs = sorted({k["design"] for k in members})
    weak = [x for x in designs if x not in ("rct", "unspecified")]
    if designs == ["unspecified"]:
        notes.append("Designs are not stated: every estimate is taken at face value (no bias term).")
    elif "rct" not in designs and weak:
        mode = spec.get("bias", {}).get("mode")
        how = {"additive": "their bias priors", "hierarchical": "the learned design-bias level", "variance_inflation": "their down-weighted SEs", "none": "no adjustment for design"}.get(mode, "the model")
        notes.append(f"No randomised estimate: the result rests on {', '.join(weak)} designs and {how}.")
    findings = [k for k in members if "z_low" in k]
    if findings:
        notes.append(f"{len(findings)} direction-only finding(s) enter through a censored likelihood with SE prior {layout.priors['se'][d]}: {', '.join(k['estimate_id'] for k in findings)}; compare with a model that leaves them out (direction_only.mode = exclude).")
    multi = [c for c in cells if c["n_estimates"] > 1]
    if multi:
        notes.append(f"Estimate-level SD omega ({layout.priors['omega'][d]}) is used because {', '.join(c['project'] for c in multi)} report(s) more than one estimate here.")
    if meta["mid"] is None:
        notes.append("No minimal important difference is defined: p_mid is null.")
    for row in layout.excluded:
        if row["domain"] == d:
            notes.append(f"Left out: {row['estimate_id']} ({row['project']}) - {row['reason']}")
    return notes


def summary_json(summary: dict) -> str:
    """The summary as canonical JSON (sorted keys, no NaN)."""
    return json.dumps(summary, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


#: The columns of the long table (:func:`summary_frame`, ``summary.csv``).
SUMMARY_COLUMNS = ("domain", "quantity", "project", "mean", "sd", "hdi_low", "hdi_high", "hdi_prob", "p_beneficial",
                   "p_mid", "raw", "raw_se", "pooling", "rank_first", "design")


def summary_rows(summary: dict) -> list[dict]:
    """The long table's rows: one per domain and quantity (mu, tau, theta_new, project), keyed by ``SUMMARY_COLUMNS``."""
    rows = []
    for d, dom in sorted(summary["domains"].items()):
        for q in ("mu", "tau", "theta_new"):
            if q in dom:
                rows.append({"domain": d, "quantity": q, **dom[q]})
        for p, entry in sorted(dom.get("projects", {}).items()):
            rows.append({"domain": d, "quantity": "project", "project": p, **entry, "hdi_prob": dom["mu"]["hdi_prob"],
                         "rank_first": dom.get("rank_first", {}).get(p)})
    return [{c: row.get(c) for c in SUMMARY_COLUMNS} for row in rows]


def summary_frame(summary: dict):
    """The summary as a long table (pandas): one row per domain and quantity (mu, tau, theta_new, project)."""
    import pandas as pd

    return pd.DataFrame(summary_rows(summary), columns=list(SUMMARY_COLUMNS))


def summary_csv(summary: dict) -> str:
    """The long table as CSV (written without pandas); names from the evidence cannot act as spreadsheet formulas."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    writer.writerows([defuse_cell(v) if present(v) else "" for v in row.values()] for row in summary_rows(summary))
    return buffer.getvalue()


def _g(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def summary_table(summary: dict) -> str:
    """A plain-text rendering for a terminal."""
    lines = []
    for d, dom in sorted(summary["domains"].items()):
        mid = f"; MID {_g(dom['mid'])}" if dom["mid"] is not None else ""
        lines.append(f"{d}: {dom['label']} ({dom['metric'] or 'metric not stated'}; {dom['beneficial']} is beneficial{mid})")
        designs = ", ".join(f"{k} {v}" for k, v in dom["designs"].items())
        projects_in = dom.get("projects_in", sorted(dom.get("projects", {})))
        lines.append(f"  rests on {dom['n_projects']} project(s), {dom['n_estimates']} estimate(s): {', '.join(projects_in)}; designs: {designs}")
        pct = f"{dom['mu']['hdi_prob']:.0%}"
        for q, name in (("mu", "mean effect"), ("tau", "between-project SD"), ("theta_new", "new project")):
            if q not in dom:
                continue
            s = dom[q]
            extra = ""
            if "p_beneficial" in s:
                extra += f"  P(beneficial) {_g(s['p_beneficial'], 2)}"
            if s.get("p_mid") is not None:
                extra += f"  P(beyond MID) {_g(s['p_mid'], 2)}"
            lines.append(f"  {name:<19} {_g(s['mean']):>8}  sd {_g(s['sd']):<7} {pct} HDI [{_g(s['hdi_low'])}, {_g(s['hdi_high'])}]{extra}")
        lines.append(f"  {'project':<26} {'design':<18} {'raw (se)':<16} {'shrunken [' + pct + ' HDI]':<28} {'pooling':>7} {'P(first)':>8}")
        for p, e in sorted(dom.get("projects", {}).items()):
            raw = f"{_g(e['raw'])} ({_g(e['raw_se'])})" if e["raw"] is not None else "direction only"
            shrunk = f"{_g(e['mean'])} [{_g(e['hdi_low'])}, {_g(e['hdi_high'])}]"
            lines.append(f"  {p:<26} {e.get('design', ''):<18} {raw:<16} {shrunk:<28} {_g(e.get('pooling'), 2):>7} {_g(dom.get('rank_first', {}).get(p), 2):>8}")
        left_out = [n for n in dom.get("notes", []) if n.startswith("Left out:")]
        for note in dom.get("notes", []):
            if not note.startswith("Left out:"):
                lines.append(f"  note: {note}")
        if left_out:
            lines.append(f"  note: {len(left_out)} estimate(s) of this domain left out, each with its reason (--format json: notes)")
        lines.append("")
    diag = summary.get("diagnostics") or {}
    if summary.get("engine") == "mcmc":
        state = "passed" if diag.get("passed") else "FAILED"
        lines.append(f"diagnostics gate {state}: R-hat max {_g(diag.get('rhat_max'), 4)}, bulk ESS min {_g(diag.get('ess_bulk_min'), 4)}, tail ESS min {_g(diag.get('ess_tail_min'), 4)}, divergences {diag.get('divergences')}")
        for failure in diag.get("failures", []):
            lines.append(f"  gate: {failure}")
    else:
        lines.append(f"engine: {summary.get('engine')} (no sampling, no MCMC diagnostics)")
    model = summary.get("model") or {}
    lines.append(f"model: {model.get('name', '-')} ({model.get('description', '')}); seed {summary.get('seed')}")
    lines.append(f"  priors ({model.get('units', '')}):")
    for param, per_domain in sorted(model.get("per_domain_priors", {}).items()):
        groups: dict[str, list[str]] = {}
        for domain, text in sorted(per_domain.items()):
            groups.setdefault(text, []).append(domain)
        lines.append(f"    {param}: " + "; ".join(f"{text} ({', '.join(ds)})" for text, ds in groups.items()))
    bias = model.get("bias", {})
    if bias.get("mode") == "additive":
        lines.append("    bias (normal(mean, sd) x scale, beneficial direction): " + ", ".join(f"{k} {v}" for k, v in bias.get("designs", {}).items()))
    elif bias.get("mode") == "variance_inflation":
        lines.append("    design weights (SE / sqrt(weight)): " + ", ".join(f"{k} {v}" for k, v in bias.get("weights", {}).items()))
    elif bias.get("mode") == "hierarchical":
        lines.append("    design-bias hierarchy (scale units): " + ", ".join(f"{k} {v}" for k, v in bias.get("hierarchy", {}).items()))
    if model.get("overrides"):
        lines.append("  prior overrides (absolute): " + ", ".join(f"{k}={v}" for k, v in model["overrides"].items()))
    if summary.get("excluded"):
        lines.append(f"  {len(summary['excluded'])} estimate(s) left out, each with its reason (see the JSON's \"excluded\")")
    return "\n".join(lines) + "\n"


def render(summary: dict, fmt: str) -> str:
    """The summary as ``table``, ``csv`` or ``json`` text."""
    if fmt == "json":
        return summary_json(summary)
    if fmt == "csv":
        return summary_csv(summary)
    return summary_table(summary)


# --- cached runs ------------------------------------------------------------------------


def write_summary(summary: dict, directory: str | Path) -> None:
    """Write summary.json and summary.csv into ``directory``, atomically."""
    directory = Path(directory)
    write_atomic(directory / "summary.json", summary_json(summary))
    write_atomic(directory / "summary.csv", summary_csv(summary))


#: What :func:`summarise` computes, versioned: a cached fit's summary of another version is made
#: again from its posterior (no refit). Raise it whenever a summarised number changes meaning.
#: 2: pooling factors count omega.
SUMMARY_VERSION = 2


def load_summary(directory: str | Path, *, verify: bool = False) -> dict | None:
    """``summary.json`` in ``directory``; None when missing, unreadable, or (``verify``, a fit folder)
    when its SHA-256 or summary version differs from the one recorded in the folder's ``fit.json``."""
    from metaeval.sampling import file_sha256, read_fit_record

    path = Path(directory) / "summary.json"
    if not path.is_file():
        return None
    if verify:
        record = read_fit_record(directory) or {}
        if record.get("summary_sha256") != file_sha256(path) or record.get("summary_version") != SUMMARY_VERSION:
            return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("domains"), dict) else None


def _record_summary(directory: Path) -> None:
    """Add the hash of the fit folder's summary.json to its fit.json, so a changed summary is detected."""
    from metaeval.sampling import file_sha256, read_fit_record

    record = read_fit_record(directory)
    if record is not None:
        record.update(summary_sha256=file_sha256(directory / "summary.json"), summary_version=SUMMARY_VERSION)
        write_atomic(directory / "fit.json", json.dumps(record, sort_keys=True, indent=2) + "\n")


def fit_and_summarise(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None, refit: bool = False, progress: bool | None = None) -> tuple[dict, CachedFit]:
    """Fit (or reuse a cached fit), summarise, and write the summary next to the posterior.

    The latest summary is also copied to ``<out>/summary.json`` and ``<out>/summary.csv``.
    """
    result = fit_cached(evidence, spec, out=out, settings=settings, refit=refit, progress=progress)
    summary = load_summary(result.directory, verify=True) if result.cached else None
    if summary is None:
        summary = summarise(result.posterior, diagnostics=result.diagnostics)
        write_summary(summary, result.directory)
        _record_summary(result.directory)
    write_summary(summary, out)
    write_atomic(Path(out) / "latest.txt", f"{result.key}\n")
    return summary, result


def cached_summary(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None) -> dict | None:
    """The summary of an existing fit for these inputs, without refitting (None if never fitted)."""
    import sys

    from metaeval.sampling import cache_key, fit_dir, load_posterior, verify_fit
    from metaeval.model import prepare

    settings = (settings or SamplerSettings()).resolved(spec)
    key = cache_key(prepare(evidence, spec), spec, settings)
    directory = fit_dir(out, key)
    if not (directory / "posterior.nc").is_file():
        return None
    problem = verify_fit(directory, key)
    if problem is not None:
        print(f"note: the cached fit in {directory} cannot be trusted ({problem}); `metaeval fit` will fit it again", file=sys.stderr)
        return None
    summary = load_summary(directory, verify=True)
    if summary is None:
        summary = summarise(load_posterior(directory / "posterior.nc"))
        write_summary(summary, directory)
        _record_summary(directory)
    return summary
