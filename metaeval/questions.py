"""The analyst's questions as commands: compare (which initiative does more), plan (what a new evaluation
would change) and costs (at what cost), over the fit in --out (fitted first when there is none), or over the
exact engine's draws (--engine exact, or auto where the model has a fast exact form)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from metaeval.commands import (
    GATE_FAILED,
    engine_for,
    exact_draws_for,
    exact_summary,
    read_costs,
    read_evidence,
    reference_draws,
    sampler_settings,
)
from metaeval.errors import InputError, Problem


def _fitted_draws(args: argparse.Namespace, evidence=None):
    """The evidence, the judged result and the posterior of the fit in --out for these inputs; fitted first
    when there is none (saying so on stderr). With the exact engine (--engine), its result and draws, computed here."""
    from metaeval.draws import cached_posterior
    from metaeval.spec import load_spec
    from metaeval.summary import cached_summary, fit_and_summarise

    spec = load_spec(args.model, args.prior)
    evidence = read_evidence(args) if evidence is None else evidence
    if engine_for(args, evidence, spec) == "exact":
        return evidence, spec, exact_summary(args, evidence, spec, for_draws=True), exact_draws_for(args, evidence, spec)
    settings = sampler_settings(args)
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
    reference = None if args.no_bias_check else reference_draws(args, evidence, spec, fit=True, engine=result.engine)
    from metaeval.analysis import project_names

    names = project_names(evidence)
    comparison = compare(posterior, domain=args.domain, projects=projects, reference=reference, names=names, integrated=result)
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

    evidence = read_evidence(args)
    figures = read_costs(args, evidence)  # a bad costs file is reported before any fit
    evidence, _, result, posterior = _fitted_draws(args, evidence)
    effectiveness = cost_effectiveness(figures, posterior, wtp=args.wtp)
    from metaeval.present import costs_table, to_json

    return _emit(args, result, table=lambda: costs_table(figures, effectiveness), frame=effectiveness.to_frame,
                 json_text=lambda: to_json({"costs": [f.model_dump(mode="json") for f in figures],
                                            "cost_effectiveness": effectiveness.model_dump(mode="json")}))
