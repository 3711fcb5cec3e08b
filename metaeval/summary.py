"""Summarising a posterior: the :class:`~metaeval.result.Result` of an MCMC fit, and its cache on disk.

``summarise(posterior)`` reads the layout and spec stored with the posterior by
``metaeval.sampling.fit`` and returns a :class:`~metaeval.result.Result`: per domain the pooled
mean ``mu`` (mean, SD, HDI, probability of a beneficial effect and of one beyond the minimal
important difference), the between-project SD ``tau`` (and ``omega``), the predictive effect of
a new project ``theta_new``, raw and shrunken project effects with pooling factors, the
probability that each project is the best and the pairwise probabilities that one project's
effect beats another's, how much of the result the priors decide, and notes saying what the
domain rests on. Intervals are highest-density intervals (ArviZ) at ``hdi_prob``. Floats are
rounded to 6 significant digits and missing values are null, so the same posterior gives
byte-identical JSON.

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

import json
import logging
import os
import shutil
from pathlib import Path

from metaeval.files import OutputRefused, checkpoint, confine, drop_dangling_links, link_names, result_set, write_atomic
from metaeval.model import Layout
from metaeval.result import (
    Bias,
    BiasModel,
    BiasTerm,
    Diagnostics,
    DirectionOnly,
    DomainResult,
    Exclusion,
    ModelRecord,
    Posterior,
    ProjectEffect,
    Provenance,
    Result,
    RiskOfBiasRule,
    Sampler,
    round_significant,
)
from metaeval.sampling import CachedFit, SamplerSettings, diagnose, fit_cached, load_posterior
from metaeval.spec import ModelSpec, spec_digest

log = logging.getLogger(__name__)


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
        return round_significant(obj)
    except (TypeError, ValueError):
        return obj


def summarise(posterior, *, hdi_prob: float | None = None, diagnostics: dict | None = None) -> Result:
    """The :class:`~metaeval.result.Result` of a posterior made by ``metaeval.sampling.fit``.

    ``diagnostics``: the gate already computed for this posterior (``diagnose`` takes
    seconds on large ones); computed here when not given.
    """
    import numpy as np

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
    rng = np.random.default_rng(seed)
    z_new = rng.standard_normal((n_chain, n_draw, len(layout.domains)))

    domains = {meta["id"]: _domain_result(post, layout, spec, meta, z_new[:, :, i], hdi_prob) for i, meta in enumerate(layout.domains)}
    diagnostics = diagnostics if diagnostics is not None else diagnose(posterior)
    return Result(
        engine="mcmc",
        domains=domains,
        exclusions=tuple(Exclusion(estimate_id=x["estimate_id"], project=x["project"], domain=x["domain"], design=x.get("design"),
                                   reason=x["reason"], stage=x.get("stage", "model")) for x in layout.excluded),
        diagnostics=Diagnostics(**{k: _rounded(v) for k, v in diagnostics.items()}),
        model=model_record(spec, layout.bias_terms, Sampler(**settings) if settings else None),
        seed=seed,
        provenance=Provenance(
            versions=json.loads(attrs["metaeval_versions"]) if "metaeval_versions" in attrs else None,
            evidence_sha256=attrs.get("metaeval_evidence_sha256"),  # set by fit_cached; None for a bare fit(model)
            model_sha256=spec_digest(spec) if spec else None,
            seed=seed,
        ),
    )


def _posterior(values, hdi_prob: float, sign: float | None = None, mid: float | None = None) -> Posterior:
    """Mean, SD and HDI of draws (chain, draw); with ``sign`` P(beneficial), and with ``mid`` P(beyond it) too."""
    import numpy as np
    from arviz_stats.base import array_stats  # ArviZ's HDI on a NumPy array: the xarray wrapper cost 11 ms a call

    flat = np.asarray(values, dtype=float).ravel()
    low, high = array_stats.hdi(flat, prob=hdi_prob)
    extra = {}
    if sign is not None:
        extra["p_beneficial"] = round_significant(np.mean(sign * flat > 0))
        if mid:
            extra["p_mid"] = round_significant(np.mean(sign * flat > mid))
    return Posterior(mean=round_significant(flat.mean()), sd=round_significant(flat.std(ddof=1)), hdi_low=round_significant(low), hdi_high=round_significant(high),
                     hdi_prob=hdi_prob, **extra)


def _domain_result(post, layout: Layout, spec: dict, meta: dict, z_new, hdi_prob: float) -> DomainResult:
    """One domain of :func:`summarise`."""
    import numpy as np

    from metaeval.certainty import prior_influence

    d, sign, mid = meta["id"], meta["sign"], meta["mid"]
    mu = post["mu"].sel(domain=d).values
    tau = post["tau"].sel(domain=d).values
    cells = [(j, p) for j, p in enumerate(layout.projects) if p["domain"] == d]
    estimates = [k for k in layout.estimates if k["domain"] == d]
    members = estimates + [k for k in layout.findings if k["domain"] == d]
    estimates_of, rows_of = _by_cell(estimates), _by_cell(members)  # once, not looked up per project (quadratic)
    theta_all = post["theta_project"].transpose("chain", "draw", "project").values if cells else None
    draws: dict[str, np.ndarray] = {}
    entries: dict[str, dict] = {}
    for j, cell in cells:
        theta = theta_all[:, :, j]
        draws[cell["project"]] = sign * np.asarray(theta, dtype=float).ravel()
        summary = _posterior(theta, hdi_prob)
        entry = {"project": cell["project"], "design": "+".join(cell["designs"]), "raw": round_significant(cell["raw"]),
                 "raw_se": round_significant(cell["raw_se"]), "mean": summary.mean, "sd": summary.sd, "hdi_low": summary.hdi_low,
                 "hdi_high": summary.hdi_high, "pooling": round_significant(_pooling(post, layout, meta, estimates_of.get(j, []), tau))}
        terms = sorted({k["bias_index"] for k in rows_of.get(j, ()) if k["bias_index"] >= 0})
        if terms and "bias" in post:
            b = post["bias"].isel(bias_term=terms).values
            entry["bias"] = Bias(mean=round_significant(b.mean()), sd=round_significant(b.std(ddof=1)))
        entries[cell["project"]] = entry
    names = sorted(draws)
    stack = np.vstack([draws[n] for n in names])
    first = np.bincount(np.argmax(stack, axis=0), minlength=len(names)) / stack.shape[1]
    projects = tuple(ProjectEffect(**entries[n], p_best=round_significant(first[i])) for i, n in enumerate(names))
    pairwise = {}
    for i, a in enumerate(names if len(names) > 1 else ()):  # one project against all at once
        beats = np.mean(stack[i] > stack, axis=1)
        pairwise[a] = {b: round_significant(beats[k]) for k, b in enumerate(names) if k != i}
    designs: dict[str, int] = {}
    for k in members:
        designs[k["design"]] = designs.get(k["design"], 0) + 1
    omega = None
    if d in layout.omega_domains and "omega" in post:
        omega = _posterior(post["omega"].sel(omega_domain=d).values, hdi_prob)
    priors = {param: per_domain[d] for param, per_domain in sorted(layout.priors.items()) if d in per_domain}
    mu_post, tau_post = _posterior(mu, hdi_prob, sign, mid), _posterior(tau, hdi_prob)
    return DomainResult(
        id=d, label=meta["label"], metric=meta["metric"], beneficial=meta["beneficial"], mid=mid, scale=meta["scale"],
        assumed=meta.get("assumed", {}), n_projects=len(cells), n_estimates=len(members),
        n_findings=sum(1 for k in members if "z_low" in k), designs=dict(sorted(designs.items())),
        mu=mu_post, tau=tau_post, omega=omega, theta_new=_posterior(mu + tau * z_new, hdi_prob, sign),
        projects=projects, pairwise=pairwise, priors=priors, prior_influence=prior_influence(mu_post, tau_post, priors),
        notes=tuple(domain_notes(layout, spec, meta, [p for _, p in cells], members)),
    )


def _by_cell(rows: list[dict]) -> dict[int, list[dict]]:
    """``rows`` grouped by their project cell (``project_index``), in order."""
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["project_index"], []).append(row)
    return groups


def _pooling(post, layout: Layout, meta: dict, own: list[dict], tau) -> float | None:
    """baggr's pooling factor of the project cell whose numeric estimates are ``own`` (see the module docstring);
    None without any."""
    import numpy as np

    if not own:
        return None
    # the project's data as one estimate of its effect: its estimates, each with its sampling variance
    # (over the design weight) plus omega^2 where the project has several, collapsed within each bias
    # term (whose prior variance they share; a cell may hold estimates with different terms, e.g. one
    # judged at high risk of bias) and then across terms
    variances = np.array([e["sei"] ** 2 / e["weight"] for e in own])
    if any(e["replicate_index"] >= 0 for e in own) and "omega" in post:
        variances = variances + post["omega"].sel(omega_domain=meta["id"]).values[..., None] ** 2
    precision = 0.0
    for b in sorted({e["bias_index"] for e in own}):
        rows = [i for i, e in enumerate(own) if e["bias_index"] == b]
        v_bias = 0.0
        if b >= 0 and "sd" in layout.bias_terms[b]:
            v_bias = layout.bias_terms[b]["sd"] ** 2
        elif b >= 0 and "bias_project_sd" in post:
            v_bias = (meta["scale"] * post["bias_project_sd"].values) ** 2
        precision = precision + 1 / (1 / np.sum(1 / variances[..., rows], axis=-1) + v_bias)
    v = 1 / precision
    return float(np.mean(v / (v + tau**2)))


def model_record(spec: dict, bias_terms: list[dict] = (), sampler: Sampler | None = None) -> ModelRecord:
    """The model block of a result, from a spec's plain data (``ModelSpec.to_dict()``)."""
    return ModelRecord(
        **{k: v for k, v in spec.items() if k not in ("bias", "direction_only", "risk_of_bias")},
        bias=BiasModel(**spec["bias"]), direction_only=DirectionOnly(**spec["direction_only"]),
        risk_of_bias=RiskOfBiasRule(**spec["risk_of_bias"]) if spec.get("risk_of_bias") else None,
        bias_terms=tuple(BiasTerm(**{k: t[k] for k in ("label", "design", "prior", "scaled", "risk_of_bias") if k in t}) for t in bias_terms),
        sampler=sampler,
    )


