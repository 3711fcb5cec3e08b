"""The commands behind `metaeval`: each reads its options, calls the Python API and prints or publishes.

The fitting and reporting commands (validate, evidence, classic, fit, summary, report, plot, sensitivity, run)
and what they share; the analyst's questions (compare, plan, costs) are in :mod:`metaeval.questions`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from metaeval.errors import InputError, Problem


def _source(args: argparse.Namespace) -> dict:
    """The evidence options as keyword arguments of ``load_evidence``/``evidence_records``."""
    from metaeval.harmonise import DomainDefaults

    for name in ("scale", "mid"):
        value = getattr(args, name, None)
        if value is not None and not (value > 0 and value != float("inf")):
            raise InputError(Problem("command line", "", f"--{name}", f"must be a positive number, got {value}"))
    defaults = DomainDefaults(getattr(args, "beneficial", None), getattr(args, "scale", None), getattr(args, "mid", None))
    return {"data_dir": args.data, "csv": args.csv, "domains": getattr(args, "domains", None), "defaults": defaults}


def _say_assumptions(records) -> None:
    """Tell the user, on stderr, what was assumed about a CSV's domains (every command that reads one)."""
    from metaeval.validation import domain_assumptions

    for domain, sentences in sorted(domain_assumptions(records).items()):
        for sentence in sentences:
            print(f"note: domain {domain!r}: {sentence}", file=sys.stderr)


def read_evidence(args: argparse.Namespace, *, rows: bool = False, estimand: str = "itt", say: bool = True):
    """The harmonised evidence of the command's --data/--csv options: a table, or its rows with ``rows``."""
    from metaeval.harmonise import evidence_frame, evidence_records

    records = evidence_records(**_source(args), estimand=estimand)
    if say:
        _say_assumptions(records)
    return records if rows else evidence_frame(records)


def cmd_validate(args: argparse.Namespace) -> int:
    from metaeval.validation import validate

    report = validate(**_source(args))
    print(report)
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from metaeval.present import write_table

    table = read_evidence(args)
    write_table(table, args.format, sys.stdout, columns=None if args.all_columns else "core")
    return 0


def cmd_classic(args: argparse.Namespace) -> int:
    """Frequentist random-effects meta-analysis per domain (metafor's rma)."""
    from metaeval.classic import classic_by_domain
    from metaeval.present import to_json

    if not 0 < args.level < 1:  # also refuses nan
        raise InputError(Problem("command line", "", "--level", f"must be a probability strictly between 0 and 1 (e.g. 0.95), got {args.level}"))
    from metaeval.sampling import check_magnitudes

    evidence = read_evidence(args)
    check_magnitudes(evidence)  # variances of 1e-300 or 1e300 gave null estimates and exit 0
    table = classic_by_domain(evidence, method=args.method, test=args.test, level=args.level)
    if args.format == "json":
        sys.stdout.write(to_json({"method": args.method, "test": args.test, "level": args.level,
                                  "domains": table.set_index("domain").to_dict("index")}))
    elif args.format == "csv":
        from metaeval.present import write_table

        write_table(table, "csv", sys.stdout, columns=None)  # formula-safe: domain names come from the input
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    return 0


def sampler_settings(args: argparse.Namespace):
    from metaeval.sampling import SamplerSettings

    for name in ("chains", "draws"):
        if getattr(args, name) < 1:
            raise InputError(Problem("command line", "", f"--{name}", "must be at least 1"))
    if args.tune < 0:
        raise InputError(Problem("command line", "", "--tune", "must be at least 0"))
    if not 0 <= args.seed < 2**32:
        raise InputError(Problem("command line", "", "--seed", f"must be an integer from 0 to {2**32 - 1}, got {args.seed}"))
    return SamplerSettings(chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed, sampler=args.sampler)


#: --engine: exact inference where the model has an exact form (metaeval.exact_full), MCMC otherwise.
ENGINES = ("mcmc", "exact", "auto")
#: The folder under --out where report and run keep their comparisons and planning simulations (:mod:`metaeval.kept`).
KEPT = "kept"


