"""The speed benchmarks of fitting, in one command: `.venv/bin/python bench/run.py [--runs 5]`.

Every case runs in fresh processes (except the warm-session refit, which is what a notebook does) and is
reported as median, min and max over the runs, with its ratio to a naive PyMC baseline measured in the
same run: `pm.sample()` with its defaults on the same eight-schools model in a fresh process. Results go
to `bench/results/speed-<date>.json` (`-2`, `-3`, ... for later runs that day) and a table on stdout. Timings are wall-clock on this machine, so
each case also records the CPU-seconds of its processes (user + system, compile processes included)
and the one-minute load average before it: on a shared machine read the CPU column and the load as
well as the wall-clock median.

All fits use a compile cache of their own (``METAEVAL_CACHE_DIR`` in the benchmark's temporary folder,
warmed by an untimed fit), so nothing depends on the user's. The bundled fit is timed four ways in fresh
processes: a first run (cold PyTensor cache and cold compile cache, as after installing), a cold compile
cache alone (a new model shape, or a new library version), ``--refit`` with the compile cache warm, and
the same command again (the result cache answers). A cold run must say what it is doing: its stderr must
carry the compile note. The 10,000-estimate case (``bench/synthetic.py``: 1,000 projects, 10 domains)
runs ``--large-runs`` times (default 1: one fit takes a minute or more) after an untimed fit that builds
its compile-cache entry, with the marginal model (effects integrated out) and the default one; it meets
its target only when time, every ESS >= 400, no divergences and peak memory <= 2 GB all hold, and the
table's last column says which did.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaling import TARGET, describe, measure_fit, meets_target, revision, write_result
from synthetic import write_csv

from metaeval.compile_cache import COLD_NOTE, ENV_VAR

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EIGHT_SCHOOLS = ROOT / "tests" / "fixtures" / "eight_schools.csv"

BASELINE = """
import numpy as np, pymc as pm
y = np.array([28, 8, -3, 7, -1, 1, 18, 12.]); s = np.array([15, 10, 16, 11, 9, 11, 10, 18.])
with pm.Model():
    mu = pm.Normal("mu", 0, 5); tau = pm.HalfCauchy("tau", 5); z = pm.Normal("z", 0, 1, shape=8)
    pm.Normal("y", mu + tau * z, s, observed=y)
    pm.sample(random_seed=1, progressbar=False)
"""

WARM_REFIT = """
import time, metaeval
ev = metaeval.load_evidence()
spec = metaeval.load_spec("default")
metaeval.fit(metaeval.build_model(ev, spec), seed=1)
times = []
for i in range(REPS):
    spec_i = metaeval.load_spec("default", [f"tau.employment=halfnormal({0.1 + 0.01 * i})"])
    t = time.perf_counter(); metaeval.fit(metaeval.build_model(ev, spec_i), seed=1); times.append(time.perf_counter() - t)
print(",".join(f"{t:.4f}" for t in times))
"""

EXACT_1000 = """
import time, numpy as np
from metaeval.exact import exact_posterior
from metaeval.priors import parse_prior
rng = np.random.default_rng(1); sei = rng.uniform(0.05, 0.5, 1000); yi = rng.normal(0.2, np.hypot(0.1, sei))
tau, mu = parse_prior("halfnormal(0.5)"), parse_prior("normal(0, 1)")
exact_posterior(yi, sei, tau_prior=tau, mu_prior=mu).summary()
times = []
for _ in range(REPS):
    t = time.perf_counter(); exact_posterior(yi, sei, tau_prior=tau, mu_prior=mu).summary(); times.append(time.perf_counter() - t)
