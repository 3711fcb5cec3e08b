"""The `metaeval` command: a thin shell over the Python API.

Heavy libraries (PyMC, ArviZ, pandas) are imported inside the commands that need
them, so `metaeval --help` answers at once.

The commands themselves are in :mod:`metaeval.commands` and :mod:`metaeval.questions`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from metaeval.commands import (
    ENGINES,
    GATE_FAILED,
    KEPT,
    cmd_classic,
    cmd_evidence,
    cmd_fit,
    cmd_plot,
    cmd_report,
    cmd_run,
    cmd_sensitivity,
    cmd_summary,
    cmd_validate,
)
from metaeval.errors import ClusterFailed, InputError, Problem, SamplingFailed
from metaeval.questions import cmd_compare, cmd_costs, cmd_plan


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


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default="mcmc",
                   help="mcmc: the model with PyMC; exact: the same model integrated numerically, without sampling, where it "
                        "has an exact form (every bundled model but design_hierarchy; exit 2 otherwise); auto: exact where it "
                        "has one, else mcmc (default: mcmc)")
    p.add_argument("--sampler", choices=["nutpie", "pymc"], default="nutpie", help="NUTS implementation for --engine mcmc (default: nutpie)")
    p.add_argument("--refit", action="store_true", help="fit again even when a cached fit for the same inputs exists")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="where compiled models are kept across runs (default: $METAEVAL_CACHE_DIR, else ~/.cache/metaeval)")


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
                   help="mcmc: every scenario with PyMC on Dask; exact: every scenario integrated numerically, each distinct domain "
                        "once, in a worker process per core (--workers) "
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
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the local cluster, or of the exact engine (default: one per core)")
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
        p.add_argument("--engine", choices=ENGINES, default="mcmc",
                       help="mcmc: the fit in --out (fitted once if missing); exact: independent draws from the exact posterior, "
                            "computed here, where the model has an exact form (exit 2 otherwise); auto: exact where it takes "
                            "milliseconds, else mcmc (default: mcmc)")
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
_WRITTEN_INTO = ("fits", ".versions", "fits/.versions", KEPT)


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
            problems.append(Problem(str(path), "", name, f"refused: it lies inside the evidence directory {guarded}, and no command writes under data/; "
                                                         "choose an output folder elsewhere"))
        elif not Path(path).is_absolute() and not _inside(resolved, cwd):
            problems.append(Problem(str(path), "", name, f"refused: this relative path resolves to {resolved}, outside the working folder {cwd}; "
                                                         "nothing was written. Give an absolute path if you mean a folder elsewhere"))
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