def exact_summary(args: argparse.Namespace, evidence, spec, *, for_draws: bool = False):
    """The exact engine's result for the model of ``--model``/``--prior``, judged (:func:`metaeval.certainty.judge`);
    exit 2 with the reason where that model has no exact form on this evidence. ``for_draws``: draws follow
    (:func:`exact_draws_for`), made beside the result.

    ``evidence``: the table or its rows (``evidence_records``; the fit and summary commands
    pass rows, so this path never imports pandas).
    """
    from metaeval.certainty import judge
    from metaeval.exact_block import NoExactForm
    from metaeval.exact_full import DRAWS, fit_exact_model

    try:
        result = fit_exact_model(evidence, spec, draws=(DRAWS, args.seed) if for_draws else None)
    except NoExactForm as err:  # a model this engine has no exact form for: said why
        raise InputError(Problem("command line", "", "--engine exact", str(err))) from None
    except (ValueError, OverflowError) as err:  # a number the engine cannot use: said why
        raise InputError(Problem(str(args.csv or args.data or "the evidence"), "", "--engine exact", str(err))) from None
    return judge(result, evidence)


def engine_for(args: argparse.Namespace, evidence, spec) -> str:
    """The engine ``--engine`` asks for: ``auto`` is exact where the model has an exact form on this evidence that
    computes in milliseconds (direction-only findings in at most one project a domain)."""
    if args.engine != "auto":
        return args.engine
    return "exact" if _exact_reason(evidence, spec, several_cells=False) is None else "mcmc"


def _exact_reason(evidence, spec, *, several_cells: bool = True) -> str | None:
    """Why the exact engine cannot compute ``spec``'s model on ``evidence`` (None: it can; see
    :func:`metaeval.exact_full.exact_reason` for ``several_cells``)."""
    from metaeval.exact_full import exact_reason
    from metaeval.model import prepare

    return exact_reason(prepare(evidence, spec), spec, several_cells=several_cells)


#: Exit status of a command whose result was written but failed the diagnostics gate (see the README).
GATE_FAILED = 3


def _emit_summary(args: argparse.Namespace, summary, evidence=None, files: dict[str, str] | None = None) -> int:
    """Print a summary; when the diagnostics gate failed, say so with advice that works and return
    :data:`GATE_FAILED` (0 with ``--allow-failed-gate``).

    ``evidence`` (table or rows) lets the advice point at the exact engine when it computes this very model.
    ``files``: the summary's published files (:func:`metaeval.summary.summary_files`), printed as they are.
    """
    from metaeval.present import render

    text = (files or {}).get(f"summary.{args.format}")
    sys.stdout.write(text if text is not None else render(summary, args.format))
    diagnostics = summary.diagnostics
    if diagnostics is None or diagnostics.passed:
        return 0
    reasons = "; ".join(diagnostics.failures) or "see diagnostics"
    advice = "Try more --draws/--tune or another --seed."
    if evidence is not None and _exact_computes(args, evidence):
        advice = ("The exact engine computes this model on this evidence without sampling: rerun with --engine exact "
                  "(more --draws/--tune or another --seed may not help).")
    print(f"warning: the diagnostics gate FAILED ({reasons}); do not rely on these numbers. {advice}", file=sys.stderr)
    return 0 if args.allow_failed_gate else GATE_FAILED


def _exact_computes(args: argparse.Namespace, evidence) -> bool:
    """Whether ``--engine exact`` computes the very model of ``--model``/``--prior`` on this evidence."""
    from metaeval.spec import load_spec

    return _exact_reason(evidence, load_spec(args.model, args.prior)) is None