def domain_notes(layout: Layout, spec: dict, meta: dict, cells: list[dict], members: list[dict]) -> list[str]:
    """Plain sentences on what a domain's result rests on (what was left out is in the result's exclusions)."""
    notes = []
    d = meta["id"]
    if len(cells) == 1:
        notes.append(f"Only one project ({cells[0]['project']}): tau's posterior equals its prior ({layout.priors['tau'][d]}); "
                     "the data cannot inform between-project spread, so theta_new rests on that prior.")
    designs = sorted({k["design"] for k in members})
    weak = [x for x in designs if x not in ("rct", "unspecified")]
    if designs == ["unspecified"]:
        notes.append("Designs are not stated: every estimate is taken at face value (no bias term).")
    elif "rct" not in designs and weak:
        mode = spec.get("bias", {}).get("mode")
        how = {"additive": "their bias priors", "hierarchical": "the learned design-bias level", "variance_inflation": "their down-weighted SEs",
               "none": "no adjustment for design"}.get(mode, "the model")
        notes.append(f"No randomised estimate: the result rests on {', '.join(weak)} designs and {how}.")
    findings = [k for k in members if "z_low" in k]
    if findings:
        notes.append(f"{len(findings)} direction-only finding(s) enter through a censored likelihood with SE prior {layout.priors['se'][d]}: "
                     f"{', '.join(k['estimate_id'] for k in findings)}; compare with a model that leaves them out (direction_only.mode = exclude).")
    multi = [c for c in cells if c["n_estimates"] > 1]
    if multi:
        notes.append(f"Estimate-level SD omega ({layout.priors['omega'][d]}) is used because {', '.join(c['project'] for c in multi)} report(s) more than one estimate here.")
    if meta["mid"] is None:
        notes.append("No minimal important difference is defined: p_mid is null.")
    return notes


