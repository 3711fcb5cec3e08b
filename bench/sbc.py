"""Simulation-based calibration (Talts et al. 2018) of the default bias-adjusted model.

Each replication draws every parameter from the prior of ``models/default.toml``
(domain means mu_d, between-project SDs tau_d, the within-project SD omega,
per-project design biases, the unknown SEs of direction-only findings), then data
from the likelihood, on an evidence base shaped like the bundled one (the
structure of ``bench/coverage_study.py``: four domains on different metrics, a
decrease-beneficial domain, a one-project domain, RCTs and weaker designs, a
project with two estimates, two direction-only findings). It fits the simulated
evidence with the package's own engine (``build_model`` -> ``fit``) and records,
for each tracked parameter, the rank of the true value among L thinned posterior
draws. If the sampler and the model agree with the simulator, every rank is
uniform on 0..L.

The simulator is ``coverage_study.simulate``, which returns every true parameter
named like the posterior variables (``mu[d]``, ``tau[d]``, ``omega[d]``, ``bias[d/p]``).

The inner loop is one function per replication (``run_replication``); the
replications go through ``metaeval.executor`` (a local Dask cluster, or a serial
loop with ``--workers 0``), and the results file is rewritten after every
replication, so an interrupted run still leaves numbers (rerun with the same
arguments to resume). Each worker process compiles the sampler once and reuses it
for every replication (``metaeval.sampling``: same model structure, new data).

Run:      .venv/bin/python bench/sbc.py                       (1,000 fits at 4 x (1000 + 1000); about 1.3 s a fit)
Analyse:  .venv/bin/python bench/sbc.py --analyse             (tests; metaeval/records/ gets the record and picture)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from coverage_study import simulate

RESULTS = HERE / "sbc_results.json"
#: What the report cites of the default run (package data, read through metaeval.bundled): the record without
#: its per-replication ranks (1 MB that stay here), and the picture.
PUBLISHED = HERE.parent / "metaeval" / "records" / "sbc.json"
FIGURE = PUBLISHED.with_name("sbc_ranks.png")
#: Posterior draws kept per fit after thinning: ranks take L + 1 = 200 values.
L = 199
BINS = 20
#: The primary parameters, stated before the run: domain means, tau, one bias parameter.
PRIMARY = ["mu[jobs]", "mu[support]", "mu[pension]", "mu[grades]",
           "tau[jobs]", "tau[support]", "tau[pension]", "tau[grades]",
           "bias[jobs/comparison]"]
ALPHA = 0.01


def _thinned(values: np.ndarray, size: int) -> np.ndarray:
    """``size`` draws evenly spaced through the (chain-concatenated) draws."""
    flat = values.reshape(-1)
    idx = np.linspace(0, flat.size - 1, size).round().astype(int)
    return flat[idx]


def run_replication(*, model: str, seed: int, rep: int, chains: int, draws: int, tune: int, L: int) -> dict:
    """Simulate, fit, and rank: one SBC replication (the unit of work for the executor)."""
    task = {"model": model, "seed": seed, "rep": rep, "chains": chains, "draws": draws, "tune": tune, "L": L}
    from metaeval.model import build_model
    from metaeval.sampling import diagnose, fit
    from metaeval.spec import load_spec

    t0 = time.time()
    spec = load_spec(task["model"])
    rng = np.random.default_rng([task["seed"], task["rep"]])
    evidence, truth = simulate(spec, rng)
    posterior = fit(build_model(evidence, spec), chains=task["chains"], draws=task["draws"], tune=task["tune"],
                    seed=task["seed"] + 1000 * task["rep"] + 1, progress=False)
    gate = diagnose(posterior)
    post = posterior["posterior"]
    ranks = {}
    for name, true in truth.items():
        var, label = name[:-1].split("[", 1)
        dim = {"mu": "domain", "tau": "domain", "omega": "omega_domain", "bias": "bias_term"}[var]
        draws = post[var].sel({dim: label}).values  # (chain, draw)
        ranks[name] = int((_thinned(draws, task["L"]) < true).sum())
    return {"rep": task["rep"], "truth": {k: round(v, 8) for k, v in truth.items()}, "ranks": ranks,
            "gate": {k: gate[k] for k in ("passed", "rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "failures")},
            "seconds": round(time.time() - t0, 1)}


def _run_tasks(tasks: list[dict], on_result, workers: int | None) -> None:
    """Through ``metaeval.executor.run_tasks`` (a local Dask cluster; ``workers=0``: serial), ``on_result`` per finished task."""
    import os

    from metaeval.executor import run_tasks

    # worker processes must import this module by name (not as __main__)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])
    import sbc

    def record(result) -> None:
        on_result(result.value if result.ok else {"rep": result.task["rep"], "error": result.error})

    run_tasks(sbc.run_replication, tasks, scheduler="serial" if workers == 0 else None, workers=workers or None,
              progress=record, description="SBC fits")


def _code() -> dict:
    """The commit and package versions the fits ran with (a run is only resumed with the same settings)."""
    import subprocess

    from metaeval.sampling import package_versions

    git = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty", "--abbrev=40"],
                         capture_output=True, text=True, check=False)
    return {"commit": git.stdout.strip() or None, "versions": package_versions()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="executor workers (0: serial loop)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--analyse", action="store_true", help="only analyse an existing results file")
    args = parser.parse_args()
    if args.analyse:
        return analyse(args.out)

    settings = {"model": "default", "seed": args.seed, "chains": args.chains, "draws": args.draws, "tune": args.tune, "L": L}
    code = _code()
    done: dict[int, dict] = {}
    if args.out.is_file():
        old = json.loads(args.out.read_text())
        if old.get("settings") == settings and old.get("code") == code:  # resume only fits of the same code
            done = {r["rep"]: r for r in old.get("replications", []) if "error" not in r}
    tasks = [{**settings, "rep": rep} for rep in range(args.reps) if rep not in done]
    started = time.time()

    def save(result: dict | None = None, final: bool = False) -> None:
        if result is not None:
            done[result["rep"]] = result
            ok = "error" not in result
            print(f"rep {result['rep']}: " + (f"gate {'passed' if result['gate']['passed'] else 'FAILED'}, {result['seconds']} s" if ok else result["error"])
                  + f" ({len(done)}/{args.reps}, {time.time() - started:.0f} s)", flush=True)
        payload = {"what": "simulation-based calibration (Talts et al. 2018) of models/default.toml", "settings": settings,
                   "code": code, "status": "complete" if final else "partial", "replications": [done[k] for k in sorted(done)]}
        args.out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")

    _run_tasks(tasks, save, args.workers)
    save(final=len(done) >= args.reps and all("error" not in r for r in done.values()))
    return analyse(args.out)


def _chisquare(ranks: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Counts of ranks (0..L) in BINS equal bins and scipy's chi-square test of uniformity."""
    from scipy.stats import chisquare

    counts = np.bincount(ranks * BINS // (L + 1), minlength=BINS)
    stat, p = chisquare(counts)
    return counts, float(stat), float(p)


def _ecdf_band(n: int, prob: float, rng: np.random.Generator, sims: int = 20000) -> float:
    """Half-width of a simultaneous ECDF-difference band for n uniform ranks on 0..L (by simulation).

    The band (Säilynoja et al. 2022 in spirit) is calibrated so that ``prob`` of
    ECDF-difference curves of truly uniform ranks stay inside it everywhere.
    """
    grid = np.arange(L + 1)
    sup = np.empty(sims)
    for i in range(0, sims, 1000):
        r = rng.integers(0, L + 1, size=(1000, n))
        ecdf = (r[:, :, None] <= grid).mean(axis=1)
        sup[i:i + 1000] = np.abs(ecdf - (grid + 1) / (L + 1)).max(axis=1)
    return float(np.quantile(sup, prob))


def publish(data: dict) -> None:
    """The record the report cites: everything but the per-replication ranks."""
    PUBLISHED.write_text(json.dumps({k: v for k, v in data.items() if k != "replications"}, indent=1, sort_keys=True) + "\n")


def analyse(path: Path) -> int:
    """Rank histograms, chi-square tests, ECDF-difference bands, the picture; results into the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    data = json.loads(path.read_text())
    reps = [r for r in data["replications"] if "error" not in r]
    errors = [r for r in data["replications"] if "error" in r]
    passed = [r for r in reps if r["gate"]["passed"]]
    params = [p for p in PRIMARY] + sorted({k for r in reps for k in r["ranks"]} - set(PRIMARY))
    rng = np.random.default_rng(7)
    band = {"all": _ecdf_band(len(reps), 0.99, rng), "gate_passed": _ecdf_band(len(passed), 0.99, rng)}

    def tests(rows):
        out = {}
        for p in params:
            ranks = np.array([r["ranks"][p] for r in rows if p in r["ranks"]], dtype=int)
            if ranks.size == 0:
                continue
            counts, stat, pval = _chisquare(ranks)
            ecdf = (ranks[:, None] <= np.arange(L + 1)).mean(axis=0)
            out[p] = {"n": int(ranks.size), "counts": counts.tolist(), "chi2": round(stat, 3), "df": BINS - 1, "p_value": round(pval, 5),
                      "ecdf_max_abs_diff": round(float(np.abs(ecdf - (np.arange(L + 1) + 1) / (L + 1)).max()), 4),
                      "mean_rank_over_L": round(float(ranks.mean() / L), 4)}
        return out

    all_tests, gate_tests = tests(reps), tests(passed)
    for _name, t, b in (("all", all_tests, band["all"]), ("gate_passed", gate_tests, band["gate_passed"])):
        for v in t.values():
            v["ecdf_inside_99_band"] = bool(v["ecdf_max_abs_diff"] <= b)
    primary_p = {p: all_tests[p]["p_value"] for p in PRIMARY}
    reject = [p for p, v in primary_p.items() if v < ALPHA]
    gates = [r["gate"] for r in reps]
    data["analysis"] = {
        "rule": ("primary: all completed replications enter the ranks whether or not they passed the diagnostics gate "
                 "(dropping fits by a data-dependent gate could itself distort the ranks); the gate-passed subset is reported as a check"),
        "L": L, "bins": BINS, "expected_per_bin": round(len(reps) / BINS, 2), "alpha": ALPHA,
        "replications_completed": len(reps), "replications_errored": len(errors),
        "gate_passed": len(passed), "fits_with_divergences": sum(g["divergences"] > 0 for g in gates),
        "rhat_max": max(g["rhat_max"] for g in gates), "ess_bulk_min": min(g["ess_bulk_min"] for g in gates),
        "seconds_per_fit_median": float(np.median([r["seconds"] for r in reps])),
        "ecdf_band_99_halfwidth": {k: round(v, 4) for k, v in band.items()},
        "primary_parameters": PRIMARY,
        "primary_p_values": primary_p,
        "primary_rejected_at_alpha": reject,
        "min_primary_p_bonferroni": round(min(1.0, min(primary_p.values()) * len(PRIMARY)), 5),
        "verdict": ("no primary chi-square test rejects uniformity at 1%" if not reject else f"uniformity rejected at 1% for {', '.join(reject)}"),
        "tests_all": all_tests,
        "tests_gate_passed": gate_tests,
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    if path == RESULTS:
        publish(data)

    # picture: rank histograms with a 99% band for each bin count, and ECDF differences with the simultaneous band
    shown = params
    ncol = 4
    nrow = math.ceil(len(shown) / ncol)
    fig, axes = plt.subplots(nrow * 2, ncol, figsize=(3.2 * ncol, 2.3 * nrow * 2), squeeze=False)
    n = len(reps)
    lo, hi = binom.ppf(0.005, n, 1 / BINS), binom.ppf(0.995, n, 1 / BINS)
    grid = np.arange(L + 1)
    for i, p in enumerate(shown):
        ax = axes[2 * (i // ncol), i % ncol]
        t = all_tests[p]
        ax.axhspan(lo, hi, color="0.85")
        ax.axhline(n / BINS, color="0.5", lw=0.8)
        ax.bar(np.arange(BINS), t["counts"], width=0.9, color="tab:blue" if p in PRIMARY else "tab:gray")
        ax.set_title(f"{p}  p={t['p_value']:.3f}", fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
        ax2 = axes[2 * (i // ncol) + 1, i % ncol]
        ranks = np.array([r["ranks"][p] for r in reps if p in r["ranks"]])
        ecdf = (ranks[:, None] <= grid).mean(axis=0)
        ax2.fill_between(grid / (L + 1), -band["all"], band["all"], color="0.85")
        ax2.plot(grid / (L + 1), ecdf - (grid + 1) / (L + 1), color="tab:blue" if p in PRIMARY else "tab:gray")
        ax2.axhline(0, color="0.5", lw=0.8)
        ax2.set_ylim(-max(0.2, 1.25 * band["all"]), max(0.2, 1.25 * band["all"]))
        ax2.tick_params(labelsize=7)
        ax2.set_title("ECDF - uniform", fontsize=7)
    for j in range(len(shown), nrow * ncol):
        axes[2 * (j // ncol), j % ncol].axis("off")
        axes[2 * (j // ncol) + 1, j % ncol].axis("off")
    fig.suptitle(f"SBC of models/default.toml: {n} fits, L={L} thinned draws, {BINS} bins; grey: 99% band (per bin / simultaneous)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(FIGURE if path == RESULTS else path.with_suffix(".png"), dpi=110)
    a = data["analysis"]
    print(f"{n} replications ({len(errors)} errored), gate passed {len(passed)}/{n}; primary p-values: "
          + ", ".join(f"{k} {v:.3f}" for k, v in primary_p.items()) + f"; verdict: {a['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