def _fit(args: argparse.Namespace, *, say: bool = True, cross_check: bool = False, report: bool = False):
    """The evidence rows (``evidence_records``), their summary (fitted, or reused from the cache, with the chosen
    engine) and the fit (:class:`metaeval.sampling.CachedFit`; None for the exact engine, which has no cache). Nothing
    is published yet.

    ``say``: note on stderr what was assumed about the domains (``run`` has said it in its validation).
    ``cross_check``: an MCMC result is checked against the exact engine's for the same model, where it has one
    (``diagnostics.cross_check``; a discrepancy beyond Monte Carlo error fails the gate). ``report``: a report
    follows (an exact result's draws with it).
    """
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    records = read_evidence(args, rows=True, say=say)
    if engine_for(args, records, spec) == "exact":  # computed afresh every time (no cache); published as the MCMC one is
        return records, exact_summary(args, records, spec, for_draws=report), None
    from metaeval.harmonise import evidence_frame
    from metaeval.summary import fit_and_summarise

    table = evidence_frame(records)
    summary, fitted = fit_and_summarise(table, spec, out=args.out, settings=sampler_settings(args), refit=args.refit,
                                        publish_result=False, cross_check=cross_check)
    return records, summary, fitted


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit the model (or reuse the cached fit for the same inputs), publish its summary in OUT and print it."""
    from metaeval.summary import publish, summary_files

    records, summary, fitted = _fit(args)
    files = summary_files(summary)
    publish(args.out, summary, key=None if fitted is None else fitted.key, files=files)
    status = _emit_summary(args, summary, records, files)
    if fitted is not None and not fitted.cached:
        _keep_comparison(args, records, fitted.posterior)
    return status


def _keep_comparison(args: argparse.Namespace, records, posterior) -> None:
    """Keep in OUT/kept the comparison a report of this fit will show (:func:`metaeval.analysis.comparison`): a fit has
    ArviZ's statistics imported and its draws at hand (tens of milliseconds here), where a first report spent half a
    second importing them."""
    from metaeval.analysis import comparison
    from metaeval.harmonise import evidence_frame
    from metaeval.spec import load_spec

    evidence = evidence_frame(records)
    reference = reference_draws(args, evidence, load_spec(args.model, args.prior), fit=False)
    comparison(evidence, posterior, reference=reference, cache=args.out / KEPT)


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary of an existing fit for the same inputs; never refits."""
    from metaeval.harmonise import evidence_frame
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    records = read_evidence(args, rows=True)
    if engine_for(args, records, spec) == "exact":
        return _emit_summary(args, exact_summary(args, records, spec))
    from metaeval.summary import cached_summary

    summary = cached_summary(evidence_frame(records), spec, out=args.out, settings=sampler_settings(args))
    if summary is None:
        print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
              "run `metaeval fit` with the same options first", file=sys.stderr)
        return 1
    return _emit_summary(args, summary, records)


def _read_summary(path: Path):
    """A fit's result (the JSON `metaeval fit --format json` prints), or an InputError naming each bad field."""
    import json

    from pydantic import ValidationError

    from metaeval.files import Unreadable, read_regular
    from metaeval.result import SCHEMA_VERSION, Result
    from metaeval.summary import MAX_SUMMARY_BYTES

    try:  # a regular file within a size limit: a FIFO or /dev/zero given as --summary is refused, not read
        data = json.loads(read_regular(path, MAX_SUMMARY_BYTES))
    except Unreadable as err:
        reason = "no fit summary here: run `metaeval fit` first, or pass --summary FILE" if err.reason == "file not found" else err.reason
        raise InputError(Problem(str(path), "", "", reason)) from None
    except (ValueError, RecursionError) as err:  # also bytes that are not UTF-8
        raise InputError(Problem(str(path), "", "", f"not a JSON fit summary: {err}")) from None
    try:
        return Result.model_validate(data)
    except ValidationError as err:
        raise InputError([Problem(str(path), "", ".".join(str(x) for x in e["loc"]) or "(document)",
                                  f"{e['msg']}; expected a fit summary of schema version {SCHEMA_VERSION} "
                                  "(`metaeval fit --format json`)") for e in err.errors()[:20]]) from None