# --- cached runs and the published result set ----------------------------------------------------------------

#: The pointer to the output folder's current result set (:func:`publish`), and the files linked from the folder's top.
RESULT = "current"
RESULT_FILES = ("summary.json", "summary.csv", "latest.txt", "report.html")
#: A summary file larger than this is not read (the summary of 10,000 estimates is a few MB).
MAX_SUMMARY_BYTES = 256 * 2**20


def summary_files(result: Result) -> dict[str, str]:
    """The text of summary.json and summary.csv, by name: made once where a command also prints one of them
    (``--format json|csv``: the JSON of 100,000 estimates takes a quarter of a second)."""
    from metaeval.present import summary_csv

    return {"summary.json": result.to_json(), "summary.csv": summary_csv(result)}


def write_summary(result: Result, directory: str | Path, files: dict[str, str] | None = None) -> None:
    """Write summary.json and summary.csv (``files``, when made already) into ``directory``, atomically."""
    for name, text in (files or summary_files(result)).items():
        write_atomic(Path(directory) / name, text)


def publish(out: str | Path, result: Result, *, key: str | None = None, report=None, files: dict[str, str] | None = None) -> Path:
    """Write a command's results into ``out`` as one set, switched in at once; returns ``OUT/current``.

    The set: summary.json and summary.csv, latest.txt (the fit's cache key, when there is one) and, when
    ``report`` is given (called with the path to write), report.html. It is written into a new folder and
    ``OUT/current`` is switched to it in one atomic rename (:func:`metaeval.files.result_set`); ``OUT/summary.json``
    and the other names are fixed links through ``current``, so a reader sees the previous complete set or
    this one, never a mix, whatever stops the command (a kill, a full disk, an error). A name the new set does
    not have (the report, after ``fit``) then leads nowhere rather than to another fit's file. ``files``: the
    summary's files as :func:`summary_files` made them.
    """
    out = Path(out)
    _keep_legacy_results(out)
    log.info("writing the results to %s", out)
    with result_set(out / RESULT) as staging:
        write_summary(result, staging, files)
        if key is not None:
            write_atomic(staging / "latest.txt", f"{key}\n")
        if report is not None:
            report(staging / "report.html")
        link_names(out, RESULT, [name for name in RESULT_FILES if (staging / name).is_file()])  # they show the old set until the switch
    drop_dangling_links(out, RESULT, RESULT_FILES)  # a name this set lacks leads nowhere: no file of another fit
    checkpoint("published:current")
    return out / RESULT


