"""The `metaeval` command: a thin shell over the Python API.

Heavy libraries (PyMC, ArviZ, pandas) are imported inside the commands that need
them, so `metaeval --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from metaeval.errors import ClusterFailed, InputError, Problem, SamplingFailed


def _evidence_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, metavar="DIR", help="evidence directory (default: the bundled data/)")
    src.add_argument("--csv", type=Path, metavar="FILE", help="a metafor-style CSV: study, yi, vi or sei, optional domain, design, project, "
                     "and per-domain beneficial, scale, mid, metric, label")
    about = p.add_argument_group("the domains of a --csv (where its columns do not say)")
    about.add_argument("--domains", type=Path, metavar="FILE", help="a domains file in the format of data/domains.yaml")
    about.add_argument("--beneficial", choices=["increase", "decrease"], help="which direction of yi is beneficial (assumed: increase)")
    about.add_argument("--scale", type=float, metavar="X", help="the size of a large effect in yi's units; the default priors are in units of it "
                       "(derived from the data when not given)")
    about.add_argument("--mid", type=float, metavar="X", help="the minimal important difference in yi's units")


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


def _load(args: argparse.Namespace, *, rows: bool = False, estimand: str = "itt", say: bool = True):
    """The harmonised evidence of the command's --data/--csv options: a table, or its rows with ``rows``."""
    from metaeval.harmonise import evidence_frame, evidence_records

    records = evidence_records(**_source(args), estimand=estimand)
    if say:
        _say_assumptions(records)
    return records if rows else evidence_frame(records)


def _format_option(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=["table", "csv", "json"], default=default, help=f"output format (default: {default})")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", metavar="NAME|PATH", help="model spec: a name under models/ or a TOML file (default: default)")
    p.add_argument("--prior", action="append", default=[], metavar="PARAM=DIST(args)", help="override one prior, e.g. tau=halfnormal(0.2); repeatable")
    p.add_argument("--out", type=Path, default=Path("metaeval-out"), metavar="DIR", help="output folder for fits, summaries and reports (default: metaeval-out)")
    p.add_argument("--seed", type=int, default=20261124, help="random seed (default: 20261124)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--allow-failed-gate", action="store_true",
                   help=f"exit with status 0 when the diagnostics gate fails (default: {GATE_FAILED}; the result is written either way, marked as failed)")


def cmd_validate(args: argparse.Namespace) -> int:
    from metaeval.validation import validate

    report = validate(**_source(args))
    print(report)
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from metaeval.present import write_table

    table = _load(args)
    write_table(table, args.format, sys.stdout, columns=None if args.all_columns else "core")
    return 0


def cmd_classic(args: argparse.Namespace) -> int:
    """Frequentist random-effects meta-analysis per domain (metafor's rma)."""
    from metaeval.classic import classic_by_domain
    from metaeval.present import to_json

    if not 0 < args.level < 1:  # also refuses nan
        raise InputError(Problem("command line", "", "--level", f"must be a probability strictly between 0 and 1 (e.g. 0.95), got {args.level}"))
    from metaeval.sampling import check_magnitudes

    evidence = _load(args)
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


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default="mcmc",
                   help="mcmc: the model with PyMC; exact: the same model integrated numerically, without sampling, where it "
                        "has an exact form (every bundled model but design_hierarchy; exit 2 otherwise); auto: exact where it "
                        "has one, else mcmc (default: mcmc)")
    p.add_argument("--sampler", choices=["nutpie", "pymc"], default="nutpie", help="NUTS implementation for --engine mcmc (default: nutpie)")
    p.add_argument("--refit", action="store_true", help="fit again even when a cached fit for the same inputs exists")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="where compiled models are kept across runs (default: $METAEVAL_CACHE_DIR, else ~/.cache/metaeval)")


def _sampler_settings(args: argparse.Namespace):
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