print(",".join(f"{t:.4f}" for t in times))
"""


class Runs:
    """Wall and CPU seconds of a case's runs, the load average before it, and any criteria besides time."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.load = os.getloadavg()[0]
        self.checks: dict[str, bool] = {}
        self.note = ""
        self.fits: list[dict] = []  # the 10,000-estimate case's fits, in full

    def time(self, cmd: list[str], env: dict | None = None) -> str:
        """Run ``cmd`` once in a fresh process; return its stderr."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        return done.stderr

    def repeat(self, cmd: list[str], runs: int, env: dict | None = None) -> Runs:
        for _ in range(runs):
            self.time(cmd, env)
        return self


def cold_runs(cmd: list[str], runs: int, folder: Path, *, pytensor: bool) -> Runs:
    """``cmd`` with a new, empty compile cache each run (and a new PyTensor cache with ``pytensor``); each must say so."""
    result = Runs()
    said = []
    for i in range(runs):
        env = {**os.environ, ENV_VAR: str(folder / f"cold-{'all-' if pytensor else ''}{i}")}
        if pytensor:
            env["PYTENSOR_FLAGS"] = f"base_compiledir={folder / f'pytensor-{i}'}"
        said.append(f"note: {COLD_NOTE}" in result.time(cmd, env).splitlines())  # the CLI prints notes as "note: ..."
    result.checks = {"says it is compiling": all(said)}
    return result


def _inline(code: str, reps: int) -> Runs:
    result = Runs()
    out = subprocess.run([sys.executable, "-c", code.replace("REPS", str(reps))], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    result.wall = [float(x) for x in out.split(",")]
    return result


def large_case(out: Path, runs: int, model: str, n_estimates: int = TARGET["estimates"]) -> Runs:
    """Fresh-process fits of the synthetic evidence base after one that builds its compile-cache entry."""
    csv = out / f"synthetic-{n_estimates}.csv"
    write_csv(csv, n_estimates, n_estimates // 10, 10, seed=1)
    result = Runs()
    first = measure_fit(csv, out / f"large-{model}-first", model=model)
    fits = [measure_fit(csv, out / f"large-{model}", model=model) for _ in range(runs)]
    result.wall = [f["seconds"] for f in fits]
    result.checks = {k: all(meets_target(f)[k] for f in fits) for k in ("ess", "divergences", "memory")}
    result.note = (f"first fit, building the compile-cache entry: {first['seconds']:.1f} s; "
                   + "; ".join(describe(f) for f in fits) + " -> " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result.checks.items()))
    result.fits = fits
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=3, help="runs of each cold-cache case (default 3)")
    parser.add_argument("--large-runs", type=int, default=1, help="runs of the 10,000-estimate case (default 1)")
    parser.add_argument("--skip-large", action="store_true", help="leave out the 10,000-estimate cases")
    args = parser.parse_args()
    metaeval = str(BIN / "metaeval")
    out = Path(tempfile.mkdtemp(prefix="metaeval-bench-"))
    os.environ[ENV_VAR] = str(out / "compile-cache")  # every fit below, unless a case makes it cold
    fit_cmd = [metaeval, "fit", "--out", str(out / "fit"), "--format", "json"]
    subprocess.run(fit_cmd + ["--refit"], check=True, capture_output=True, cwd=ROOT)  # warms the compile cache, untimed

    baseline = "baseline: pm.sample defaults, eight schools, fresh process"
    cases: dict[str, tuple[Runs, float | None]] = {}  # name -> (runs, target in seconds)
    cases[baseline] = (Runs().repeat([sys.executable, "-c", BASELINE], args.runs), None)
    base = statistics.median(cases[baseline][0].wall)
    cases["metaeval --help"] = (Runs().repeat([metaeval, "--help"], args.runs), 0.3)
    cases["fit, bundled evidence, first run (cold PyTensor and compile caches)"] = (cold_runs(fit_cmd + ["--refit"], args.cold_runs, out, pytensor=True), 25.0)
    cases["fit, bundled evidence, cold compile cache (warm PyTensor cache)"] = (cold_runs(fit_cmd + ["--refit"], args.cold_runs, out, pytensor=False), 25.0)
    # the compile cache's target: at most 0.3 x the baseline measured in this run, and at most 3.5 s in any case
    cases["fit, bundled evidence, fresh process, warm compile cache (--refit)"] = (Runs().repeat(fit_cmd + ["--refit"], args.runs), min(0.3 * base, 3.5))
    cases["fit, bundled evidence, fresh process, warm fit cache (same command again)"] = (Runs().repeat(fit_cmd, args.runs), 3.0)
    cases["summary from a cached fit"] = (Runs().repeat([metaeval, "summary", "--out", str(out / "fit")], args.runs), 0.6)
    first, kept = Runs(), out / "fit" / "kept"
    after_fit = set(kept.iterdir()) if kept.is_dir() else set()  # what the last fit (--refit) kept there: its comparison
    for _ in range(args.runs):  # what a report keeps in OUT/kept (its plan) removed: a report's first time after a fit
        for path in (set(kept.iterdir()) if kept.is_dir() else set()) - after_fit:
            path.unlink()
        first.time([metaeval, "report", "--out", str(out / "fit")])
    cases["report from a cached fit, the first time"] = (first, 1.5)
    cases["report from a cached fit, again"] = (Runs().repeat([metaeval, "report", "--out", str(out / "fit")], args.runs), 1.5)
    cases["refit with changed priors, warm Python session"] = (_inline(WARM_REFIT, args.runs), 0.3)
    cases["exact engine, 1,000 studies (in process)"] = (_inline(EXACT_1000, args.runs), 0.05)
    for model in () if args.skip_large else ("marginal", "default"):
        large = f"fit, synthetic {TARGET['estimates']:,} estimates, fresh process, --model {model} (--refit)"
        cases[large] = (large_case(out, args.large_runs, model), TARGET["seconds"])

    rows = []
    for name, (runs, target) in cases.items():
        med = statistics.median(runs.wall)
        rows.append(dict(case=name, runs=len(runs.wall), median_s=round(med, 4), min_s=round(min(runs.wall), 4),
                         max_s=round(max(runs.wall), 4), cpu_median_s=round(statistics.median(runs.cpu), 3) if runs.cpu else None,
                         load_before=round(runs.load, 2), ratio_to_baseline=round(med / base, 4),
                         target_s=None if target is None else round(target, 3),
                         meets_target=None if target is None else med <= target and all(runs.checks.values()),
                         **({"checks": runs.checks} if runs.checks else {}), **({"note": runs.note} if runs.note else {}),
                         **({"fits": runs.fits} if runs.fits else {})))
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'runs':>4} {'median':>8} {'min':>8} {'max':>8} {'CPU':>7} {'load':>5} {'x base':>7} {'target':>7}  ok")
    for r in rows:
        ok = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        tgt = "" if r["target_s"] is None else f"{r['target_s']:.2f}"
        cpu = "" if r["cpu_median_s"] is None else f"{r['cpu_median_s']:.2f}"
        note = f"  ({r['note']})" if "note" in r else ""
        print(f"{r['case']:<{width}}  {r['runs']:4d} {r['median_s']:8.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} {cpu:>7} {r['load_before']:5.2f} "
              f"{r['ratio_to_baseline']:7.3f} {tgt:>7}  {ok}{note}")
    record = dict(date=dt.date.today().isoformat(), machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                  python=platform.python_version()), code=revision(), load_average=os.getloadavg(), cases=rows)
    dest = write_result(f"speed-{record['date']}", record)
    print(f"\nwritten: {dest.relative_to(ROOT)}")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
