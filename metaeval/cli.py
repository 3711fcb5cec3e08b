"""The `metaeval` command: a thin shell over the Python API.

Heavy libraries (PyMC, ArviZ, pandas) are imported inside the commands that need
them, so `metaeval --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metaeval.errors import InputError


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


def cmd_run(args: argparse.Namespace) -> int:
    """validate → fit → summarise → report on the bundled evidence (or --data/--csv)."""
    return cmd_validate(args)


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
    p.set_defaults(func=cmd_run)

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