def _exact_summary(args: argparse.Namespace, evidence, spec):
    """The exact engine's result for the model of ``--model``/``--prior``, judged (:func:`metaeval.certainty.judge`);
    exit 2 with the reason where that model has no exact form on this evidence.

    ``evidence``: the table or its rows (``evidence_records``; the fit and summary commands
    pass rows, so this path never imports pandas).
    """
    from metaeval.certainty import judge
    from metaeval.exact_core import NoExactForm
    from metaeval.exact_full import fit_exact_model

    try:
        result = fit_exact_model(evidence, spec)
    except NoExactForm as err:  # a model this engine has no exact form for: said why
        raise InputError(Problem("command line", "", "--engine exact", str(err))) from None
    except (ValueError, OverflowError) as err:  # a number the engine cannot use: said why
        raise InputError(Problem(str(args.csv or args.data or "the evidence"), "", "--engine exact", str(err))) from None
    return judge(result, evidence)


def _engine(args: argparse.Namespace, evidence, spec) -> str:
    """The engine ``--engine`` asks for: ``auto`` is exact where the model has an exact form on this evidence."""
    if args.engine != "auto":
        return args.engine
    return "exact" if _exact_reason(evidence, spec) is None else "mcmc"


def _exact_reason(evidence, spec) -> str | None:
    """Why the exact engine cannot compute ``spec``'s model on ``evidence`` (None: it can)."""
    from metaeval.exact_full import exact_reason
    from metaeval.model import prepare

    return exact_reason(prepare(evidence, spec), spec)


#: Exit status of a command whose result was written but failed the diagnostics gate (see the README).
GATE_FAILED = 3


def _emit_summary(args: argparse.Namespace, summary: dict, evidence=None) -> int:
    """Print a summary; when the diagnostics gate failed, say so with advice that works and return
    :data:`GATE_FAILED` (0 with ``--allow-failed-gate``).

    ``evidence`` (table or rows) lets the advice point at the exact engine when it computes this very model.
    """
    from metaeval.present import render

    sys.stdout.write(render(summary, args.format))
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


def _fit(args: argparse.Namespace, *, say: bool = True, cross_check: bool = False):
    """The evidence rows (``evidence_records``), their summary (fitted, or reused from the cache, with the chosen
    engine) and the fit's cache key (None for the exact engine, which has no cache). Nothing is published yet.

    ``say``: note on stderr what was assumed about the domains (``run`` has said it in its validation).
    ``cross_check``: an MCMC result is checked against the exact engine's for the same model, where it has one
    (``diagnostics.cross_check``; a discrepancy beyond Monte Carlo error fails the gate).
    """
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    records = _load(args, rows=True, say=say)
    if _engine(args, records, spec) == "exact":  # computed afresh every time (no cache); published as the MCMC one is
        return records, _exact_summary(args, records, spec), None
    from metaeval.harmonise import evidence_frame
    from metaeval.summary import fit_and_summarise

    table = evidence_frame(records)
    summary, fitted = fit_and_summarise(table, spec, out=args.out, settings=_sampler_settings(args), refit=args.refit,
                                        publish_result=False)
    if cross_check:  # the exact answer for the same model, where there is one, as an oracle for the sampler
        from metaeval.exact_full import with_cross_check

        summary = with_cross_check(summary, fitted.posterior, table, spec)
    return records, summary, fitted.key


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit the model (or reuse the cached fit for the same inputs), publish its summary in OUT and print it."""
    from metaeval.summary import publish

    records, summary, key = _fit(args)
    publish(args.out, summary, key=key)
    return _emit_summary(args, summary, records)


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary of an existing fit for the same inputs; never refits."""
    from metaeval.harmonise import evidence_frame
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    records = _load(args, rows=True)
    if _engine(args, records, spec) == "exact":
        return _emit_summary(args, _exact_summary(args, records, spec))
    from metaeval.summary import cached_summary

    summary = cached_summary(evidence_frame(records), spec, out=args.out, settings=_sampler_settings(args))
    if summary is None:
        print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
              "run `metaeval fit` with the same options first", file=sys.stderr)
        return 1
    return _emit_summary(args, summary, records)