def cmd_report(args: argparse.Namespace) -> int:
    """Write the self-contained HTML report from the evidence and a fit summary (never refits); print its path.

    The summary: --summary FILE, else the exact engine's (computed, it takes milliseconds), else the
    cached MCMC fit for the same evidence, model, sampler settings and seed.
    """
    from metaeval.report import write_report

    evidence = read_evidence(args)
    key = None
    if args.summary is not None:
        summary = _read_summary(args.summary)
    else:
        from metaeval.spec import load_spec

        spec = load_spec(args.model, args.prior)
        if engine_for(args, evidence, spec) == "exact":
            summary = exact_summary(args, evidence, spec, for_draws=True)
        else:
            from metaeval.summary import cached_fit

            found = cached_fit(evidence, spec, out=args.out, settings=sampler_settings(args))
            if found is None:
                print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
                      "run `metaeval fit` with the same options first, or pass --summary FILE", file=sys.stderr)
                return 1
            summary, key = found
    summary, sections = _report_sections(args, evidence, summary)
    if args.output is not None:
        print(write_report(args.output, evidence, summary, **sections))
        return 0
    # the report joins the summary it shows, as one set in OUT
    from metaeval.summary import publish

    publish(args.out, summary, key=key, report=lambda path: write_report(path, evidence, summary, **sections))
    print(args.out / "report.html")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Export one figure on its own (PNG, SVG or PDF by the file's suffix); print its path."""
    from metaeval.plots import forest_plot, save_figure

    suffix = args.out.suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise InputError(Problem(str(args.out), "", "--out", "the file must end in .png, .svg or .pdf"))
    summary_path = args.summary or Path("metaeval-out") / "summary.json"
    summary = _read_summary(summary_path)
    if args.domain not in summary.domains:
        have = ", ".join(sorted(summary.domains)) or "none"
        raise InputError(Problem(str(summary_path), "", "--domain", f"no domain {args.domain!r} in the summary (have: {have})"))
    table = read_evidence(args)
    print(save_figure(forest_plot(table, summary, args.domain), args.out))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Fit the sensitivity grid (+ leave-one-project-out, power-scaling) on Dask; write table, figures, report."""
    from metaeval.sensitivity import load_grid, run_sensitivity
    from metaeval.sensitivity_outputs import report_extras, spec_curves, write_outputs

    grid = load_grid(args.grid)
    grid = grid.with_levels(tau=args.tau, bias=args.bias, inclusion=args.inclusion, estimand=args.estimand,
                            direction_only=args.direction_only)
    from dataclasses import replace

    changes = {}
    if args.model != "default":  # --model replaces the grid's baseline model
        changes["baseline"] = {**grid.baseline, "bias": args.model}
    if args.factorial:
        changes["mode"] = "factorial"
    if args.no_loo:
        changes["leave_one_out"] = False
    if args.no_power_scaling:
        changes["power_scaling"] = False
    grid = replace(grid, **changes)
    settings = sampler_settings(args)
    from dataclasses import asdict

    out = args.out / "sensitivity"
    result = run_sensitivity(grid=grid, **_source(args), settings=asdict(settings), overrides=args.prior,
                             out=args.out, scheduler=args.scheduler, workers=args.workers, progress=None, refit=args.refit,
                             engine=args.engine, keep_baseline=not args.no_report)
    table = result.table()
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    elif args.format == "csv":
        from metaeval.files import safe_csv

        sys.stdout.write(safe_csv(table))
    else:
        failed = table["error"].notna()  # said below the table, where their sentences do not widen every row
        shown = table.loc[~failed, ["scenario", "domain", "metric", "mu_mean", "mu_hdi_low", "mu_hdi_high", "p_beneficial", "tau_mean",
                                    "gate_passed"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep=""))
        if failed.any():
            print("\nnot computed:")
            for scenario, error in table.loc[failed, ["scenario", "error"]].itertuples(index=False):
                print(f"  {scenario}: {error}")
        print("\nverdicts:")
        for d, v in result.verdicts().items():
            print(f"  {d}: {v}")
    chatter = sys.stdout if args.format == "table" else sys.stderr
    baseline = result.baseline()
    if baseline is not None and not args.no_report:
        from metaeval.report import write_report
        from metaeval.sensitivity import scenario_spec
        from metaeval.summary import cached_summary

        evidence = read_evidence(args, estimand=result.scenarios[0]["estimand"])
        spec = scenario_spec(result.scenarios[0], grid, args.prior)
        if args.engine != "mcmc" and _exact_reason(evidence, spec, several_cells=args.engine == "exact") is None:
            summary = exact_summary(args, evidence, spec)
        else:
            summary = cached_summary(evidence, spec, out=args.out, settings=settings)
    else:
        summary = None
    from metaeval.files import result_set

    with result_set(out) as staging:  # OUT/sensitivity: the previous run's files or this one's, never a mix
        curves = spec_curves(result)
        paths = write_outputs(result, staging, curves)
        if summary is not None:
            paths["report"] = write_report(staging / "report.html", evidence, summary, extras={"sensitivity": report_extras(result, curves=curves)})
    print(f"\nwritten to {out}: " + ", ".join(sorted({p.name for p in paths.values()})), file=chatter)
    return 0 if all(r["ok"] for r in result.results) else 1


def _appraisal(args: argparse.Namespace, evidence):
    """Each estimate's risk of bias and each finding's region as the model of --model/--prior uses them."""
    from metaeval.appraisal import appraise
    from metaeval.model import prepare
    from metaeval.spec import load_spec

    return appraise(evidence, prepare(evidence, load_spec(args.model, args.prior)))


def _report_sections(args: argparse.Namespace, evidence, summary):
    """The summary as the report shows it (certainty judged with the robustness check) and the report's sections
    beside it, as keyword arguments of :func:`metaeval.report.write_report`: `run` and `report` alike.

    In one BLAS thread: its linear algebra is small, and OpenBLAS's threads only spun on it (a report of the bundled
    fit took 2.1 CPU-s for 1.7 s wall, 1.6 with one thread; the same report)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        summary, extras = report_extras(args, evidence, summary)
        appraisal = None if getattr(args, "summary", None) is not None else _appraisal(args, evidence)  # a summary file's model may be another
        return summary, {"extras": extras, "appraisal": appraisal, "analysis": analysis_for(args, evidence, summary)}


