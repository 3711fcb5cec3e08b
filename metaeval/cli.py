"""The `metaeval` command: a thin shell over the Python API.

Heavy libraries (PyMC, ArviZ, pandas) are imported inside the commands that need
them, so `metaeval --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metaeval.errors import InputError, Problem


def _evidence_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, metavar="DIR", help="evidence directory (default: the bundled data/)")
    src.add_argument("--csv", type=Path, metavar="FILE", help="a metafor-style CSV: study, yi, vi or sei, optional domain, design, project")


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
    p.add_argument("--strict", action="store_true", help="exit with status 1 when the diagnostics gate fails")


def cmd_validate(args: argparse.Namespace) -> int:
    from metaeval.harmonise import validate

    report = validate(args.data, csv=args.csv)
    print(report)
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from metaeval.harmonise import load_evidence
    from metaeval.present import write_table

    table = load_evidence(args.data, csv=args.csv)
    write_table(table, args.format, sys.stdout, columns=None if args.all_columns else "core")
    return 0


def cmd_classic(args: argparse.Namespace) -> int:
    """Frequentist random-effects meta-analysis per domain (metafor's rma)."""
    from metaeval.classic import classic_by_domain
    from metaeval.harmonise import load_evidence
    from metaeval.present import to_json

    table = classic_by_domain(load_evidence(args.data, csv=args.csv), method=args.method, test=args.test, level=args.level)
    if args.format == "json":
        sys.stdout.write(to_json({"method": args.method, "test": args.test, "level": args.level,
                                  "domains": table.set_index("domain").to_dict("index")}))
    elif args.format == "csv":
        table.to_csv(sys.stdout, index=False, lineterminator="\n")
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    return 0


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["mcmc", "exact"], default="mcmc", help="mcmc: the full model with PyMC; exact: the one-level model on a grid (no bias terms, no direction-only findings)")
    p.add_argument("--sampler", choices=["nutpie", "pymc"], default="nutpie", help="NUTS implementation for --engine mcmc (default: nutpie)")
    p.add_argument("--refit", action="store_true", help="fit again even when a cached fit for the same inputs exists")


def _sampler_settings(args: argparse.Namespace):
    from metaeval.sampling import SamplerSettings

    for name in ("chains", "draws"):
        if getattr(args, name) < 1:
            raise InputError(Problem("command line", "", f"--{name}", "must be at least 1"))
    if args.tune < 0:
        raise InputError(Problem("command line", "", "--tune", "must be at least 0"))
    return SamplerSettings(chains=args.chains, draws=args.draws, tune=args.tune, seed=args.seed, sampler=args.sampler)


def _exact_summary(args: argparse.Namespace, evidence, spec) -> dict:
    from metaeval.exact import fit_exact

    summary = fit_exact(evidence, priors=spec.priors, hdi_prob=spec.hdi_prob, overrides=spec.overrides)
    summary.setdefault("seed", args.seed)
    return summary


def _emit_summary(args: argparse.Namespace, summary: dict) -> int:
    """Print a summary; say plainly when the diagnostics gate failed (exit 1 with --strict)."""
    from metaeval.summary import render

    sys.stdout.write(_plain_json(summary) if args.format == "json" and summary.get("engine") != "mcmc" else render(summary, args.format))
    diagnostics = summary.get("diagnostics") or {}
    if diagnostics.get("passed") is False:
        reasons = "; ".join(diagnostics.get("failures", [])) or "see diagnostics"
        print(f"warning: the diagnostics gate FAILED ({reasons}); do not rely on these numbers. "
              "Try more --draws/--tune or another --seed.", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


def _plain_json(summary: dict) -> str:
    from metaeval.present import to_json

    return to_json(summary)


def _fit(args: argparse.Namespace):
    """The evidence and its summary: fitted (or reused from the cache) with the chosen engine."""
    from metaeval.harmonise import load_evidence
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    evidence = load_evidence(args.data, csv=args.csv)
    if args.engine == "exact":
        return evidence, _exact_summary(args, evidence, spec)
    from metaeval.summary import fit_and_summarise

    summary, _ = fit_and_summarise(evidence, spec, out=args.out, settings=_sampler_settings(args), refit=args.refit)
    return evidence, summary


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit the model (or reuse the cached fit for the same inputs) and print the summary."""
    _, summary = _fit(args)
    return _emit_summary(args, summary)


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary of an existing fit for the same inputs; never refits."""
    from metaeval.harmonise import load_evidence
    from metaeval.spec import load_spec

    spec = load_spec(args.model, args.prior)
    evidence = load_evidence(args.data, csv=args.csv)
    if args.engine == "exact":
        return _emit_summary(args, _exact_summary(args, evidence, spec))
    from metaeval.summary import cached_summary

    summary = cached_summary(evidence, spec, out=args.out, settings=_sampler_settings(args))
    if summary is None:
        print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
              "run `metaeval fit` with the same options first", file=sys.stderr)
        return 1
    return _emit_summary(args, summary)