def _read_summary(path: Path):
    """A fit's result (the JSON `metaeval fit --format json` prints), or an InputError naming each bad field."""
    import json

    from pydantic import ValidationError

    from metaeval.result import SCHEMA_VERSION, Result

    from metaeval.files import Unreadable, read_regular
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

    evidence = _load(args)
    key = None
    if args.summary is not None:
        summary = _read_summary(args.summary)
    else:
        from metaeval.spec import load_spec

        spec = load_spec(args.model, args.prior)
        if _engine(args, evidence, spec) == "exact":
            summary = _exact_summary(args, evidence, spec)
        else:
            from metaeval.summary import cached_fit

            found = cached_fit(evidence, spec, out=args.out, settings=_sampler_settings(args))
            if found is None:
                print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
                      "run `metaeval fit` with the same options first, or pass --summary FILE", file=sys.stderr)
                return 1
            summary, key = found
    summary, extras = _report_extras(args, evidence, summary)
    appraisal = None if args.summary is not None else _appraisal(args, evidence)  # a summary file's model may be another
    analysis = _analysis(args, evidence, summary)
    if args.output is not None:
        print(write_report(args.output, evidence, summary, extras=extras, appraisal=appraisal, analysis=analysis))
        return 0
    from metaeval.summary import publish  # the report joins the summary it shows, as one set in OUT

    publish(args.out, summary, key=key, report=lambda path: write_report(path, evidence, summary, extras=extras, appraisal=appraisal, analysis=analysis))
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
    table = _load(args)
    print(save_figure(forest_plot(table, summary, args.domain), args.out))
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Fit the sensitivity grid (+ leave-one-project-out, power-scaling) on Dask; write table, figures, report."""
    from metaeval.sensitivity import load_grid, report_extras, run_sensitivity, write_outputs

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
    settings = _sampler_settings(args)
    from dataclasses import asdict

    out = args.out / "sensitivity"
    result = run_sensitivity(grid=grid, **_source(args), settings=asdict(settings), overrides=args.prior,
                             out=args.out, scheduler=args.scheduler, workers=args.workers, progress=None, refit=args.refit,
                             engine=args.engine)
    table = result.table()
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    elif args.format == "csv":
        from metaeval.files import safe_csv

        sys.stdout.write(safe_csv(table))
    else:
        shown = table[["scenario", "domain", "mu_mean", "mu_hdi_low", "mu_hdi_high", "p_beneficial", "tau_mean", "gate_passed", "error"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep=""))
        print("\nverdicts:")
        for d, v in result.verdicts().items():
            print(f"  {d}: {v}")
    chatter = sys.stdout if args.format == "table" else sys.stderr
    baseline = result.baseline()
    if baseline is not None and not args.no_report:
        from metaeval.report import write_report
        from metaeval.summary import cached_summary
        from metaeval.sensitivity import scenario_spec

        evidence = _load(args, estimand=result.scenarios[0]["estimand"])
        spec = scenario_spec(result.scenarios[0], grid, args.prior)
        if args.engine != "mcmc" and _exact_reason(evidence, spec) is None:
            summary = _exact_summary(args, evidence, spec)
        else:
            summary = cached_summary(evidence, spec, out=args.out, settings=settings)
    else:
        summary = None
    from metaeval.files import result_set

    with result_set(out) as staging:  # OUT/sensitivity: the previous run's files or this one's, never a mix
        paths = write_outputs(result, staging)
        if summary is not None:
            paths["report"] = write_report(staging / "report.html", evidence, summary, extras={"sensitivity": report_extras(result)})
    print(f"\nwritten to {out}: " + ", ".join(sorted({p.name for p in paths.values()})), file=chatter)
    return 0 if all(r["ok"] for r in result.results) else 1


def _appraisal(args: argparse.Namespace, evidence):
    """Each estimate's risk of bias and each finding's region as the model of --model/--prior uses them."""
    from metaeval.appraisal import appraise
    from metaeval.model import prepare
    from metaeval.spec import load_spec

    return appraise(evidence, prepare(evidence, load_spec(args.model, args.prior)))


def _report_extras(args: argparse.Namespace, evidence, summary):
    """The summary, its certainty judged with the robustness check, and the report's optional sections: that check
    of a summary fitted here (the variants the exact engine computes, the others named with the reason), the saved
    sensitivity run for this evidence, and the calibration study when the summary comes from the model it
    calibrated (the default model, no prior overrides)."""
    from metaeval.sensitivity import saved_extras

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
        calibration = _calibration_section()
        if calibration:
            extras["calibration"] = calibration
    return summary, extras or None


def _calibration_section() -> dict | None:
    """The simulation-based calibration of the default model (bench/sbc.py), as the report cites it."""
    import json

    from metaeval.evidence import PACKAGE_ROOT

    results, picture = PACKAGE_ROOT / "bench" / "sbc_results.json", PACKAGE_ROOT / "bench" / "sbc_ranks.png"
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
    _costs(args)  # a bad costs file is reported before the fit, not after
    records, summary, key = _fit(args, say=False, cross_check=True)
    evidence = evidence_frame(records)
    summary, extras = _report_extras(args, evidence, summary)
    status = _emit_summary(args, summary, records)
    appraisal = _appraisal(args, evidence)
    analysis = _analysis(args, evidence, summary)
    from metaeval.summary import publish  # summary, table, key and report switched in together

    publish(args.out, summary, key=key, report=lambda path: write_report(path, evidence, summary, extras=extras, appraisal=appraisal, analysis=analysis))
    print(f"\nreport: {args.out / 'report.html'}", file=chatter)
    return status


# --- the analyst's questions: compare, plan, costs ------------------------------------------------


def _fitted_draws(args: argparse.Namespace, evidence=None):
    """The evidence, the judged result and the posterior of the fit in --out for these inputs; fitted first
    when there is none (saying so on stderr)."""
    from metaeval.draws import cached_posterior
    from metaeval.spec import load_spec
    from metaeval.summary import cached_summary, fit_and_summarise

    spec = load_spec(args.model, args.prior)
    evidence = _load(args) if evidence is None else evidence
    settings = _sampler_settings(args)
    posterior = cached_posterior(evidence, spec, out=args.out, settings=settings)
    result = cached_summary(evidence, spec, out=args.out, settings=settings) if posterior is not None else None
    if posterior is None or result is None:
        print(f"note: no fit in {args.out} for this evidence, model, sampler settings and seed: fitting it first", file=sys.stderr)
        result, fitted = fit_and_summarise(evidence, spec, out=args.out, settings=settings)
        posterior = fitted.posterior
    if result.diagnostics is not None and not result.diagnostics.passed:
        print(f"warning: the fit's diagnostics gate FAILED ({'; '.join(result.diagnostics.failures)}); do not rely on these numbers",
              file=sys.stderr)
    return evidence, spec, result, posterior


def _reference_draws(args: argparse.Namespace, evidence, spec, *, fit: bool):
    """The posterior of the no-bias variant of the model (``robustness``'s no_bias), from --out; fitted when
    ``fit`` and there is none (saying so). None when the model makes no bias adjustment or it is not there."""
    from metaeval.draws import cached_posterior
    from metaeval.robustness import variants

    if spec.bias_mode == "none":
        return None
    variant = variants(spec, [])[0].spec(spec)
    settings = _sampler_settings(args)
    posterior = cached_posterior(evidence, variant, out=args.out, settings=settings)
    if posterior is None and fit:
        from metaeval.sampling import fit_cached

        print(f"note: fitting the no_bias variant once (cached in {args.out}) to check the ranking against", file=sys.stderr)
        posterior = fit_cached(evidence, variant, out=args.out, settings=settings).posterior
    return posterior


def _costs(args: argparse.Namespace, evidence=None):
    """The cost figures of the evidence directory (none for a --csv), checked against its projects and domains."""
    from metaeval.costs import load_costs

    if getattr(args, "csv", None) is not None:
        return ()
    known = None if evidence is None else set(evidence["project_id"].astype(str))
    domains = None if evidence is None else set(evidence["domain"].astype(str))
    return load_costs(args.data, projects=known, domains=domains)


def _emit(args: argparse.Namespace, result, *, json_text: Callable[[], str], frame: Callable, table: Callable[[], str]) -> int:
    """Print an analysis as --format asks; the exit status of the fit's diagnostics gate (see ``_emit_summary``)."""
    if args.format == "json":
        sys.stdout.write(json_text())
    elif args.format == "csv":
        from metaeval.files import safe_csv

        sys.stdout.write(safe_csv(frame()))
    else:
        sys.stdout.write(table())
    return 0 if result.diagnostics is None or result.diagnostics.passed or args.allow_failed_gate else GATE_FAILED


def cmd_compare(args: argparse.Namespace) -> int:
    """Pairwise comparison and ranking of the initiatives per domain, on their bias-adjusted effects."""
    from metaeval.ranking import compare

    evidence, spec, result, posterior = _fitted_draws(args)
    projects = [p.strip() for p in args.projects.split(",") if p.strip()] if args.projects else None
    reference = None if args.no_bias_check else _reference_draws(args, evidence, spec, fit=True)
    from metaeval.analysis import project_names

    names = project_names(evidence)
    comparison = compare(posterior, domain=args.domain, projects=projects, reference=reference, names=names)
    from metaeval.present import comparison_table

    return _emit(args, result, json_text=comparison.to_json, frame=comparison.to_frame, table=lambda: comparison_table(comparison, names))


def _numbers(text: str | None, option: str, kind=float) -> list | None:
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(Problem("command line", "", option, f"expected comma-separated numbers, got {text!r}")) from None


def cmd_plan(args: argparse.Namespace) -> int:
    """What a new randomised evaluation would do to each domain's verdict (value of information)."""
    from metaeval.planning import plan

    n = _numbers(args.n, "--n", int)
    se = _numbers(args.se, "--se")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(Problem(str(args.plot), "", "--plot", "the file must end in .png, .svg or .pdf"))
    evidence, _, result, posterior = _fitted_draws(args)
    result_plan = plan(posterior, evidence=evidence, domain=args.domain, n=n, sd=args.sd, se=se, sims=args.sims, seed=args.seed)
    if args.plot is not None:
        from metaeval.planning import plan_figure
        from metaeval.plots import save_figure

        print(f"figure: {save_figure(plan_figure(result_plan), args.plot)}", file=sys.stderr)
    from metaeval.present import plan_table

    return _emit(args, result, json_text=result_plan.to_json, frame=result_plan.to_frame, table=lambda: plan_table(result_plan))


def cmd_costs(args: argparse.Namespace) -> int:
    """The costs the initiatives report, as printed, and the cost per person helped where one can be computed."""
    from metaeval.costs import cost_effectiveness

    evidence = _load(args)
    figures = _costs(args, evidence)  # a bad costs file is reported before any fit
    evidence, _, result, posterior = _fitted_draws(args, evidence)
    effectiveness = cost_effectiveness(figures, posterior, wtp=args.wtp)
    from metaeval.present import costs_table, to_json

    return _emit(args, result, table=lambda: costs_table(figures, effectiveness), frame=effectiveness.to_frame,
                 json_text=lambda: to_json({"costs": [f.model_dump(mode="json") for f in figures],
                                            "cost_effectiveness": effectiveness.model_dump(mode="json")}))


def _analysis(args: argparse.Namespace, evidence, summary):
    """The report's initiative sections (:func:`metaeval.analysis.analyse`) from what --out holds: the fit's draws
    and, if it was fitted, the no_bias variant's; never fits."""
    from metaeval.analysis import analyse

    costs = _costs(args, evidence)
    if summary.engine != "mcmc" or getattr(args, "summary", None) is not None:
        return analyse(evidence, summary, costs=costs)
    from metaeval.draws import cached_posterior
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    posterior = cached_posterior(evidence, spec, out=args.out, settings=_sampler_settings(args))
    reference = _reference_draws(args, evidence, spec, fit=False) if posterior is not None else None
    return analyse(evidence, summary, source=posterior, reference=reference, costs=costs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaeval",
        description="Bayesian evidence synthesis for social and employment policy evaluations.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check the evidence files: schema and consistency")
    _evidence_options(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("evidence", help="print the tidy evidence table, harmonised to each domain's metric")
    _evidence_options(p)
    _format_option(p)
    p.add_argument("--all-columns", action="store_true", help="every column, not only the core ones")
    p.set_defaults(func=cmd_evidence)

    p = sub.add_parser("classic", help="classical random-effects meta-analysis per domain (as metafor's rma)")
    _evidence_options(p)
    _format_option(p)
    p.add_argument("--method", default="REML", choices=["FE", "DL", "REML", "PM", "ML", "HS", "SJ", "EB"], help="tau² estimator (default: REML)")
    p.add_argument("--test", default="z", choices=["z", "knha"], help="Wald (z) or Knapp–Hartung (knha) inference")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default: 0.95)")
    p.set_defaults(func=cmd_classic)

    for name, func, text in (
        ("run", cmd_run, "the main job: validate, fit, summarise and report"),
        ("fit", cmd_fit, "fit the Bayesian model (cached by evidence, model, settings and seed) and print per-domain summaries"),
        ("summary", cmd_summary, "print the per-domain summary of an existing fit (never refits)"),
    ):
        p = sub.add_parser(name, help=text)
        _evidence_options(p)
        _model_options(p)
        _format_option(p)
        _fit_options(p)
        p.set_defaults(func=func)

    p = sub.add_parser("report", help="write the self-contained HTML report of a fit (never refits)")
    _evidence_options(p)
    _model_options(p)
    _fit_options(p)
    p.add_argument("--summary", type=Path, metavar="FILE", help="report this fit summary JSON instead of the cached fit")
    p.add_argument("--output", type=Path, metavar="FILE", help="the HTML file to write (default: OUT/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sensitivity", help="sensitivity grid, leave-one-project-out and power-scaling, fitted on Dask")
    _evidence_options(p)
    _model_options(p)
    _format_option(p)
    p.add_argument("--sampler", choices=["nutpie", "pymc"], default="nutpie", help="NUTS implementation (default: nutpie)")
    p.add_argument("--engine", choices=ENGINES, default="mcmc",
                   help="mcmc: every scenario with PyMC on Dask; exact: every scenario integrated numerically, in this process "
                        "(a scenario without an exact form, such as design_hierarchy, fails and says why; no power-scaling); "
                        "auto: exact where a scenario has an exact form, else mcmc (default: mcmc)")
    p.add_argument("--refit", action="store_true", help="fit again even when cached fits exist")
    p.add_argument("--grid", default="sensitivity", metavar="NAME|PATH", help="grid file: a name under models/ or a TOML path (default: sensitivity)")
    p.add_argument("--tau", nargs="*", metavar="PRIOR", help="tau priors to try, in domain-scale units, e.g. halfnormal(0.2) halfcauchy(0.2)")
    p.add_argument("--bias", nargs="*", metavar="MODEL", help="bias models (model files) to try: no_bias variance_inflation design_hierarchy ...")
    p.add_argument("--inclusion", nargs="*", metavar="RULE", help="inclusion rules to try (defined in the grid file)")
    p.add_argument("--estimand", nargs="*", metavar="E", help="estimands to try: itt tot")
    p.add_argument("--direction-only", nargs="*", metavar="IN|OUT", help="direction-only findings in or out")
    p.add_argument("--factorial", action="store_true", help="every combination of the levels, not one factor at a time")
    p.add_argument("--no-loo", action="store_true", help="skip the leave-one-project-out refits")
    p.add_argument("--no-power-scaling", action="store_true", help="skip the power-scaling diagnostics")
    p.add_argument("--no-report", action="store_true", help="do not write OUT/sensitivity/report.html")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://HOST:PORT), or 'serial'; default: a local cluster")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the local cluster (default: one per core)")
    p.set_defaults(func=cmd_sensitivity)

    analyst = {}
    for name, func, text in (
        ("compare", cmd_compare, "which initiative does more? P(A better than B), P(best) and ranks per domain (reads the fit in --out)"),
        ("plan", cmd_plan, "plan the next evaluation: how much would a new randomised study narrow each domain's interval, and change its verdict?"),
        ("costs", cmd_costs, "the costs the initiatives report, and the cost per person helped where cost and effect share a comparison"),
    ):
        p = analyst[name] = sub.add_parser(name, help=text)
        _evidence_options(p)
        _model_options(p)
        _format_option(p)
        p.add_argument("--sampler", choices=["nutpie", "pymc"], default="nutpie", help="NUTS implementation, if a fit is needed (default: nutpie)")
        p.set_defaults(func=func)
    p = analyst["compare"]
    p.add_argument("--domain", metavar="D", help="compare in this domain only")
    p.add_argument("--projects", metavar="A,B,...", help="compare only these projects (ids)")
    p.add_argument("--no-bias-check", action="store_true", help="do not check the order against the no_bias variant (which is fitted once if missing)")
    p = analyst["plan"]
    p.add_argument("--domain", metavar="D", help="plan for this domain only")
    p.add_argument("--n", metavar="N,N,...", help="participants per arm of the new study (default: 50,100,200,400)")
    p.add_argument("--sd", type=float, metavar="X", help="the outcome's SD per person in the domain's metric (SE = SD * sqrt(2/n)); needs --domain")
    p.add_argument("--se", metavar="X[,X...]", help="the new study's SE directly (one per --n, if given); needs --domain")
    p.add_argument("--sims", type=int, default=1000, help="simulated studies per size (default: 1000)")
    p.add_argument("--plot", type=Path, metavar="FILE", help="also draw expected interval width and P(changed verdict) against n (.png, .svg, .pdf)")
    analyst["costs"].add_argument("--wtp", type=float, metavar="DKK",
                                  help="willingness to pay per person helped, in DKK of the cost's price year: P(worth it) at it")

    p = sub.add_parser("plot", help="export a figure on its own (PNG, SVG or PDF)")
    kinds = p.add_subparsers(dest="figure", required=True, metavar="FIGURE")
    q = kinds.add_parser("forest", help="a domain's forest plot: raw and shrunken project effects, pooled and predictive")
    _evidence_options(q)
    q.add_argument("--summary", type=Path, metavar="FILE",
                   help="fit summary JSON (default: metaeval-out/summary.json, the latest fit's)")
    q.add_argument("--domain", required=True, metavar="D", help="the outcome domain to plot")
    q.add_argument("--out", type=Path, required=True, metavar="FILE", help="the figure file: .png, .svg or .pdf")
    q.set_defaults(func=cmd_plot)

    return parser


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


#: Folders under OUT that metaeval writes into: each must stay inside OUT once symlinks are followed.
_WRITTEN_INTO = ("fits", ".versions", "fits/.versions")


def _outputs(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """What this command may write: (folders it writes into, single files).

    ``plot --out`` and ``report --output`` write one file; every other command with ``--out`` writes into that
    folder (its fits and result sets: ``compare``, ``plan`` and ``costs`` fit first when there is no fit), and
    ``plan --plot`` one file besides."""
    if args.func is cmd_plot:
        return [], [args.out]
    if getattr(args, "output", None) is not None:
        return [], [args.output]
    folders = [args.out] if getattr(args, "out", None) is not None else []
    return folders, [args.plot] if getattr(args, "plot", None) is not None else []


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, output paths that would write where no command may write, or cannot be written.

    - Never under an evidence directory: the bundled ``data/`` (or ``$METAEVAL_DATA``) nor ``--data DIR``.
    - A relative path must stay inside the working folder once ``..`` and symlinks are resolved
      (``--out ../../x`` is refused); an absolute path is the user's explicit choice and is used as given.
    - An output folder must not be an existing file, nor lead out of itself through a symlink in the folders
      metaeval writes into (``OUT/fits -> data/``); an output file must not be a folder, device, FIFO or socket.
    - The folder a command writes into must be writable (tried by creating a file): a read-only folder is
      refused before a fit that could not be saved.
    """
    from metaeval.evidence import default_data_dir
    from metaeval.files import check_output_file, inside, probe_writable

    outputs = [(name, getattr(args, attr), kind) for name, attr, kind in
               (("--out", "out", "dir" if args.func is not cmd_plot else "file"), ("--output", "output", "file"), ("--plot", "plot", "file"))
               if getattr(args, attr, None) is not None]
    if not outputs:
        return
    protected = [default_data_dir()] + ([args.data] if getattr(args, "data", None) is not None else [])
    cwd = Path.cwd().resolve()
    problems = []
    for name, path, kind in outputs:
        resolved = Path(path).resolve()
        guarded = next((d for d in protected if _inside(resolved, Path(d).resolve())), None)
        if guarded is not None:
            problems.append(Problem(str(path), "", name, f"refused: it lies inside the evidence directory {guarded}, and no command writes under data/; choose an output folder elsewhere"))
        elif not Path(path).is_absolute() and not _inside(resolved, cwd):
            problems.append(Problem(str(path), "", name, f"refused: this relative path resolves to {resolved}, outside the working folder {cwd}; nothing was written. Give an absolute path if you mean a folder elsewhere"))
        elif kind == "dir" and resolved.exists() and not resolved.is_dir():
            problems.append(Problem(str(path), "", name, "is an existing file; expected an output folder"))
        elif kind == "file" and resolved.is_dir():
            problems.append(Problem(str(path), "", name, "is an existing folder; expected an output file"))
        elif kind == "dir":
            for sub in _WRITTEN_INTO:
                if os.path.lexists(Path(path) / sub) and not inside(Path(path) / sub, path, folder=True):
                    problems.append(Problem(str(Path(path) / sub), "", name, f"refused: it leads to {(Path(path) / sub).resolve()}, outside the output "
                                                                             "folder, and metaeval writes into it; remove the link or choose another --out"))
    if problems:
        raise InputError(problems)
    folders, files = _outputs(args)
    for path in files:
        check_output_file(path, "--out" if args.func is cmd_plot else "--plot" if path is getattr(args, "plot", None) else "--output")
    if args.func is not cmd_summary:  # `summary` only reads (and repairs a cached summary when it can)
        for folder in folders:
            probe_writable(folder, "--out")


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status; as the program itself (no ``argv``), end the process after it."""
    status = _run(argv, as_program=argv is None)
    if argv is None:
        _exit_fast(status)
    return status


def _run(argv: list[str] | None, as_program: bool) -> int:
    """Parse, check the outputs, run the command inside the confined folders, and turn every failure into a status."""
    from metaeval import interrupts
    from metaeval.files import confine, switched

    written_before = len(switched())
    with interrupts.installed(), _messages():
        try:
            args = build_parser().parse_args(argv)
            if getattr(args, "cache_dir", None) is not None:
                from metaeval.compile_cache import ENV_VAR

                os.environ[ENV_VAR] = str(args.cache_dir.resolve())  # read by the compile cache, here and in its compile process
            if as_program:
                _short_lived(args)
            check_output_paths(args)
            folders, files = _outputs(args)
            with confine(*folders, files=files):
                return args.func(args)
        except InputError as err:
            for problem in err.problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        except SamplingFailed as err:
            print(f"error: the sampler failed, so there is no result (nothing was written or cached): {err}", file=sys.stderr)
            return 1
        except ClusterFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except interrupts.Interrupted as stop:
            print(f"error: {stop.what}: {_kept(switched()[written_before:])}", file=sys.stderr)
            return stop.exit_status
        except BrokenPipeError:
            return 0
        except OSError as err:  # the system refused (a full disk, a folder made read-only meanwhile): no partial result
            where = f"{err.filename}: " if err.filename else ""
            print(f"error: {where}{err.strerror or err}; {_kept(switched()[written_before:])}", file=sys.stderr)
            return 1


@contextlib.contextmanager
def _messages():
    """The library's log on stderr while a command runs: notes (warnings) as ``note: ...``, errors as
    ``error: ...`` and, when stderr is not a terminal (where progress bars show instead), the phases of a
    long command (compiling, sampling k of n draws, writing) as plain lines."""
    import logging

    class Format(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            prefix = {logging.WARNING: "note: ", logging.ERROR: "error: "}.get(record.levelno, "")
            return prefix + record.getMessage()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Format())
    logger = logging.getLogger("metaeval")
    saved = logger.level, logger.propagate
    logger.setLevel(logging.WARNING if sys.stderr.isatty() else logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        handler.flush()
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _kept(sets: list) -> str:
    """What a command stopped part-way left: every result set is whole, switched in or not at all."""
    done = list(dict.fromkeys(map(str, sets)))
    return f"stopped after {', '.join(done)} had been written in full" if done else "nothing new was kept; earlier results are as they were"


def _short_lived(args: argparse.Namespace) -> None:
    """Settings for a process that runs one command and ends, measured on a fresh ``metaeval fit --refit``.

    - Full collections of the cyclic garbage collector are put off: 7 of them scanned the imported
      libraries again and again (0.8 CPU-s; freezing the heap after the imports saved 0.35).
    - dask is absent to every command but sensitivity, which runs on it: xarray imports dask and
      dask.array (0.3-0.5 s) at its first DataArray only to recognise dask arrays, and there are none.
    """
    import gc

    gc.set_threshold(*gc.get_threshold()[:2], 1000)
    if args.func is not cmd_sensitivity:
        sys.modules.setdefault("dask", None)  # `import dask` raises ImportError from now on


def _exit_fast(status: int):
    """Flush the output, run the atexit handlers, and end the process without the interpreter's teardown.

    Freeing the object graphs of numba, LLVM and PyTensor one by one took about a second after a fit,
    and nothing depends on it: every file is complete (written atomically) before a command returns.
    """
    import atexit

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
                pass

    flush()
    atexit._run_exitfuncs()
    flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