def report_extras(args: argparse.Namespace, evidence, summary):
    """The summary, its certainty judged with the robustness check, and the report's optional sections: that check
    of a summary fitted here (the variants the exact engine computes, the others named with the reason), the saved
    sensitivity run for this evidence, and the calibration study when the summary comes from the model it
    calibrated (the default model, no prior overrides)."""
    from metaeval.sensitivity_outputs import saved_extras

    extras = {}
    if getattr(args, "summary", None) is None and summary.domains:  # a summary file's model may be another
        from metaeval.certainty import judge
        from metaeval.robustness import check, report_section
        from metaeval.spec import load_spec

        robustness = check(evidence, load_spec(args.model, args.prior), summary)
        summary = judge(summary, evidence, robustness.flips())  # a direction that flips under a variant lowers certainty
        extras["robustness"] = report_section(robustness, summary)
    section = saved_extras(args.out / "sensitivity", evidence)
    if section:
        extras["sensitivity"] = section
    if summary.engine == "mcmc" and summary.model.name == "default" and not summary.model.overrides:
        calibration = calibration_section()
        if calibration:
            extras["calibration"] = calibration
    return summary, extras or None


def calibration_section() -> dict | None:
    """The simulation-based calibration of the default model (bench/sbc.py), as the report cites it."""
    import json

    from metaeval.bundled import bundled_path

    results, picture = bundled_path("records/sbc.json"), bundled_path("records/sbc_ranks.png")
    try:
        record = json.loads(results.read_text(encoding="utf-8"))
        analysis, settings = record["analysis"], record["settings"]
    except (OSError, ValueError, KeyError):
        return None
    text = (
        f"Simulation-based calibration (Talts et al. 2018) of the default model: {analysis['replications_completed']} "
        f"evidence bases drawn from the model's own priors, each fitted ({settings['chains']} chains × "
        f"{settings['draws']} draws); the rank of each true parameter among {analysis['L']} thinned posterior draws "
        f"should be uniform. Verdict: {analysis['verdict']} (smallest Bonferroni-adjusted p = "
        f"{analysis['min_primary_p_bonferroni']:.2f}). Source: bench/sbc.md"
        + (f", fitted with metaeval at commit {record['code']['commit'][:12]}." if (record.get("code") or {}).get("commit") else ".")
    )
    table = [{"parameter": k, "chi-square p": v} for k, v in sorted(analysis["primary_p_values"].items())]
    figures = [{"caption": "Rank histograms and ECDF differences with 99% bands", "figure": picture.read_bytes()}] if picture.is_file() else []
    return {"title": "Calibration of the model", "text": text, "table": table, "figures": figures}


