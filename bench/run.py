"""The speed benchmarks of issue 7, in one command: `.venv/bin/python bench/run.py [--runs 5]`.

Every case runs in fresh processes (except the warm-session refit, which is what a notebook does) and is
reported as median, min and max over the runs, with its ratio to a naive PyMC baseline measured in the
same run: `pm.sample()` with its defaults on the same eight-schools model in a fresh process. Results go
to `bench/results/speed-<date>.json` and a table on stdout. Timings are wall-clock on this machine; other
load on it shows up in them, so read min and max as well as the median.

The bundled fit is timed twice over in fresh processes: with ``--refit`` (a new fit; only the compile
cache is warm) and as the same command again (the result cache answers). The 10,000-estimate case
(``bench/synthetic.py``: 1,000 projects, 10 domains) runs ``--large-runs`` times (default 1: one fit
takes a minute or more) with the marginal model (effects integrated out) and the default one; it meets its target only when time, every ESS >= 400, no
divergences and peak memory <= 2 GB all hold, and the table's last column says which did.
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

from scaling import TARGET, describe, measure_fit, meets_target
from synthetic import write_csv

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


def _time(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def _inline(code: str, reps: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code.replace("REPS", str(reps))], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    return [float(x) for x in out.split(",")]


def large_case(out: Path, runs: int, model: str, n_estimates: int = TARGET["estimates"]) -> tuple[list[float], dict]:
    """Fresh-process fits of the synthetic evidence base: seconds per run, and the other criteria of the target."""
    csv = out / f"synthetic-{n_estimates}.csv"
    write_csv(csv, n_estimates, n_estimates // 10, 10, seed=1)
    fits = [measure_fit(csv, out / f"large-{model}", model=model) for _ in range(runs)]
    checks = {k: all(meets_target(f)[k] for f in fits) for k in ("ess", "divergences", "memory")}
    note = "; ".join(describe(f) for f in fits) + " -> " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items())
    return [f["seconds"] for f in fits], dict(checks=checks, note=note, fits=fits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--large-runs", type=int, default=1, help="runs of the 10,000-estimate case (default 1)")
    args = parser.parse_args()
    metaeval = str(BIN / "metaeval")
    out = Path(tempfile.mkdtemp(prefix="metaeval-bench-"))
    fit_cmd = [metaeval, "fit", "--out", str(out / "fit"), "--format", "json"]
    cold_env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={out / 'cold-cache'}"}

    cases: dict[str, tuple[list[float], float | None]] = {}  # name -> (seconds, target)
    extra: dict[str, dict] = {}  # name -> criteria besides time (checks), a note for the table, raw results
    cases["baseline: pm.sample defaults, eight schools, fresh process"] = ([_time([sys.executable, "-c", BASELINE]) for _ in range(args.runs)], None)
    cases["metaeval --help"] = ([_time([metaeval, "--help"]) for _ in range(args.runs)], 0.3)
    cases["fit, bundled evidence, first run (cold compile cache)"] = ([_time(fit_cmd + ["--refit"], cold_env)], 15.0)
    cases["fit, bundled evidence, fresh process, warm compile cache (--refit)"] = ([_time(fit_cmd + ["--refit"]) for _ in range(args.runs)], 3.0)
    cases["fit, bundled evidence, fresh process, warm fit cache (same command again)"] = ([_time(fit_cmd) for _ in range(args.runs)], 3.0)
    cases["summary from a cached fit"] = ([_time([metaeval, "summary", "--out", str(out / "fit")]) for _ in range(args.runs)], 1.5)
    cases["report from a cached fit"] = ([_time([metaeval, "report", "--out", str(out / "fit")]) for _ in range(args.runs)], 1.5)
    cases["refit with changed priors, warm Python session"] = (_inline(WARM_REFIT, args.runs), 0.3)
    cases["exact engine, 1,000 studies (in process)"] = (_inline(EXACT_1000, args.runs), 0.05)
    for model in ("marginal", "default"):
        large = f"fit, synthetic {TARGET['estimates']:,} estimates, fresh process, --model {model} (--refit)"
        secs, extra[large] = large_case(out, args.large_runs, model)
        cases[large] = (secs, TARGET["seconds"])

    base = statistics.median(cases["baseline: pm.sample defaults, eight schools, fresh process"][0])
    rows = []
    for name, (secs, target) in cases.items():
        med = statistics.median(secs)
        checks = extra.get(name, {}).get("checks", {})
        rows.append(dict(case=name, runs=len(secs), median_s=round(med, 4), min_s=round(min(secs), 4),
                         max_s=round(max(secs), 4), ratio_to_baseline=round(med / base, 4), target_s=target,
                         meets_target=None if target is None else med <= target and all(checks.values()), **extra.get(name, {})))
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'runs':>4} {'median':>8} {'min':>8} {'max':>8} {'x base':>7} {'target':>7}  ok")
    for r in rows:
        ok = "" if r["meets_target"] is None else ("yes" if r["meets_target"] else "NO")
        tgt = "" if r["target_s"] is None else f"{r['target_s']:.2f}"
        note = f"  ({r['note']})" if "note" in r else ""
        print(f"{r['case']:<{width}}  {r['runs']:4d} {r['median_s']:8.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} {r['ratio_to_baseline']:7.3f} {tgt:>7}  {ok}{note}")
    record = dict(date=dt.date.today().isoformat(), machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                  python=platform.python_version()), load_average=os.getloadavg(), cases=rows)
    dest = ROOT / "bench" / "results" / f"speed-{record['date']}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten: {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