def _keep_legacy_results(out: Path) -> None:
    """Results of an older metaeval (plain files at the top of ``out``, no ``current``): made a set, so they stay visible."""
    legacy = [name for name in RESULT_FILES if (out / name).is_file() and not (out / name).is_symlink()]
    if legacy and not os.path.lexists(out / RESULT):
        with result_set(out / RESULT) as staging:
            for name in legacy:
                shutil.copyfile(out / name, staging / name)
            link_names(out, RESULT, legacy)


#: What :func:`summarise` computes, versioned: a cached fit's summary of another version is made
#: again from its posterior (no refit). Raise it whenever a summarised number changes meaning.
#: 2: pooling factors count omega. 3: the typed result (metaeval.result, schema version 1).
SUMMARY_VERSION = 3


def load_summary(directory: str | Path, *, verify: bool = False) -> Result | None:
    """``summary.json`` in ``directory``; None when missing, unreadable, not a result of this schema, or
    (``verify``, a fit folder) when its SHA-256 or summary version differs from the one recorded in the
    folder's ``fit.json``. Read once (a regular file within ``MAX_SUMMARY_BYTES``): what is hashed is what is used."""
    import hashlib

    from pydantic import ValidationError

    from metaeval.files import Unreadable, read_regular
    from metaeval.sampling import read_fit_record

    try:
        data = read_regular(Path(directory) / "summary.json", MAX_SUMMARY_BYTES)
    except Unreadable:
        return None
    if verify:
        record = read_fit_record(directory) or {}
        if record.get("summary_sha256") != hashlib.sha256(data).hexdigest() or record.get("summary_version") != SUMMARY_VERSION:
            return None
    try:
        return Result.from_json(data)
    except (ValidationError, ValueError, RecursionError):
        return None