def _read_summary(path: Path) -> dict:
    """A fit summary (the JSON `metaeval fit --format json` prints), or a clear InputError."""
    import json

    if not path.is_file():
        raise InputError(Problem(str(path), "", "", "no fit summary here: run `metaeval fit` first, or pass --summary FILE"))
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(Problem(str(path), "", "", f"not a JSON fit summary: {err}")) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("domains"), dict):
        raise InputError(Problem(str(path), "", "domains", "missing: this is not a fit summary"))
    return summary


def cmd_report(args: argparse.Namespace) -> int:
    """Write the self-contained HTML report from the evidence and a fit summary (never refits); print its path.

    The summary: --summary FILE, else the exact engine's (computed, it takes milliseconds), else the
    cached MCMC fit for the same evidence, model, sampler settings and seed.
    """
    from metaeval.harmonise import load_evidence
    from metaeval.report import write_report

    evidence = load_evidence(args.data, csv=args.csv)
    if args.summary is not None:
        summary = _read_summary(args.summary)
    else:
        from metaeval.spec import load_spec

        spec = load_spec(args.model, args.prior)
        if args.engine == "exact":
            summary = _exact_summary(args, evidence, spec)
        else:
            from metaeval.summary import cached_summary

            summary = cached_summary(evidence, spec, out=args.out, settings=_sampler_settings(args))
            if summary is None:
                print(f"error: no fit in {args.out} for this evidence, model, sampler settings and seed; "
                      "run `metaeval fit` with the same options first, or pass --summary FILE", file=sys.stderr)
                return 1
    print(write_report(args.output or args.out / "report.html", evidence, summary))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Export one figure on its own (PNG, SVG or PDF by the file's suffix); print its path."""
    from metaeval.harmonise import load_evidence
    from metaeval.plots import forest_plot, save_figure

    suffix = args.out.suffix.lower().lstrip(".")
    if suffix not in ("png", "svg", "pdf"):
        raise InputError(Problem(str(args.out), "", "--out", "the file must end in .png, .svg or .pdf"))
    summary_path = args.summary or Path("metaeval-out") / "summary.json"
    summary = _read_summary(summary_path)
    if args.domain not in summary["domains"]:
        have = ", ".join(sorted(summary["domains"])) or "none"
        raise InputError(Problem(str(summary_path), "", "--domain", f"no domain {args.domain!r} in the summary (have: {have})"))
    table = load_evidence(args.data, csv=args.csv)
    print(save_figure(forest_plot(table, summary, args.domain), args.out))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """validate → fit → summarise → report on the bundled evidence (or --data/--csv); ends with the report's path."""
    import contextlib

    from metaeval.report import write_report

    # Only the summary goes to stdout with --format csv|json, so scripts can parse it.
    chatter = sys.stdout if args.format == "table" else sys.stderr
    with contextlib.redirect_stdout(chatter):
        cmd_validate(args)
        print()
    evidence, summary = _fit(args)
    status = _emit_summary(args, summary)
    path = write_report(args.out / "report.html", evidence, summary)
    print(f"\nreport: {path}", file=chatter)
    return status


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

    p = sub.add_parser("run", help="the main job: validate, fit, summarise and report")
    _evidence_options(p)
    _model_options(p)
    _format_option(p)
    _fit_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fit", help="fit the Bayesian model (cached by evidence, model, settings and seed) and print per-domain summaries")
    _evidence_options(p)
    _model_options(p)
    _format_option(p)
    _fit_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("summary", help="print the per-domain summary of an existing fit (never refits)")
    _evidence_options(p)
    _model_options(p)
    _format_option(p)
    _fit_options(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("report", help="write the self-contained HTML report of a fit (never refits)")
    _evidence_options(p)
    _model_options(p)
    _fit_options(p)
    p.add_argument("--summary", type=Path, metavar="FILE", help="report this fit summary JSON instead of the cached fit")
    p.add_argument("--output", type=Path, metavar="FILE", help="the HTML file to write (default: OUT/report.html)")
    p.set_defaults(func=cmd_report)

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
