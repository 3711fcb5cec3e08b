"""The measurements of the exact engine (``metaeval.exact_full``): agreement and speed.

    .venv/bin/python bench/exact_full.py agreement [--draws 10000]   # against a 40,000-draw MCMC fit
    .venv/bin/python bench/exact_full.py speed [--runs 3]            # fresh processes, CPU seconds, peak memory

``agreement`` fits the bundled evidence (and a 1,000-estimate synthetic base from ``bench/synthetic.py``)
under the default model with MCMC, 4 chains x ``--draws`` after 2,000 tuning steps (cached in the system's
temporary folder), and compares every domain mean, tau and project effect with the
exact engine: the differences of the posterior means and SDs and of the interval ends, in the exact
posterior's SDs, beside the MCMC's Monte Carlo standard errors and the exact engine's stated error.

``speed`` times, in fresh processes, ``fit --engine exact`` and ``run --engine exact`` on the bundled
evidence, ``sensitivity --engine exact`` (the whole bundled grid with leave-one-project-out) and
``fit --engine exact`` on synthetic bases of 1,000 to 100,000 estimates: user + system CPU seconds of
the child (the machine is shared: wall time measures the others too) and its peak resident memory.

Results: ``bench/results/exact-<date>.json``; a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "bench"))

from synthetic import write_csv  # noqa: E402

SIZES = (1_000, 10_000, 100_000)  # estimates; projects a tenth, 10 domains


def _child(args: list[str], cwd: Path) -> dict:
    """Run ``metaeval ARGS`` in a fresh process under /usr/bin/time: its CPU seconds (user + system), wall
    seconds and peak resident memory."""
    done = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", str(BIN / "metaeval"), *args], cwd=cwd,
                          capture_output=True, text=True)
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("TIME "))
    wall, user, system, peak_kb = (float(v) for v in line.split()[1:])
    rc = done.returncode
    return {"rc": rc, "wall_s": wall, "cpu_s": round(user + system, 2), "peak_mb": round(peak_kb / 1024, 1),
            "stderr_tail": done.stderr[-400:] if rc not in (0, 1) else ""}


def speed(runs: int) -> dict:
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = {
            "fit --engine exact (bundled)": ["fit", "--engine", "exact", "--format", "json", "--out", "o"],
            "run --engine exact (bundled)": ["run", "--engine", "exact", "--format", "json", "--out", "o"],
            "sensitivity --engine exact (bundled grid + leave-one-out)": ["sensitivity", "--engine", "exact", "--out", "o", "--no-report"],
        }
        for n in SIZES:
            path = tmp / f"synthetic-{n}.csv"
            write_csv(path, n, n // 10, 10, seed=1)
            cases[f"fit --engine exact ({n:,} synthetic estimates)"] = ["fit", "--engine", "exact", "--csv", str(path), "--format", "json", "--out", "o"]
        for name, args in cases.items():
            out[name] = [_child(args, tmp) for _ in range(runs)]
            cpu = [r["cpu_s"] for r in out[name]]
            print(f"{name:<62} cpu {statistics.median(cpu):7.2f} s (min {min(cpu):.2f}, max {max(cpu):.2f})  "
                  f"peak {max(r['peak_mb'] for r in out[name]):7.0f} MB  rc {sorted({r['rc'] for r in out[name]})}", flush=True)
    return out


def _stats_mcmc(posterior, hdi_prob: float):
    """Per quantity (domain, name): mean, sd, HDI and Monte Carlo standard errors from the MCMC draws."""
    import arviz as az

    post = posterior["posterior"]
    mcse = {m: az.mcse(posterior, var_names=["mu", "tau", "theta_project"], method=m) for m in ("mean", "sd")}
    out = {}
    for var, dim in (("mu", "domain"), ("tau", "domain"), ("theta_project", "project")):
        for label in post[var].coords[dim].values:
            draws = post[var].sel({dim: label})
            lo, hi = az.hdi(draws, prob=hdi_prob).values
            key = (str(label), var) if dim == "domain" else (str(label).partition("/")[0], str(label).partition("/")[2])
            out[key] = {"mean": float(draws.mean()), "sd": float(draws.std(ddof=1)), "hdi_low": float(lo), "hdi_high": float(hi),
                        "mcse_mean": float(mcse["mean"][var].sel({dim: label})), "mcse_sd": float(mcse["sd"][var].sel({dim: label}))}
    return out


def agreement(draws: int) -> dict:
    from metaeval.exact_full import fit_exact_model
    from metaeval.harmonise import load_evidence
    from metaeval.sampling import SamplerSettings, fit_cached
    from metaeval.spec import load_spec

    spec = load_spec("default")
    cache = Path(tempfile.gettempdir()) / "metaeval-exact-bench"  # fits: large, and not results
    bases = {"bundled": load_evidence()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic-1000.csv"
        write_csv(path, 1000, 100, 10, seed=1)
        bases["synthetic 1,000 estimates"] = load_evidence(csv=path)
    out = {}
    for name, table in bases.items():
        start = time.process_time()
        exact = fit_exact_model(table, spec)
        exact_cpu = time.process_time() - start
        fitted = fit_cached(table, spec, out=cache, settings=SamplerSettings(chains=4, draws=draws, tune=2000, seed=18), progress=False)
        mcmc = _stats_mcmc(fitted.posterior, spec.hdi_prob)
        rows, worst = [], {"mean": 0.0, "sd": 0.0, "interval_ends": 0.0, "stated_error": 0.0}
        for d, dom in exact.domains.items():
            quantities = [(d, "mu", dom.mu), (d, "tau", dom.tau)] + [(d, p.project, p) for p in dom.projects]
            for domain, q, e in quantities:
                m = mcmc[(domain, "mu" if q == "mu" else "tau" if q == "tau" else q)]
                row = {"domain": domain, "quantity": q, "exact_sd": e.sd,
                       "mean_sd": (m["mean"] - e.mean) / e.sd, "sd_sd": (m["sd"] - e.sd) / e.sd,
                       "hdi_low_sd": (m["hdi_low"] - e.hdi_low) / e.sd, "hdi_high_sd": (m["hdi_high"] - e.hdi_high) / e.sd,
                       "mcse_mean_sd": m["mcse_mean"] / e.sd, "stated_error_sd": e.error_sd}
                rows.append(row)
                worst["mean"] = max(worst["mean"], abs(row["mean_sd"]))
                worst["sd"] = max(worst["sd"], abs(row["sd_sd"]))
                worst["interval_ends"] = max(worst["interval_ends"], abs(row["hdi_low_sd"]), abs(row["hdi_high_sd"]))
                worst["stated_error"] = max(worst["stated_error"], e.error_sd)
        diag = fitted.diagnostics
        out[name] = {"draws": 4 * draws, "diagnostics": {k: diag[k] for k in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "passed")},
                     "exact_cpu_s": round(exact_cpu, 3), "worst_in_sd": worst, "rows": rows}
        print(f"{name}: {4 * draws:,} draws, R-hat {diag['rhat_max']:.4f}, ESS {diag['ess_bulk_min']:.0f}/{diag['ess_tail_min']:.0f}; "
              f"largest |MCMC - exact| in SDs: means {worst['mean']:.3f}, SDs {worst['sd']:.3f}, interval ends "
              f"{worst['interval_ends']:.3f}; stated numerical error at most {worst['stated_error']:.4f} SD", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("--draws", type=int, default=10_000, help="draws per chain (4 chains)")
    s = sub.add_parser("speed")
    s.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    result = agreement(args.draws) if args.what == "agreement" else speed(args.runs)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {"what": args.what, "date": dt.date.today().isoformat(), "commit": commit, "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_before": load, "python": platform.python_version(), "result": result}
    path = ROOT / "bench" / "results" / f"exact-{args.what}-{record['date']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