def cmd_run(args: argparse.Namespace) -> int:
    """validate → fit → summarise → report on the bundled evidence (or --data/--csv); ends with the report's path."""
    from metaeval.harmonise import evidence_frame
    from metaeval.report import write_report

    # Only the summary goes to stdout with --format csv|json, so scripts can parse it.
    chatter = sys.stdout if args.format == "table" else sys.stderr
    with contextlib.redirect_stdout(chatter):
        cmd_validate(args)
        print()
    read_costs(args)  # a bad costs file is reported before the fit, not after
    records, summary, fitted = _fit(args, say=False, cross_check=True, report=True)
    evidence = evidence_frame(records)
    summary, sections = _report_sections(args, evidence, summary)
    from metaeval.summary import publish, summary_files

    files = summary_files(summary)
    status = _emit_summary(args, summary, records, files)
    # summary, table, key and report switched in together
    publish(args.out, summary, key=None if fitted is None else fitted.key, report=lambda path: write_report(path, evidence, summary, **sections),
            files=files)
    print(f"\nreport: {args.out / 'report.html'}", file=chatter)
    return status


def exact_draws_for(args: argparse.Namespace, evidence, spec):
    """Draws from the exact posterior of ``spec`` (:func:`metaeval.exact_full.exact_draws`, seeded by --seed), shaped
    like an MCMC fit's; exit 2 with the reason where the model has no exact form on this evidence."""
    from metaeval.exact_block import NoExactForm
    from metaeval.exact_full import exact_draws

    try:
        return exact_draws(evidence, spec, seed=args.seed)
    except NoExactForm as err:
        raise InputError(Problem("command line", "", "--engine exact", str(err))) from None


def reference_draws(args: argparse.Namespace, evidence, spec, *, fit: bool, engine: str = "mcmc"):
    """The posterior of the no-bias variant of the model (``robustness``'s no_bias): with ``engine`` exact, its exact
    draws (without ``fit`` only where they take milliseconds); else from --out, fitted when ``fit`` and there is none
    (saying so). None when the model makes no bias adjustment or it is not there."""
    from metaeval.draws import cached_posterior
    from metaeval.robustness import variants

    if spec.bias_mode == "none":
        return None
    variant = variants(spec, [])[0].spec(spec)
    if engine == "exact":
        return exact_draws_for(args, evidence, variant) if _exact_reason(evidence, variant, several_cells=fit) is None else None
    settings = sampler_settings(args)
    posterior = cached_posterior(evidence, variant, out=args.out, settings=settings)
    if posterior is None and fit:
        from metaeval.sampling import fit_cached

        print(f"note: fitting the no_bias variant once (cached in {args.out}) to check the ranking against", file=sys.stderr)
        posterior = fit_cached(evidence, variant, out=args.out, settings=settings).posterior
    return posterior


def read_costs(args: argparse.Namespace, evidence=None):
    """The cost figures of the evidence directory (none for a --csv), checked against its projects and domains."""
    from metaeval.costs import load_costs

    if getattr(args, "csv", None) is not None:
        return ()
    known = None if evidence is None else set(evidence["project_id"].astype(str))
    domains = None if evidence is None else set(evidence["domain"].astype(str))
    return load_costs(args.data, projects=known, domains=domains)


def analysis_for(args: argparse.Namespace, evidence, summary):
    """The report's initiative sections (:func:`metaeval.analysis.analyse`) from what --out holds: the fit's draws
    and, if it was fitted, the no_bias variant's; never fits."""
    from metaeval.analysis import analyse

    costs = read_costs(args, evidence)
    if getattr(args, "summary", None) is not None:
        return analyse(evidence, summary, costs=costs)
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    if summary.engine == "exact":  # its draws: the block posteriors the summary computed are kept in this process
        posterior = exact_draws_for(args, evidence, spec)
    else:
        from metaeval.draws import cached_posterior

        posterior = cached_posterior(evidence, spec, out=args.out, settings=sampler_settings(args))
    reference = reference_draws(args, evidence, spec, fit=False, engine=summary.engine) if posterior is not None else None
    cache = args.out / KEPT if getattr(args, "output", None) is None else None  # report --output FILE writes that file only
    return analyse(evidence, summary, source=posterior, reference=reference, costs=costs, cache=cache)
