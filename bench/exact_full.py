"""The measurements of the exact engine (``metaeval.exact_full``): agreement and speed.

    .venv/bin/python bench/exact_full.py agreement [--draws 10000] [--seeds 18 7]   # against 40,000-draw MCMC fits
    .venv/bin/python bench/exact_full.py speed [--runs 3]            # fresh processes, CPU and wall seconds, peak memory

``agreement`` fits the bundled evidence (and a 1,000-estimate synthetic base from ``bench/synthetic.py``)
under the default model with MCMC, 4 chains x ``--draws`` after 2,000 tuning steps (cached in the system's
temporary folder), and compares every domain mean, tau and project effect with the
exact engine: the differences of the posterior means and SDs and of the interval ends, in the exact
posterior's SDs, beside the MCMC's Monte Carlo standard errors and the exact engine's stated error. With
two seeds or more, each MCMC fit is compared, and so are the MCMC fits with each other (how far two runs
of the sampler itself land apart: the scale against which the exact engine's differences are read).

``speed`` times, in fresh processes, ``fit --engine exact`` and ``run --engine exact`` on the bundled
evidence, ``sensitivity --engine exact`` (the whole bundled grid with leave-one-project-out) and
``fit --engine exact`` on synthetic bases of 1,000 to 100,000 estimates: user + system CPU seconds of
the child and its own children (the machine is shared: wall time measures the others too), its wall time (the
grid's target is one: its domains are integrated in a worker process per core) and the peak resident memory of
its largest process.

Results: ``bench/results/exact-<date>.json``; a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

from scaling import write_result  # noqa: E402
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
            "sensitivity --engine exact (the same, and its report)": ["sensitivity", "--engine", "exact", "--out", "o"],
        }
        for n in SIZES:
            path = tmp / f"synthetic-{n}.csv"
            write_csv(path, n, n // 10, 10, seed=1)
            cases[f"fit --engine exact ({n:,} synthetic estimates)"] = ["fit", "--engine", "exact", "--csv", str(path), "--format", "json", "--out", "o"]
        for c, (name, args) in enumerate(cases.items()):
            out[name] = [_child([f"o{c}-{i}" if a == "o" else a for a in args], tmp) for i in range(runs)]  # each run: a new folder
            cpu, wall = [r["cpu_s"] for r in out[name]], [r["wall_s"] for r in out[name]]
            print(f"{name:<62} cpu {statistics.median(cpu):7.2f} s (min {min(cpu):.2f}, max {max(cpu):.2f})  "
                  f"wall {statistics.median(wall):6.2f} s (min {min(wall):.2f})  "
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


def _worst(rows: list[dict]) -> dict:
    """The largest |difference| of means, SDs and interval ends over ``rows`` (in SDs)."""
    return {"mean": max(abs(r["mean_sd"]) for r in rows), "sd": max(abs(r["sd_sd"]) for r in rows),
            "interval_ends": max(max(abs(r["hdi_low_sd"]), abs(r["hdi_high_sd"])) for r in rows)}


def _differences(m: dict, e, sd: float) -> dict:
    """MCMC summary ``m`` less the reference ``e`` (a summary object or a dict), in SDs ``sd``."""
    get = (lambda k: e[k]) if isinstance(e, dict) else (lambda k: getattr(e, k))
    return {"mean_sd": (m["mean"] - get("mean")) / sd, "sd_sd": (m["sd"] - get("sd")) / sd,
            "hdi_low_sd": (m["hdi_low"] - get("hdi_low")) / sd, "hdi_high_sd": (m["hdi_high"] - get("hdi_high")) / sd}


def agreement(draws: int, seeds: list[int]) -> dict:
    from metaeval.exact_full import fit_exact_model
    from metaeval.harmonise import load_evidence
    from metaeval.sampling import SamplerSettings
    from metaeval.spec import load_spec
    from metaeval.summary import fit_and_summarise

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
        quantities = [(d, q, e) for d, dom in exact.domains.items() for q, e in [("mu", dom.mu), ("tau", dom.tau)] + [(p.project, p) for p in dom.projects]]
        fits, mcmcs = {}, {}
        for seed in seeds:
            summary, fitted = fit_and_summarise(table, spec, out=cache, settings=SamplerSettings(chains=4, draws=draws, tune=2000, seed=seed),
                                                progress=False, publish_result=False)  # the gate's numbers, of a cached fit too
            mcmc = mcmcs[seed] = _stats_mcmc(fitted.posterior, spec.hdi_prob)
            rows = [{"domain": d, "quantity": q, "exact_sd": e.sd, **_differences(mcmc[(d, q)], e, e.sd),
                     "mcse_mean_sd": mcmc[(d, q)]["mcse_mean"] / e.sd, "stated_error_sd": e.error_sd} for d, q, e in quantities]
            diag = summary.diagnostics.model_dump()
            fits[seed] = {"diagnostics": {k: diag[k] for k in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "passed")},
                          "worst_in_sd": {**_worst(rows), "stated_error": max(e.error_sd for _, _, e in quantities)}, "rows": rows}
            w = fits[seed]["worst_in_sd"]
            print(f"{name}, seed {seed}: {4 * draws:,} draws, R-hat {diag['rhat_max']:.4f}, ESS {diag['ess_bulk_min']:.0f}/{diag['ess_tail_min']:.0f}; "
                  f"largest |MCMC - exact| in SDs: means {w['mean']:.3f}, SDs {w['sd']:.3f}, interval ends "
                  f"{w['interval_ends']:.3f}; stated numerical error at most {w['stated_error']:.4f} SD", flush=True)
        between = {}
        for i, a in enumerate(seeds):
            for b in seeds[i + 1:]:
                rows = [_differences(mcmcs[b][(d, q)], mcmcs[a][(d, q)], e.sd) for d, q, e in quantities]
                between[f"{a} vs {b}"] = _worst(rows)
                w = between[f"{a} vs {b}"]
                print(f"{name}, MCMC seed {a} vs seed {b}: means {w['mean']:.3f}, SDs {w['sd']:.3f}, interval ends {w['interval_ends']:.3f}", flush=True)
        out[name] = {"draws": 4 * draws, "exact_cpu_s": round(exact_cpu, 3), "fits": fits, "mcmc_vs_mcmc": between}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("agreement")
    a.add_argument("--draws", type=int, default=10_000, help="draws per chain (4 chains)")
    a.add_argument("--seeds", type=int, nargs="+", default=[18, 7], help="one MCMC fit per seed")
    s = sub.add_parser("speed")
    s.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    result = agreement(args.draws, args.seeds) if args.what == "agreement" else speed(args.runs)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {"what": args.what, "date": dt.date.today().isoformat(), "commit": commit, "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_before": load, "python": platform.python_version(), "result": result}
    path = write_result(f"exact-{args.what}-{record['date']}", record)
    print(f"written: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