def _record_summary(directory: Path) -> None:
    """Add the hash of the fit folder's summary.json to its fit.json, so a changed summary is detected."""
    from metaeval.sampling import file_sha256, read_fit_record

    record = read_fit_record(directory)
    if record is not None:
        record.update(summary_sha256=file_sha256(directory / "summary.json"), summary_version=SUMMARY_VERSION)
        write_atomic(directory / "fit.json", json.dumps(record, sort_keys=True, indent=2) + "\n")


def _summary_of(version: Path, posterior=None, diagnostics: dict | None = None) -> Result:
    """The engine's result for the fit in ``version`` (a fit's folder, resolved): the saved one when it is trusted,
    else made again from the posterior and saved beside it (when the folder can be written: ``summary`` works
    read-only)."""
    result = load_summary(version, verify=True)
    if result is not None:
        return result
    result = summarise(posterior if posterior is not None else load_posterior(version / "posterior.nc"), diagnostics=diagnostics)
    _save_summary(version, result)
    return result


def _save_summary(version: Path, result: Result) -> None:
    """Keep ``result`` as the engine's result of the fit in ``version``, when the folder can be written (``summary`` works read-only)."""
    try:
        with confine(version.parent):
            write_summary(result, version)
            _record_summary(version)
    except (OSError, OutputRefused):
        pass


def fit_and_summarise(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None, refit: bool = False,
                      progress: bool | None = None, publish_result: bool = True, cross_check: bool = False) -> tuple[Result, CachedFit]:
    """Fit (or reuse a cached fit), summarise, and write the summary next to the posterior.

    The fit folder keeps the engine's result; the one returned is judged (:func:`metaeval.certainty.judge`)
    against the evidence as it is now. With ``publish_result`` it is also published as ``<out>``'s current
    result set (:func:`publish`: ``<out>/summary.json``, ``summary.csv``, ``latest.txt``); a caller that adds a
    report to the set publishes it itself. ``cross_check``: the result is checked against the exact engine's
    for the same model (:func:`metaeval.exact_full.with_cross_check`), once per fit: the check is kept in the
    fit folder's summary, so the fit's later uses read it.
    """
    from contextlib import nullcontext

    from metaeval.certainty import judge

    if cross_check:  # its exact side computed while the fit starts (ended unused where the fit was checked before)
        from metaeval.exact_full import exact_moments_meanwhile, with_cross_check
    with exact_moments_meanwhile(evidence, spec) if cross_check else nullcontext() as moments:
        fitted = fit_cached(evidence, spec, out=out, settings=settings, refit=refit, progress=progress)
        version = fitted.directory.resolve()  # one version throughout, whatever a concurrent run switches in
        result = _summary_of(version, None if fitted.cached else fitted.posterior, fitted.diagnostics)
        if cross_check and result.diagnostics is not None and not (result.diagnostics.cross_check or result.diagnostics.cross_check_skipped):
            result = with_cross_check(result, fitted.posterior, evidence, spec, moments=moments)
            _save_summary(version, result)
    result = judge(result, evidence)
    if publish_result:
        publish(out, result, key=fitted.key)
    return result, fitted


def cached_fit(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None) -> tuple[Result, str] | None:
    """The judged result and cache key of an existing, trusted fit for these inputs, without refitting (None if there is none)."""
    from metaeval.certainty import judge
    from metaeval.model import prepare
    from metaeval.sampling import cache_key, fit_dir, verify_fit

    layout = prepare(evidence, spec)
    key = cache_key(layout, spec, (settings or SamplerSettings()).resolved(spec, layout))
    directory = fit_dir(out, key)
    if not os.path.lexists(directory):
        return None
    problem = verify_fit(directory, key)
    if problem is not None:
        log.warning("the cached fit in %s cannot be trusted (%s); `metaeval fit` will fit it again", directory, problem)
        return None
    return judge(_summary_of(directory.resolve()), evidence), key


def cached_summary(evidence, spec: ModelSpec, *, out: str | Path, settings: SamplerSettings | None = None) -> Result | None:
    """The result of an existing fit for these inputs, judged, without refitting (None if never fitted)."""
    found = cached_fit(evidence, spec, out=out, settings=settings)
    return None if found is None else found[0]
